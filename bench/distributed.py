"""Throughput per core of the distributed streamed audit (Dask), on distinct pairs.

    python bench/distributed.py --pairs 50000 --workers 1 2            # local clusters of 1, then 2 workers
    python bench/distributed.py --parquet /shared/pairs/ --address tcp://scheduler:8786   # a real cluster

The pairs come from `bench.synth.write_parquet` (real shared texts recombined so that every prompt
and response is distinct: the judges work per distinct text, so replicated rows would measure a
cache), written in row groups of `--row-group` rows, which are also the shards. For each cluster the
bench measures the wall time of `distributed_principle_stats` (cluster start excluded, stated apart)
and the CPU seconds it cost: the workers' own CPU time (psutil, in each worker process, before and
after) plus this process (client, scheduler and nannies of a local cluster). Pairs per CPU-second is
the figure that scales: a cluster of N such cores does about N times that, less the driver.
A single-process `chunked.chunked_principle_stats` run on the same file is the baseline
(`--no-baseline` skips it). Every run is checked to give the same stats table.

With `--address`, `--parquet` must be a path (or URI) that every worker can open; the pairs are not
generated. The last line printed is one JSON object: pairs, distinct_texts, row_group, embeddings,
load_avg (1-minute, before and after), runs: [{engine, workers, start_s, wall_s, cpu_s,
worker_cpu_s, pairs_per_s, pairs_per_cpu_s}].
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# `python bench/distributed.py` puts bench/ first on sys.path, where this file would shadow the
# `distributed` package itself: drop that entry, put the repository root instead.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _worker_cpu() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def _cluster_cpu(client) -> float:
    return sum(client.run(_worker_cpu).values())


def _distinct_texts(path) -> int | None:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        t = pq.read_table(path, columns=["prompt", "text_a", "text_b"])
        return len(pc.unique(pa.chunked_array([c for name in ("prompt", "text_a", "text_b")
                                               for c in t.column(name).chunks])))
    except Exception:  # noqa: BLE001 - a remote URI or another layout: not counted, said so (null)
        return None


def _run_cluster(path, args, workers: int | None, address: str | None) -> tuple[dict, object]:
    from distributed import Client, LocalCluster

    from icai_core.distributed import distributed_principle_stats

    t0 = time.perf_counter()
    if address:
        cluster, client = None, Client(address)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               worker_dashboard_address=None)
        client = Client(cluster)
    try:
        client.wait_for_workers(1)
        client.run(lambda: __import__("icai_core.distributed"))  # import time belongs to the start
        start_s = time.perf_counter() - t0
        w0, s0, t1 = _cluster_cpu(client), _self_cpu_s(), time.perf_counter()
        res = distributed_principle_stats(path, client=client, shard_rows=args.row_group, chunk_rows=args.chunk_rows,
                                          use_embeddings=args.embeddings)
        wall = time.perf_counter() - t1
        worker_cpu = _cluster_cpu(client) - w0
        self_cpu = _self_cpu_s() - s0
        n_workers = len(client.nthreads())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    cpu = worker_cpu + (0.0 if address else self_cpu)  # a remote scheduler's CPU is not seen from here
    return dict(engine="dask", workers=n_workers, shards=res.n_shards, start_s=round(start_s, 2),
                wall_s=round(wall, 2), cpu_s=round(cpu, 2), worker_cpu_s=round(worker_cpu, 2),
                driver_cpu_s=round(self_cpu, 2), pairs_per_s=round(res.n_pairs / wall, 1),
                pairs_per_cpu_s=round(res.n_pairs / cpu, 1) if cpu else None), res


def _run_baseline(path, args) -> tuple[dict, object]:
    from icai_core.chunked import chunked_principle_stats

    t0, c0 = time.perf_counter(), _self_cpu_s()
    res = chunked_principle_stats(path, chunk_rows=args.chunk_rows, use_embeddings=args.embeddings)
    wall, cpu = time.perf_counter() - t0, _self_cpu_s() - c0
    return dict(engine="one process (chunked)", workers=1, shards=None, start_s=0.0, wall_s=round(wall, 2),
                cpu_s=round(cpu, 2), worker_cpu_s=round(cpu, 2), driver_cpu_s=0.0,
                pairs_per_s=round(res.n_pairs / wall, 1), pairs_per_cpu_s=round(res.n_pairs / cpu, 1)), res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local cluster sizes to measure")
    ap.add_argument("--address", default=None, help="scheduler address of a running cluster (skips local ones)")
    ap.add_argument("--parquet", default=None, help="an existing Parquet file/folder (required with --address)")
    ap.add_argument("--row-group", type=int, default=5_000, help="rows per row group = per shard")
    ap.add_argument("--chunk-rows", type=int, default=5_000)
    ap.add_argument("--embeddings", action="store_true", help="also the embedding judge (cold caches)")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    if args.address and not args.parquet:
        ap.error("--address needs --parquet: a path every worker can open")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    home = tempfile.mkdtemp(prefix="principia-bench-dist-")
    os.environ["PRINCIPIA_HOME"] = home  # cold caches; local workers inherit it
    models = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "principia-bench-models"
    models.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PRINCIPIA_MODELS_DIR", str(models))  # the one-time ONNX export is shared
    load0 = os.getloadavg()[0]
    if args.parquet:
        path = args.parquet
    else:
        from bench.synth import write_parquet

        path = Path(home) / "pairs.parquet"
        t = time.perf_counter()
        write_parquet(path, args.pairs, seed=args.seed, batch=args.row_group)
        print(f"wrote {args.pairs:,} distinct pairs in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    runs, tables = [], []
    if not args.no_baseline and not args.address:
        r, res = _run_baseline(path, args)
        runs.append(r)
        tables.append(res.stats)
        print(r, file=sys.stderr)
    for w in ([None] if args.address else args.workers):
        r, res = _run_cluster(path, args, w, args.address)
        runs.append(r)
        tables.append(res.stats)
        print(r, file=sys.stderr)
    n_pairs = res.n_pairs
    same = all(t.equals(tables[0]) for t in tables[1:])
    out = dict(pairs=n_pairs, distinct_texts=_distinct_texts(path), row_group=args.row_group,
               chunk_rows=args.chunk_rows, embeddings=args.embeddings, address=args.address, identical_stats=same,
               load_avg=[round(load0, 2), round(os.getloadavg()[0], 2)], cpus=os.cpu_count(), runs=runs)
    print(json.dumps(out))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
