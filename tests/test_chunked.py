"""The streamed audit statistics equal the in-memory ones on real shared data (Parquet, CSV, DataFrame)."""

from __future__ import annotations

import pandas as pd
import pytest

from icai_core import judges
from icai_core.chunked import Counts, chunk_counts, chunked_principle_stats, iter_pair_chunks
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
