"""Machine speed probe: run it just before a benchmark and quote it beside the figure.

    .venv/bin/python bench/machine_probe.py

Some of the machines these benchmarks run on change speed by up to ~1.6x within minutes while
idle (docs/benchmarks.md, ninth session), so a wall time means little without the machine's speed
at that moment. Prints the best of five timings of a 1024^3 numpy fp32 matrix product and, when
torch is installed, of a bf16 product of MiniLM's feed-forward shape (8,192 x 384 by 384 x 1,536;
on a CPU without native bf16 torch emulates it and the figure is low), then one JSON line.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np


def _best_gflops(fn, flop: float, reps: int = 10, rounds: int = 5) -> float:
    for _ in range(3):
        fn()
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        best = max(best, reps * flop / (time.perf_counter() - t) / 1e9)
    return best


def main() -> int:
    rng = np.random.default_rng(0)
    a = rng.random((1024, 1024), dtype=np.float32)
    b = rng.random((1024, 1024), dtype=np.float32)
    out = {"numpy_fp32_gflops": round(_best_gflops(lambda: a @ b, 2 * 1024**3)),
           "load_avg": round(os.getloadavg()[0], 2)}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        x = torch.randn(8192, 384, dtype=torch.bfloat16)
        w = torch.randn(384, 1536, dtype=torch.bfloat16)
        out["torch_bf16_gflops"] = round(_best_gflops(lambda: x @ w, 2 * 8192 * 384 * 1536))
    print("  ".join(f"{k} {v}" for k, v in out.items()))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
