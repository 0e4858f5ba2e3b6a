"""The intake's public value types: the canonical columns, `ColumnMapping`, `IntakeReport`, `LoadResult`."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

__all__ = ["CANONICAL_COLUMNS", "OPTIONAL_COLUMNS", "ColumnMapping", "IntakeReport", "LoadResult"]

CANONICAL_COLUMNS = ("id", "prompt", "text_a", "text_b", "preferred")
OPTIONAL_COLUMNS = ("annotator", "model_a", "model_b", "language", "pair_id", "category")


@dataclass
class ColumnMapping:
    """Which source column holds what. `prompt` may be None (no prompt: prompts are "").

    `values` maps the source's preference labels to "a" / "b" / "tie", e.g.
    ``{"1": "a", "2": "b", "0": "tie"}``; keys are compared as text, so the number 1 and the text
    "1" (and "1.0") are the same label. Without `values`, the labels a/b/tie, A/B, text_a/text_b,
    model_a/model_b are understood.
    """

    prompt: str | None = None
    text_a: str | None = None
    text_b: str | None = None
    preferred: str | None = None
    id: str | None = None
    annotator: str | None = None
    model_a: str | None = None
    model_b: str | None = None
    language: str | None = None
    pair_id: str | None = None
    category: str | None = None
    values: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [n for n in ("text_a", "text_b", "preferred") if not getattr(self, n)]
        if missing:
            raise ValueError("a ColumnMapping needs the columns for " + ", ".join(missing))
        if self.values is None:
            self.values = {}

    def columns(self) -> dict[str, str]:
        """Canonical name -> source column, for the fields that are set."""
        names = ("prompt", "text_a", "text_b", "preferred", "id") + OPTIONAL_COLUMNS
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclass
class IntakeReport:
    """What happened while loading one file."""

    file_name: str
    format: str
    file_type: str
    rows_read: int
    rows_kept: int
    excluded: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    metadata_columns: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        from icai_core.intake.registry import SUPPORTED_FORMATS

        desc = SUPPORTED_FORMATS.get(self.format, self.format).split(":")[0]
        lines = [
            f"{self.file_name}: {desc} ({self.file_type.upper()} file); "
            f"{self.rows_read:,} rows read, {self.rows_kept:,} kept."
        ]
        for reason, n in self.excluded.items():
            lines.append(f"Excluded {n:,} rows: {reason}.")
        if self.metadata_columns:
            lines.append("Metadata columns kept: " + ", ".join(self.metadata_columns) + ".")
        if self.warnings:
            lines.append("Warnings:")
            lines.extend(f"- {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass
class LoadResult:
    pairs: pd.DataFrame
    format: str
    report: IntakeReport

    @property
    def name(self) -> str:
        """The file name used in messages."""
        return self.report.file_name
