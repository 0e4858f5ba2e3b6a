"""Word tokens of many texts in one compiled pass over their UTF-8 bytes, and their vocabulary ids.

A token is a maximal run of word characters (Unicode letters, marks, digits, and the apostrophe)
with the apostrophes at its edges trimmed; a run of apostrophes only is no token; no token crosses
from one text into the next. This is exactly splitting each text on the RE2 pattern
`judges._TOKEN_SEPARATOR` and trimming "'" (tests check it against that split and against the
previous numpy implementation): ASCII bytes are classified by `ASCII_WORD`, and every non-ASCII
code point by RE2 itself, once per process (`code_point_table`), so Unicode's categories are RE2's,
not Python's (their Unicode versions differ).

Why compiled code: the numpy version walked the bytes of all texts several times (a flag per byte,
run edges, cuts at text starts, apostrophe trimming, a gather of the token strings) and Arrow's
`dictionary_encode` then hashed every token again; here one loop does it per byte, and the
vocabulary (open addressing; a word of up to 8 bytes is its own key, a longer one is hashed and
compared byte by byte) numbers the words in order of first appearance, as `dictionary_encode`
does, so every id is the same as before. Numba rather than Cython/C/Rust: it is already installed
(a dependency of umap-learn), needs no compiler or build step for an editable or wheel install,
and caches its machine code on disk.

Costs (measured on the 2-core development machine): the first compile of all kernels ~13 s of CPU,
once per install and source version; with the cache, the first call in a process ~0.7-1 s (numba
and LLVM loading) and ~110 MB of RSS; importing the judges does not import numba (`_jit` does, on
the first call). Workers spawned after the cache exists load it (`warm` fills it beforehand).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from icai_core import jit

# ASCII bytes that belong to a word token (letters, digits, apostrophe).
ASCII_WORD = np.zeros(128, dtype=bool)
ASCII_WORD[np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'", dtype=np.uint8)] = True
TOKEN_SEPARATOR = r"[^\p{L}\p{M}\p{N}']+"  # the RE2 class whose complement is a word character

_MAX_CODE_POINT = 0x110000
_lock = threading.Lock()
_table: np.ndarray | None = None  # per code point: 0 unknown, 1 word, 2 separator (grows per process)


def _jit():
    """The compiled loops (`_token_jit`; imports numba on first use, with `icai_core.jit`'s cache rule)."""
    return jit.load("_token_jit")


def code_point_table(buf: np.ndarray) -> np.ndarray:
    """The process's word/separator table with every code point of `buf` classified. A code point
    not seen before is classified by RE2 (`TOKEN_SEPARATOR`), all new ones of `buf` in one call."""
    global _table
    jit = _jit()
    with _lock:
        if _table is None:
            table = np.zeros(_MAX_CODE_POINT, dtype=np.uint8)
            table[:128] = np.where(ASCII_WORD, jit.WORD, jit.SEPARATOR)
            _table = table
        table = _table
        if len(buf) and int(buf.max()) >= 0x80:
            new = jit.unknown_code_points(buf, table)
            if len(new):
                chars = pa.array([chr(c) for c in new.tolist()], type=pa.string())
                sep = pc.match_substring_regex(chars, TOKEN_SEPARATOR).to_numpy(zero_copy_only=False)
                table[new] = np.where(sep, jit.SEPARATOR, jit.WORD)
    return table


def large_utf8_view(values) -> tuple[pa.Array, bool]:
    """(array, shared): a text column (a pandas Series or array, an Arrow array, a list) as one
    contiguous large_string Arrow array with missing texts empty, and whether that array is the
    column's own buffers (a single-chunk pyarrow-backed pandas `str` column with no missing value:
    the same buffers every time it is read from the same frame) rather than a converted copy.

    The one reader of a text column's UTF-8 bytes: the judges' byte kernels read it here, and so do
    the content hashes of `icai_core.inference` (which memoise by buffer address, hence `shared`).
    A column Arrow cannot take as one type (an object column mixing strings and numbers) is read
    value by value with `str`, None and NaN as empty."""
    import math

    import pandas as pd

    if isinstance(values, pa.Array | pa.ChunkedArray):
        arr, shared = values, False
    else:
        arr = values.array if isinstance(values, pd.Series) else values
        shared = isinstance(getattr(arr, "dtype", None), pd.StringDtype | pd.ArrowDtype) and getattr(
            arr.dtype, "storage", "pyarrow") == "pyarrow"
        try:
            arr = pa.array(arr)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            shared = False
            arr = pa.array(["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in arr],
                           type=pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        shared = shared and arr.num_chunks == 1
        arr = arr.combine_chunks()
    if not pa.types.is_large_string(arr.type):
        shared = False
        arr = arr.cast(pa.large_string())
    if arr.null_count:
        shared = False
        arr = pc.fill_null(arr, "")
    return arr, shared


def large_utf8(texts) -> pa.Array:
    """`texts` as one contiguous large_string Arrow array with missing texts empty (`large_utf8_view`):
    the layout the byte-level kernels read their offsets and bytes from."""
    return large_utf8_view(texts)[0]


def utf8_buffer(texts) -> tuple[int, np.ndarray, np.ndarray]:
    """(number of texts, their UTF-8 bytes end to end, int64 offsets of each text in them): views of
    the Arrow buffers, no copy of the text when it is one chunk."""
    arr = large_utf8(texts)
    n = len(arr)
    if n == 0:
        return 0, np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64)
    _, obuf, dbuf = arr.buffers()
    offsets = np.frombuffer(obuf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
    lo, hi = int(offsets[0]), int(offsets[-1])
    buf = np.frombuffer(dbuf, dtype=np.uint8)[lo:hi] if hi > lo else np.zeros(0, dtype=np.uint8)
    return n, buf, np.ascontiguousarray(offsets - lo)


def _string_array(buf: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """An Arrow string array over `buf` with int64 `offsets` (32-bit "string" unless over 2 GB)."""
    n = len(offsets) - 1
    if int(offsets[-1]) < 2**31 - 1:
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(buf))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))


def tokenize(texts) -> tuple[np.ndarray, pa.Array]:
    """(doc id per token (int32), the tokens as an Arrow string array), tokens in text order."""
    n, buf, offsets = utf8_buffer(texts)
    jit = _jit()
    doc, first, last = jit.token_spans(buf, offsets, code_point_table(buf), jit.max_tokens(len(buf), n))
    k = len(doc)
    bounds = np.empty(2 * k + 2, dtype=np.int64)  # tokens and the gaps between them, then the tokens
    bounds[0], bounds[-1] = 0, len(buf)
    bounds[1:-1:2] = first
    bounds[2:-1:2] = last + 1
    both = _string_array(buf, bounds)
    tokens = both.take(pa.array(np.arange(1, 2 * k, 2, dtype=np.int64))) if k else pa.array([], type=pa.string())
    return doc, tokens


def _grown(a: np.ndarray, used: int, need: int) -> np.ndarray:
    """`a` with room for `need` entries (its first `used` kept). Sized to the need at once: the part
    never written is never touched, so it costs address space, not memory."""
    if len(a) >= need:
        return a
    out = np.empty(need, dtype=a.dtype)
    out[:used] = a[:used]
    return out


@dataclass
class Vocabulary:
    """Distinct words, numbered in order of first appearance, with the hash table that finds them.
    Grows as texts are encoded (`encode`); `arrow()` gives the words as an Arrow string array."""

    slot_ids: np.ndarray  # int32 id per slot, -1 empty; a power of two in size, at most half full
    slot_keys: np.ndarray  # uint64 key (_token_jit._key) per slot
    keys: np.ndarray  # uint64 key per id
    data: np.ndarray  # uint8: the words end to end
    offsets: np.ndarray  # int64: word i is data[offsets[i]:offsets[i + 1]]
    size: int = 0

    @classmethod
    def empty(cls, capacity: int = 512) -> Vocabulary:
        n_slots = 1 << max(10, int(2 * capacity).bit_length())
        return cls(np.full(n_slots, -1, dtype=np.int32), np.zeros(n_slots, dtype=np.uint64),
                   np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64))

    def _reserve(self, words: int, n_bytes: int) -> None:
        used_bytes = int(self.offsets[self.size])
        self.keys = _grown(self.keys, self.size, self.size + words)
        self.offsets = _grown(self.offsets, self.size + 1, self.size + words + 1)
        self.data = _grown(self.data, used_bytes, used_bytes + n_bytes)

    def _table(self) -> tuple:
        return self.slot_ids, self.slot_keys, self.keys, self.data, self.offsets, self.size

    @classmethod
    def of_words(cls, words: pa.Array) -> tuple[Vocabulary, np.ndarray]:
        """A vocabulary holding `words` (an Arrow string array), and the id of each: 0, 1, 2... when
        they are distinct."""
        vocab = cls.empty(len(words))
        n, buf, offsets = utf8_buffer(words)
        vocab._reserve(n, len(buf))
        ids, vocab.slot_ids, vocab.slot_keys, size = _jit().insert_words(buf, offsets, *vocab._table())
        vocab.size = int(size)
        return vocab, ids

    def encode(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """(doc id, vocabulary id) per token of `texts` (int32 each), tokens in text order; new words
        are added to this vocabulary."""
        n, buf, offsets = utf8_buffer(texts)
        jit = _jit()
        table = code_point_table(buf)
        cap = jit.max_tokens(len(buf), n)
        if self.size + cap >= 2**31:
            raise ValueError(f"{len(buf):,} bytes of text in one batch: more than the 2^31 tokens an int32 id "
                             "can number; split the pairs into smaller chunks")
        self._reserve(cap, len(buf))
        doc, ids, self.slot_ids, self.slot_keys, size = jit.encode(buf, offsets, table, cap, *self._table())
        self.size = int(size)
        return doc, ids

    def arrow(self) -> pa.Array:
        """The words as an Arrow string array (a copy: later growth does not change it)."""
        end = int(self.offsets[self.size])
        return _string_array(self.data[:end].copy(), self.offsets[: self.size + 1].copy())


def encode(texts, chunk: int | None = None, each=None) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(doc id per token, vocabulary id per token, vocabulary) of `texts`: the same as
    `pc.dictionary_encode` of `tokenize(texts)`'s tokens, in one pass (per chunk).

    `chunk`: encode that many texts at a time into the one growing vocabulary (the same ids, the
    words being numbered in order of first appearance either way), calling `each(done, n)` after
    each chunk: 200,000 texts (100k pairs) were ~3 s of one call (~8 s in the app) with no progress and no
    Cancel seen."""
    vocab = Vocabulary.empty()
    arr = large_utf8(texts)
    n = len(arr)
    if not chunk or n <= chunk:
        doc, ids = vocab.encode(arr)
        return doc, ids, vocab.arrow()
    docs, idss = [], []
    for s in range(0, n, chunk):
        doc, ids = vocab.encode(arr.slice(s, chunk))
        doc += np.int32(s)
        docs.append(doc)
        idss.append(ids)
        if each is not None:
            each(min(s + chunk, n), n)
    return np.concatenate(docs), np.concatenate(idss), vocab.arrow()


def masked_counts(doc: np.ndarray, ids: np.ndarray, masks: np.ndarray, n_docs: int) -> np.ndarray:
    """counts[j, d]: tokens of text d whose vocabulary entry is True in masks[j] (one pass for all)."""
    masks = np.ascontiguousarray(np.atleast_2d(masks), dtype=np.uint8)
    return _jit().masked_counts(doc, ids, masks, n_docs)


def binary_matrix(doc: np.ndarray, ids: np.ndarray, mask: np.ndarray, n_docs: int, n_vocab: int):
    """scipy CSR (float32) of the binary texts x vocabulary matrix: 1 where text d has a token whose
    vocabulary entry is True in `mask` (tokens with `doc` ascending, as `encode` gives them). Each
    row is free of duplicates but not sorted (scipy's flags say so)."""
    from scipy import sparse

    indptr, indices = _jit().binary_rows(doc, ids, np.ascontiguousarray(mask, dtype=np.bool_), n_docs, n_vocab)
    idx_dtype = np.int32 if len(indices) < 2**31 - 1 else np.int64
    m = sparse.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr.astype(idx_dtype)),
                          shape=(n_docs, n_vocab))
    m.has_sorted_indices = False
    return m


