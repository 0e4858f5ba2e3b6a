"""Benchmark: the offline audit on N *distinct* pairs built from real shared texts.

    .venv/bin/python bench/offline_audit.py --pairs 50000 [--embeddings] [--chunked] [--backend auto]
    .venv/bin/python bench/offline_audit.py --long-text-mb 10 [--embeddings]   # issue 11 item 6
    .venv/bin/python bench/offline_audit.py --replicated --pairs 50000          # cache benchmark only

Every prompt and response is distinct (bench/synth.py: crossovers of real texts at sentence
boundaries), because the judges and the embedder work once per distinct text: replicating rows
would measure a cache. The pairs are first written to a Parquet file; the measured run happens in a
fresh child process that reads it, so wall time, CPU time and peak RSS are those of the audit alone
(data generation excluded). Modes of the measured run:

* default: the in-memory audit (`run_offline_audit`: judges, stats, constitution, reconstruction),
  cold caches in a temporary PRINCIPIA_HOME; `--embeddings` adds the embedding judge. The one-time
  ONNX export of the model (once per install) is shared between runs unless `--cold-export`.
* `--chunked`: `icai_core.chunked.chunked_principle_stats` streams the Parquet file in chunks
  (judges + stats; memory bounded by the chunk size, not the number of pairs). `--workers N` judges
  the chunks in N spawned processes; then `peak_rss_mb` is the peak of the whole process tree
  (parent + workers, summed, sampled every 0.1 s with psutil) and `cpu_s` includes the workers.
  One stderr line per chunk gives the current RSS (tree), the peak, and the Arrow pool.
* `--long-text-mb M`: 2,000 real pairs, one response replaced by an M-MB real-text crossover
  (peak memory must not grow with text length).
* `--replicated`: the old benchmark (real rows repeated; ~12k distinct texts whatever N): a cache
  benchmark, labelled as such.

The last line printed is one JSON object: pairs, distinct_texts, wall_s, cpu_s (the workers
included), parent_cpu_s (the measured process alone: imports, reading when it reads, merging),
peak_rss_mb, pairs_per_s, mode, embeddings, backend, workers, load_avg (1-minute load average before and after),
probe (`bench/machine_probe.py`, run just before the measured child; `--no-probe` skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    """Peak RSS of this process's own memory image (Linux VmHWM).

    Not `ru_maxrss`: Linux carries the maximum over `fork`/`execve` into the new program, so a child
    started by a parent that held the generated table (~2 GB at 200k pairs) reported the parent's
    peak, not its own (the 200k chunked run: ru_maxrss 2,020 MB, VmHWM of the audit 0.7 GB).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s(children: bool = True) -> float:
    """CPU seconds of this process and (`children`) of its finished children (the chunk workers, once
    shut down)."""
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + (c.ru_utime + c.ru_stime if children else 0.0)


class _TreeRSS:
    """Current and peak RSS of this process plus all its children, sampled every 0.1 s (psutil).

    The process tree is re-listed once a second, not at every sample: `children(recursive=True)`
    scans all of /proc and cost 4.6 ms CPU a sample (4.6% of a core at 10 samples a second, taken
    from the cores the audit runs on), against 0.15 ms for reading the RSS of a known list."""

    def __init__(self, interval: float = 0.1, rescan_s: float = 1.0):
        import threading

        import psutil

        self._proc = psutil.Process()
        self.peak = 0.0
        self._stop = threading.Event()
        self._interval = interval
        self._rescan_s = rescan_s
        self._procs = [self._proc]
        self._scanned = 0.0
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def now_mb(self) -> float:
        if time.monotonic() - self._scanned >= self._rescan_s:
            try:
                self._procs = [self._proc, *self._proc.children(recursive=True)]
            except Exception:  # a child that exited while listing: keep the previous list
                pass
            self._scanned = time.monotonic()
        total = 0
        for p in self._procs:
            try:
                total += p.memory_info().rss
            except Exception:  # a worker that just exited
                pass
        mb = total / 2**20
        self.peak = max(self.peak, mb)
        return mb

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.now_mb()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _peak_rss_mb())


