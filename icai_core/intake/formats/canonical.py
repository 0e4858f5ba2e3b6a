"""Principia's canonical pair table itself: ``prompt, text_a, text_b, preferred`` (a / b / tie)."""

from __future__ import annotations

from icai_core.intake.build import PRINCIPIA_LABELS, Built, Ctx, build_text_format
from icai_core.intake.formats.principia import text_mapping
from icai_core.intake.unit import InputFormat


def build(ctx: Ctx) -> Built:
    return build_text_format(ctx, "preferred", dict(PRINCIPIA_LABELS),
                             "a, b, tie (A, B, text_a and text_b are also accepted)")


FORMAT = InputFormat(
    name="canonical",
    description="Principia's canonical pair table: prompt, text_a, text_b, preferred (a / b / tie)",
    signature=("prompt", "text_a", "text_b", "preferred"),
    build=build,
    supersedes=("principia",),  # our own table may still carry the principia label column
    default_mapping=text_mapping("preferred"),
)
