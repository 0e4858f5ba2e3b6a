"""How many distinct principle clusters a budget of N proposal pairs finds: coverage vs uniform random.

    python bench/proposal_selection.py [--data FILE] [--budget 8] [--pool 200] [--gguf PATH]

A real model proposes (the local engine: SmolLM2-135M through llama.cpp unless --gguf says otherwise);
the same pool of labelled pairs is sampled by `icai_core.selection.coverage_rows` and uniformly at
random (several seeds); all proposals of one selection are clustered with the pipeline's clustering and
the distinct clusters (noise texts count as their own) are reported. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from icai_core import answers  # noqa: E402
from icai_core.cluster import ClusterConfig, cluster_principles  # noqa: E402
from icai_core.config import LLMStagesConfig  # noqa: E402
from icai_core.data import load_pairs  # noqa: E402
from icai_core.embed import Embedder  # noqa: E402
from icai_core.llm import LLMClient  # noqa: E402
from icai_core.local_engine import LocalServer, bundled_gguf  # noqa: E402
from icai_core.selection import coverage_rows  # noqa: E402
from icai_core.stages_llm import proposal_requests  # noqa: E402


def distinct_clusters(texts: list[str], embedder) -> int:
    if not texts:
        return 0
    res = cluster_principles(texts, embedder=embedder, config=ClusterConfig())
    noise = int((res.points["cluster"] == -1).sum())
    return int(res.n_clusters + noise)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "arena_llama3_70b_human.csv"))
    ap.add_argument("--budget", type=int, default=8)
    ap.add_argument("--pool", type=int, default=200)
    ap.add_argument("--random-seeds", type=int, default=2)
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--port", type=int, default=18460)
    args = ap.parse_args()

    pairs = load_pairs(args.data).pairs
    pairs = pairs[pairs["preferred"] != "tie"].sample(n=args.pool, random_state=0).reset_index(drop=True)
    cfg = LLMStagesConfig(n_principles_per_pair=3, max_text_chars=600)
    embedder = Embedder(max_seq_length=64)
    rows = np.arange(len(pairs))
    selections = {"coverage": coverage_rows(pairs, rows, args.budget, embedder=embedder, seed=0)}
    for s in range(args.random_seeds):
        selections[f"random_{s}"] = np.sort(np.random.default_rng(100 + s).choice(rows, args.budget, replace=False))
    results = {}
    t0 = time.perf_counter()
    with LocalServer(args.gguf or bundled_gguf(), port=args.port, threads=1) as server:
        client = LLMClient(server.llm_config())
        for name, sel in selections.items():
            reqs = proposal_requests(pairs, sel, cfg)
            out = client.complete_many(reqs)
            texts = []
            for res in out:
                parsed = answers.parse_proposals(res.text if res and res.ok else None, 3,
                                                 getattr(res, "finish_reason", None))
                texts += parsed.value or []
            results[name] = {"pairs": len(sel), "proposals": len(texts), "distinct_clusters":
                             distinct_clusters(texts, embedder)}
            print(f"{name:<10} {len(sel)} pairs -> {len(texts)} proposals, "
                  f"{results[name]['distinct_clusters']} distinct clusters", flush=True)
    rnd = [v["distinct_clusters"] for k, v in results.items() if k.startswith("random")]
    line = {"bench": "proposal_selection", "data": Path(args.data).name, "budget": args.budget,
            "pool": args.pool, "model": "SmolLM2-135M" if not args.gguf else Path(args.gguf).name,
            "coverage_clusters": results["coverage"]["distinct_clusters"],
            "random_clusters_mean": float(np.mean(rnd)) if rnd else None, "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