def warm() -> None:
    """Compile (or load from the on-disk cache) every kernel, on a tiny input. For a parent process
    before it spawns workers: with no cache yet, each worker would otherwise compile the same code
    at the same time (~13 s of CPU each on a 2-core machine; ~1 s each once the cache exists)."""
    texts = pa.array(["warm it'' up \u00e9", ""], type=pa.string())
    doc, ids, vocab = encode(texts)
    tokenize(texts)
    Vocabulary.of_words(vocab)
    mask = np.ones(len(vocab), dtype=bool)
    masked_counts(doc, ids, mask, 2)
    binary_matrix(doc, ids, mask, 2, len(vocab))
    mark_rows(doc, ids, np.arange(len(vocab) + 1), np.zeros(len(vocab)), np.zeros((1, 2), dtype=bool))


def mark_rows(doc: np.ndarray, ids: np.ndarray, indptr: np.ndarray, rows: np.ndarray, present: np.ndarray) -> None:
    """Set present[r, d] for each token of text d and each row r its vocabulary entry v stands for
    (rows[indptr[v]:indptr[v + 1]]): one pass over the tokens, in place."""
    _jit().mark_rows(doc, ids, np.ascontiguousarray(indptr, dtype=np.int64),
                     np.ascontiguousarray(rows, dtype=np.int64), present)