def _distinct_texts(path: Path) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["prompt", "text_a", "text_b"])
    texts = [t.column(c) for c in ("prompt", "text_a", "text_b")]
    import pyarrow as pa

    return len(pc.unique(pa.chunked_array([c for col in texts for c in col.chunks])))


def _run(args) -> dict:
    """The measured part, in its own process: read the Parquet file and audit it."""
    import pandas as pd

    home = tempfile.mkdtemp(prefix="principia-bench-")
    os.environ["PRINCIPIA_HOME"] = home
    if not args.cold_export:
        # Caches start cold, but the one-time ONNX export (per install) is shared between runs.
        models = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "principia-bench-models"
        models.mkdir(parents=True, exist_ok=True)
        os.symlink(models, Path(home) / "models")
    t0, c0, p0 = time.perf_counter(), _cpu_s(), _cpu_s(children=False)
    extra: dict = {"workers": args.workers}
    tree = _TreeRSS()
    if args.chunked:
        import pyarrow as pa

        from icai_core.chunked import chunked_principle_stats

        def report(done, total, msg):  # one line per chunk on stderr: the memory stays flat, or not
            print(f"chunk: {done:,}/{total:,} pairs, wall {time.perf_counter() - t0:.1f} s, "
                  f"CPU {_cpu_s() - c0:.1f} s (parent; workers added at the end), RSS now {tree.now_mb():,.0f} MB "
                  f"(tree), peak {tree.peak:,.0f} MB, parent Arrow pool {pa.total_allocated_bytes() / 2**20:,.0f} MB",
                  file=sys.stderr, flush=True)

        res = chunked_principle_stats(args.run, chunk_rows=args.chunk_rows, progress=report, workers=args.workers,
                                      use_embeddings=args.embeddings)
        extra.update(principles=int(len(res.stats)), rows=res.n_rows, annotator_views=len(res.annotators) or 1)
        n = res.counts.n_distinct  # distinct pairs (content hash), not rows
    else:
        from icai_core.audit import AuditConfig, run_offline_audit

        pairs = pd.read_parquet(args.run)
        for c in ("prompt", "text_a", "text_b", "preferred", "id"):
            pairs[c] = pairs[c].astype("str")
        n = len(pairs)
        cfg = AuditConfig(use_embeddings=args.embeddings)
        r = run_offline_audit(pairs, cfg, dataset_name="bench", cache_dir=home if args.embeddings else None)
        extra.update(votes_s=round(r.timings["votes_s"], 2), stats_s=round(r.timings["stats_s"], 2),
                     principles=int(r.votes.shape[1]))
        if args.embeddings:
            from icai_core import embed

            extra["backend"] = embed.last_backend_name()
    wall = time.perf_counter() - t0
    peak = tree.stop()
    return {"pairs": n, "wall_s": round(wall, 2), "cpu_s": round(_cpu_s() - c0, 2),
            "parent_cpu_s": round(_cpu_s(children=False) - p0, 2),
            "peak_rss_mb": round(peak, 1), "parent_peak_rss_mb": round(_peak_rss_mb(), 1),
            "pairs_per_s": round(n / wall, 1), **extra}


def _long_text_pairs(path: Path, mb: float) -> None:
    """2,000 real pairs; the first response becomes an `mb`-megabyte text made of real sentences."""
    import numpy as np

    from bench.synth import _Crossover, real_pairs

    base = real_pairs().iloc[:2000].reset_index(drop=True)
    rng = np.random.default_rng(0)
    cross = _Crossover(base["text_a"], rng)
    parts, size = [], 0
    while size < mb * 1e6:
        chunk = cross.draw(200)
        parts.extend(chunk)
        size += sum(len(c) for c in chunk)
    base.loc[0, "text_a"] = "\n\n".join(parts)[: int(mb * 1e6)]
    base.to_parquet(path)


