"""Streaming audit statistics: judges and principle stats over pair files of any size, in bounded memory.

The in-memory audit holds every text, every intermediate feature and the whole vote matrix at once
(~30 KB per distinct pair), so memory grows with the data. Here pairs are read in chunks (Parquet
row group by row group via `pyarrow.parquet.ParquetFile.iter_batches`, CSV via `pyarrow.csv.open_csv`
streaming, or slices of a DataFrame), the measurable judges vote on one chunk at a time, and only
the sufficient statistics of the principle stats are kept: per principle the number of agreeing and
disagreeing votes among decided rows, plus the numbers of decided and tied rows. `stats.stats_from_counts`
turns the merged counts into exactly the table `stats.principle_stats` builds from the full vote
matrix: the judges' votes depend only on each pair's own texts, so chunking changes no vote.

**Per annotator.** `chunk_counts_by_annotator` splits a chunk by its `annotator` column and returns
one `Counts` per annotator (merged per key across chunks); the pooled view is the merge of all of
them. These are the same numbers as `pipeline.analyse` computes per annotator (a test checks it on
real multi-annotator files): its statistics are over the annotator's *rows* (judgements), so a pair
judged twice by the same annotator counts twice there too, and so it does here.

**Distinct pairs.** The user-facing count (`n_pairs` of the in-memory audit) is the number of
distinct pairs (prompt, text_a, text_b). A pair may recur in any chunk, so chunk-local
de-duplication is not enough: each annotator's `Counts` keeps the sorted array of its distinct pair
keys (`pair_keys`, 8 bytes per distinct pair: 8 MB per million pairs and annotator; `pair_hashes`, a
64-bit SHA-256 prefix read from the Arrow buffers), and merging takes the union (a linear merge of
two sorted runs). That is not constant memory, but it is ~4,000 times smaller than the texts, and
the streamed count equals the in-memory one (`reconstruct.content_groups`, another 64-bit hash)
unless one of the two hashes collides: probability about n^2 / 2^65 for n distinct pairs (3e-8 at
1M, 3e-6 at 10M). The keys serve this count only, inside one run; nothing stores them. Within a
chunk, rows of the same pair (several annotators) are voted once and the votes reused, as the
in-memory voter does per distinct pair. `chunk_counts` (the pooled unit of work that distributed
engines map over shards) does not track pair keys: its `pair_keys` is None, and merging with None
gives None ("not tracked").

**Both cores.** `chunked_principle_stats(..., workers=N)` sends chunks to N spawned processes
(`concurrent.futures.ProcessPoolExecutor`, "spawn" context: no forked copies of the parent's heap
or threads) with at most N + 1 chunks in flight, so memory is about (N + 1) chunks, not the file.
Results are merged in chunk order, so they are identical to one process. A cancel sets a shared
event that the judges in every worker check before each principle.

    from icai_core.chunked import chunked_principle_stats
    res = chunked_principle_stats("pairs.parquet", chunk_rows=10_000, workers=2)
    res.stats                         # the pooled principle_stats table
    res.stats_by_annotator()          # {annotator: table}
    res.n_distinct_pairs("annotator") # distinct pairs of one annotator
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from icai_core import judges
from icai_core.jobs import Cancelled, CancelToken, Progress, check
from icai_core.result import ALL
from icai_core.stats import encode_preferred, stats_from_counts, vote_counts

__all__ = [
    "ChunkedResult", "Counts", "chunk_counts", "chunk_counts_by_annotator", "chunked_principle_stats",
    "iter_pair_chunks", "merge_by_annotator", "pair_hashes", "pooled",
]

REQUIRED = ("text_a", "text_b", "preferred")
TEXT_COLUMNS = ("prompt", "text_a", "text_b", "preferred")
PAIR_COLUMNS = ("prompt", "text_a", "text_b")  # what identifies a distinct pair (reconstruct.content_groups)
# The label column: canonical `preferred` (a / b / tie) or the Principia CSV's `preferred_text`
# (text_a / text_b / tie, the shared data's schema); `stats.encode_preferred` reads both vocabularies.
LABEL_ALIASES = ("preferred", "preferred_text")


def _union_sorted(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Union of two sorted arrays of distinct uint64 keys (None = not tracked, and stays so)."""
    if a is None or b is None:
        return None
    if not len(a):
        return b
    if not len(b):
        return a
    # Two sorted runs: the stable sort (timsort) merges them in linear time.
    c = np.sort(np.concatenate([a, b]), kind="stable")
    keep = np.empty(len(c), dtype=bool)
    keep[0] = True
    np.not_equal(c[1:], c[:-1], out=keep[1:])
    return c[keep]


