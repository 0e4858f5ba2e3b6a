"""Red-team prompt sets for IterAlign: loading user files and the bundled real sample.

User files go through the same low-level readers as preference data (`icai_core.intake`): the
size limit, streamed .gz inflation, UTF-8 decoding (every leading BOM removed), strict CSV parsing
with row numbers, and the safe JSON parser all apply here too.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from icai_core.intake.errors import DataError
from icai_core.intake.source import decode_text, open_source
from icai_core.intake.tables import parse_raw

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED = ASSETS / "redteam_hh_harmless_prompts.csv"
PROMPT_COLUMNS = ("prompt", "instruction", "question", "text", "input")


class PromptSetError(DataError, ValueError):
    """A problem with a red-team prompt file (a DataError: file, row, column, what to do; also a
    ValueError, what `load_prompts` always raised)."""


def bundled_prompts() -> pd.DataFrame:
    """80 real single-turn red-team prompts from Anthropic HH-RLHF harmless-base (test split)."""
    return pd.read_csv(BUNDLED, keep_default_na=False)


_PROMPT_HINT = "Provide one red-team prompt per line or a 'prompt' column"


def _as_prompt_error(exc: DataError) -> PromptSetError:
    """The reader's error as a PromptSetError; advice about preference pairs (empty file, no rows)
    becomes advice about prompts."""
    hint, hint_web = exc.hint, exc.hint_web
    if "at least one pair" in hint or "a prompt, two responses" in hint:
        hint, hint_web = _PROMPT_HINT, None
    elif "max_bytes" in hint:  # load_pairs' parameter means nothing here (CLI and app alike)
        hint, hint_web = ("Use a smaller prompt file, or raise the PRINCIPIA_MAX_BYTES environment variable "
                          "if the machine has enough memory"), None
    return PromptSetError(exc.file, exc.row, exc.column, exc.message, hint, hint_web=hint_web,
                          message_web=exc.message_web)


def _prompt_text(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return str(v).strip()


def load_prompts(source, name: str | None = None) -> list[str]:
    """Prompts from a CSV/TSV/JSONL/JSON/Parquet file with a prompt-like column, or a TXT file (one per
    line; also a file without extension). `.gz` files are inflated first.

    Raises PromptSetError (a ValueError and a DataError) naming the file (and row) and what to do."""
    if isinstance(source, (bytes, bytearray, memoryview)) and name is None:
        name = getattr(source, "name", None) or "prompts"
    try:
        rf = open_source(source, name=name)
        if not rf.data.strip():
            raise DataError(rf.name, None, None, "the file is empty", _PROMPT_HINT)
        if rf.ext in (".txt", ""):
            text = decode_text(rf.data, rf.name, "txt")
            prompts = [ln.strip() for ln in text.splitlines() if ln.strip()]
        else:
            table = parse_raw(rf)
            col = next((c for c in PROMPT_COLUMNS if c in table.df.columns), None)
            if col is None:
                raise DataError(
                    rf.name, None, None,
                    f"no prompt column. Expected one of {', '.join(PROMPT_COLUMNS)}; found "
                    f"{', '.join(table.columns) or 'no columns'}",
                    "Rename the column holding the prompts",
                )
            prompts = [t for t in map(_prompt_text, table.df[col].array) if t]
        if not prompts:
            raise DataError(rf.name, None, None, "no non-empty prompts found", _PROMPT_HINT)
    except DataError as exc:
        raise _as_prompt_error(exc) from None
    return prompts
