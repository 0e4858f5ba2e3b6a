"""Benchmark: the full offline audit on real shared data replicated to N pairs (default 50,000).

Prints pairs/second and peak memory (RSS) for: data intake of the real files, the measurable judges,
the embedding judge (cold cache and warm cache), stats + constitution + reconstruction.
Target (DEVELOPERS/issue): under 30 s and under 2 GB on a 2-core machine.

    .venv/bin/python bench/offline_audit.py [--pairs 50000] [--files alpacaeval1_gpt4_judge.csv ...]

Replication repeats real rows (ids suffixed) so the text distribution is real; the number of *unique*
texts stays that of the source files, which is what the embedding cache sees, and is printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from icai_core.audit import AuditConfig, run_offline_audit
from icai_core.data import load_pairs

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def data_dir() -> Path:
    env = os.environ.get("PRINCIPIA_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument(
        "--files",
        nargs="*",
        default=["alpacaeval1_gpt4_judge.csv", "arena_llama3_70b_human.csv", "hh_rlhf_harmless_test.csv"],
        help="shared data files to replicate (default: AlpacaEval 1 GPT-4 judge, Arena, HH-RLHF)",
    )
    args = ap.parse_args()

    t = time.perf_counter()
    frames = [load_pairs(data_dir() / f).pairs for f in args.files]
    base = pd.concat(frames, ignore_index=True)
    t_load = time.perf_counter() - t
    reps = -(-args.pairs // len(base))
    pairs = pd.concat([base] * reps, ignore_index=True).iloc[: args.pairs].copy()
    pairs["id"] = pairs["id"].astype(str) + "-r" + (pairs.index // len(base)).astype(str)
    unique_texts = pd.unique(pd.concat([pairs["prompt"], pairs["text_a"], pairs["text_b"]]))
    print(f"data: {', '.join(args.files)}: {len(base):,} real pairs read in {t_load:.2f} s; "
          f"replicated to {len(pairs):,} pairs ({len(unique_texts):,} unique texts)")
    print(f"{'run':<46}{'wall s':>8}{'pairs/s':>10}{'peak RSS MB':>13}")

    def row(label, seconds):
        print(f"{label:<46}{seconds:>8.1f}{len(pairs) / seconds:>10,.0f}{peak_rss_mb():>13,.0f}")

    with tempfile.TemporaryDirectory() as cache:
        cfg = AuditConfig(use_embeddings=False)
        t = time.perf_counter()
        r = run_offline_audit(pairs, cfg, dataset_name="bench", cache_dir=None)
        row("full audit, measurable judges (no embeddings)", time.perf_counter() - t)
        print(f"    votes {r.timings['votes_s']:.1f} s, stats+constitution+reconstruction {r.timings['stats_s']:.1f} s, "
              f"{r.votes.shape[1]} principles")

        cfg = AuditConfig(use_embeddings=True)
        t = time.perf_counter()
        r = run_offline_audit(pairs, cfg, dataset_name="bench", cache_dir=cache)
        row("full audit incl. embedding judge, cold cache", time.perf_counter() - t)

        # Same data, new process-level state except the on-disk caches: a rerun / resumed run.
        pairs2 = pairs.copy()
        pairs2["id"] = pairs2["id"] + "x"  # new dataset hash -> votes recomputed, embeddings from cache
        t = time.perf_counter()
        r = run_offline_audit(pairs2, cfg, dataset_name="bench2", cache_dir=cache)
        row("full audit incl. embedding judge, warm embeddings", time.perf_counter() - t)

        t = time.perf_counter()
        r = run_offline_audit(pairs2, cfg, dataset_name="bench2", cache_dir=cache)
        row("rerun of the same data (votes cached)", time.perf_counter() - t)
    print(f"peak RSS over the whole benchmark: {peak_rss_mb():,.0f} MB (includes torch + the MiniLM model)")
    # No agreement figures here: replicated rows fall on both sides of the split, so they would leak.
    return 0


if __name__ == "__main__":
    sys.exit(main())
