"""Benchmark: the ICAI pipeline's LLM traffic against the scripted OpenAI-compatible server.

The server is the TEST FIXTURE from tests/support (fixed-rule answers, simulated latency per call);
nothing here measures a real model's quality. It measures what the client and the pipeline control:
calls per pair, tokens per pair and wall time at concurrency 1 vs 16 on 1,000 real pairs.

    .venv/bin/python bench/llm_pipeline.py [--pairs 1000] [--latency 0.05]

Targets: >= 8x speed-up of the LLM stages from concurrency 16; vote calls per pair no more than one
batched call per principle batch (ceil(candidates / batch size)).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support (the scripted server fixture)

from icai_core.data import load_pairs  # noqa: E402
from icai_core.embed import Embedder  # noqa: E402
from icai_core.icai import ICAIConfig, run_icai  # noqa: E402
from icai_core.llm import LLMClient, LLMConfig, ResponseCache  # noqa: E402
from tests.support.icai_responders import install  # noqa: E402
from tests.support.scripted_openai import ScriptedOpenAI  # noqa: E402


def data_dir() -> Path:
    env = os.environ.get("PRINCIPIA_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def run_once(pairs, concurrency: int, latency: float, embedder, cfg: ICAIConfig):
    stage_times: dict[str, float] = {}
    current = {"name": None, "t": time.perf_counter()}

    def on_stage(name):
        now = time.perf_counter()
        if current["name"]:
            stage_times[current["name"]] = now - current["t"]
        current.update(name=name, t=now)

    with ScriptedOpenAI(latency_s=latency) as srv, tempfile.TemporaryDirectory() as tmp:
        install(srv)
        client = LLMClient(
            LLMConfig(base_url=srv.base_url, model="scripted-model", api_key="bench", concurrency=concurrency),
            cache=ResponseCache(Path(tmp) / "cache.sqlite"),
        )
        t0 = time.perf_counter()
        result = run_icai(pairs, client, cfg, embedder=embedder, stage_callback=on_stage)
        total = time.perf_counter() - t0
        on_stage(None)
        per_stage = {}
        for r in srv.chat_requests:
            task = r.body["messages"][0]["content"].split("\n", 1)[0].removeprefix("TASK: ")
            per_stage[task] = per_stage.get(task, 0) + 1
        max_in_flight = srv.max_in_flight
    llm_time = total - stage_times.get("cluster", 0.0)
    return result, client.usage, total, llm_time, per_stage, max_in_flight


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.05, help="simulated seconds per call (default 0.05)")
    ap.add_argument("--file", default="alpacaeval1_gpt4_judge.csv")
    args = ap.parse_args()

    pairs = load_pairs(data_dir() / args.file).pairs
    pairs = pairs.sample(n=min(args.pairs, len(pairs)), random_state=0).sort_index().reset_index(drop=True)
    cfg = ICAIConfig(max_propose_pairs=200, max_annotate_pairs=200, include_measurable=False)
    embedder = Embedder(max_seq_length=64)
    embedder.embed(["warm-up"])  # model load is not LLM time
    print(f"{len(pairs):,} real pairs from {args.file}; scripted server latency {args.latency * 1000:.0f} ms/call")
    print(f"{'concurrency':>11} {'calls':>7} {'calls/pair':>10} {'tokens/pair':>11} {'LLM-stage s':>11} "
          f"{'total s':>8} {'max in flight':>13}")
    rows = {}
    for conc in (1, 16):
        result, usage, total, llm_time, per_stage, mif = run_once(pairs, conc, args.latency, embedder, cfg)
        rows[conc] = (result, usage, llm_time, per_stage)
        tokens = usage.prompt_tokens + usage.completion_tokens
        print(f"{conc:>11} {usage.calls:>7,} {usage.calls / len(pairs):>10.2f} {tokens / len(pairs):>11,.0f} "
              f"{llm_time:>11.1f} {total:>8.1f} {mif:>13}")
    speedup = rows[1][2] / rows[16][2]
    result, _, _, per_stage = rows[16]
    n_batches = math.ceil(len(result.candidates) / cfg.principle_batch_size)
    vote_per_pair = per_stage.get("vote_principles", 0) / len(pairs)
    print(f"\ncalls per stage: {per_stage}")
    print(f"speed-up of the LLM stages from concurrency 16: {speedup:.1f}x (target >= 8x): "
          f"{'OK' if speedup >= 8 else 'MISSED'}")
    print(f"vote calls per pair: {vote_per_pair:.2f} for {len(result.candidates)} candidates in batches of "
          f"{cfg.principle_batch_size} (bound: {n_batches}): {'OK' if vote_per_pair <= n_batches else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
