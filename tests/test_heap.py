"""icai_core.heap: giving the C heap's freed memory back (glibc malloc_trim), throttled in loops."""

from __future__ import annotations

import ctypes

from icai_core import heap


def test_trim_returns_freed_heap_memory_to_the_system():
    """Many small blocks freed in the middle of the heap stay resident until malloc_trim (the
    embedding batches left ~200 MB so); trim gives them back (glibc; elsewhere it does nothing)."""
    if heap._malloc_trim() is None:
        assert heap.trim() is False
        return

    def rss_kb() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    heap.trim()
    blocks = [libc.malloc(4096) for _ in range(40_000)]  # ~160 MB of heap (below the mmap threshold)
    for b in blocks:
        ctypes.memset(b, 1, 4096)
    keep = libc.malloc(4096)  # a live block at the top: free() alone cannot shrink the heap
    for b in blocks:
        libc.free(b)
    before = rss_kb()
    assert heap.trim() is True
    after = rss_kb()
    libc.free(keep)
    assert before - after > 100_000, (before, after)


def test_trimmer_trims_at_most_once_per_interval(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "trim", lambda: calls.append(1) or True)
    t = [100.0]
    monkeypatch.setattr(heap.time, "monotonic", lambda: t[0])
    trimmer = heap.Trimmer(interval_s=0.5)
    trimmer()
    trimmer()
    t[0] += 0.4
    trimmer()
    assert len(calls) == 1
    t[0] += 0.2
    trimmer()
    assert len(calls) == 2
