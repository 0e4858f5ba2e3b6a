"""Every CSV the product writes re-reads to the same rows, and no text cell starts a live formula.

The hostile frames are generated here: line breaks of every kind (lone CR, CRLF, LF) and formula
starts in id, annotator, model, category and text columns and in a column name. The expectations
come from the frames themselves (the original values) and from two independent readers, pandas
and Python's csv module, never from the writer's own output.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from icai_core import report as R
from icai_core import safecsv
from tests.support.hostile import LIVE, is_number

HOSTILE = [
    "rater1\r=cmd|' /C calc'!A0",  # the bypass: a lone CR, then a formula
    "=HYPERLINK(\"http://x\")",
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
    "\tTAB",
    "\r=CR first",
    "\n=LF first",
    "a\r\nb\r\n=c",
    "x\ny\n@z",
    "plain, with comma and \"quotes\"",
    "",
]


def hostile_frame() -> pd.DataFrame:
    n = len(HOSTILE)
    rot = lambda k: HOSTILE[k:] + HOSTILE[:k]  # noqa: E731
    return pd.DataFrame({
        "id": [f"=id{i}" if i % 2 else f"row\r{i}" for i in range(n)],
        "annotator": HOSTILE,
        "model_a": rot(3),
        "category": pd.Categorical(rot(5)),
        "text_a": rot(7),
        "=cmd|' /C calc'!A0": rot(1),
        "vote_x": np.array([(-1) ** i * (i % 2) for i in range(n)], dtype=int),
        "strength": [-0.5 + i / 10 if i != 3 else np.nan for i in range(n)],
        "flag": [bool(i % 2) for i in range(n)],
    })


def assert_safe(raw: bytes, frame: pd.DataFrame) -> None:
    """Same rows and columns through pandas and the csv module; no live formula in any text cell;
    every text equal to the original, or to the original with one leading quote when it needed one."""
    text = raw.decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == len(frame) + 1
    assert all(len(r) == frame.shape[1] for r in rows)
    df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    assert df.shape == frame.shape
    assert df.values.tolist() == [r for r in rows[1:]]
    for cell in [c for r in rows for c in r]:
        assert not (cell.startswith(LIVE) and not is_number(cell)), repr(cell)
    for j, col in enumerate(frame.columns):
        for i, orig in enumerate(frame.iloc[:, j]):
            if isinstance(orig, str):
                want = "'" + orig if orig.startswith(safecsv.FORMULA_START) else orig
                assert rows[i + 1][j] == want, (col, i)
    assert rows[0][list(frame.columns).index("=cmd|' /C calc'!A0")] == "'=cmd|' /C calc'!A0"


def test_plain_pandas_csv_splits_a_lone_cr_the_bug_this_guards_against():
    # the old writer: minimal quoting, '\n' line ends: a lone CR is not quoted, the record splits
    frame = pd.DataFrame({"annotator": [HOSTILE[0]], "n": [1]})
    old = frame.to_csv(index=False, lineterminator="\n")
    assert len(list(csv.reader(io.StringIO(old, newline="")))) == 3  # header + 2 records
    assert list(csv.reader(io.StringIO(old, newline="")))[2][0].startswith("=cmd")


def test_csv_bytes_hostile_frame():
    frame = hostile_frame()
    raw = safecsv.csv_bytes(frame)
    assert_safe(raw, frame)
    # numbers stay numbers: negative votes and floats are not quoted or prefixed
    df = pd.read_csv(io.BytesIO(raw))
    assert df["vote_x"].tolist() == frame["vote_x"].tolist()
    assert np.allclose(df["strength"], frame["strength"], equal_nan=True)
    assert df["flag"].tolist() == frame["flag"].tolist()


def test_report_writers_delegate_to_safecsv():
    frame = hostile_frame()
    assert R.safe_csv(frame) == safecsv.csv_bytes(frame)
    assert R.neutralise_cell("-x") == "'-x" and R.neutralise_cell(-1) == -1
    pairs = frame[["id", "annotator", "model_a", "category", "text_a"]].assign(
        preferred=["a", "b", "tie"] * 4, prompt=HOSTILE, text_b=HOSTILE[::-1])
    votes = pd.DataFrame({"longer": frame["vote_x"], "=evil_key": -frame["vote_x"]}, index=pairs.index)
    for include_text in (False, True):
        raw = R.votes_csv(pairs, votes, include_text=include_text)
        table = R.votes_table(pairs, votes, include_text=include_text)
        assert_votes = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
        assert len(assert_votes) == len(pairs)
        rows = list(csv.reader(io.StringIO(raw.decode(), newline="")))
        assert len(rows) == len(pairs) + 1
        for cell in [c for r in rows for c in r]:
            assert not (cell.startswith(LIVE) and not is_number(cell)), repr(cell)
        assert rows[0][list(table.columns).index("vote_=evil_key")] == "vote_=evil_key"


@pytest.mark.parametrize("value", ["=1", "\r", "\r\n", "\n", "a\rb", "-", "@"])
def test_single_cell_round_trip(value):
    raw = safecsv.csv_bytes(pd.DataFrame({"c": [value, "ok"]}))
    rows = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    assert rows[1:] == [["'" + value if value.startswith(safecsv.FORMULA_START) else value], ["ok"]]


def test_write_csv(tmp_path):
    frame = hostile_frame()
    path = safecsv.write_csv(frame, tmp_path / "x.csv")
    assert_safe(path.read_bytes(), frame)