@dataclass
class Counts:
    """Sufficient statistics of the principle stats for some set of rows (they add up).

    `n_pairs` counts the *rows* judged (the name is kept for the engines built on it); the distinct
    pairs are `n_distinct` when `pair_keys` is tracked (`chunk_counts_by_annotator`), else None.
    """

    keys: list[str]
    n_agree: np.ndarray
    n_disagree: np.ndarray
    n: int  # decided (non-tie) rows
    n_ties: int
    n_pairs: int  # rows judged (one per judgement)
    pair_keys: np.ndarray | None = field(default=None, repr=False)  # sorted distinct content hashes

    @classmethod
    def empty(cls, keys: list[str], track_pairs: bool = False) -> Counts:
        z = np.zeros(len(keys), dtype=np.int64)
        return cls(list(keys), z, z.copy(), 0, 0, 0, np.zeros(0, dtype=np.uint64) if track_pairs else None)

    @property
    def n_rows(self) -> int:
        return self.n_pairs

    @property
    def n_distinct(self) -> int | None:
        """Distinct pairs (prompt + both responses) among these rows; None when not tracked."""
        return None if self.pair_keys is None else int(len(self.pair_keys))

    def merge(self, other: Counts) -> Counts:
        if list(other.keys) != list(self.keys):
            raise ValueError("cannot merge counts of different principles")
        return Counts(self.keys, self.n_agree + other.n_agree, self.n_disagree + other.n_disagree,
                      self.n + other.n, self.n_ties + other.n_ties, self.n_pairs + other.n_pairs,
                      _union_sorted(self.pair_keys, other.pair_keys))

    def stats(self, alpha: float = 0.05) -> pd.DataFrame:
        """The `stats.principle_stats` table (same columns and order) from the counts alone."""
        principles = [judges.get_principle(k) for k in self.keys]
        table = stats_from_counts(self.keys, self.n_agree, self.n_disagree, self.n, self.n_ties, principles, alpha,
                                  sort=False)
        table["n_invalid"] = np.zeros(len(self.keys), dtype=np.int64)  # measurable judges always answer
        table = table.sort_values("strength", ascending=False, kind="mergesort", na_position="last")
        return table.reset_index(drop=True)


def merge_by_annotator(a: dict[str, Counts], b: dict[str, Counts]) -> dict[str, Counts]:
    """Merge two per-annotator results key by key (annotators keep their order of first appearance)."""
    out = dict(a)
    for name, c in b.items():
        out[name] = out[name].merge(c) if name in out else c
    return out


def pooled(by_annotator: dict[str, Counts], keys: list[str] | None = None) -> Counts:
    """All rows of every annotator as one set (the union of their distinct pairs)."""
    parts = list(by_annotator.values())
    if not parts:
        if keys is None:
            raise ValueError("no counts to pool and no principle keys given")
        return Counts.empty(keys, track_pairs=True)
    total = parts[0]
    for c in parts[1:]:
        total = total.merge(c)
    return total


@dataclass
class ChunkedResult:
    stats: pd.DataFrame  # pooled: every row of the source
    counts: Counts  # pooled
    n_chunks: int
    by_annotator: dict[str, Counts] = field(default_factory=dict)  # {} when the source has no annotator column
    workers: int = 1
    alpha: float = 0.05

    @property
    def n_pairs(self) -> int:
        """Rows judged (kept for compatibility; see `n_distinct_pairs` for the distinct pairs)."""
        return self.counts.n_pairs

    @property
    def n_rows(self) -> int:
        return self.counts.n_pairs

    @property
    def annotators(self) -> list[str]:
        return list(self.by_annotator)

    def n_distinct_pairs(self, annotator: str | None = None) -> int | None:
        c = self.counts if annotator in (None, ALL) and annotator not in self.by_annotator else \
            self.by_annotator[annotator]
        return c.n_distinct

    def views(self, view: str = "each") -> list[tuple[str, Counts, bool]]:
        """(name, counts, pooled) of each analysis, as `pipeline.annotator_rows` chooses them: a single
        (or no) annotator gives one view; several give one per annotator ("each"), the pooled rows
        under `result.ALL` ("pooled"), or both ("both")."""
        names = self.annotators
        if len(names) <= 1:
            return [(names[0] if names else ALL, self.counts, False)]
        out: list[tuple[str, Counts, bool]] = []
        if view in ("each", "both"):
            out += [(n, self.by_annotator[n], False) for n in names]
        if view in ("pooled", "both"):
            out.append((ALL, self.counts, True))
        if not out:
            raise ValueError(f"unknown annotator view {view!r}: use each, pooled or both")
        return out

    def stats_by_annotator(self, view: str = "both") -> dict[str, pd.DataFrame]:
        return {name: c.stats(self.alpha) for name, c, _ in self.views(view)}


