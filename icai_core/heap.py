"""Give freed memory back to the operating system: the C heap's (glibc's `malloc_trim`) and the Arrow pool's.

Why: torch allocates each batch's activations with the C allocator, and the embedding batches grow
(they are sorted by token count), so every batch needs blocks a little larger than the last. glibc
raises its mmap threshold after the first large free, serves later blocks from its arenas, and keeps
what is freed there: embedding 3,000 shared texts grew the process by ~200 MB of memory it no longer
used (fp32 and bf16 alike; ONNX Runtime has its own arena). Fixing the threshold instead
(`MALLOC_MMAP_THRESHOLD_`) kept the memory flat but made the batches ~40% slower (fresh pages on
every batch); trimming at most every `MIN_INTERVAL_S` costs ~4 ms a call, under 1% of the work.
Measured figures: docs/benchmarks.md ("Eleventh session").

The Arrow pool too: pyarrow's default pool (mimalloc) keeps what pandas' Arrow-backed strings and
the text kernels freed until asked; after the judges of a 10 MB text that was ~90 MB, and trimming
between judges and after them took that audit's peak without embeddings from 598 to 568 MB
(`bench/offline_audit.py --long-text-mb 10` on a Zen 4; docs/benchmarks.md, "Twelfth session"). The judges call a `Trimmer` between judges and `trim` once
after the last (8 calls, ~47 ms in all, on 50k distinct pairs).

Elsewhere than glibc (musl, macOS, Windows) there is no such call and `trim` only releases the Arrow pool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time

MIN_INTERVAL_S = 0.5  # a throttled `Trimmer` trims at most this often

_LIBC: list = []  # [the glibc handle or None], looked up once


def _malloc_trim():
    if not _LIBC:
        fn = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            fn = libc.malloc_trim
            fn.argtypes = [ctypes.c_size_t]
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):  # not glibc
            fn = None
        _LIBC.append(fn)
    return _LIBC[0]


def trim() -> bool:
    """Return the free pages of the Arrow memory pool and of the C heap to the system now. True if
    glibc did release some.

    The Arrow pool first: pyarrow's default pool (mimalloc) keeps what pandas' Arrow-backed strings
    and the text kernels freed, ~90 MB after the judges of a 10 MB text, and some of what it hands
    back sits in the C heap."""
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


class Trimmer:
    """Calls `trim` from a loop, at most every `interval_s` seconds (the first call trims)."""

    def __init__(self, interval_s: float = MIN_INTERVAL_S):
        self.interval_s = interval_s
        self._last = float("-inf")

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            trim()
            self._last = time.monotonic()
