"""`InputFormat`: what one input-format unit declares, once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from icai_core.intake.build import Built, Ctx


@dataclass(frozen=True)
class InputFormat:
    """One recognised layout.

    `signature`: the columns a file must have to be this format (detection). `build`: source table ->
    canonical series. `usual`: columns such files usually also have (only to find the nearest format
    when a file matches none). `supersedes`: formats this one wins over when both match (the
    canonical table may still carry the principia label column). `default_mapping`: the mapping the
    intake report shows, from the file's columns (formats whose builder reports its own leave it None).
    """

    name: str
    description: str
    signature: tuple[str, ...]
    build: Callable[[Ctx], Built]
    usual: tuple[str, ...] = ()
    supersedes: tuple[str, ...] = ()
    default_mapping: Callable[[list[str]], dict[str, str]] | None = None
