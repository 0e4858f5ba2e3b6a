"""Hostile and malformed files, generated here, one class at a time (issue 11, items 1, 4, 5, 9, 11, 13).

For every class, `icai audit FILE` (through `icai_core.cli.main`) either exits with code 2 and a
one-paragraph message naming the file, row and column, with no traceback; or it loads every row
with every text intact. The hostile content is built from REAL rows of the shared data set and
the expectations come from those rows (read by pandas), not from the loader.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import tracemalloc
import zlib
from pathlib import Path

import pandas as pd
import pytest

from icai_core.cli import main
from icai_core.data import DataError, load_pairs
from icai_core.redteam import PromptSetError, load_prompts
from tests.support.hostile import COLS, LIVE, offline_env_fixture, rows_fixture  # noqa: F401
from ui import intake as I

API_WORDS = ("fmt=", "ColumnMapping", "load_pairs(", "ties=", "max_bytes")


def audit(path, tmp_path, capsys) -> tuple[int, str, str]:
    out = tmp_path / "out"
    rc = main(["audit", str(path), "--out", str(out), "--no-embeddings", "--cache-dir", str(tmp_path / "cache")])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_refused(path, tmp_path, capsys, row: int | None, column: str | None, what: str) -> str:
    rc, _, err = audit(path, tmp_path, capsys)
    assert rc == 2, err
    msg = err.strip()
    assert "Traceback" not in err and "\n" not in msg, err  # one paragraph
    assert msg.startswith(f"error: {path.name}"), msg
    if row is not None:
        assert f", row {row}" in msg, msg
    if column is not None:
        assert f"column '{column}'" in msg, msg
    assert what in msg, msg
    assert not list((tmp_path / "out").glob("*.csv"))  # nothing written for a refused file
    # the same file uploaded in the app gets the same diagnosis, in words for a web user
    up = I.handle_upload(path.name, path.read_bytes())
    assert not up.ok and what in up.error and not any(w in up.error for w in API_WORDS), up.error
    return msg


def conv(user: str, reply: str) -> str:
    return json.dumps([{"role": "user", "content": user}, {"role": "assistant", "content": reply}])


DEEP = "[" * 5000 + "]" * 5000  # far deeper than the interpreter's recursion limit


# --------------------------------------------------------------------------- item 4: JSON that is not a DataError


def test_whole_file_nested_too_deeply(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert_refused(path, tmp_path, capsys, 1, None, "nested too deeply")


@pytest.mark.parametrize("depth", [150, 900, 5000])  # 900 parses, then broke str()/pickle later
@pytest.mark.parametrize("ext", ["json", "jsonl"])
def test_one_field_nested_too_deeply(rows, tmp_path, capsys, ext, depth):
    recs = rows[COLS].to_dict("records")
    lines = [json.dumps(r) for r in recs[:3]]
    lines[2] = lines[2].replace(json.dumps(recs[2]["text_a"]), "[" * depth + "]" * depth, 1)
    path = tmp_path / f"field.{ext}"
    path.write_text(("[" + ", ".join(lines) + "]") if ext == "json" else "\n".join(lines))
    assert_refused(path, tmp_path, capsys, 3, "text_a", "nested too deeply")


def test_nesting_of_real_data_depth_loads(rows, tmp_path):
    # a metadata field nested 90 levels (far more than any real export) is kept as it is
    recs = rows[COLS].head(3).to_dict("records")
    nested: list = [1]
    for _ in range(89):
        nested = [nested]
    recs[1]["extra"] = nested
    path = tmp_path / "nested_ok.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs))
    res = load_pairs(path)
    assert res.pairs.loc[1, "extra"] == nested and res.pairs["text_a"].tolist() == rows["text_a"].head(3).tolist()


def _arena(rows) -> pd.DataFrame:
    r = rows.iloc[:4]
    return pd.DataFrame({"model_a": "m1", "model_b": "m2",
                         "conversation_a": [conv(p, a) for p, a in zip(r["prompt"], r["text_a"], strict=True)],
                         "conversation_b": [conv(p, b) for p, b in zip(r["prompt"], r["text_b"], strict=True)],
                         "winner": ["model_a", "model_b", "tie", "model_a"]})


def _kaggle(rows) -> pd.DataFrame:
    r = rows.iloc[:4]
    return pd.DataFrame({"prompt": [json.dumps([p]) for p in r["prompt"]],
                         "response_a": [json.dumps([a]) for a in r["text_a"]],
                         "response_b": [json.dumps([b]) for b in r["text_b"]],
                         "winner_model_a": [1, 0, 0, 1], "winner_model_b": [0, 1, 0, 0], "winner_tie": [0, 0, 1, 0]})


def _hh(rows) -> pd.DataFrame:
    r = rows.iloc[:4]
    return pd.DataFrame({"chosen": [conv(p, a) for p, a in zip(r["prompt"], r["text_a"], strict=True)],
                         "rejected": [conv(p, b) for p, b in zip(r["prompt"], r["text_b"], strict=True)]})


@pytest.mark.parametrize(("layout", "column"), [("arena", "conversation_a"), ("kaggle", "prompt"), ("hh", "chosen")])
def test_nested_literal_in_a_csv_cell(rows, tmp_path, capsys, layout, column):
    df = {"arena": _arena, "kaggle": _kaggle, "hh": _hh}[layout](rows)
    good = tmp_path / "good.csv"
    df.to_csv(good, index=False)
    assert len(load_pairs(good).pairs) == 4  # the file is valid before the one hostile cell
    df.loc[1, column] = DEEP
    path = tmp_path / f"{layout}.csv"
    df.to_csv(path, index=False)
    assert_refused(path, tmp_path, capsys, 2, column, "nested too deeply")


@pytest.mark.parametrize(("ext", "column"), [("json", "text_b"), ("jsonl", "annotator")])
def test_lone_surrogate_escape_in_json(rows, tmp_path, capsys, ext, column):
    recs = rows[COLS].head(3).to_dict("records")
    recs[1][column] = recs[1].get(column, "rater") + "\ud800"
    text = [json.dumps(r) for r in recs]  # json.dumps writes the lone surrogate as the escape \ud800
    assert "\\ud800" in text[1]
    path = tmp_path / f"sur.{ext}"
    path.write_text(("[" + ",".join(text) + "]") if ext == "json" else "\n".join(text))
    assert_refused(path, tmp_path, capsys, 2, column, "lone surrogate")


@pytest.mark.parametrize("literal", ["json", "python"])
def test_lone_surrogate_in_an_arena_cell(rows, tmp_path, capsys, literal):
    df = _arena(rows)
    turns = [{"role": "user", "content": "hi \ud800"}, {"role": "assistant", "content": "x"}]
    df.loc[2, "conversation_b"] = json.dumps(turns) if literal == "json" else repr(turns).replace("\ud800", "\\ud800")
    path = tmp_path / f"arena_{literal}.csv"
    df.to_csv(path, index=False)
    assert_refused(path, tmp_path, capsys, 3, "conversation_b", "lone surrogate")


def test_valid_surrogate_pair_escape_loads(rows, tmp_path):
    recs = rows[COLS].head(3).to_dict("records")
    recs[1]["text_b"] += " \U0001F600"
    path = tmp_path / "emoji.json"
    path.write_text(json.dumps(recs))  # ensure_ascii: the emoji is written as \ud83d\ude00
    assert "\\ud83d\\ude00" in path.read_text()
    assert load_pairs(path).pairs["text_b"].tolist() == [r["text_b"] for r in recs]


@pytest.mark.parametrize("where", ["json", "jsonl", "arena"])
def test_integer_of_more_than_4300_digits(rows, tmp_path, capsys, where):
    if where == "arena":
        df = _arena(rows)
        df.loc[1, "conversation_a"] = df.loc[1, "conversation_a"].replace('"content": "', '"content": ' + "7" * 5000
                                                                          + ', "x": "', 1)
        path = tmp_path / "arena_int.csv"
        df.to_csv(path, index=False)
        row, col = 2, "conversation_a"
    else:
        recs = rows[COLS].head(3).to_dict("records")
        text = [json.dumps(r) for r in recs]
        text[1] = text[1][:-1] + ', "score": ' + "7" * 5000 + "}"
        path = tmp_path / f"int.{where}"
        path.write_text(("[" + ",".join(text) + "]") if where == "json" else "\n".join(text))
        row, col = 2, "score"
    assert_refused(path, tmp_path, capsys, row, col, "5,000 digits")


# --------------------------------------------------------------------------- item 5: decompression bomb


def _bomb(mb: int) -> bytes:
    co = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    chunk = b"a,b,c\n" * (1 << 18)
    return b"".join([co.compress(chunk) for _ in range(mb * (1 << 20) // len(chunk))] + [co.flush()])


def test_gzip_bomb_stops_at_the_limit(tmp_path, capsys, monkeypatch):
    limit = 8 << 20
    bomb = _bomb(256)  # 256 MB of CSV text in about 0.3 MB
    assert len(bomb) < 2 << 20
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(bomb)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            load_pairs(path, max_bytes=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "decompression was stopped" in str(err.value)
    assert peak < 2 * limit, peak  # about the limit, never the 256 MB the bomb inflates to
    monkeypatch.setenv("PRINCIPIA_MAX_BYTES", str(limit))
    assert_refused(path, tmp_path, capsys, None, None, "decompresses to more than")


def test_parquet_bomb_stops_at_the_limit(rows, tmp_path, capsys, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 4000  # 4,000 copies of a 256 kB text: 1 GB decoded, a few kB on disk
    table = pa.table({"text_a": pa.array(["y" * (1 << 18)] * n), "text_b": pa.array(["b"] * n),
                      "preferred_text": pa.array(["text_a"] * n)})
    path = tmp_path / "bomb.parquet"
    pq.write_table(table, path, compression="zstd")
    assert path.stat().st_size < 1 << 20
    monkeypatch.setenv("PRINCIPIA_MAX_BYTES", str(32 << 20))
    assert_refused(path, tmp_path, capsys, None, None, "decompression was stopped")


def test_gzip_file_within_the_limit_loads(rows, tmp_path):
    path = tmp_path / "pairs.csv.gz"
    path.write_bytes(gzip.compress(rows.to_csv(index=False).encode()))
    res = load_pairs(path, max_bytes=1 << 20)
    assert res.pairs["text_a"].tolist() == rows["text_a"].tolist()


# --------------------------------------------------------------------------- item 9: huge cells


def _with_literal_quote(text: str) -> str:
    """An unquoted field with a literal inch mark: valid for the strict reader, rejected by the fast one."""
    assert "What is the capital of the US?" in text
    return text.replace("What is the capital of the US?", 'What is the capital of the US? 12" map', 1)


def test_huge_cell_on_the_strict_path_loads_through_the_cli(rows, tmp_path, capsys):
    big = rows.copy()
    big.loc[3, "text_a"] = "word " * 40_000  # 200 kB, over the csv module's default 128 kB field limit
    path = tmp_path / "strict_big.csv"
    path.write_text(_with_literal_quote(big.to_csv(index=False)))
    rc, out, err = audit(path, tmp_path, capsys)
    assert rc == 0, err
    assert "30 rows read, 30 kept" in err
    votes = pd.read_csv(tmp_path / "out" / "votes.csv", dtype=str, keep_default_na=False)
    assert votes["id"].tolist() == rows["id"].tolist()
    pairs = load_pairs(path).pairs
    assert pairs["text_a"].tolist() == big["text_a"].tolist()
    assert pairs.loc[0, "prompt"].endswith('12" map')


@pytest.mark.parametrize("path_kind", ["fast", "strict"])
def test_cell_over_32_mb_loads(rows, tmp_path, path_kind):
    big = rows.copy()
    big.loc[5, "text_b"] = "0123456789abcdef" * (33 * (1 << 20) // 16)
    text = big.to_csv(index=False)
    if path_kind == "strict":
        text = _with_literal_quote(text)
    res = load_pairs(text.encode(), name="huge.csv")
    assert len(res.pairs) == 30
    assert res.pairs.loc[5, "text_b"] == big.loc[5, "text_b"]
    assert res.pairs["text_a"].tolist() == rows["text_a"].tolist()


def test_real_quoting_error_still_gets_quoting_advice(rows, tmp_path, capsys):
    path = tmp_path / "unclosed.csv"
    path.write_text(rows.to_csv(index=False) + 'x,"never closed,a,b,text_a\n')
    msg = assert_refused(path, tmp_path, capsys, 31, None, "is never closed")
    assert "double quote" in msg


# --------------------------------------------------------------------------- item 11: double BOM


@pytest.mark.parametrize("first", ["id", "prompt"])
def test_double_bom_keeps_the_first_column(rows, tmp_path, capsys, first):
    order = [first] + [c for c in COLS if c != first]
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" * 2 + rows[order].to_csv(index=False).encode())
    res = load_pairs(path)
    assert res.pairs["id"].tolist() == rows["id"].tolist()  # not regenerated as row-1, row-2, ...
    assert res.pairs["prompt"].tolist() == rows["prompt"].tolist()  # not emptied
    assert not any(c.startswith("\ufeff") for c in res.pairs.columns)
    assert any("2 UTF-8 byte-order marks" in w for w in res.report.warnings)
    if first == "id":
        rc, _, err = audit(path, tmp_path, capsys)
        assert rc == 0, err
        assert "byte-order marks" in err
        votes = pd.read_csv(tmp_path / "out" / "votes.csv", dtype=str, keep_default_na=False)
        assert votes["id"].tolist() == rows["id"].tolist()


def test_double_bom_in_json(rows, tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" * 3 + json.dumps(rows[COLS].to_dict("records")).encode())
    assert load_pairs(path).pairs["id"].tolist() == rows["id"].tolist()


# --------------------------------------------------------------------------- item 1: CSV injection through the CLI

HOSTILE = ["rater1\r=cmd|' /C calc'!A0", "=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "a\r\nb", "c\nd"]


def test_cli_csv_outputs_quote_line_breaks_and_neutralise_every_column(rows, tmp_path, capsys):
    df = rows[COLS].copy()
    n = len(df)
    df["id"] = [HOSTILE[i % len(HOSTILE)] + f"#{i}" for i in range(n)]
    df["annotator"] = [HOSTILE[(i + 1) % len(HOSTILE)] for i in range(n)]
    df["model_a"] = [HOSTILE[(i + 2) % len(HOSTILE)] for i in range(n)]
    df["category"] = [HOSTILE[(i + 3) % len(HOSTILE)] for i in range(n)]
    path = tmp_path / "hostile_meta.csv"
    df.to_csv(path, index=False, quoting=csv.QUOTE_ALL)
    loaded = load_pairs(path).pairs
    for col in ("id", "annotator", "model_a", "category"):
        assert loaded[col].tolist() == df[col].tolist()  # read back intact, line breaks included
    rc, _, err = audit(path, tmp_path, capsys)
    assert rc == 0, err
    raw = (tmp_path / "out" / "votes.csv").read_bytes()
    records = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    assert len(records) == n + 1
    votes = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
    assert len(votes) == n
    for col in ("id", "annotator", "model_a", "category"):
        want = ["'" + v if v.startswith(LIVE + ("\n",)) else v for v in df[col]]
        assert votes[col].tolist() == want, col
    for csv_file in sorted((tmp_path / "out").glob("*.csv")):
        recs = list(csv.reader(io.StringIO(csv_file.read_text(), newline="")))
        assert len({len(r) for r in recs}) == 1, csv_file.name
        for cell in (c for r in recs for c in r):
            if cell.startswith(LIVE):
                float(cell)  # only numbers may start with '-' or '+'


# --------------------------------------------------------------------------- item 13: uploads in the app


def test_every_offered_upload_type_loads(rows):
    text = rows.to_csv(index=False)
    payload = {
        "csv": text.encode(), "txt": text.encode(), "tsv": rows.to_csv(index=False, sep="\t").encode(),
        "tab": rows.to_csv(index=False, sep="\t").encode(), "gz": gzip.compress(text.encode()),
        "json": rows.to_json(orient="records").encode(), "jsonl": rows.to_json(orient="records", lines=True).encode(),
        "ndjson": rows.to_json(orient="records", lines=True).encode(),
    }
    buf = io.BytesIO()
    rows.to_parquet(buf)
    payload["parquet"] = payload["pq"] = buf.getvalue()
    assert set(I.UPLOAD_TYPES) == set(payload)  # nothing offered that is not tested here
    for ext in I.UPLOAD_TYPES:
        out = I.handle_upload(f"pairs.{ext}", payload[ext])
        assert out.ok, (ext, out.error)
        assert out.result.pairs["text_a"].tolist() == rows["text_a"].tolist(), ext
        assert I.raw_columns(f"pairs.{ext}", payload[ext])[:3] == list(rows.columns[:3]), ext
    txt = I.handle_upload("pairs.txt", payload["txt"]).result
    assert "the .txt file was read as CSV (comma-separated), judging by its content" in txt.report.warnings


def test_web_messages_have_no_api_advice(rows):
    ren = rows.rename(columns={"text_a": "left", "text_b": "right", "preferred_text": "verdict"})
    both = rows.assign(chosen=rows["text_a"], rejected=rows["text_b"])
    bad_label = rows.copy()
    bad_label.loc[2, "preferred_text"] = "maybe"
    ties = rows.assign(preferred_text="tie")
    cases = {
        "renamed.csv": (ren.to_csv(index=False).encode(), {}),
        "ambiguous.csv": (both.to_csv(index=False).encode(), {}),
        "label.csv": (bad_label.to_csv(index=False).encode(), {}),
        "ties.csv": (ties.to_csv(index=False).encode(), {"ties": "exclude"}),
        "sheet.xlsx": (b"PK\x03\x04", {}),
        "utf16.csv": (rows.to_csv(index=False).encode("utf-16"), {}),
    }
    for name, (data, kw) in cases.items():
        out = I.handle_upload(name, data, **kw)
        assert not out.ok and out.error.startswith(name), name
        assert not any(w in out.error for w in API_WORDS), (name, out.error)
        with pytest.raises(DataError) as err:
            load_pairs(data, name=name, **kw)
        assert out.error == err.value.web_text()
    # the mapping form's own failure is phrased for the web too
    out = I.handle_upload("renamed.csv", ren.to_csv(index=False).encode(),
                          mapping=I.mapping_from_choices({"text_a": "left", "text_b": "right", "preferred": "verdict"}))
    assert out.ok and out.result.pairs["text_a"].tolist() == rows["text_a"].tolist()


def test_too_large_upload_web_text(rows, monkeypatch):
    monkeypatch.setenv("PRINCIPIA_MAX_BYTES", "1000")
    out = I.handle_upload("big.csv", rows.to_csv(index=False).encode())
    assert "more than the 1,000 bytes" in out.error and not any(w in out.error for w in API_WORDS)


# --------------------------------------------------------------------------- red-team prompt sets: same readers


def test_prompt_sets_use_the_intake_readers(tmp_path):
    (tmp_path / "deep.json").write_text('[{"prompt": "ok"}, {"prompt": ' + DEEP + "}]")
    with pytest.raises(PromptSetError) as err:
        load_prompts(tmp_path / "deep.json")
    assert isinstance(err.value, ValueError) and err.value.row == 2 and err.value.column == "prompt"
    (tmp_path / "sur.jsonl").write_text('{"prompt": "ok"}\n{"prompt": "\\udc00"}\n')
    with pytest.raises(PromptSetError, match="lone surrogate") as err:
        load_prompts(tmp_path / "sur.jsonl")
    assert err.value.row == 2
    (tmp_path / "p.txt.gz").write_bytes(gzip.compress("\ufeff\ufeffHow do I pick a lock?\nWrite an insult.\n".encode()))
    assert load_prompts(tmp_path / "p.txt.gz") == ["How do I pick a lock?", "Write an insult."]
    big = "x" * 200_000
    (tmp_path / "big.csv").write_text(f'prompt,n\n{big},1\nsecond 12" prompt,2\n')
    assert load_prompts(tmp_path / "big.csv") == [big, 'second 12" prompt']


def test_lone_surrogate_in_a_column_name(rows, tmp_path, capsys):
    recs = rows[COLS].head(3).to_dict("records")
    recs[1]["rater\udfff"] = "x"
    path = tmp_path / "surkey.json"
    path.write_text(json.dumps(recs))
    msg = assert_refused(path, tmp_path, capsys, 2, None, "lone surrogate")
    assert "rater\\udfff" in msg  # shown as its escape: the message itself is valid UTF-8
    msg.encode("utf-8")


@pytest.mark.parametrize("damage", ["truncated", "not_gzip"])
def test_broken_gzip(rows, tmp_path, capsys, damage):
    blob = gzip.compress(rows.to_csv(index=False).encode())
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else b"plain text, not gzip")
    assert_refused(path, tmp_path, capsys, None, None, "cannot be decompressed as gzip")


def test_prompt_set_messages_name_no_pair_api(tmp_path, monkeypatch):
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("prompt\n")
    (tmp_path / "big.txt").write_text("x\n" * 600)
    monkeypatch.setenv("PRINCIPIA_MAX_BYTES", "1000")
    for name in ("empty.csv", "header.csv", "big.txt"):
        with pytest.raises(PromptSetError) as err:
            load_prompts(tmp_path / name)
        text = str(err.value)
        assert text.startswith(name) and not any(w in text for w in API_WORDS + ("pair",)), text


# --------------------------------------------------------------------------- values json.loads accepts silently


def _records_file(rows, tmp_path, ext: str, edit) -> Path:
    """Three real records as JSON or JSON Lines; `edit(text of record 2)` makes it hostile."""
    text = [json.dumps(r) for r in rows[COLS].head(3).to_dict("records")]
    text[1] = edit(text[1])
    path = tmp_path / f"hostile.{ext}"
    path.write_text(("[" + ",\n".join(text) + "]") if ext == "json" else "\n".join(text))
    return path


@pytest.mark.parametrize("literal", ["1e999999", "-1e999999", "NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(("ext", "field"), [("json", "id"), ("jsonl", "id"), ("json", "score"), ("jsonl", "score")])
def test_non_finite_json_number_is_refused_with_row_and_field(rows, tmp_path, capsys, literal, ext, field):
    # json.loads reads 1e999999 as inf and accepts NaN / Infinity (not JSON): the id became 'inf', a
    # NaN id "empty", a score a float that compares false with everything
    def edit(rec: str) -> str:
        if field == "id":
            return re.sub(r'"id": "[^"]*"', f'"id": {literal}', rec, count=1)
        return rec[:-1] + f', "score": {literal}}}'

    path = _records_file(rows, tmp_path, ext, edit)
    line = 2  # record 2 is on line 2 in both layouts
    col = path.read_text().splitlines()[1].index(literal) + 1
    msg = assert_refused(path, tmp_path, capsys, 2, field, f"{literal} (at line {line}, column {col})")
    assert "text in double quotes" in msg


@pytest.mark.parametrize(("hostile", "what"), [('"score": NaN, ', "NaN (at line"),
                                               ('"role": "user", ', "the key 'role' appears twice")])
def test_json_inside_a_csv_cell_gets_the_same_refusals(rows, tmp_path, capsys, hostile, what):
    df = _arena(rows)
    df.loc[2, "conversation_b"] = df.loc[2, "conversation_b"].replace('{"role": "user", ', "{" + hostile
                                                                      + '"role": "user", ', 1)
    path = tmp_path / "arena_cell.csv"
    df.to_csv(path, index=False)
    msg = assert_refused(path, tmp_path, capsys, 3, "conversation_b", what)
    up = I.handle_upload(path.name, path.read_bytes())
    assert "allow_nan" not in up.error, up.error  # no advice about Python scripts for a web user
    assert ("allow_nan=False" in msg) == ("NaN" in hostile)


def test_huge_number_written_as_text_is_kept_exactly(rows, tmp_path):
    # the way out the message offers: the same value as a JSON string loads as written
    path = _records_file(rows, tmp_path, "json", lambda rec: re.sub(r'"id": "[^"]*"', '"id": "1e999999"', rec, count=1))
    pairs = load_pairs(path).pairs
    assert pairs["id"].tolist() == [rows["id"][0], "1e999999", rows["id"][2]]


def test_largest_finite_numbers_still_load(rows, tmp_path):
    path = _records_file(rows, tmp_path, "jsonl", lambda rec: rec[:-1] + ', "score": -1.7976931348623157e308}')
    assert load_pairs(path).pairs["score"].tolist()[1] == -1.7976931348623157e308


@pytest.mark.parametrize("ext", ["json", "jsonl"])
@pytest.mark.parametrize(("where", "column", "key"), [("record", "prompt", "prompt"),
                                                        ("nested", "meta", "rater")])
def test_repeated_json_key_is_refused_with_row_and_key(rows, tmp_path, capsys, ext, where, column, key):
    # json.loads keeps the last of two equal keys without a word; which one the user meant is unknowable
    if where == "record":
        edit = lambda rec: rec[:-1] + ', "prompt": "a second prompt"}'  # noqa: E731
    else:
        edit = lambda rec: rec[:-1] + ', "meta": {"rater": "r1", "x": 1, "rater": "r2"}}'  # noqa: E731
    path = _records_file(rows, tmp_path, ext, edit)
    second = path.read_text().splitlines()[1].rindex(f'"{key}"') + 1
    assert_refused(path, tmp_path, capsys, 2, column, f"the key '{key}' appears twice in one JSON object "
                   f"(at line 2, column {second})")


def test_repeated_column_in_a_json_object_of_columns(rows, tmp_path, capsys):
    cols = {c: rows[c].head(3).tolist() for c in COLS}
    text = json.dumps(cols)[:-1] + ', "text_a": ' + json.dumps(rows["text_b"].head(3).tolist()) + "}"
    path = tmp_path / "columns.json"
    path.write_text(text)
    assert_refused(path, tmp_path, capsys, None, "text_a", "the key 'text_a' appears twice")


def test_equal_keys_in_different_objects_load(rows, tmp_path):
    path = _records_file(rows, tmp_path, "json",
                         lambda rec: rec[:-1] + ', "meta": {"rater": "r1", "sub": {"rater": "r2"}}}')
    assert len(load_pairs(path).pairs) == 3


# --------------------------------------------------------------------------- compressed twice


def test_gzip_inside_gzip_is_named_as_such(rows, tmp_path, capsys):
    path = tmp_path / "pairs.csv.gz"
    path.write_bytes(gzip.compress(gzip.compress(rows.to_csv(index=False).encode())))
    msg = assert_refused(path, tmp_path, capsys, None, None, "the file is compressed twice")
    assert "gunzip" in msg and "NUL" not in msg and "UTF-16" not in msg


@pytest.mark.parametrize(("kind", "what"), [("gzip", "gzip-compressed data"), ("bz2", "bzip2-compressed data"),
                                            ("xz", "xz-compressed data"), ("zip", "a ZIP archive")])
def test_compressed_file_under_a_text_name(rows, tmp_path, capsys, kind, what):
    import bz2
    import lzma
    import zipfile

    data = rows.to_csv(index=False).encode()
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("pairs.csv", data)
        blob = buf.getvalue()
    else:
        blob = {"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind](data)
    path = tmp_path / "pairs.csv"
    path.write_bytes(blob)
    msg = assert_refused(path, tmp_path, capsys, None, None, f"the file is {what}")
    assert "not a data file" in msg and "NUL" not in msg


def test_tar_gz_is_named_as_an_archive(rows, tmp_path, capsys):
    import tarfile

    data = rows.to_csv(index=False).encode()
    path = tmp_path / "pairs.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("pairs.csv")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    msg = assert_refused(path, tmp_path, capsys, None, None, "is a tar archive")
    assert "tar -xzf" in msg and "NUL" not in msg


def test_csv_whose_header_starts_like_bzip2_magic_loads(rows, tmp_path):
    df = rows[COLS].rename(columns={"id": "BZh9"})
    path = tmp_path / "bzh.csv"
    df.to_csv(path, index=False)
    assert load_pairs(path).pairs["text_a"].tolist() == rows["text_a"].tolist()


# --------------------------------------------------------------------------- TSV: no quoting, text kept exactly


QUOTED = ['"quoted from the start', 'ends with a quote"', '"fully quoted"', 'an inch mark: 12" map',
          '"say ""x"""', '"', '""']


