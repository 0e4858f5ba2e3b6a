"""Benchmark: embedding backends side by side on the same real texts (relative speed, agreement).

    .venv/bin/python bench/embed_backends.py [--texts 1500] [--max-len 64] [--rounds 2]

Embeds N distinct real shared texts (longest-first sample of prompts and responses) with:
the previous path (sentence-transformers `encode`, whole-text tokenising, torch fp32), the torch fp32
backend (prefix tokenising, batches sorted by token count), the ONNX Runtime backend and, on a CPU
with native bf16 (avx512_bf16 / amx_bf16), the torch bf16 backend; rounds are
interleaved so machine load hits every backend alike. Prints texts/s, CPU s, the cosine to the
previous path, padding share, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=1500)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from bench.synth import real_pairs
    from icai_core import embed

    df = real_pairs()
    pool = list(dict.fromkeys([*df["prompt"], *df["text_a"], *df["text_b"]]))
    rng = np.random.default_rng(0)
    texts = [pool[i] for i in rng.choice(len(pool), size=min(args.texts, len(pool)), replace=False)]
    st = embed.load_default_model()

    def old(ts):
        st.max_seq_length = args.max_len
        return st.encode(ts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

    def via(name):
        return lambda ts: embed.Embedder(max_seq_length=args.max_len, batch_size=128, backend=name).embed(ts)

    runs = {"sentence-transformers (previous)": old, "torch fp32": via("torch"), "onnx fp32": via("onnx")}
    if embed.cpu_has_native_bf16():  # only where the CPU has it natively (never emulated)
        runs["torch bf16"] = via("torch-bf16")
    for name in ("onnx", "torch", "torch-bf16" if "torch bf16" in runs else None):
        if name:
            via(name)(["warm up"])  # export / verification outside the timing
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    vecs = {}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t, c = time.perf_counter(), _cpu()
            vecs[name] = fn(texts)
            times[name].append((time.perf_counter() - t, _cpu() - c))
    ids = embed._tokenizer().encode(texts, args.max_len)
    real = sum(len(x) for x in ids)
    padded_tok = sum(a.size for _, a, _ in embed._batches(ids, 128))
    order = np.argsort([len(t) for t in texts], kind="stable")  # the previous order: by characters
    padded_chr = sum(len(b) * max(len(ids[j]) for j in b) for b in (order[i : i + 128] for i in range(0, len(order), 128)))
    ref = vecs["sentence-transformers (previous)"]
    out = {"texts": len(texts), "max_len": args.max_len, "tokens": real, "load_avg": round(os.getloadavg()[0], 2),
           "padding_by_tokens": round(1 - real / padded_tok, 4), "padding_by_chars": round(1 - real / padded_chr, 4)}
    print(f"{len(texts):,} texts, {real:,} word pieces at max {args.max_len}; load {os.getloadavg()[0]:.1f}")
    print(f"{'backend':<36}{'best wall s':>12}{'texts/s':>9}{'CPU s':>8}{'min cos':>10}")
    for name in runs:
        w, c = min(times[name])
        cos = float(np.min(np.sum(vecs[name] * ref, axis=1)))
        print(f"{name:<36}{w:>12.1f}{len(texts) / w:>9.0f}{c:>8.1f}{cos:>10.6f}")
        out[name] = {"wall_s": round(w, 2), "cpu_s": round(c, 2), "texts_per_s": round(len(texts) / w, 1),
                     "min_cos": round(cos, 7)}
    print(f"padding: {out['padding_by_tokens']:.1%} sorted by token count, {out['padding_by_chars']:.1%} by characters")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