def _keys(keys: Iterable[str] | None, use_embeddings: bool) -> list[str]:
    ks = [p.key for p in judges.PRINCIPLES] if keys is None else [judges.get_principle(k).key for k in keys]
    return [k for k in ks if use_embeddings or k not in judges.EMBEDDING_KEYS]


def chunk_counts(pairs: pd.DataFrame, keys: list[str], embedder=None, cancel: CancelToken | None = None) -> Counts:
    """Votes of the measurable judges on one chunk, reduced to agree/disagree counts (the unit of work)."""
    votes = judges.compute_votes(pairs, keys, embedder=embedder, cancel=cancel)
    n_agree, n_disagree, n, n_ties = vote_counts(votes, pairs["preferred"].reset_index(drop=True)
                                                 .set_axis(votes.index))
    return Counts(list(votes.columns), n_agree, n_disagree, n, n_ties, len(pairs))


def pair_hashes(pairs: pd.DataFrame) -> np.ndarray:
    """A 64-bit key of each row's pair (prompt, text_a, text_b): rows with the same three texts get the
    same key, in any chunk, worker or process of one run.

    The first 8 bytes of one SHA-256 over the length-prefixed UTF-8 bytes of the prompt and of
    text_a, then text_b, read from the columns' Arrow buffers (`inference.utf8_buffers`: no Python
    string is built). The length prefixes make the byte string unambiguous (("ab", "c") and
    ("a", "bc") differ); A/B order matters, as in `reconstruct.content_groups`. One hash per pair
    instead of pandas' per-column hashes of Python copies: 5.3 against 11.9 CPU-us per pair on the
    2-core container (SHA-256 runs on the CPU's SHA extensions there; blake2b took 8.5).

    These keys only count distinct pairs inside one run (`Counts.pair_keys`); nothing persists or
    compares them across runs. Two distinct pairs collide with probability 2^-64, so a count of n
    distinct pairs is exact with probability about 1 - n^2 / 2^65: 1 - 3e-8 at 1M pairs, 1 - 3e-6 at
    10M, the same order as the in-memory audit's own 64-bit `content_groups` hash.
    """
    import hashlib

    from icai_core.inference import utf8_buffers

    n = len(pairs)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    empty = ([0] * (n + 1), memoryview(b""))
    (po, pdata), (ao, adata), (bo, bdata) = (utf8_buffers(pairs[c]) if c in pairs.columns else empty
                                            for c in PAIR_COLUMNS)
    sha = hashlib.sha256
    out = []
    for i in range(n):
        p0, p1, a0, a1, b0, b1 = po[i], po[i + 1], ao[i], ao[i + 1], bo[i], bo[i + 1]
        h = sha((p1 - p0).to_bytes(8, "little"))
        h.update(pdata[p0:p1])
        h.update((a1 - a0).to_bytes(8, "little"))
        h.update(adata[a0:a1])
        h.update(bdata[b0:b1])
        out.append(h.digest()[:8])
    return np.frombuffer(b"".join(out), dtype="<u8").astype(np.uint64)


