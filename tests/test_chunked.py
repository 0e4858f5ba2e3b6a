"""The streamed audit statistics equal the in-memory ones on real shared data (Parquet, CSV, DataFrame)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from icai_core import judges
from icai_core.chunked import Counts, chunk_counts, chunked_principle_stats, iter_pair_chunks, pair_hashes
from icai_core.stats import principle_stats
from tests.conftest import SHARED_DATA, SHARED_DATA_MISSING_REASON

needs_data = pytest.mark.skipif(SHARED_DATA is None, reason=SHARED_DATA_MISSING_REASON)


@pytest.fixture(scope="module")
def real_pairs() -> pd.DataFrame:
    from icai_core.data import load_pairs

    files = ("arena_llama3_70b_human.csv", "prd_vicuna80_human_vs_gpt4.csv", "prd_lfqa_expert.csv")
    frames = [load_pairs(SHARED_DATA / f).pairs[["id", "prompt", "text_a", "text_b", "preferred"]] for f in files]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def in_memory(real_pairs) -> pd.DataFrame:
    votes = judges.compute_votes(real_pairs)
    return principle_stats(votes, real_pairs["preferred"], [judges.get_principle(k) for k in votes.columns])


@needs_data
@pytest.mark.parametrize("kind", ["dataframe", "parquet", "csv"])
def test_chunked_equals_in_memory_stats(real_pairs, in_memory, tmp_path, kind):
    assert real_pairs["preferred"].eq("tie").any() and len(real_pairs) > 2000  # ties and several chunks
    if kind == "dataframe":
        source = real_pairs
    elif kind == "parquet":
        source = tmp_path / "pairs.parquet"
        real_pairs.to_parquet(source, row_group_size=500)
    else:
        source = tmp_path / "pairs.csv"
        real_pairs.to_csv(source, index=False)
    res = chunked_principle_stats(source, chunk_rows=777)
    assert res.n_pairs == len(real_pairs) and res.n_chunks == -(-len(real_pairs) // 777)
    pd.testing.assert_frame_equal(res.stats, in_memory)


@needs_data
def test_chunks_cover_every_row_once(real_pairs, tmp_path):
    path = tmp_path / "p.parquet"
    real_pairs.to_parquet(path, row_group_size=300)
    chunks = list(iter_pair_chunks(path, chunk_rows=1000))
    assert [len(c) for c in chunks[:-1]] == [1000] * (len(chunks) - 1)
    back = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_series_equal(back["text_b"], real_pairs["text_b"].astype("str"), check_names=False)


def test_counts_add_up_and_merge_checks_keys():
    pairs = pd.DataFrame({
        "prompt": ["Say hi.", "Say hi.", "List two fruits."],
        "text_a": ["Hi!", "Hello there, friend. How are you today?", "- apple\n- pear"],
        "text_b": ["Hello there, friend. How are you today?", "Hi!", "Apples and pears."],
        "preferred": ["a", "tie", "a"],
    })
    keys = ["longer", "more_list_items"]
    c = chunk_counts(pairs, keys)
    # longer: pair 1 votes B (label A: disagree), pair 2 is a tie, pair 3 votes B ("- apple\n- pear", 14 chars,
    # vs "Apples and pears.", 17: 18% apart) -> disagree; more_list_items: pair 3 votes A (2 items vs 0) -> agree.
    assert (c.n, c.n_ties, c.n_pairs) == (2, 1, 3)
    assert c.n_agree.tolist() == [0, 1] and c.n_disagree.tolist() == [2, 0]
    merged = c.merge(chunk_counts(pairs.iloc[:1], keys))
    assert merged.n_disagree.tolist() == [3, 0] and merged.n_pairs == 4
    with pytest.raises(ValueError, match="different principles"):
        c.merge(Counts.empty(["longer"]))


def test_bad_source_messages(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("prompt,response_a,response_b\nq,a,b\n")
    with pytest.raises(ValueError, match="x.csv: missing column.*text_a, text_b, preferred"):
        chunked_principle_stats(bad)
    labels = tmp_path / "y.csv"
    labels.write_text("text_a,text_b,preferred\n" + "a,b,a\n" * 5 + "a,b,maybe\n")
    with pytest.raises(ValueError, match=r"y.csv: rows 5-6 .*'maybe'"):
        chunked_principle_stats(labels, chunk_rows=4)


# ------------------------------------------------------------------ per annotator, distinct pairs, workers, CLI
MULTI = ("alpacaeval_judge_variants.csv", "prd_vicuna80_human_vs_gpt4.csv")


@pytest.fixture(scope="module")
def multi_in_memory() -> dict:
    """The in-memory audit's per-annotator analysis (pipeline.analyse; evidence stages left out: they
    do not touch the stats) on real files where several annotators judge the same pairs."""
    from icai_core.config import RunConfig
    from icai_core.data import load_pairs
    from icai_core.pipeline import Pipeline, RunContext

    out = {}
    for f in MULTI:
        pairs = load_pairs(SHARED_DATA / f).pairs
        pipe = Pipeline.offline(RunConfig.from_flat(annotators="both", use_embeddings=False))
        pipe.reconstructors = []
        res = pipe.run(pairs, RunContext(), dataset_name=f)
        out[f] = (pairs, {name: (a.stats, a.n_pairs, len(a.rows)) for name, a in res.analyses.items()})
    return out


@needs_data
@pytest.mark.parametrize("f", MULTI)
def test_per_annotator_equals_in_memory_analysis(multi_in_memory, tmp_path, f):
    pairs, expected = multi_in_memory[f]
    assert len(expected) >= 3 and "all" in expected  # several annotators + the pooled view
    # Shuffled rows in small chunks: every pair's rows (several annotators, repeated MTurk votes) are
    # spread over different chunks, so the distinct-pair count must de-duplicate across chunks.
    shuffled = tmp_path / "shuffled.parquet"
    pairs.sample(frac=1.0, random_state=3).to_parquet(shuffled, row_group_size=400)
    for source in (SHARED_DATA / f, shuffled):  # the raw shared CSV (preferred_text) and a Parquet copy
        res = chunked_principle_stats(source, chunk_rows=173)
        tables = res.stats_by_annotator("both")
        assert list(tables) == list(expected) or set(tables) == set(expected)
        for name, (stats, n_pairs, n_rows) in expected.items():
            pd.testing.assert_frame_equal(tables[name], stats)
            assert res.n_distinct_pairs(name) == n_pairs
            counts = res.counts if name == "all" else res.by_annotator[name]
            assert counts.n_rows == n_rows
    if f.startswith("prd_vicuna80"):  # 3 MTurk votes per pair: rows and distinct pairs differ
        assert expected["human_mturk"][1:] == (480, 1440)


def test_pair_hashes_equal_an_independent_sha256():
    """The distinct-pair key is the first 8 bytes (little endian) of SHA-256 over len(prompt) | prompt |
    len(text_a) | text_a | text_b (UTF-8, 8-byte little-endian lengths), computed here from Python strings."""
    import hashlib

    pairs = pd.DataFrame({
        "prompt": ["", "ab", "a", "Grüße 🌍", "ab", "q"],
        "text_a": ["x", "c", "bc", "é", "c", "y"],
        "text_b": ["y", "", "", "ü" * 3000, "", "x"],
    }, dtype="str")

    def ref(p: str, a: str, b: str) -> int:
        pb, ab, bb = p.encode(), a.encode(), b.encode()
        d = hashlib.sha256(len(pb).to_bytes(8, "little") + pb + len(ab).to_bytes(8, "little") + ab + bb).digest()
        return int.from_bytes(d[:8], "little")

    want = np.array([ref(*r) for r in pairs.itertuples(index=False)], dtype=np.uint64)
    got = pair_hashes(pairs)
    assert got.dtype == np.uint64 and np.array_equal(got, want)
    assert got[1] == got[4] and got[1] != got[2]  # ("ab", "c") vs ("a", "bc"): the length prefix separates them
    assert np.array_equal(pair_hashes(pairs.iloc[2:]), want[2:])  # a slice (Arrow offset) of the same column
    obj = pairs.astype(object)
    obj.loc[0, "prompt"] = None  # a missing prompt hashes as ""
    assert np.array_equal(pair_hashes(obj), want)
    assert np.array_equal(pair_hashes(pairs[["text_a", "text_b"]].iloc[:1]), want[:1])  # no prompt column: ""
    assert len(pair_hashes(pairs.iloc[:0])) == 0


def test_distinct_pairs_across_chunks_exact():
    pairs = pd.DataFrame({
        "prompt": ["p1", "p1", "p2", "p1", "p2", "p3"],
        "text_a": ["x", "x", "y", "x", "y", "z"],
        "text_b": ["u", "u", "v", "u", "w", "z"],  # p2/y/v and p2/y/w are different pairs
        "preferred": ["a", "b", "a", "tie", "b", "a"],
        "annotator": ["h", "m", "h", "h", "m", "h"],
    })
    res = chunked_principle_stats(pairs, keys=["longer"], chunk_rows=2)
    assert res.n_chunks == 3 and res.annotators == ["h", "m"]
    assert (res.by_annotator["h"].n_rows, res.by_annotator["h"].n_distinct) == (4, 3)  # p1 twice
    assert (res.by_annotator["m"].n_rows, res.by_annotator["m"].n_distinct) == (2, 2)
    assert (res.counts.n_rows, res.counts.n_distinct, res.counts.n_ties) == (6, 4, 1)
    assert [v[0] for v in res.views("each")] == ["h", "m"] and res.views("pooled")[0][0] == "all"
    no_ties = chunked_principle_stats(pairs, keys=["longer"], chunk_rows=2, exclude_ties=True)
    assert (no_ties.counts.n_rows, no_ties.counts.n_ties, no_ties.by_annotator["h"].n_distinct) == (5, 0, 3)


def _assert_same_counts(one, two):
    assert two.n_chunks == one.n_chunks and two.annotators == one.annotators
    pd.testing.assert_frame_equal(two.stats, one.stats)
    for name in one.annotators:
        a, b = one.by_annotator[name], two.by_annotator[name]
        assert (a.n_agree.tolist(), a.n_disagree.tolist(), a.n, a.n_ties, a.n_rows) == \
               (b.n_agree.tolist(), b.n_disagree.tolist(), b.n, b.n_ties, b.n_rows)
        assert np.array_equal(a.pair_keys, b.pair_keys)


@needs_data
@pytest.mark.slow  # ~30 s under load: two pools of two spawned processes import the judges
def test_two_workers_identical_to_one_process(tmp_path):
    from icai_core.chunked import _parquet_layout
    from icai_core.data import load_pairs

    pairs = load_pairs(SHARED_DATA / "prd_vicuna80_human_vs_gpt4.csv").pairs
    path = tmp_path / "p.parquet"
    pairs.to_parquet(path, row_group_size=300)
    one = chunked_principle_stats(path, chunk_rows=250)
    assert one.n_chunks == 8
    # Parquet with small row groups: the workers read their own rows (units); a DataFrame: the parent
    # reads and sends each chunk. Both must be exactly the single-process result.
    assert _parquet_layout(path, 250) is not None and _parquet_layout(pairs, 250) is None
    _assert_same_counts(one, chunked_principle_stats(path, chunk_rows=250, workers=2))
    _assert_same_counts(one, chunked_principle_stats(pairs, chunk_rows=250, workers=2))


@needs_data
def test_work_units_read_exactly_the_chunks_of_one_reader(tmp_path):
    """The rows each worker reads itself (`_plan_units` + `_read_rows`) are, unit after unit, exactly
    the chunks `iter_pair_chunks` yields: same boundaries (across row groups and files), same texts."""
    from icai_core.chunked import _as_text_frame, _parquet_layout, _plan_units, _read_rows

    folder = tmp_path / "parts"
    folder.mkdir()
    pairs = pd.read_csv(SHARED_DATA / "arena_llama3_70b_human.csv", keep_default_na=False)
    pairs.iloc[:1100].to_parquet(folder / "a.parquet", row_group_size=160)  # 160 * 6 + 140
    pairs.iloc[1100:].to_parquet(folder / "b.parquet", row_group_size=97)
    for chunk_rows, workers in ((100, 2), (160, 3), (33, 2)):
        layout = _parquet_layout(folder, chunk_rows)
        assert layout is not None and layout.n_rows == len(pairs)
        units = _plan_units(layout, chunk_rows, workers)
        assert units[0][0] == 0 and units[-1][1] == len(pairs) and len(units) > 2 * workers
        assert all(u[1] == v[0] and u[0] % chunk_rows == 0 for u, v in zip(units, units[1:], strict=False))
        got = [_as_text_frame(t) for a, b in units for t in _read_rows(layout, a, b, chunk_rows)]
        want = list(iter_pair_chunks(folder, chunk_rows))
        assert [len(c) for c in got] == [len(c) for c in want]
        for g, w in zip(got, want, strict=True):
            pd.testing.assert_frame_equal(g, w)
    assert _parquet_layout(folder, 10) is None  # row groups of 160 rows > 8 chunks of 10: the parent reads


def test_bad_labels_in_a_work_unit_name_the_source_rows(tmp_path):
    """A worker's error names the chunk's rows of the source and survives the trip between processes."""
    import pickle
    import threading

    from icai_core.chunked import _W, _ChunkError, _parquet_layout, _worker_init, _worker_unit

    path = tmp_path / "y.parquet"
    pd.DataFrame({"text_a": ["a"] * 7, "text_b": ["b"] * 7,
                  "preferred": ["a", "b", "tie", "a", "b", "maybe", "a"]}).to_parquet(path, row_group_size=3)
    layout = _parquet_layout(path, 2)
    _worker_init(threading.Event(), None)
    try:
        assert _worker_unit(layout, 0, 4, 2, ["longer"], False)[0] == 2
        with pytest.raises(_ChunkError) as err:
            _worker_unit(layout, 4, 7, 2, ["longer"], False)
    finally:
        _W.clear()
    back = pickle.loads(pickle.dumps(err.value))
    assert (back.first_row, back.n_rows) == (4, 2) and "'maybe'" in back.message


@needs_data
@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2: ~15 s of process start
def test_cancel_within_two_seconds(tmp_path, workers):
    import time

    from icai_core.jobs import Cancelled, CancelToken

    path = tmp_path / "p.parquet"
    # Row groups of 400 rows: with 2 workers they read their own rows (the path Parquet files take).
    pd.read_csv(SHARED_DATA / "arena_llama3_70b_human.csv", keep_default_na=False).to_parquet(path, row_group_size=400)
    token, when = CancelToken(), {}

    def progress(done, total, msg):
        if "t" not in when:
            when["t"] = time.perf_counter()
            token.cancel()

    with pytest.raises(Cancelled):
        chunked_principle_stats(path, chunk_rows=200, workers=workers, progress=progress, cancel=token)
    assert "t" in when and time.perf_counter() - when["t"] < 2.0


@needs_data
def test_parquet_reader_holds_about_one_row_group(tmp_path):
    """pyarrow's default pre_buffer keeps the bytes of every row group read until the file is closed
    (the 1M run's creep: +74 MB per 50,000-pair row group); the reader must hold about one row group,
    not the file. Checked on the Arrow pool (measured: ~0.8 MB held here, 6.2 MB with pre_buffer)."""
    import statistics

    import pyarrow as pa

    cols = ["prompt", "text_a", "text_b", "preferred_text"]
    files = ("hh_rlhf_harmless_test.csv", "arena_llama3_70b_human.csv", "alpacaeval1_gpt4_judge.csv")
    pairs = pd.concat([pd.read_csv(SHARED_DATA / f, keep_default_na=False)[cols] for f in files])  # distinct texts
    path = tmp_path / "many.parquet"
    pairs.to_parquet(path, row_group_size=300)  # 18 row groups
    size = path.stat().st_size
    base = pa.total_allocated_bytes()
    held = []
    for chunk in iter_pair_chunks(path, chunk_rows=150):
        del chunk
        held.append(pa.total_allocated_bytes() - base)
    assert len(held) == -(-len(pairs) // 150)
    assert statistics.median(held) < size / 3 and held[-1] < size / 3, ([round(h / 1e6, 1) for h in held], size)


@needs_data
def test_cli_stream_writes_the_in_memory_stats(multi_in_memory, tmp_path, capsys):
    import json

    from icai_core.cli import main

    f = "alpacaeval_judge_variants.csv"
    _, expected = multi_in_memory[f]
    out = tmp_path / "out"
    rc = main(["audit", str(SHARED_DATA / f), "--stream", "--no-embeddings", "--annotators", "both",
               "--chunk-rows", "400", "--workers", "1", "--out", str(out), "--cache-dir", str(tmp_path / "home")])
    assert rc == 0, capsys.readouterr().err
    got = pd.read_csv(out / "principle_stats.csv", keep_default_na=False)
    want = pd.concat([s.assign(annotator=name) for name, (s, _, _) in expected.items()], ignore_index=True)
    assert list(got.columns) == list(want.columns)
    assert got["annotator"].tolist() == want["annotator"].tolist() and got["key"].tolist() == want["key"].tolist()
    for c in ("n", "n_ties", "n_agree", "n_disagree"):
        assert got[c].tolist() == want[c].tolist()
    np.testing.assert_allclose(got["strength"].to_numpy(float), want["strength"].to_numpy(float), rtol=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "streamed_audit" and "constitution" in " ".join(summary["does_not_contain"])
    assert {k: v["n_pairs"] for k, v in summary["annotators"].items()} == {k: v[1] for k, v in expected.items()}
    js = json.loads((out / "principle_stats.json").read_text())
    assert js["streamed"] is True and set(js["by_annotator"]) == set(expected)


def test_cli_stream_bad_input_exits_2_with_one_paragraph(tmp_path, capsys):
    from icai_core.cli import main

    bad = tmp_path / "votes.csv"
    bad.write_text("question,response_a,response_b,winner\nq,a,b,model_a\n")
    rc = main(["audit", str(bad), "--stream", "--no-embeddings", "--out", str(tmp_path / "o"),
               "--cache-dir", str(tmp_path / "home")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "votes.csv: missing column(s) text_a, text_b, preferred" in err and "without --stream" in err
    assert main(["audit", str(tmp_path / "nope.csv"), "--stream", "--out", str(tmp_path / "o")]) == 2
    assert "file not found" in capsys.readouterr().err