def _verbatim_tsv(df: pd.DataFrame) -> str:
    """TSV as IANA defines it: fields joined by tabs, rows by line ends, nothing quoted or escaped."""
    assert not df.map(lambda v: "\t" in v or "\n" in v or "\r" in v).any().any()
    return "\n".join("\t".join(r) for r in [list(df.columns), *df.astype(str).values.tolist()]) + "\n"


def _flat(rows: pd.DataFrame) -> pd.DataFrame:
    df = rows[COLS].copy()
    for c in ("prompt", "text_a", "text_b"):
        df[c] = df[c].str.replace(r"\s+", " ", regex=True)
    return df


@pytest.mark.parametrize("column", ["prompt", "text_a", "id"])
def test_tsv_field_starting_with_a_quote_round_trips(rows, tmp_path, capsys, column):
    df = _flat(rows)
    df[column] = [QUOTED[i % len(QUOTED)] + (f" #{i}" if i % 3 == 0 else "") + ("" if column != "id" else f"-{i}")
                  for i in range(len(df))]
    path = tmp_path / "quotes.tsv"
    path.write_text(_verbatim_tsv(df), encoding="utf-8")
    # the independent reader: pandas told that TSV has no quoting
    ref = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    assert ref[column].tolist() == df[column].tolist()
    res = load_pairs(path)
    assert res.pairs[column].tolist() == df[column].tolist()
    for c in ("prompt", "text_a", "text_b"):
        assert res.pairs[c].tolist() == ref[c].tolist()
    rc, _, err = audit(path, tmp_path, capsys)
    assert rc == 0, err


def test_tsv_written_with_csv_quoting_is_read_with_it_and_says_so(rows, tmp_path):
    # pandas' to_csv(sep='\t') quotes a field with a quote in it (doubling the quote): that file
    # is read with CSV quoting, and the report says so
    df = _flat(rows)
    df.loc[4, "prompt"] = 'say "x"'
    path = tmp_path / "pandas.tsv"
    df.to_csv(path, sep="\t", index=False)
    assert '"say ""x"""' in path.read_text()
    res = load_pairs(path)
    assert res.pairs["prompt"].tolist() == df["prompt"].tolist()
    assert any("quotes fields the way CSV does" in w and "row 5, column 'prompt'" in w for w in res.report.warnings)


def test_tsv_with_a_line_break_in_an_unquoted_field(rows, tmp_path, capsys):
    df = _flat(rows)
    text = _verbatim_tsv(df).replace(df.loc[6, "text_b"], df.loc[6, "text_b"][:10] + "\n" + df.loc[6, "text_b"][10:])
    path = tmp_path / "broken.tsv"
    path.write_text(text, encoding="utf-8")
    msg = assert_refused(path, tmp_path, capsys, 7, None, "this row (line 8) has")
    assert "TSV has no quoting" in msg
