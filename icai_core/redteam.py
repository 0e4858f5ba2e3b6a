"""Red-team prompt sets for IterAlign: loading user files and the bundled real sample."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED = ASSETS / "redteam_hh_harmless_prompts.csv"
PROMPT_COLUMNS = ("prompt", "instruction", "question", "text", "input")


def bundled_prompts() -> pd.DataFrame:
    """80 real single-turn red-team prompts from Anthropic HH-RLHF harmless-base (test split)."""
    return pd.read_csv(BUNDLED, keep_default_na=False)


def load_prompts(source, name: str | None = None) -> list[str]:
    """Prompts from a CSV/TSV/JSONL/JSON file with a prompt-like column, or a TXT file (one per line).

    Raises ValueError naming the file (and line) and what to do.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        if not path.exists():
            raise ValueError(f"{name}: file not found.")
        raw = path.read_bytes()
    else:
        raw = source if isinstance(source, bytes) else source.read()
        name = name or getattr(source, "name", "prompts")
    if not raw.strip():
        raise ValueError(f"{name}: the file is empty. Provide one red-team prompt per line or a 'prompt' column.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not UTF-8 text (byte {exc.start}). Re-save the file as UTF-8.") from None
    suffix = Path(name).suffix.lower()
    if suffix in (".txt", ""):
        prompts = [ln.strip() for ln in text.splitlines() if ln.strip()]
    else:
        if suffix == ".jsonl":
            records = []
            for n, ln in enumerate(text.splitlines(), start=1):
                if not ln.strip():
                    continue
                try:
                    records.append(json.loads(ln))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{name}, line {n}: invalid JSON ({exc.msg}). Fix or remove that line.") from None
            df = pd.DataFrame(records)
        elif suffix == ".json":
            try:
                df = pd.DataFrame(json.loads(text))
            except (json.JSONDecodeError, ValueError) as exc:
                raise ValueError(f"{name}: invalid JSON ({exc}). Expected a list of objects with a 'prompt' key.") from None
        else:
            sep = "\t" if suffix == ".tsv" else ","
            try:
                df = pd.read_csv(io.StringIO(text), sep=sep, keep_default_na=False, dtype=str)
            except (pd.errors.ParserError, ValueError) as exc:
                raise ValueError(f"{name}: could not parse as {'TSV' if sep == chr(9) else 'CSV'} ({exc}).") from None
        col = next((c for c in PROMPT_COLUMNS if c in df.columns), None)
        if col is None:
            raise ValueError(
                f"{name}: no prompt column. Expected one of {', '.join(PROMPT_COLUMNS)}; found "
                f"{', '.join(map(str, df.columns)) or 'no columns'}. Rename the column holding the prompts."
            )
        prompts = [str(p).strip() for p in df[col] if str(p).strip()]
    if not prompts:
        raise ValueError(f"{name}: no non-empty prompts found.")
    return prompts
