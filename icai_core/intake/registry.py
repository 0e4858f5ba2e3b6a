"""The registry of input formats, derived from the format units (detection order = this order).

To add a format: write `icai_core/intake/formats/NAME.py` declaring `FORMAT = InputFormat(...)` and
add it to `FORMATS` below; `SUPPORTED_FORMATS`, detection, `icai formats` and the "nearest format"
advice follow from it (docs/intake.md).
"""

from __future__ import annotations

from icai_core.intake.errors import DataError
from icai_core.intake.formats import alpacaeval, arena, arena_kaggle, canonical, hh_rlhf, principia
from icai_core.intake.mapping import MAPPING_DESCRIPTION, suggest_mapping
from icai_core.intake.unit import InputFormat

__all__ = ["FORMATS", "FORMATS_BY_NAME", "SUPPORTED_FORMATS", "FORMAT_SIGNATURES", "matching_formats",
           "detect_format", "missing_columns_error"]

FORMATS: tuple[InputFormat, ...] = (
    principia.FORMAT, canonical.FORMAT, alpacaeval.FORMAT, arena.FORMAT, arena_kaggle.FORMAT, hh_rlhf.FORMAT,
)
FORMATS_BY_NAME: dict[str, InputFormat] = {f.name: f for f in FORMATS}
FORMAT_SIGNATURES: dict[str, tuple[str, ...]] = {f.name: f.signature for f in FORMATS}
SUPPORTED_FORMATS: dict[str, str] = {**{f.name: f.description for f in FORMATS}, "mapping": MAPPING_DESCRIPTION}


def matching_formats(columns) -> list[str]:
    """All known formats whose required columns are present (a format drops those it supersedes)."""
    cols = set(map(str, columns))
    found = [f.name for f in FORMATS if set(f.signature) <= cols]
    for name in list(found):
        for loser in FORMATS_BY_NAME[name].supersedes:
            if loser in found:
                found.remove(loser)
    return found


def detect_format(df_columns, file: str = "the data") -> str:
    """Name of the known format the columns match, or "unknown".

    Raises DataError when the columns match more than one format (pass `fmt=` to choose)."""
    found = matching_formats(df_columns)
    if len(found) > 1:
        parts = "; ".join(f"{f}: {', '.join(FORMAT_SIGNATURES[f])}" for f in found)
        choices = " or ".join(f"fmt='{f}'" for f in found)
        raise DataError(
            file, None, None,
            f"the columns match more than one known format ({parts})",
            f"Choose one with {choices}, or give an explicit column mapping",
            hint_web="Rename or remove the columns of the format the file is not, or say which column holds "
                     "what in the column-mapping form",
        )
    return found[0] if found else "unknown"


def missing_columns_error(file: str, columns: list[str]) -> DataError:
    """No format matches: name the nearest one, its missing columns, and a possible mapping."""
    cols = set(columns)
    best, best_score = None, 0.0
    for f in FORMATS:
        scored = set(f.signature) | set(f.usual)
        score = len(scored & cols) / len(scored)
        if score > best_score:
            best, best_score = f.name, score
    found = ", ".join(columns) if columns else "(none)"
    if best is None or best_score < 0.5:
        best = "principia"
    missing = [c for c in FORMAT_SIGNATURES[best] if c not in cols]
    what = (f"required columns are missing: {', '.join(missing)} "
            f"(for the {best} format; found columns: {found})")
    rename = "Rename the columns (the Principia format is prompt, text_a, text_b, preferred_text)"
    hint = rename + ", or say which column holds what with a ColumnMapping"
    hint_web = rename + ", or say which column holds what in the column-mapping form"
    suggestion = suggest_mapping(columns)
    if suggestion is not None:
        parts = ", ".join(f"{k}='{v}'" for k, v in suggestion.columns().items()
                          if k in ("prompt", "text_a", "text_b", "preferred") or k != v)
        hint += f"; a possible mapping is {parts}"
        hint_web += " (it is prefilled with a guess)"
    return DataError(file, None, None, what, hint, hint_web=hint_web)
