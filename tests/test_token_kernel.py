"""Exactness of the compiled tokeniser (`icai_core.token_kernel`): its tokens equal the previous numpy
implementation (kept below, verbatim from commit e55970a, as the reference) and the RE2 split that
defines a token; its vocabulary ids equal Arrow's `dictionary_encode`; its matrices and counts equal
scipy/numpy computations of the same thing. On every real shared text and on generated hostile
strings (letters, marks and digits of many scripts next to apostrophes and separators)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy import sparse

from icai_core import judges, token_kernel
from tests.conftest import SHARED_DATA

_TOKEN_SEPARATOR = r"[^\p{L}\p{M}\p{N}']+"
_large_utf8 = token_kernel.large_utf8


# ---- the reference: numpy tokeniser of e55970a (icai_core/judges.py), unchanged ----------------
_ASCII_WORD = np.zeros(256, dtype=bool)
_ASCII_WORD[np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'", dtype=np.uint8)] = True
_APOSTROPHE = ord("'")


def _runs(flag: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) byte positions of the maximal runs of True in `flag`, also cut at every text
    start in `starts` (sorted, distinct), so that no run crosses from one text into the next."""
    dtype = np.int32 if len(flag) < 2**31 - 1 else np.int64  # half the memory for all but huge inputs
    change = np.flatnonzero(flag[1:] != flag[:-1]).astype(dtype)
    change += 1
    head = np.zeros(int(flag[0]), dtype=dtype)
    tail = np.full(int(flag[-1]), len(flag), dtype=dtype)
    edges = np.concatenate([head, change, tail])
    del change
    first, last = edges[0::2], edges[1::2] - 1
    inner = starts[starts > 0]
    cut = inner[flag[inner] & flag[inner - 1]]
    if len(cut):
        first = np.insert(first, np.searchsorted(first, cut), cut)
        last = np.insert(last, np.searchsorted(last, cut - 1), cut - 1)
    return first, last


