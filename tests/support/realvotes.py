"""Real shared data and simple, independently computed votes for the statistics tests.

The votes are written here in plain pandas (not with icai_core.judges) so the stats, constitution,
reconstruction and compare tests check those modules against an independent computation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SHARED_DATA, SHARED_DATA_MISSING_REASON

LABELS = {"text_a": "a", "text_b": "b", "tie": "tie"}
needs_data = pytest.mark.skipif(SHARED_DATA is None, reason=SHARED_DATA_MISSING_REASON)


def load(name: str, nrows: int | None = None) -> pd.DataFrame:
    """A shared CSV with `preferred` mapped to a / b / tie."""
    df = pd.read_csv(SHARED_DATA / name, keep_default_na=False, nrows=nrows)
    df["preferred"] = df["preferred_text"].map(LABELS)
    return df


def _margin_sign(a: pd.Series, b: pd.Series, rel: float = 0.1) -> np.ndarray:
    a, b = a.to_numpy(float), b.to_numpy(float)
    return np.where(np.abs(a - b) > rel * np.maximum(a, b), np.sign(a - b), 0).astype(np.int8)


def _bullets(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.lstrip().startswith(("- ", "* ", "1.")))


def simple_votes(df: pd.DataFrame, *, shorter: bool = True) -> pd.DataFrame:
    """length (10% margin), bullets, questions, and optionally `shorter` (= -length)."""
    length = _margin_sign(df["text_a"].str.len(), df["text_b"].str.len())
    bullets = np.sign(df["text_a"].map(_bullets) - df["text_b"].map(_bullets)).to_numpy()
    questions = np.sign(df["text_a"].str.count(r"\?") - df["text_b"].str.count(r"\?")).to_numpy()
    cols = {"length": length}
    if shorter:
        cols["shorter"] = -length
    cols |= {"bullets": bullets, "questions": questions}
    return pd.DataFrame(cols, index=df.index).astype(np.int8)
