"""Compiled (numba) loops of `icai_core.token_kernel`; import that module, not this one.

Kept apart so that importing the judges does not import numba (~0.3 s and ~50 MB): this module is
imported on the first tokenisation. `cache=True` keeps the machine code in `__pycache__` beside this
file (or in numba's user-wide cache directory when that is not writable), so a new process, e.g. a
spawned worker, loads it instead of compiling again. All sizes and positions that can pass 2^31 on a
large input are int64; token counts per text and vocabulary ids are int32 (a run cannot hold 2^31
distinct words: its texts would be far over 2 GB).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Per code point: 0 not yet classified, 1 word character, 2 separator (see token_kernel.code_point_table).
UNKNOWN, WORD, SEPARATOR = 0, 1, 2
_APOSTROPHE = 39
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True, nogil=True, inline="always")
def _decode(buf, i, n):
    """(code point, byte length) of the UTF-8 character starting at buf[i] (valid UTF-8; never reads
    past n)."""
    b0 = np.int64(buf[i])
    if b0 < 0x80:
        return b0, 1
    c1 = np.int64(buf[i + 1]) & 0x3F if i + 1 < n else 0
    if b0 < 0xE0:
        return ((b0 & 0x1F) << 6) | c1, 2
    c2 = np.int64(buf[i + 2]) & 0x3F if i + 2 < n else 0
    if b0 < 0xF0:
        return ((b0 & 0x0F) << 12) | (c1 << 6) | c2, 3
    c3 = np.int64(buf[i + 3]) & 0x3F if i + 3 < n else 0
    return ((b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3, 4


@njit(cache=True, nogil=True)
def unknown_code_points(buf, table):
    """Distinct non-ASCII code points of `buf` whose `table` entry is UNKNOWN, in order of appearance."""
    n = len(buf)
    seen = np.zeros(len(table), dtype=np.uint8)
    out = np.empty(64, dtype=np.int32)
    k = 0
    i = 0
    while i < n:
        if buf[i] < 0x80:
            i += 1
            continue
        cp, size = _decode(buf, i, n)
        i += size
        if table[cp] == UNKNOWN and not seen[cp]:
            seen[cp] = 1
            if k == len(out):
                grown = np.empty(2 * k, dtype=np.int32)
                grown[:k] = out
                out = grown
            out[k] = cp
            k += 1
    return out[:k]


@njit(cache=True, nogil=True, inline="always")
def _next_token(buf, pos, end, table):
    """The next token of buf[pos:end] as (first, last + 1, next position); first = -1 when none is
    left. A token is a maximal run of word characters with its edge apostrophes trimmed; a run of
    apostrophes only is skipped."""
    while pos < end:
        # Skip separators.
        while pos < end:
            b = buf[pos]
            if b < 0x80:
                if table[b] == WORD:
                    break
                pos += 1
            else:
                cp, size = _decode(buf, pos, end)
                if table[cp] == WORD:
                    break
                pos += size
        if pos >= end:
            break
        start = pos
        while pos < end:
            b = buf[pos]
            if b < 0x80:
                if table[b] != WORD:
                    break
                pos += 1
            else:
                cp, size = _decode(buf, pos, end)
                if table[cp] != WORD:
                    break
                pos += size
        lo, hi = start, pos
        while lo < hi and buf[lo] == _APOSTROPHE:
            lo += 1
        while hi > lo and buf[hi - 1] == _APOSTROPHE:
            hi -= 1
        if lo < hi:
            return lo, hi, pos
    return -1, -1, end


@njit(cache=True, nogil=True)
def token_spans(buf, offsets, table):
    """(doc id, first byte, last byte) of every token of the texts buf[offsets[d]:offsets[d + 1]]."""
    n_docs = len(offsets) - 1
    cap = max(16, len(buf) // 6)
    doc = np.empty(cap, dtype=np.int32)
    first = np.empty(cap, dtype=np.int64)
    last = np.empty(cap, dtype=np.int64)
    k = 0
    for d in range(n_docs):
        pos, end = offsets[d], offsets[d + 1]
        while True:
            lo, hi, pos = _next_token(buf, pos, end, table)
            if lo < 0:
                break
            if k == cap:
                cap *= 2
                doc2 = np.empty(cap, dtype=np.int32)
                doc2[:k] = doc
                doc = doc2
                f2 = np.empty(cap, dtype=np.int64)
                f2[:k] = first
                first = f2
                l2 = np.empty(cap, dtype=np.int64)
                l2[:k] = last
                last = l2
            doc[k] = d
            first[k] = lo
            last[k] = hi - 1
            k += 1
    return doc[:k].copy(), first[:k].copy(), last[:k].copy()


@njit(cache=True, nogil=True, inline="always")
def _hash(buf, lo, hi):
    h = _FNV_OFFSET
    for j in range(lo, hi):
        h = (h ^ np.uint64(buf[j])) * _FNV_PRIME
    return h


@njit(cache=True, nogil=True)
def _rehash(slots_len, vhash, nv):
    slots = np.full(slots_len, -1, dtype=np.int32)
    mask = np.uint64(slots_len - 1)
    for v in range(nv):
        s = vhash[v] & mask
        while slots[s] >= 0:
            s = (s + np.uint64(1)) & mask
        slots[s] = v
    return slots


@njit(cache=True, nogil=True)
def _lookup_insert(buf, lo, hi, h, slots, vhash, vbytes, voff, nv):
    """Id of the word buf[lo:hi] in the vocabulary; a new word gets id nv (the caller grows the
    arrays first so that one more entry fits). Returns (id, new nv)."""
    mask = np.uint64(len(slots) - 1)
    length = hi - lo
    s = h & mask
    while True:
        v = slots[s]
        if v < 0:
            break
        if vhash[v] == h and voff[v + 1] - voff[v] == length:
            o = voff[v]
            same = True
            for j in range(length):
                if vbytes[o + j] != buf[lo + j]:
                    same = False
                    break
            if same:
                return v, nv
        s = (s + np.uint64(1)) & mask
    slots[s] = nv
    vhash[nv] = h
    o = voff[nv]
    vbytes[o : o + length] = buf[lo:hi]
    voff[nv + 1] = o + length
    return nv, nv + 1


@njit(cache=True, nogil=True)
def encode(buf, offsets, table, slots, vhash, vbytes, voff, nv):
    """Tokens of the texts buf[offsets[d]:offsets[d + 1]] as (doc id, vocabulary id) per token, the
    vocabulary extended in place or grown: ids in order of first appearance (as Arrow's
    dictionary_encode numbers them), after the nv words already in it. Returns
    (doc, ids, slots, vhash, vbytes, voff, nv): the vocabulary's arrays may have been replaced."""
    n_docs = len(offsets) - 1
    cap = max(16, len(buf) // 6)
    doc = np.empty(cap, dtype=np.int32)
    ids = np.empty(cap, dtype=np.int32)
    k = 0
    for d in range(n_docs):
        pos, end = offsets[d], offsets[d + 1]
        while True:
            lo, hi, pos = _next_token(buf, pos, end, table)
            if lo < 0:
                break
            # Room for one more word: entries, bytes, and a table at most half full.
            if nv + 1 >= len(vhash):
                vh2 = np.empty(2 * len(vhash), dtype=np.uint64)
                vh2[:nv] = vhash[:nv]
                vhash = vh2
                vo2 = np.empty(2 * len(voff), dtype=np.int64)
                vo2[: nv + 1] = voff[: nv + 1]
                voff = vo2
            if voff[nv] + (hi - lo) > len(vbytes):
                vb2 = np.empty(max(2 * len(vbytes), voff[nv] + (hi - lo)), dtype=np.uint8)
                vb2[: voff[nv]] = vbytes[: voff[nv]]
                vbytes = vb2
            if 2 * (nv + 1) > len(slots):
                slots = _rehash(2 * len(slots), vhash, nv)
            v, nv = _lookup_insert(buf, lo, hi, _hash(buf, lo, hi), slots, vhash, vbytes, voff, nv)
            if k == cap:
                cap *= 2
                doc2 = np.empty(cap, dtype=np.int32)
                doc2[:k] = doc
                doc = doc2
                ids2 = np.empty(cap, dtype=np.int32)
                ids2[:k] = ids
                ids = ids2
            doc[k] = d
            ids[k] = v
            k += 1
    return doc[:k].copy(), ids[:k].copy(), slots, vhash, vbytes, voff, nv


@njit(cache=True, nogil=True)
def insert_words(wbytes, woffsets, slots, vhash, vbytes, voff, nv):
    """Add the words wbytes[woffsets[i]:woffsets[i + 1]] (each taken whole) to the vocabulary; returns
    (ids, slots, vhash, vbytes, voff, nv) as `encode` does."""
    m = len(woffsets) - 1
    ids = np.empty(m, dtype=np.int32)
    for i in range(m):
        lo, hi = woffsets[i], woffsets[i + 1]
        if nv + 1 >= len(vhash):
            vh2 = np.empty(2 * len(vhash), dtype=np.uint64)
            vh2[:nv] = vhash[:nv]
            vhash = vh2
            vo2 = np.empty(2 * len(voff), dtype=np.int64)
            vo2[: nv + 1] = voff[: nv + 1]
            voff = vo2
        if voff[nv] + (hi - lo) > len(vbytes):
            vb2 = np.empty(max(2 * len(vbytes), voff[nv] + (hi - lo)), dtype=np.uint8)
            vb2[: voff[nv]] = vbytes[: voff[nv]]
            vbytes = vb2
        if 2 * (nv + 1) > len(slots):
            slots = _rehash(2 * len(slots), vhash, nv)
        ids[i], nv = _lookup_insert(wbytes, lo, hi, _hash(wbytes, lo, hi), slots, vhash, vbytes, voff, nv)
    return ids, slots, vhash, vbytes, voff, nv


@njit(cache=True, nogil=True)
def masked_counts(doc, ids, masks, n_docs):
    """counts[j, d] = number of tokens of text d whose vocabulary entry is True in masks[j]: one pass
    over the tokens for all masks."""
    out = np.zeros((masks.shape[0], n_docs), dtype=np.int64)
    for t in range(len(doc)):
        v = ids[t]
        d = doc[t]
        for j in range(masks.shape[0]):
            if masks[j, v]:
                out[j, d] += 1
    return out
