"""The Dask driver equals the single-process streamed audit exactly, on a local cluster of 2 processes.

Real shared files (several annotators, ties, pairs judged by several annotators so that the same pair
lands in different shards) are written as a folder of two Parquet files in many row groups; the
cluster judges them shard by shard and its counts, distinct pairs, per-annotator tables and pooled
stats table must be identical to `chunked.chunked_principle_stats` in one process.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

import numpy as np
import pandas as pd
import pytest

from icai_core import chunked
from icai_core.jobs import Cancelled, CancelToken
from tests.conftest import SHARED_DATA, SHARED_DATA_MISSING_REASON

needs_data = pytest.mark.skipif(SHARED_DATA is None, reason=SHARED_DATA_MISSING_REASON)
COLS = ["prompt", "text_a", "text_b", "preferred", "annotator"]


def _has_dask() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


needs_dask = pytest.mark.skipif(not _has_dask(), reason="dask distributed is not installed (pip install 'principia[dask]')")


@pytest.fixture(scope="module")
def pair_folder(tmp_path_factory):
    from icai_core.data import load_pairs

    folder = tmp_path_factory.mktemp("pairs")
    variants = load_pairs(SHARED_DATA / "alpacaeval_judge_variants.csv").pairs[COLS]
    vicuna = load_pairs(SHARED_DATA / "prd_vicuna80_human_vs_gpt4.csv").pairs[COLS].iloc[:300]
    variants.to_parquet(folder / "a_variants.parquet", row_group_size=150, index=False)
    vicuna.to_parquet(folder / "b_vicuna.parquet", row_group_size=100, index=False)
    return folder


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """2 worker processes x 1 thread; workers inherit a private PRINCIPIA_HOME."""
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    old = os.environ.get("PRINCIPIA_HOME")
    os.environ["PRINCIPIA_HOME"] = str(tmp_path_factory.mktemp("home"))
    cl = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      worker_dashboard_address=None)
    client = Client(cl)
    try:
        yield cl, client
    finally:
        client.close()
        cl.close()
        if old is None:
            os.environ.pop("PRINCIPIA_HOME", None)
        else:
            os.environ["PRINCIPIA_HOME"] = old


def _assert_counts_equal(a: chunked.Counts, b: chunked.Counts) -> None:
    assert a.keys == b.keys
    np.testing.assert_array_equal(a.n_agree, b.n_agree)
    np.testing.assert_array_equal(a.n_disagree, b.n_disagree)
    assert (a.n, a.n_ties, a.n_pairs) == (b.n, b.n_ties, b.n_pairs)
    assert a.n_distinct == b.n_distinct
    np.testing.assert_array_equal(a.pair_keys, b.pair_keys)


@needs_data
def test_plan_covers_every_row_once_from_metadata(pair_folder):
    from icai_core.distributed import plan_shards

    shards = plan_shards(pair_folder, shard_rows=250)
    # a_variants: 1,105 rows in groups of 150 -> shards of 2 groups (300 rows), last 1 group + 5 rows;
    # b_vicuna: 300 rows in groups of 100 -> one shard of 3 groups.
    assert [(os.path.basename(s.path), s.row_groups, s.first_row, s.n_rows) for s in shards] == [
        ("a_variants.parquet", (0, 1), 0, 300), ("a_variants.parquet", (2, 3), 300, 300),
        ("a_variants.parquet", (4, 5), 600, 300), ("a_variants.parquet", (6, 7), 900, 205),
        ("b_vicuna.parquet", (0, 1, 2), 0, 300),
    ]


def test_rejects_dataframes_and_csv_with_what_to_do(tmp_path):
    from icai_core.distributed import plan_shards

    df = pd.DataFrame({"text_a": ["x"], "text_b": ["y"], "preferred": ["a"]})
    with pytest.raises(ValueError, match="to_parquet"):
        plan_shards(df)
    df.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ValueError, match=r"p\.csv: a distributed audit reads Parquet"):
        plan_shards(tmp_path / "p.csv")
    df.drop(columns="preferred").to_parquet(tmp_path / "nolabel.parquet")
    with pytest.raises(ValueError, match=r"nolabel\.parquet: missing column\(s\) preferred"):
        plan_shards(tmp_path / "nolabel.parquet")
    with pytest.raises(FileNotFoundError, match="no such file"):
        plan_shards(tmp_path / "missing.parquet")


def test_import_needs_no_dask_and_call_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now raises ImportError
    mod = importlib.reload(importlib.import_module("icai_core.distributed"))
    with pytest.raises(ImportError, match=r"principia\[dask\]"):
        mod.distributed_principle_stats("nothing.parquet")


@needs_data
@needs_dask
@pytest.mark.slow
def test_cluster_equals_one_process(pair_folder, cluster):
    from icai_core.distributed import distributed_principle_stats

    _, client = cluster
    seen = []
    res = distributed_principle_stats(pair_folder, client=client, shard_rows=250, chunk_rows=120,
                                      progress=lambda done, total, msg: seen.append((done, total)))
    one = chunked.chunked_principle_stats(pair_folder, chunk_rows=1000)
    assert res.n_shards == 5 and res.workers == 2 and res.n_pairs == 1105 + 300
    # shards of 300 rows in chunks of 120: 3 chunks each, 2 for the 205-row shard
    assert res.n_chunks == 3 * 4 + 2
    pd.testing.assert_frame_equal(res.stats, one.stats)
    _assert_counts_equal(res.counts, one.counts)
    assert list(res.by_annotator) == list(one.by_annotator)  # same order of first appearance
    assert len(res.by_annotator) == 5
    for name in one.by_annotator:
        _assert_counts_equal(res.by_annotator[name], one.by_annotator[name])
    for name, table in one.stats_by_annotator("both").items():
        pd.testing.assert_frame_equal(res.stats_by_annotator("both")[name], table)
    # the same pair judged by several annotators in different shards is one distinct pair
    assert res.counts.n_distinct < res.n_pairs
    assert seen[-1] == (1405, 1405) and 1 <= len(seen) <= 5


@needs_data
@needs_dask
@pytest.mark.slow
def test_bad_label_names_file_and_rows_and_cancel_stops(pair_folder, cluster, tmp_path):
    from icai_core.distributed import distributed_principle_stats

    cl, client = cluster
    df = pd.read_parquet(pair_folder / "b_vicuna.parquet")
    df.loc[230, "preferred"] = "maybe"  # data row 231 (1-based)
    df.to_parquet(tmp_path / "bad.parquet", row_group_size=100, index=False)
    with pytest.raises(ValueError, match=r"bad\.parquet: rows 201-250 \(data rows of this file, 1-based\)"):
        distributed_principle_stats(tmp_path / "bad.parquet", address=cl.scheduler_address, shard_rows=100,
                                    chunk_rows=50)
    token = CancelToken()
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        distributed_principle_stats(pair_folder, client=client, shard_rows=100, chunk_rows=100,
                                    progress=lambda *a: token.cancel(), cancel=token)
    assert time.monotonic() - t0 < 30
    # the cluster is still usable after a cancel and a failure
    assert client.submit(sum, [1, 2]).result() == 3


@needs_data
@needs_dask
@pytest.mark.slow
def test_embedding_judge_on_workers_equals_one_process(cluster, tmp_path):
    """Each worker builds its own Embedder (its own cache under the workers' PRINCIPIA_HOME); the
    votes, hence every count, equal one process's. The one-process run goes first so that the
    session's one-time ONNX export exists before two workers look for it."""
    from icai_core import judges
    from icai_core.data import load_pairs
    from icai_core.distributed import distributed_principle_stats

    _, client = cluster
    pairs = load_pairs(SHARED_DATA / "arena_llama3_70b_human.csv").pairs[COLS].iloc[:48]
    pairs.to_parquet(tmp_path / "emb.parquet", row_group_size=12, index=False)
    one = chunked.chunked_principle_stats(tmp_path / "emb.parquet", chunk_rows=48, use_embeddings=True)
    res = distributed_principle_stats(tmp_path / "emb.parquet", client=client, use_embeddings=True, shard_rows=12,
                                      chunk_rows=12)
    assert res.n_shards == 4 and set(judges.EMBEDDING_KEYS) <= set(res.counts.keys)
    _assert_counts_equal(res.counts, one.counts)
    pd.testing.assert_frame_equal(res.stats, one.stats)
    # the workers embedded on their own: their caches are theirs, under the PRINCIPIA_HOME they inherited
    homes = set(client.run(lambda: os.environ["PRINCIPIA_HOME"]).values())
    assert len(homes) == 1 and (tmp_path / "emb.parquet").exists()
    assert os.path.exists(os.path.join(homes.pop(), "embeddings.sqlite"))
