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
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing of a key to a slot


@njit(cache=True, nogil=True)
def _decode(buf, i, end):
    """(code point, byte length) of the multi-byte UTF-8 character starting at buf[i] (valid UTF-8;
    never reads at or past `end`)."""
    b0 = np.int64(buf[i])
    c1 = np.int64(buf[i + 1]) & 0x3F if i + 1 < end else 0
    if b0 < 0xE0:
        return ((b0 & 0x1F) << 6) | c1, 2
    c2 = np.int64(buf[i + 2]) & 0x3F if i + 2 < end else 0
    if b0 < 0xF0:
        return ((b0 & 0x0F) << 12) | (c1 << 6) | c2, 3
    c3 = np.int64(buf[i + 3]) & 0x3F if i + 3 < end else 0
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
        while i < n and buf[i] < 0x80:
            i += 1
        if i >= n:
            break
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


def max_tokens(n_bytes: int, n_docs: int) -> int:
    """An upper bound on the tokens of n_docs texts of n_bytes bytes in all: a token and the separator
    after it take 2+ bytes, except at the end of a text."""
    return (n_bytes + n_docs) // 2 + 1


@njit(cache=True, nogil=True)
def _word_end(buf, pos, end, table):
    """First position at or after pos that is not a word character (or end)."""
    while pos < end:
        b = buf[pos]
        if b < 0x80:
            if table[b] != WORD:
                return pos
            pos += 1
        else:
            cp, size = _decode(buf, pos, end)
            if table[cp] != WORD:
                return pos
            pos += size
    return end


@njit(cache=True, nogil=True)
def _word_start(buf, pos, end, table):
    """First position at or after pos that is a word character (or end)."""
    while pos < end:
        b = buf[pos]
        if b < 0x80:
            if table[b] == WORD:
                return pos
            pos += 1
        else:
            cp, size = _decode(buf, pos, end)
            if table[cp] == WORD:
                return pos
            pos += size
    return end


@njit(cache=True, nogil=True)
def token_spans(buf, offsets, table, cap):
    """(doc id, first byte, last byte) of every token of the texts buf[offsets[d]:offsets[d + 1]];
    `cap` >= max_tokens(len(buf), len(offsets) - 1). A token is a maximal run of word characters
    with its edge apostrophes trimmed; a run of apostrophes only is skipped."""
    doc = np.empty(cap, dtype=np.int32)
    first = np.empty(cap, dtype=np.int64)
    last = np.empty(cap, dtype=np.int64)
    k = 0
    for d in range(len(offsets) - 1):
        pos, end = offsets[d], offsets[d + 1]
        while True:
            lo = _word_start(buf, pos, end, table)
            if lo >= end:
                break
            pos = hi = _word_end(buf, lo, end, table)
            while lo < hi and buf[lo] == _APOSTROPHE:
                lo += 1
            while hi > lo and buf[hi - 1] == _APOSTROPHE:
                hi -= 1
            if lo < hi:
                doc[k] = d
                first[k] = lo
                last[k] = hi - 1
                k += 1
    return doc[:k], first[:k], last[:k]


@njit(cache=True, nogil=True)
def _key(buf, lo, hi):
    """64-bit key of the word buf[lo:hi]: up to 8 bytes, the bytes themselves (a word has no NUL byte,
    so the key is the word: no byte comparison needed); longer, an FNV-1a hash of its bytes and
    length with the low byte cleared (never equal to a short word's key, whose first byte is not 0)."""
    length = hi - lo
    key = np.uint64(0)
    if length <= 8:
        for j in range(length):
            key |= np.uint64(buf[lo + j]) << np.uint64(8 * j)
        return key
    key = _FNV_OFFSET ^ np.uint64(length)
    for j in range(lo, hi):
        key = (key ^ np.uint64(buf[j])) * _FNV_PRIME
    return key & ~np.uint64(0xFF)


@njit(cache=True, nogil=True)
def _slot(key, mask):
    return ((key * _MIX) >> np.uint64(32)) & mask


@njit(cache=True, nogil=True)
def _rehash(n_slots, keys, nv):
    """A table of n_slots (a power of two) holding the nv words of `keys`."""
    sid = np.full(n_slots, -1, dtype=np.int32)
    skey = np.zeros(n_slots, dtype=np.uint64)
    mask = np.uint64(n_slots - 1)
    for v in range(nv):
        s = _slot(keys[v], mask)
        while sid[s] >= 0:
            s = (s + np.uint64(1)) & mask
        sid[s] = v
        skey[s] = keys[v]
    return sid, skey


@njit(cache=True, nogil=True)
def _probe(buf, lo, hi, key, sid, skey, vbytes, voff):
    """(id, slot) of the word buf[lo:hi] with key `key`: id -1 and the free slot where it goes when it
    is new. Open addressing with linear probing; a slot holds the id and the key, so a short word is
    found without touching the vocabulary's bytes. (Scalars only: returning arrays from a helper
    costs reference counting on every token.)"""
    length = hi - lo
    mask = np.uint64(len(sid) - 1)
    s = _slot(key, mask)
    while True:
        v = sid[s]
        if v < 0:
            return -1, s
        if skey[s] == key:
            if length <= 8:
                return v, s
            o = voff[v]
            if voff[v + 1] - o == length:
                j = 0
                while j < length and vbytes[o + j] == buf[lo + j]:
                    j += 1
                if j == length:
                    return v, s
        s = (s + np.uint64(1)) & mask