def _utf8_word_flags(buf: np.ndarray, word: np.ndarray) -> None:
    """Mark in `word` the bytes of non-ASCII characters that are word characters (letters, marks,
    digits of any script), exactly as RE2 classifies them: each distinct code point is tested once."""
    lead = np.flatnonzero(buf >= 0xC0)  # first byte of every multi-byte character (valid UTF-8)
    if not len(lead):
        return
    b0 = buf[lead].astype(np.int32)
    size = 2 + (b0 >= 0xE0) + (b0 >= 0xF0)
    c1, c2, c3 = (buf[np.minimum(lead + k, len(buf) - 1)].astype(np.int32) & 0x3F for k in (1, 2, 3))
    cp = np.where(
        size == 2,
        ((b0 & 0x1F) << 6) | c1,
        np.where(size == 3, ((b0 & 0x0F) << 12) | (c1 << 6) | c2, ((b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3),
    )
    uniq, inv = np.unique(cp, return_inverse=True)
    chars = pa.array([chr(c) for c in uniq.tolist()], type=pa.large_string())
    is_word = ~pc.match_substring_regex(chars, _TOKEN_SEPARATOR).to_numpy(zero_copy_only=False)
    flags = is_word[inv]
    word[lead] = flags
    for k in (1, 2, 3):
        more = size > k
        word[lead[more] + k] = flags[more]


def _large_utf8(texts: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    """`texts` as one contiguous large_string Arrow array with missing texts empty: the layout the
    byte-level kernels (`_tokenize`, `_utf8_buffer`) read their offsets and bytes from."""
    arr = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(texts)
    arr = arr.cast(pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    return arr


def _tokenize(texts: pd.Series | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Word tokens of every text: (doc id per token, tokens as an Arrow string array).

    A token is a maximal run of word characters (Unicode letters, marks, digits, apostrophes) with
    the apostrophes at its edges trimmed; runs of apostrophes only are dropped. This is the same as
    splitting on the RE2 pattern `_TOKEN_SEPARATOR` and trimming "'" (the previous implementation,
    kept identical by a golden test), but done on the UTF-8 bytes with numpy: the regex split built
    a list array of every token and was the most expensive step of all the judges.
    """
    arr = _large_utf8(texts)
    n = len(arr)
    no_tokens = (np.zeros(0, dtype=np.int32), pa.array([], type=pa.string()))
    if n == 0:
        return no_tokens
    _, obuf, dbuf = arr.buffers()
    offsets = np.frombuffer(obuf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
    lo, hi = int(offsets[0]), int(offsets[-1])
    if hi == lo:
        return no_tokens
    buf = np.frombuffer(dbuf, dtype=np.uint8)[lo:hi]
    offsets = offsets - lo
    word = _ASCII_WORD[buf]
    _utf8_word_flags(buf, word)
    starts = np.unique(offsets[:-1][offsets[:-1] < len(buf)])
    first, last = _runs(word, starts)
    del word
    # Trim apostrophes at the edges, on the few runs that have one (a mask over all runs is a pass
    # over millions of them): a few steps cover real text; what is left after them (a long run of
    # apostrophes) is trimmed in one go from the apostrophe runs.
    edge = np.flatnonzero((buf[first] == _APOSTROPHE) | (buf[last] == _APOSTROPHE))
    if len(edge):
        lo, hi = first[edge], last[edge]
        todo = np.arange(len(edge))
        for _ in range(4):
            lead_a = buf[lo[todo]] == _APOSTROPHE
            trail_a = buf[hi[todo]] == _APOSTROPHE
            moved = lead_a | trail_a
            todo, lead_a, trail_a = todo[moved], lead_a[moved], trail_a[moved]
            if not len(todo):
                break
            lo[todo] += lead_a
            hi[todo] -= trail_a
            todo = todo[lo[todo] <= hi[todo]]  # an emptied run is dropped below
        else:
            if len(todo):
                apos = buf == _APOSTROPHE
                a_first, a_last = _runs(apos, starts)
                ft, lt = lo[todo], hi[todo]
                lead_a, trail_a = apos[ft], apos[lt]
                del apos
                ft[lead_a] = a_last[np.searchsorted(a_first, ft[lead_a], side="right") - 1] + 1
                lt[trail_a] = a_first[np.searchsorted(a_last, lt[trail_a])] - 1
                lo[todo], hi[todo] = ft, lt
        first[edge], last[edge] = lo, hi
        empty = edge[lo > hi]
        if len(empty):
            keep = np.ones(len(first), dtype=bool)
            keep[empty] = False
            first, last = first[keep], last[keep]
    # Tokens and the gaps between them as one string array over the same bytes; keep the tokens.
    k = len(first)
    small = first.dtype == np.int32  # 32-bit offsets (Arrow "string") unless the text is over 2 GB
    bounds = np.empty(2 * k + 2, dtype=first.dtype)
    bounds[0], bounds[-1] = 0, len(buf)
    bounds[1:-1:2] = first
    bounds[2:-1:2] = last + 1
    array_type = pa.StringArray if small else pa.LargeStringArray
    both = array_type.from_buffers(2 * k + 1, pa.py_buffer(bounds), pa.py_buffer(buf))
    del bounds
    tokens = both.take(pa.array(np.arange(1, 2 * k, 2, dtype=first.dtype)))
    del both
    doc = np.repeat(np.arange(n, dtype=first.dtype), np.diff(np.searchsorted(first, offsets)))
    return doc, tokens




# ---- generated texts ------------------------------------------------------------------------
# Word characters of many scripts and byte lengths (letters Lu/Ll/Lo/Lm, marks Mn/Mc/Me, digits
# Nd/Nl/No), and separators that look like letters or glue (underscore, curly apostrophe, joiners,
# no-break and ideographic spaces, line separators, emoji, symbols).
_WORDISH = ["a", "Z", "7", "\u00e9", "\u00df", "\u0130", "\u212a", "\u03a9", "\u0436", "\u05d0", "\u0627",
            "\u0939", "\u0e01", "\u4e2d", "\u3042", "\uac00", "\u02b0", "\u0301", "\u0903", "\u20dd",
            "\u0663", "\u0967", "\uff11", "\u00b2", "\u216b", "\u2460", "\U0001d400", "\U00020000",
            "\U00010400", "\U0001e900", "\U0001f1e6"]
_SEPARATORISH = [" ", "\n", "\r\n", "\t", "-", "_", ".", ",", "\u2019", "\u00a0", "\u2028", "\u3000", "\u200d",
                 "\ufeff", "\U0001f600", "\u20ac", "\u00ab", "\U000e0041", "\x00", "\x7f"]


def _hostile_texts(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    atoms = _WORDISH + _SEPARATORISH + ["'"] * 8 + ["''", "'''"]
    out = []
    for _ in range(n):
        size = int(rng.choice([0, 1, 2, 3, 5, 8, 20, 60]))
        out.append("".join(str(a) for a in rng.choice(atoms, size=size)))
    return out


_CASES = ["", "'''", "'", "''a''", "a'b", "' '", " ", "- _ .", "\u2019\u2019", "a\u2019b", "don't", "'tis'",
          "'" * 50 + "a" + "'" * 30, "a'''''''''b", "''''''x", "x''''''", "\u00e9'\u4e2d'", "\U0001d400'",
          "x" * 100_000, "ab" * 1000 + "'", "\u0301\u0301", "1,000.5", "\U0001f600a\U0001f600"]


def _split_reference(texts) -> list[list[str]]:
    """The definition: split on the RE2 pattern, trim "'" at the edges, drop what is left empty."""
    split = pc.split_pattern_regex(pa.array(list(texts), type=pa.string()), _TOKEN_SEPARATOR).to_pylist()
    return [[t.strip("'") for t in row if t.strip("'")] for row in split]


def _per_text(doc: np.ndarray, tokens: list[str], n: int) -> list[list[str]]:
    out: list[list[str]] = [[] for _ in range(n)]
    for d, t in zip(doc.tolist(), tokens, strict=True):
        out[d].append(t)
    return out


@pytest.fixture(scope="module")
def shared_texts() -> pd.Series:
    """Every distinct prompt and response of the shared CSV files, and their lowercased forms."""
    if SHARED_DATA is None:
        pytest.skip("real shared data not found")
    cols = []
    for f in sorted(Path(SHARED_DATA).glob("*.csv")):
        frame = pd.read_csv(f, keep_default_na=False)
        cols += [frame[c] for c in ("prompt", "text_a", "text_b") if c in frame.columns]
    texts = pd.concat(cols, ignore_index=True).astype("str").drop_duplicates(ignore_index=True)
    low = texts.str.replace("\u2019", "'", regex=False).str.lower()
    return pd.concat([texts, low], ignore_index=True).drop_duplicates(ignore_index=True)


def _check_all_three(texts: pd.Series) -> int:
    doc, tok = token_kernel.tokenize(texts)
    ref_doc, ref_tok = _tokenize(texts)
    assert doc.dtype == np.int32
    np.testing.assert_array_equal(doc, ref_doc)
    got = tok.to_pylist()
    assert got == ref_tok.to_pylist()
    assert _per_text(doc, got, len(texts)) == _split_reference(texts)
    # Encoding: the same ids and vocabulary as dictionary_encode of those tokens.
    e_doc, ids, vocab = token_kernel.encode(texts)
    enc = pc.dictionary_encode(tok)
    np.testing.assert_array_equal(e_doc, doc)
    np.testing.assert_array_equal(ids, enc.indices.to_numpy(zero_copy_only=False))
    assert vocab.equals(enc.dictionary)
    return len(got)


def test_tokens_equal_the_numpy_reference_and_the_re2_split_on_every_shared_text(shared_texts):
    assert token_kernel.TOKEN_SEPARATOR == judges._TOKEN_SEPARATOR
    assert len(shared_texts) > 30_000
    n_tokens = _check_all_three(shared_texts)
    assert n_tokens > 4_000_000


def test_tokens_equal_the_numpy_reference_and_the_re2_split_on_hostile_strings():
    texts = pd.Series(_CASES + _hostile_texts(seed=13, n=6_000), dtype="str")
    n_tokens = _check_all_three(texts)
    assert n_tokens > 15_000
    # One text per code point (a sample of every plane) between two letters: the kernel's table of
    # word characters is RE2's, not Python's.
    cps = [c for c in range(0x80, 0x110000, 7) if not 0xD800 <= c < 0xE000]
    one = pd.Series([f"a{chr(c)}b" for c in cps], dtype="str")
    doc, tok = token_kernel.tokenize(one)
    assert _per_text(doc, tok.to_pylist(), len(one)) == _split_reference(one)
    assert 1_000 < (np.bincount(doc, minlength=len(one)) == 1).sum() < len(one) - 1_000  # both outcomes


@pytest.mark.parametrize("batch", [[], [""], ["", ""], [" - "], ["'''", "''"], ["a"], ["", "a", ""]])
def test_degenerate_batches(batch):
    texts = pd.Series(batch, dtype="str")
    doc, tok = token_kernel.tokenize(texts)
    assert _per_text(doc, tok.to_pylist(), len(batch)) == _split_reference(batch)
    e_doc, ids, vocab = token_kernel.encode(texts)
    assert ids.dtype == np.int32 and len(ids) == len(e_doc) == len(tok)
    assert vocab.to_pylist() == list(dict.fromkeys(tok.to_pylist()))


def test_sliced_chunked_and_missing_texts():
    texts = _CASES + _hostile_texts(seed=5, n=500)
    want = _split_reference(texts)
    sliced = pa.array(texts, type=pa.string()).slice(7, 300)  # offsets not starting at 0
    doc, tok = token_kernel.tokenize(sliced)
    assert _per_text(doc, tok.to_pylist(), 300) == want[7:307]
    chunked = pa.chunked_array([pa.array(texts[:10]), pa.array(texts[10:])])
    doc, tok = token_kernel.tokenize(chunked)
    assert _per_text(doc, tok.to_pylist(), len(texts)) == want
    with_null = pa.array(["a b", None, "c"])
    doc, tok = token_kernel.tokenize(with_null)
    assert doc.tolist() == [0, 0, 2] and tok.to_pylist() == ["a", "b", "c"]


def test_a_vocabulary_extended_over_batches_numbers_words_as_one_dictionary_encode():
    # The judges' content vocabulary: the response vocabulary first, then the new words of two other
    # token sets, in order of first appearance (as dictionary_encode of the concatenation numbers them).
    rng = np.random.default_rng(2)
    a, b, c = (pd.Series(_hostile_texts(seed=s, n=800), dtype="str") for s in (1, 2, 3))
    b = pd.concat([b, a.sample(200, random_state=int(rng.integers(1000)))], ignore_index=True)
    _, _, vocab_a = token_kernel.encode(a)
    joint, ids_a = token_kernel.Vocabulary.of_words(vocab_a)
    np.testing.assert_array_equal(ids_a, np.arange(len(vocab_a)))
    doc_b, ids_b = joint.encode(b)
    doc_c, ids_c = joint.encode(c)
    _, tok_b = _tokenize(b)
    _, tok_c = _tokenize(c)
    whole = pa.chunked_array([vocab_a, tok_b, tok_c], type=pa.string()).combine_chunks()
    enc = pc.dictionary_encode(whole)
    want = enc.indices.to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(np.concatenate([ids_a, ids_b, ids_c]), want)
    assert joint.arrow().equals(enc.dictionary)
    assert len(vocab_a) < len(enc.dictionary)  # the later batches did add words
    first_vocab = joint.arrow()
    joint.encode(pd.Series(["brandnewword"], dtype="str"))
    assert first_vocab.equals(enc.dictionary)  # an exported vocabulary does not change with growth


def test_binary_matrix_and_masked_counts_equal_scipy_and_numpy():
    texts = pd.Series(_hostile_texts(seed=9, n=3_000) + [""] * 3, dtype="str")
    doc, ids, vocab = token_kernel.encode(texts)
    n, n_v = len(texts), len(vocab)
    rng = np.random.default_rng(0)
    mask = rng.random(n_v) < 0.6
    got = token_kernel.binary_matrix(doc, ids, mask, n, n_v)
    keep = mask[ids]
    want = sparse.csr_matrix((np.ones(int(keep.sum())), (doc[keep], ids[keep])), shape=(n, n_v))
    want.sum_duplicates()
    want.data[:] = 1.0
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got.indptr, want.indptr)
    for d in range(n):  # the same set per row, no duplicates (order of first appearance, not sorted)
        row = got.indices[got.indptr[d] : got.indptr[d + 1]]
        assert len(set(row.tolist())) == len(row)
        np.testing.assert_array_equal(np.sort(row), want.indices[want.indptr[d] : want.indptr[d + 1]])
    assert not got.has_sorted_indices
    np.testing.assert_array_equal(np.asarray(got.multiply(want).sum(axis=1)).ravel(), np.diff(want.indptr))
    np.testing.assert_array_equal(got.toarray(), want.toarray())
    assert (np.diff(got.indptr) < np.bincount(doc, minlength=n)).any()  # duplicates were there to drop
    masks = np.stack([mask, ~mask, np.ones(n_v, dtype=bool)])
    counts = token_kernel.masked_counts(doc, ids, masks, n)
    for j in range(3):
        np.testing.assert_array_equal(counts[j], np.bincount(doc[masks[j][ids]], minlength=n))


def test_mark_rows_equals_a_python_loop():
    texts = pd.Series(_hostile_texts(seed=4, n=500), dtype="str")
    doc, ids, vocab = token_kernel.encode(texts)
    rng = np.random.default_rng(1)
    stands_for = [sorted(set(rng.integers(0, 5, size=int(rng.integers(0, 3))).tolist())) for _ in range(len(vocab))]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in stands_for])])
    rows = np.array([r for rs in stands_for for r in rs], dtype=np.int64)
    got = np.zeros((5, len(texts)), dtype=bool)
    token_kernel.mark_rows(doc, ids, indptr, rows, got)
    want = np.zeros_like(got)
    for d, v in zip(doc.tolist(), ids.tolist(), strict=True):
        for r in stands_for[v]:
            want[r, d] = True
    np.testing.assert_array_equal(got, want)
    assert 0 < want.sum() < want.size


def test_sizes_that_can_pass_two_gigabytes_are_int64():
    # Byte positions and offsets are int64 in the compiled loops (a 2 GB batch must not wrap around);
    # the bound on tokens is computed in Python integers.
    n, buf, offsets = token_kernel.utf8_buffer(pd.Series(["ab cd", "e"], dtype="str"))
    assert offsets.dtype == np.int64
    jit = token_kernel._jit()
    doc, first, last = jit.token_spans(buf, offsets, token_kernel.code_point_table(buf), jit.max_tokens(6, 2))
    assert first.dtype == last.dtype == np.int64 and first.tolist() == [0, 3, 5]
    assert jit.max_tokens(2**33, 10) == 2**32 + 6


def test_works_where_no_cache_directory_is_writable(tmp_path):
    # A read-only install run by a user without a home: numba finds no cache locator and would fail
    # at import; the kernel then caches in a per-user folder of the temp directory (which the next
    # process, e.g. a spawned worker, loads instead of compiling again).
    import os
    import subprocess
    import sys

    numba = pytest.importorskip("numba")
    if not hasattr(numba.config, "CACHE_LOCATOR_CLASSES"):
        pytest.skip("this numba cannot be told to use no cache locator (NUMBA_CACHE_LOCATOR_CLASSES)")
    env = dict(os.environ, NUMBA_CACHE_LOCATOR_CLASSES="UserProvidedCacheLocator", TMPDIR=str(tmp_path),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.pop("NUMBA_CACHE_DIR", None)
    code = ("import numpy as np; from icai_core import token_kernel as tk; "
            "print(tk.masked_counts(np.array([0, 0, 1], np.int32), np.array([0, 1, 1], np.int32), "
            "np.array([True, False]), 2).tolist())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[[1, 0]]"
    assert list((tmp_path / f"principia-numba-{os.getuid()}").rglob("*masked_counts*.nbi"))


def test_one_reader_of_a_columns_bytes_for_the_kernels_and_the_content_hashes():
    """`large_utf8_view` is what both the judges' byte kernels and `inference.text_hashes` read: missing
    values are empty, a column Arrow cannot type is read with `str`, only a pandas pyarrow `str`
    column with no missing value counts as its own buffers, and the hashes keep their values
    (blake2b-64 of the UTF-8 bytes: they are part of the pair keys)."""
    import hashlib

    from icai_core import inference

    def blake(t: str) -> int:
        return int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")

    texts = ["héllo", "", "wörld 🙂", "x" * 70_000]
    own = pd.Series(texts, dtype="str")
    arr, shared = token_kernel.large_utf8_view(own)
    assert shared and arr.to_pylist() == texts
    buf = own.array._pa_array.chunks[0].buffers()[2]
    assert arr.buffers()[2].address == buf.address  # no copy of the text bytes
    missing = pd.Series(["a", None, "b"], dtype="str")
    for col in (missing, pd.Series(["a", None, "b"], dtype=object), pa.array(["a", None, "b"])):
        arr, shared = token_kernel.large_utf8_view(col)
        assert arr.to_pylist() == ["a", "", "b"] and not shared
    mixed = pd.Series(["a", 3, float("nan"), None], dtype=object)
    assert token_kernel.large_utf8_view(mixed)[0].to_pylist() == ["a", "3", "", ""]
    assert inference.text_hashes(own).tolist() == [blake(t) for t in texts]
    assert inference.text_hashes(missing).tolist() == [blake("a"), blake(""), blake("b")]
    off, data = inference.utf8_buffers(own.iloc[1:])
    assert [bytes(data[off[i]:off[i + 1]]).decode() for i in range(3)] == texts[1:]
    n, b, o = token_kernel.utf8_buffer(own.iloc[2:])
    assert n == 2 and o[0] == 0 and bytes(b[o[0]:o[1]]).decode() == texts[2]


def test_encoding_in_chunks_gives_the_one_pass_result_and_reports_each_chunk(shared_texts):
    """The judges encode the word tokens in chunks (progress and Cancel between them): the doc ids,
    the vocabulary ids and the vocabulary are those of one pass, on every shared text."""
    texts = shared_texts.iloc[:20_000]
    doc, ids, vocab = token_kernel.encode(texts)
    seen = []
    c_doc, c_ids, c_vocab = token_kernel.encode(texts, chunk=3_000, each=lambda d, n: seen.append((d, n)))
    np.testing.assert_array_equal(c_doc, doc)
    np.testing.assert_array_equal(c_ids, ids)
    assert c_vocab.equals(vocab) and c_doc.dtype == np.int32 and c_ids.dtype == ids.dtype
    assert seen == [(min(s + 3_000, len(texts)), len(texts)) for s in range(0, len(texts), 3_000)]


def test_the_word_tokens_report_progress_inside_their_judge_and_honour_cancel(monkeypatch):
    """`hedges_more` is the first judge to need the word tokens (~3 s of one call at 100k pairs, ~8 s
    in the app, with the bar frozen and Cancel unseen): it now reports "Tokenised N of M" and stops
    at a Cancel between chunks."""
    from icai_core.jobs import Cancelled, CancelToken

    monkeypatch.setattr(judges, "TOKENISE_CHUNK", 40)
    rng = np.random.default_rng(0)
    words = ["might", "possibly", "certainly", "it", "depends", "the", "answer", "is", "clear", "perhaps"]
    pairs = pd.DataFrame({
        "prompt": [f"question {i}" for i in range(60)],
        "text_a": [" ".join(rng.choice(words, 12)) for _ in range(60)],
        "text_b": [" ".join(rng.choice(words, 9)) for _ in range(60)],
    })
    seen = []
    votes = judges.compute_votes(pairs, ["step_by_step", "hedges_more"], progress=lambda d, t, m: seen.append((d, m)))
    tok = [(d, m) for d, m in seen if "Tokenis" in m]
    assert [m for _, m in tok] == ["hedges_more: Tokenising 120 texts", "hedges_more: Tokenised 40 of 120 texts", "hedges_more: Tokenised 80 of 120 texts",
                                   "hedges_more: Tokenised 120 of 120 texts"]
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    monkeypatch.setattr(judges, "TOKENISE_CHUNK", 10**9)
    pd.testing.assert_frame_equal(votes, judges.compute_votes(pairs, ["step_by_step", "hedges_more"]))
    monkeypatch.setattr(judges, "TOKENISE_CHUNK", 40)
    token = CancelToken()
    with pytest.raises(Cancelled):
        judges.compute_votes(pairs, ["hedges_more"], cancel=token,
                             progress=lambda d, t, m: token.cancel() if "Tokenised 40 " in m else None)