def _replicated(path: Path, n: int) -> None:
    import pandas as pd

    from bench.synth import real_pairs

    base = real_pairs()
    reps = -(-n // len(base))
    pairs = pd.concat([base] * reps, ignore_index=True).iloc[:n].copy()
    pairs["id"] = pairs["id"].astype(str) + "-r" + (pairs.index // len(base)).astype(str)
    pairs.to_parquet(path)


def _probe() -> dict | None:
    """The machine's speed just before the measured run (`bench/machine_probe.py`, in its own
    process so that the parent imports no torch): some machines drift by up to ~1.6x within minutes."""
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("machine_probe.py"))],
                         stdout=subprocess.PIPE, text=True)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--embeddings", action="store_true", help="include the embedding judge (cold cache)")
    ap.add_argument("--chunked", action="store_true", help="stream the Parquet file in chunks (judges + stats)")
    ap.add_argument("--chunk-rows", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1, help="with --chunked: processes judging chunks")
    ap.add_argument("--annotators", type=int, default=1,
                    help="each distinct pair judged by this many annotators (rows = pairs x annotators)")
    ap.add_argument("--long-text-mb", type=float, default=0.0, help="audit 2,000 real pairs with one huge text")
    ap.add_argument("--replicated", action="store_true", help="cache benchmark: real rows repeated")
    ap.add_argument("--backend", default=None, help="embedding backend (PRINCIPIA_EMBED_BACKEND)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cold-export", action="store_true", help="also time the one-time ONNX export")
    ap.add_argument("--no-probe", action="store_true", help="skip the speed probe (bench/machine_probe.py) before the run")
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # internal: the measured child process
    args = ap.parse_args()

    if args.run is not None:
        print(json.dumps(_run(args)))
        return 0

    from bench.synth import write_parquet

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.parquet"
        t = time.perf_counter()
        if args.long_text_mb:
            _long_text_pairs(path, args.long_text_mb)
            mode = f"long text ({args.long_text_mb:g} MB response)"
        elif args.replicated:
            _replicated(path, args.pairs)
            mode = "replicated rows (CACHE benchmark: few distinct texts)"
        else:
            write_parquet(path, args.pairs, seed=args.seed, annotators=args.annotators)
            mode = "distinct, chunked" if args.chunked else "distinct, in memory"
        distinct = _distinct_texts(path)
        print(f"data: {mode}; {distinct:,} distinct texts; generated in {time.perf_counter() - t:.1f} s "
              f"({path.stat().st_size / 1e6:,.0f} MB Parquet)", flush=True)
        cmd = [sys.executable, __file__, "--run", str(path), "--chunk-rows", str(args.chunk_rows),
               "--workers", str(args.workers)]
        cmd += ["--embeddings"] * args.embeddings + ["--chunked"] * args.chunked + ["--cold-export"] * args.cold_export
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if args.backend:
            env["PRINCIPIA_EMBED_BACKEND"] = args.backend
        probe = _probe() if not args.no_probe else None
        load_before = os.getloadavg()[0]
        # The child's stderr (per-chunk lines, warnings) passes through live; its stdout ends with the JSON.
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            print(out.stdout, file=sys.stderr)
            return out.returncode
        res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(distinct_texts=distinct, mode=mode, embeddings=args.embeddings, annotators=args.annotators,
               load_avg=[round(load_before, 2), round(os.getloadavg()[0], 2)], probe=probe)
    print(f"{'pairs':>10}{'wall s':>9}{'CPU s':>9}{'pairs/s':>10}{'peak RSS MB':>13}")
    print(f"{res['pairs']:>10,}{res['wall_s']:>9.1f}{res['cpu_s']:>9.1f}{res['pairs_per_s']:>10,.0f}"
          f"{res['peak_rss_mb']:>13,.0f}")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
