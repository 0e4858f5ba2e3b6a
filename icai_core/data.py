"""Data intake: read pairwise preference files into the canonical pair table.

`load_pairs` reads CSV, TSV, JSON (a list of records or an object of columns), JSON Lines and
Parquet -- from a path, from bytes or from a file-like object with a `name` -- and recognises these
layouts without a manual mapping (`SUPPORTED_FORMATS`):

* ``principia``  -- ICAI / Principia CSV: ``text_a, text_b, preferred_text`` (+ ``prompt``), labels
  ``text_a`` / ``text_b`` / ``tie`` (``a``, ``b``, ``A``, ``B`` accepted); the shared real data.
* ``canonical``  -- the canonical table itself: ``prompt, text_a, text_b, preferred`` (a / b / tie).
* ``alpacaeval`` -- AlpacaEval ``annotations.json``: ``instruction, output_1, output_2, preference``.
* ``arena``      -- Chatbot Arena battles: ``conversation_a, conversation_b, winner``.
* ``arena_kaggle`` -- Kaggle "LMSYS Chatbot Arena" style: ``prompt, response_a, response_b,
  winner_model_a, winner_model_b, winner_tie``.
* ``hh_rlhf``    -- Anthropic HH-RLHF and other ``chosen`` / ``rejected`` data.

An annotated pairs JSON file (ICAI / Feedback Forensics format, as `icai run` exports it) is read
as the canonical table: its comparisons with the default annotator's preferences.

Anything else is read through an explicit `ColumnMapping`.

This module is the public facade; the code lives in `icai_core.intake` (one unit per input
format, shared low-level readers; see docs/intake.md).

Rules: nothing is silently dropped or altered. Text is never stripped, ids stay strings, "NA" and
"null" stay text. Every source column that is not turned into a canonical column is kept as
metadata; the source's label column is kept verbatim (as ``raw_preference`` when the source has no
such column) unless it is identical to ``preferred``. Rows removed by ``ties="exclude"`` are counted
in ``report.excluded``. Bad input raises `DataError`, whose text names the file, the row (1-based
data row, header not counted; for JSON Lines the line number), the column, what is wrong and what
to do.

CSV/TSV reading: files whose double quotes all look RFC-4180-clean are read by pyarrow's
multi-threaded reader with every column as text (about 0.05 s for the 4.4 MB shared files, ~1 s
for 100 MB); anything pyarrow rejects, and any file with unusual quoting, is read by Python's csv
module in strict mode, which either reads it or names the exact row (ragged rows, unclosed or
stray quotes). Both paths give identical tables.

Orientation of chosen/rejected data (HH-RLHF): always putting the chosen reply in position A would
create a position artefact, so A/B are assigned by a keyed hash of the row: SHA-256 of
``HH_ORIENTATION_KEY + "\\x00" + chosen + "\\x00" + rejected`` (the source strings as stored;
for conversation lists, the JSON text of their turns); the
chosen reply is A when the first byte of the digest is even. The result does not depend on row
order and is the same on every run; the added ``swapped`` column is True where A is the rejected
reply (the reply the source lists second).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from icai_core.intake.errors import DataError
from icai_core.intake.formats.hh_rlhf import HH_ORIENTATION_KEY, hh_chosen_is_a
from icai_core.intake.load import load_pairs
from icai_core.intake.mapping import suggest_mapping, suggest_value_map
from icai_core.intake.model import (
    CANONICAL_COLUMNS,
    OPTIONAL_COLUMNS,
    ColumnMapping,
    IntakeReport,
    LoadResult,
)
from icai_core.intake.registry import (
    FORMAT_SIGNATURES,
    FORMATS,
    SUPPORTED_FORMATS,
    detect_format,
    matching_formats,
)
from icai_core.intake.source import SUPPORTED_FILE_TYPES, UPLOAD_EXTENSIONS, default_max_bytes
from icai_core.intake.tables import Table, read_table

__all__ = [
    "SUPPORTED_FORMATS",
    "SUPPORTED_FILE_TYPES",
    "UPLOAD_EXTENSIONS",
    "FORMATS",
    "FORMAT_SIGNATURES",
    "CANONICAL_COLUMNS",
    "OPTIONAL_COLUMNS",
    "HH_ORIENTATION_KEY",
    "hh_chosen_is_a",
    "ColumnMapping",
    "DataError",
    "IntakeReport",
    "LoadResult",
    "Table",
    "load_pairs",
    "read_table",
    "detect_format",
    "matching_formats",
    "suggest_mapping",
    "suggest_value_map",
    "dataset_summary",
    "default_max_bytes",
    "bundled_datasets",
    "load_demo",
]

# --------------------------------------------------------------------------------------------
# Summaries and demo data
# --------------------------------------------------------------------------------------------


def dataset_summary(pairs: pd.DataFrame) -> dict:
    """Plain-dict overview of a canonical pair table: size, preference balance, annotators, length
    distributions (characters) and empty texts."""
    n = len(pairs)
    counts = {k: int((pairs["preferred"] == k).sum()) for k in ("a", "b", "tie")}
    shares = {k: (v / n if n else 0.0) for k, v in counts.items()}
    lengths = {}
    for col in ("prompt", "text_a", "text_b"):
        s = pairs[col].str.len().astype(float)
        if n:
            q = s.quantile([0.1, 0.25, 0.5, 0.75, 0.9])
            lengths[col] = {
                "min": int(s.min()), "q10": float(q[0.1]), "q25": float(q[0.25]), "median": float(q[0.5]),
                "q75": float(q[0.75]), "q90": float(q[0.9]), "max": int(s.max()), "mean": float(s.mean()),
            }
        else:
            lengths[col] = {}
    empty_a = (pairs["text_a"] == "").to_numpy()
    empty_b = (pairs["text_b"] == "").to_numpy()
    out = {
        "rows": n,
        "preference_counts": counts,
        "preference_shares": shares,
        "annotators": ({str(k): int(v) for k, v in pairs["annotator"].value_counts().items()}
                       if "annotator" in pairs.columns else {}),
        "lengths_chars": lengths,
        "empty_texts": {
            "prompt": int((pairs["prompt"] == "").sum()),
            "text_a": int(empty_a.sum()),
            "text_b": int(empty_b.sum()),
            "both_responses": int((empty_a & empty_b).sum()),
            "responses_total": int(empty_a.sum() + empty_b.sum()),
        },
    }
    if "pair_id" in pairs.columns:
        out["distinct_pairs"] = int(pairs["pair_id"].nunique())
    return out


ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
# Real pair samples bundled in assets/ (provenance and sampling: assets/README.md).
DEMO_DATASETS: dict[str, str] = {
    "alpacaeval1_gpt4_judge_sample": "AlpacaEval 1.0: GPT-4 judge vs text-davinci-003 (600 rows, CC BY-NC 4.0)",
    "alpacaeval_human_vs_gpt4_sample": "AlpacaFarm pairs judged by a human majority and 8 GPT-4 runs "
                                       "(150 pairs, 1,350 rows, CC BY-NC 4.0)",
    "arena_llama3_70b_human_sample": "Chatbot Arena users: Llama-3-70B vs others (300 rows, Apache-2.0)",
}
DEFAULT_DEMO = "alpacaeval1_gpt4_judge_sample"
DEMO_NAME = DEFAULT_DEMO


def bundled_datasets() -> dict[str, Path]:
    """Demo samples bundled in `assets/` (real rows; provenance in assets/README.md), by name."""
    out = {}
    for name in DEMO_DATASETS:
        path = ASSETS_DIR / f"{name}.csv"
        if path.is_file():
            out[name] = path
    return out


def load_demo(name: str | None = None, *, ties: str = "keep") -> LoadResult:
    """Load a bundled demo sample (default: the AlpacaEval 1.0 GPT-4 judge sample)."""
    data = bundled_datasets()
    key = name or DEFAULT_DEMO
    if key.endswith(".csv"):
        key = key[:-4]
    if key not in data:
        raise KeyError(f"no bundled dataset {key!r}; available: {', '.join(data) or '(none)'}")
    return load_pairs(data[key], ties=ties)
