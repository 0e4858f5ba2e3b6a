"""TSV files written by R's write.table load with the texts the R user had.

The files in tests/support/r/ were written by real R 4.2 (`make_write_table.R`, from 40 real rows of
the shared AlpacaEval file; CI has no R, so they are committed). The expected texts come from the
shared CSV read by pandas (with R's CRLF -> LF conversion on reading), not from the loader or from R
(R's own read.table keeps the backslashes of qmethod = "escape").
"""

from __future__ import annotations

import pandas as pd
import pytest

from icai_core.data import load_pairs
from icai_core.intake.errors import DataError
from icai_core.intake.tables import _r_records

R_DIR = __import__("pathlib").Path(__file__).parent / "support" / "r"
EDIT = ' with a path C:\\dir\\ and a \\"quoted\\" word'  # the R script's edit of prompt 3


@pytest.fixture(scope="module")
def expected(shared_data) -> pd.DataFrame:
    src = pd.read_csv(shared_data / "alpacaeval_human_vs_gpt4.csv", dtype=str, keep_default_na=False).head(40)
    df = src[["id", "prompt", "text_a", "text_b", "preferred_text"]].copy()
    for c in ("prompt", "text_a", "text_b"):
        df[c] = df[c].str.replace("\r\n", "\n", regex=False)
    df.loc[2, "prompt"] = df.loc[2, "prompt"] + EDIT
    return df.reset_index(drop=True)


@pytest.mark.parametrize("name, row_names, quote", [
    ("write_table_default", True, '\\"'),
    ("write_table_no_row_names", False, '\\"'),
    ("write_table_qmethod_double", True, '""'),
])
def test_r_write_table_tsv_loads_with_the_texts_r_had(expected, name, row_names, quote):
    path = R_DIR / f"{name}.tsv"
    raw = path.read_text(encoding="utf-8")
    assert raw.startswith('"id"\t"prompt"') and '\\"quoted\\"' not in expected.loc[0, "prompt"]
    res = load_pairs(path)
    got = res.pairs
    assert len(got) == 40
    for c in ("id", "prompt", "text_a", "text_b"):
        assert got[c].tolist() == expected[c].tolist(), c
    # a quote inside the texts (the shared prompts hold many) and the backslash edit survive exactly
    assert sum('"' in p for p in got["prompt"]) >= 5
    assert got.loc[2, "prompt"].endswith(EDIT)
    note = next(w for w in res.report.warnings if "R's write.table" in w)
    assert f"written as {quote}" in note
    assert ("row names" in note) == row_names
    assert "1 missing value written as a bare NA (read as missing)" in note
    if row_names:
        assert got["row_names"].tolist() == [str(i) for i in range(1, 41)]
    # the numeric column: R's bare NA is missing, numbers as R wrote them
    assert pd.isna(got.loc[6, "score"]) and got.loc[7, "score"] == "4" and got.loc[0, "score"] == "0.5"


def test_a_missing_response_in_an_r_file_is_refused_with_its_row_and_column():
    with pytest.raises(DataError) as err:
        load_pairs(R_DIR / "write_table_missing_text.tsv")
    msg = str(err.value)
    assert "row 5" in msg and "text_b" in msg and "empty (null)" in msg


@pytest.mark.parametrize("text, escape, want", [
    ('"a"\t"b"\n"x \\" y"\tNA\n', True, [["a", "b"], ['x " y', None]]),
    ('"a"\t"b"\r\n"x "" y"\t"NA"\r\n', False, [["a", "b"], ['x " y', "NA"]]),  # a quoted NA is text
    ('"a"\t"b"\n\n"1"\t"l1\nl2"\t3\n', True, [["a", "b"], ["1", "l1\nl2", "3"]]),  # blank line, row name
    ('"a"\t"b"\n"x"y"\t"z"\n', True, None),  # a stray quote: not R's layout
    ('"a"\t"b"\n"never closed\n', True, None),
])
def test_r_record_reader_on_small_cases(text, escape, want):
    got = _r_records(text, escape)
    assert (got[0] if got is not None else None) == want


def test_r_record_reader_names_the_lines_of_each_record():
    _, spans = _r_records('"a"\t"b"\n"one\ntwo\r\nthree"\t1\n"x"\t2', True)
    assert spans == [(1, 1), (2, 4), (5, 5)]


def test_a_ragged_r_file_names_the_row_and_its_lines(tmp_path):
    path = tmp_path / "ragged.tsv"
    path.write_text('"prompt"\t"text_a"\t"text_b"\t"preferred"\n"p\\"1"\t"a"\t"b"\t"A"\n"p2"\t"a\nb"\t"A"\n',
                    encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_pairs(path)
    assert "row 2" in str(err.value) and "lines 3-4" in str(err.value)