def chunk_counts_by_annotator(
    pairs: pd.DataFrame, keys: list[str], embedder=None, cancel: CancelToken | None = None
) -> dict[str, Counts]:
    """Per-annotator `Counts` of one chunk (with their distinct pair keys): pure, mergeable per key.

    Without an `annotator` column every row belongs to `result.ALL`. Each distinct pair of the chunk is
    voted once (the judges see only its texts) and its votes are reused for every row that judges it.
    """
    if not len(pairs):
        return {}
    y = encode_preferred(pairs["preferred"].reset_index(drop=True))  # labels checked once, positions of the chunk
    hashes = pair_hashes(pairs)
    codes, uniq = pd.factorize(hashes)
    _, first = np.unique(codes, return_index=True)
    items = pairs.iloc[first][[c for c in PAIR_COLUMNS if c in pairs.columns]].reset_index(drop=True)
    item_votes = judges.compute_votes(items, keys, embedder=embedder, cancel=cancel)
    arr = item_votes.to_numpy()[codes]
    cols = list(item_votes.columns)
    if "annotator" in pairs.columns:
        ann = pairs["annotator"].astype(str).to_numpy()
        names = list(dict.fromkeys(ann))
    else:
        ann, names = None, [ALL]
    out: dict[str, Counts] = {}
    for name in names:
        rows = np.arange(len(pairs)) if ann is None else np.flatnonzero(ann == name)
        v = pd.DataFrame(arr[rows], columns=cols)
        n_agree, n_disagree, n, n_ties = vote_counts(v, y[rows])
        out[name] = Counts(cols, n_agree, n_disagree, n, n_ties, len(rows),
                           np.unique(hashes[rows]))  # np.unique: sorted, distinct
    return out


def _as_text_frame(table) -> pd.DataFrame:
    """An Arrow table/batch -> DataFrame of str columns (missing prompt -> empty), as the judges expect."""
    df = table.to_pandas()
    return _normalise(df)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    if "preferred" not in df.columns and "preferred_text" in df.columns:
        df = df.rename(columns={"preferred_text": "preferred"})
    if "prompt" not in df.columns:
        df["prompt"] = ""
    for c in (*TEXT_COLUMNS, *(["annotator"] if "annotator" in df.columns else [])):
        if df[c].dtype != "str" or df[c].isna().any():
            df[c] = df[c].where(df[c].notna(), "").astype("str")
    return df


def _label_column(names: Iterable[str]) -> str | None:
    names = set(names)
    return next((c for c in LABEL_ALIASES if c in names), None)


def _check_columns(names: Iterable[str], source) -> None:
    names = list(names)
    missing = [c for c in ("text_a", "text_b") if c not in set(names)]
    if _label_column(names) is None:
        missing.append("preferred")
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {', '.join(missing)}; a streamed audit needs the canonical columns "
            "text_a, text_b, preferred (a / b / tie; or preferred_text: text_a / text_b / tie) and optionally "
            "prompt and annotator. Audit it without --stream (the loader maps other layouts), or convert it "
            "once with `icai_core.data.load_pairs(FILE).pairs.to_parquet(...)` and stream the Parquet file."
        )


def _wanted(names: Iterable[str]) -> list[str]:
    names = list(names)
    label = _label_column(names)
    return [c for c in ("prompt", "text_a", "text_b", label, "annotator") if c is not None and c in names]