@njit(cache=True, nogil=True)
def _append(buf, lo, hi, key, keys, vbytes, voff, v):
    """Store the word buf[lo:hi] as id v."""
    keys[v] = key
    o = voff[v]
    vbytes[o : o + hi - lo] = buf[lo:hi]
    voff[v + 1] = o + hi - lo


@njit(cache=True, nogil=True)
def encode(buf, offsets, table, cap, sid, skey, keys, vbytes, voff, nv):
    """Tokens (as token_spans defines them) of the texts buf[offsets[d]:offsets[d + 1]] as (doc id,
    vocabulary id) per token; new words are appended to the vocabulary (keys, vbytes, voff: the
    caller sizes them for nv + cap words and len(buf) more bytes), numbered in order of first
    appearance after the nv already there, as Arrow's dictionary_encode numbers them. The table
    (sid, skey) is replaced when it grows past half full. Returns (doc, ids, sid, skey, nv)."""
    doc = np.empty(cap, dtype=np.int32)
    ids = np.empty(cap, dtype=np.int32)
    k = 0
    for d in range(len(offsets) - 1):
        pos, end = offsets[d], offsets[d + 1]
        while True:
            lo = _word_start(buf, pos, end, table)
            if lo >= end:
                break
            pos = hi = _word_end(buf, lo, end, table)
            while lo < hi and buf[lo] == _APOSTROPHE:
                lo += 1
            while hi > lo and buf[hi - 1] == _APOSTROPHE:
                hi -= 1
            if lo >= hi:
                continue
            key = _key(buf, lo, hi)
            v, s = _probe(buf, lo, hi, key, sid, skey, vbytes, voff)
            if v < 0:
                v = nv
                _append(buf, lo, hi, key, keys, vbytes, voff, v)
                nv += 1
                if 2 * nv > len(sid):
                    sid, skey = _rehash(2 * len(sid), keys, nv)
                else:
                    sid[s] = v
                    skey[s] = key
            doc[k] = d
            ids[k] = v
            k += 1
    return doc[:k], ids[:k], sid, skey, nv


@njit(cache=True, nogil=True)
def insert_words(wbytes, woffsets, sid, skey, keys, vbytes, voff, nv):
    """Add the words wbytes[woffsets[i]:woffsets[i + 1]] (each taken whole) to the vocabulary, sized
    by the caller as for `encode`; returns (id of each word, sid, skey, nv)."""
    m = len(woffsets) - 1
    ids = np.empty(m, dtype=np.int32)
    for i in range(m):
        lo, hi = woffsets[i], woffsets[i + 1]
        key = _key(wbytes, lo, hi)
        v, s = _probe(wbytes, lo, hi, key, sid, skey, vbytes, voff)
        if v < 0:
            v = nv
            _append(wbytes, lo, hi, key, keys, vbytes, voff, v)
            nv += 1
            if 2 * nv > len(sid):
                sid, skey = _rehash(2 * len(sid), keys, nv)
            else:
                sid[s] = v
                skey[s] = key
        ids[i] = v
    return ids, sid, skey, nv


@njit(cache=True, nogil=True)
def masked_counts(doc, ids, masks, n_docs):
    """counts[j, d] = number of tokens of text d whose vocabulary entry is True in masks[j] (masks as
    uint8 0/1: the count is a branch-free sum)."""
    out = np.zeros((masks.shape[0], n_docs), dtype=np.int64)
    for j in range(masks.shape[0]):
        mj = masks[j]
        oj = out[j]
        for t in range(len(doc)):
            oj[doc[t]] += mj[ids[t]]
    return out


@njit(cache=True, nogil=True)
def binary_rows(doc, ids, mask, n_docs, n_vocab):
    """CSR (indptr, indices) of the binary n_docs x n_vocab matrix with a 1 where text d has a token of
    vocabulary id v and mask[v]; `doc` ascending (a text's tokens are contiguous). No duplicates in
    a row; indices in order of first appearance in the text, not sorted (sorting cost as much as the
    rest, and scipy's products and sums do not need it)."""
    indptr = np.zeros(n_docs + 1, dtype=np.int64)
    indices = np.empty(len(doc), dtype=np.int32)
    mark = np.full(n_vocab, -1, dtype=np.int32)
    k = 0
    for t in range(len(doc)):
        v = ids[t]
        d = doc[t]
        if mask[v] and mark[v] != d:
            mark[v] = d
            indices[k] = v
            k += 1
            indptr[d + 1] += 1
    for d in range(n_docs):
        indptr[d + 1] += indptr[d]
    return indptr, indices[:k]


@njit(cache=True, nogil=True)
def mark_rows(doc, ids, indptr, rows, present):
    """present[r, doc[t]] = True for every token t and every r in rows[indptr[v]:indptr[v + 1]],
    v = ids[t] (the rows a vocabulary entry stands for)."""
    for t in range(len(doc)):
        v = ids[t]
        for j in range(indptr[v], indptr[v + 1]):
            present[rows[j], doc[t]] = True
