"""Benchmark and profile of the measurable judges (`judges.compute_votes`, no embeddings) on distinct pairs.

    .venv/bin/python bench/judges_profile.py --pairs 50000                 # time, pairs per CPU-second
    .venv/bin/python bench/judges_profile.py --pairs 50000 --ref 368f04a   # before/after, same texts, same load
    .venv/bin/python bench/judges_profile.py --pairs 50000 --per-rule      # seconds per principle, in order
    .venv/bin/python bench/judges_profile.py --pairs 20000 --cprofile 25   # where the time goes
    .venv/bin/python bench/judges_profile.py --pairs 20000 --kernels 30    # seconds per kernel (pyarrow / polars) + pattern

The pairs come from `bench/synth.py` (every prompt and response distinct: crossovers of real shared
texts at sentence boundaries), written once to a Parquet file (`--data`, default in the temp folder)
and re-read, so repeated runs measure the same texts. With `--ref COMMIT` the judges module of that
commit is loaded from git as a separate module and the two are timed alternately (`--repeat` rounds
each), so that both see the same load; the votes of the two must be identical (the run fails
otherwise). Each timing is wall and CPU time of `compute_votes` alone (data loading excluded) in this
one process; the machine's 1-minute load average is printed before and after. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_reference(commit: str):
    """`icai_core/judges.py` as of `commit`, imported from git as the module `judges_ref_<commit>`."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:icai_core/judges.py"],
                         capture_output=True, text=True, check=True).stdout
    name = f"judges_ref_{commit[:12]}"
    path = Path(tempfile.mkdtemp(prefix="judges-ref-")) / f"{name}.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_pairs(n: int, seed: int, data: Path | None):
    import pandas as pd

    from bench.synth import write_parquet

    path = data or Path(tempfile.gettempdir()) / f"judges-profile-{n}-{seed}.parquet"
    if not path.exists():
        t = time.perf_counter()
        write_parquet(path, n, seed=seed)
        print(f"data: wrote {n:,} distinct pairs to {path} in {time.perf_counter() - t:.1f} s", flush=True)
    pairs = pd.read_parquet(path)
    for c in ("prompt", "text_a", "text_b"):
        pairs[c] = pairs[c].astype("str")
    return pairs


def time_votes(mod, pairs) -> tuple[float, float, object]:
    t0, c0 = time.perf_counter(), _cpu_s()
    votes = mod.compute_votes(pairs)
    return time.perf_counter() - t0, _cpu_s() - c0, votes


def kernel_times(mod, pairs, top: int) -> list[tuple[float, int, str]]:
    """Wall seconds of each `pyarrow.compute` function called by one `compute_votes` run, keyed by
    function name and (for the regex and substring kernels) the first 60 characters of the pattern:
    (seconds, calls, key), most expensive first. Nested calls (`take` inside `call_function`...) are
    counted in both; pandas' `.str` methods reach the same functions, so they are included."""
    import collections

    import pyarrow.compute as pc

    seconds: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    originals = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            pattern = args[1] if len(args) > 1 and isinstance(args[1], str) else kwargs.get("pattern")
            key = name if pattern is None else f"{name} {str(pattern)[:60]!r}"
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[key] += time.perf_counter() - t
                calls[key] += 1
        return wrapper

    for name in dir(pc):
        fn = getattr(pc, name)
        if callable(fn) and name[:1].islower() and not isinstance(fn, type):
            originals[name] = fn
            setattr(pc, name, timed(name, fn))
    # The text kernels (icai_core.textkernels), by engine: "polars" calls are not pyarrow.compute calls;
    # "pyarrow" ones also appear above under their pyarrow function.
    tk = getattr(mod, "textkernels", None)
    tk_originals = {}
    if tk is not None:
        allow = mod._on_polars()
        for kind in ("count", "contains", "extract"):
            fn = getattr(tk, kind)

            def engine_timed(texts, pattern, *a, _fn=fn, _kind=kind, **k):
                engine = "polars" if pattern in getattr(allow, _kind) else "pyarrow"
                if _kind == "count" and pattern in allow.count_prefilter:
                    engine = "polars contains + pyarrow count"
                return timed(f"textkernels.{_kind} [{engine}]", _fn)(texts, pattern, *a, **k)

            tk_originals[kind] = fn
            setattr(tk, kind, engine_timed)
    try:
        mod.compute_votes(pairs)
    finally:
        for name, fn in originals.items():
            setattr(pc, name, fn)
        for name, fn in tk_originals.items():
            setattr(tk, name, fn)
    ranked = sorted(((s, calls[k], k) for k, s in seconds.items()), reverse=True)
    return ranked[:top]