def iter_pair_chunks(source, chunk_rows: int = 10_000) -> Iterator[pd.DataFrame]:
    """Chunks of at most `chunk_rows` pairs from a Parquet file/folder, a CSV file or a DataFrame.

    Only the canonical columns are read (prompt, text_a, text_b, the label as `preferred`, and
    `annotator` when present). Memory is bounded by the chunk size (plus one Arrow read block), not
    by the size of the source.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    if isinstance(source, pd.DataFrame):
        _check_columns(source.columns, "the pair table")
        cols = _wanted(source.columns)
        for s in range(0, len(source), chunk_rows):
            yield _normalise(source.iloc[s : s + chunk_rows][cols].reset_index(drop=True).copy())
        return
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    import pyarrow as pa

    if path.suffix.lower() in (".csv", ".tsv"):
        import pyarrow.csv as pcsv

        with open(path, "rb") as f:
            header = f.readline().decode("utf-8-sig", errors="replace")
        delim = "\t" if path.suffix.lower() == ".tsv" else ","
        names = [h.strip().strip('"') for h in header.rstrip("\r\n").split(delim)]
        _check_columns(names, path)
        cols = _wanted(names)
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=16 << 20),
            parse_options=pcsv.ParseOptions(delimiter=delim, newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(include_columns=cols, column_types={c: pa.string() for c in cols},
                                                strings_can_be_null=False),
        )
        batches = iter(reader)
    elif path.is_dir() or path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        # One row group at a time (ParquetFile.iter_batches): a dataset scanner reads ahead up to 16
        # batches and several files, so its memory grows with the file (3.5 GB on 1M pairs).
        # pre_buffer=False: with pyarrow's default (True) the reader caches the raw column chunks of
        # every row group it has read and frees none of them until the file is closed, so the Arrow
        # pool grew by one row group's bytes per row group (+74 MB per 50,000 pairs here; the 1M
        # run's creep from 0.80 to 2.27 GB). Measured flat without it (tests/test_chunked.py).
        files = sorted(p for p in path.rglob("*.parquet")) if path.is_dir() else [path]
        if not files:
            raise ValueError(f"{path}: no .parquet files in this folder")
        names = pq.ParquetFile(files[0], pre_buffer=False).schema_arrow.names
        _check_columns(names, files[0])
        cols = _wanted(names)
        batches = (b for f in files
                   for b in pq.ParquetFile(f, pre_buffer=False).iter_batches(batch_size=chunk_rows, columns=cols))
    else:
        raise ValueError(f"{path}: a streamed audit reads CSV, TSV or Parquet files (or a folder of Parquet "
                         "files); audit other formats without --stream, or convert them to Parquet first")
    pending: list = []
    size = 0
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, chunk_rows - size)
            pending.append(batch.slice(0, take))
            size += take
            batch = batch.slice(take)
            if size == chunk_rows:
                yield _as_text_frame(pa.Table.from_batches(pending))
                pending, size = [], 0
    if size:
        yield _as_text_frame(pa.Table.from_batches(pending))


def _total_rows(source) -> int:
    """Number of pairs when it is known without reading the texts (0 for CSV: unknown until read)."""
    if isinstance(source, pd.DataFrame):
        return len(source)
    path = Path(source)
    if path.suffix.lower() in (".csv", ".tsv"):
        return 0
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


# ------------------------------------------------------------------------------------ worker processes
_W: dict = {}  # per worker process: the cancel event and the lazily built embedder


class _EventToken:
    """A CancelToken look-alike over a multiprocessing Event (what the judges check is `.cancelled`)."""

    def __init__(self, event):
        self._event = event

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def _worker_init(event, embed_spec) -> None:
    _W.clear()
    _W.update(token=_EventToken(event), embed_spec=embed_spec, embedder=None)


def _worker_counts(chunk: pd.DataFrame, keys: list[str]) -> dict[str, Counts]:
    embedder = None
    if _W.get("embed_spec") is not None:
        if _W["embedder"] is None:
            from icai_core.embed import Embedder

            _W["embedder"] = Embedder(**_W["embed_spec"])
        embedder = _W["embedder"]
    try:
        return chunk_counts_by_annotator(chunk, keys, embedder=embedder, cancel=_W["token"])
    finally:
        del chunk
        _forget_vectors(embedder)
        gc.collect()


def _results_in_order(chunks: Iterator[pd.DataFrame], keys, workers: int, embed_spec, cancel: CancelToken | None,
                      poll_s: float = 0.2) -> Iterator[tuple[int, dict[str, Counts]]]:
    """(rows of the chunk, per-annotator counts) for each chunk, computed in `workers` spawned processes,
    yielded in chunk order; at most `workers + 1` chunks are in flight."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, TimeoutError

    ctx = mp.get_context("spawn")
    event = ctx.Event()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(event, embed_spec))
    pending: deque = deque()

    def next_done():
        rows, fut = pending[0]
        while True:
            if cancel is not None and cancel.cancelled:
                event.set()
                raise Cancelled("cancelled by the user")
            try:
                res = fut.result(timeout=poll_s)
            except TimeoutError:
                continue
            except ValueError as exc:
                raise _ChunkFailed(rows, exc) from exc
            pending.popleft()
            return rows, res

    finished = False
    try:
        for chunk in chunks:
            check(cancel)
            while len(pending) > workers:
                yield next_done()
            pending.append((len(chunk), pool.submit(_worker_counts, chunk, keys)))
            del chunk
        while pending:
            yield next_done()
        finished = True
    finally:
        if not finished:
            # Cancelled or failed: queued chunks are dropped, running ones stop at their next principle
            # (the event), and the caller does not wait for that (nor for a worker still starting up).
            event.set()
        pool.shutdown(wait=finished, cancel_futures=True)


def _forget_vectors(embedder) -> None:
    """Drop the embedder's in-process memo of vectors between chunks (`embed.Embedder.clear_memory`:
    the vectors stay in its SQLite cache, so nothing is recomputed; without a cache the memo is the
    only copy and is kept), so a stream's memory stays at one chunk's worth."""
    clear = getattr(embedder, "clear_memory", None)
    if clear is not None:
        clear()


class _ChunkFailed(Exception):
    """A chunk's ValueError (bad labels), with the number of rows of that chunk (for the message)."""

    def __init__(self, rows: int, error: ValueError):
        super().__init__(str(error))
        self.rows, self.error = rows, error


def _results_here(chunks: Iterator[pd.DataFrame], keys, embedder, cancel) -> Iterator[tuple[int, dict[str, Counts]]]:
    for chunk in chunks:
        check(cancel)
        n = len(chunk)
        try:
            res = chunk_counts_by_annotator(chunk, keys, embedder=embedder, cancel=cancel)
        except ValueError as exc:
            raise _ChunkFailed(n, exc) from exc
        finally:
            del chunk
            _forget_vectors(embedder)
        yield n, res


def chunked_principle_stats(
    source,
    *,
    keys: Iterable[str] | None = None,
    chunk_rows: int = 10_000,
    use_embeddings: bool = False,
    embedder=None,
    alpha: float = 0.05,
    workers: int = 1,
    exclude_ties: bool = False,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> ChunkedResult:
    """Principle stats of every row in `source` (Parquet, CSV or DataFrame), streamed in chunks, pooled
    and per annotator.

    Equal to `stats.principle_stats(judges.compute_votes(all_pairs), preferred)` pooled and to
    `pipeline.analyse`'s stats per annotator (tests check both on real data). With `use_embeddings`
    the embedding judge runs too (a default cached `Embedder` is created unless `embedder` is given;
    with `workers > 1` each worker builds its own on the same disk cache, so `embedder` must be None).
    `exclude_ties` drops tied rows before counting (as `load_pairs(..., ties="exclude")`); `cache_dir`
    is Principia's home for the embedding cache (default: $PRINCIPIA_HOME or ~/.principia).
    Bad labels raise ValueError naming the rows of the chunk.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    ks = _keys(keys, use_embeddings)
    embed_spec = None
    if use_embeddings:
        if workers > 1 and embedder is not None:
            raise ValueError("with workers > 1 each worker builds its own embedder: pass embedder=None")
        from icai_core.audit import default_cache_dir

        home = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        embed_spec = dict(cache_path=home / "embeddings.sqlite", batch_size=128, max_seq_length=64)
        if embedder is None and workers == 1:
            from icai_core.embed import Embedder

            embedder = Embedder(**embed_spec)
    n_rows = _total_rows(source)
    name = source if not isinstance(source, pd.DataFrame) else "pairs"
    chunks = iter_pair_chunks(source, chunk_rows)
    if exclude_ties:
        chunks = (c[c["preferred"].str.strip().str.lower() != "tie"].reset_index(drop=True) for c in chunks)
    results = (_results_in_order(chunks, ks, workers, embed_spec, cancel) if workers > 1
               else _results_here(chunks, ks, embedder if use_embeddings else None, cancel))
    by_ann: dict[str, Counts] = {}
    done = n_chunks = 0
    try:
        while True:
            try:
                rows, part = next(results)
            except StopIteration:
                break
            except _ChunkFailed as exc:
                raise ValueError(f"{name}: rows {done + 1:,}-{done + exc.rows:,} (data rows, 1-based): "
                                 f"{exc.error}") from exc.error
            by_ann = merge_by_annotator(by_ann, part)
            done += rows
            n_chunks += 1
            if progress is not None:
                progress(done, max(n_rows, done), f"Judged {done:,} rows ({n_chunks} chunks)")
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    total = pooled(by_ann, ks)
    has_annotators = list(by_ann) != [ALL]
    return ChunkedResult(total.stats(alpha), total, n_chunks, by_ann if has_annotators else {}, workers, alpha)