def per_rule(mod, pairs) -> list[tuple[str, float]]:
    """Wall seconds of each principle in the default order (factorizing the texts and shared
    intermediates are charged to the
    first principle that needs them, as in compute_votes)."""
    out = []
    keys = [p.key for p in mod.PRINCIPLES if p.key not in mod.EMBEDDING_KEYS]
    t = time.perf_counter()
    done = [t]

    def progress(i, total, msg):
        now = time.perf_counter()
        out.append((keys[i - 1], now - done[0]))
        done[0] = now

    mod.compute_votes(pairs, keys, progress=progress)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, help="Parquet file of pairs (written by bench/synth.py if missing)")
    ap.add_argument("--ref", help="git commit of a reference judges.py to compare with (votes must be identical)")
    ap.add_argument("--repeat", type=int, default=2, help="timed rounds of each implementation")
    ap.add_argument("--per-rule", action="store_true", help="seconds per principle (current implementation)")
    ap.add_argument("--cprofile", type=int, default=0, metavar="N", help="print the N most expensive functions")
    ap.add_argument("--kernels", type=int, default=0, metavar="N",
                    help="print the N most expensive pyarrow.compute calls (by function and pattern)")
    args = ap.parse_args()

    from icai_core import judges

    pairs = load_pairs(args.pairs, args.seed, args.data)
    load0 = os.getloadavg()[0]
    res: dict = {"pairs": len(pairs), "load_avg_before": round(load0, 2)}

    if args.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        judges.compute_votes(pairs)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.cprofile)

    if args.kernels:
        ranked = kernel_times(judges, pairs, args.kernels)
        for sec, n, key in ranked:
            print(f"{sec:7.3f} s {n:4d} x  {key}")

    if args.per_rule:
        for key, s in per_rule(judges, pairs):
            print(f"{key:32s}{s:8.2f} s")

    impls = [("current", judges)]
    if args.ref:
        impls.insert(0, (f"ref {args.ref[:8]}", load_reference(args.ref)))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in impls}
    votes = {}
    for _ in range(args.repeat):
        for name, mod in impls:
            wall, cpu, v = time_votes(mod, pairs)
            times[name].append((wall, cpu))
            votes[name] = v
            print(f"{name:14s} wall {wall:7.2f} s  CPU {cpu:7.2f} s  {len(pairs) / cpu:8,.0f} pairs/CPU-s", flush=True)
    for name, ts in times.items():
        best_cpu = min(c for _, c in ts)
        res[name] = {"wall_s": round(min(w for w, _ in ts), 2), "cpu_s": round(best_cpu, 2),
                     "pairs_per_cpu_s": round(len(pairs) / best_cpu)}
    if args.ref:
        ref_name = impls[0][0]
        a, b = votes[ref_name], votes["current"]
        same = list(a.columns) == list(b.columns) and bool((a.to_numpy() == b.to_numpy()).all())
        res["votes_identical"] = same
        res["speedup_cpu"] = round(res[ref_name]["cpu_s"] / res["current"]["cpu_s"], 2)
        print(f"votes identical: {same}; speed-up (CPU, best of {args.repeat}): {res['speedup_cpu']:.2f}x")
        if not same:
            diff = (a.to_numpy() != b.to_numpy()).sum(axis=0)
            print("differing votes per principle:", dict(zip(a.columns, diff.tolist(), strict=True)))
    res["load_avg_after"] = round(os.getloadavg()[0], 2)
    res["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    print(json.dumps(res))
    return 0 if res.get("votes_identical", True) else 1


if __name__ == "__main__":
    sys.exit(main())
