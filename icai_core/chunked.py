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

**Both cores.** `chunked_principle_stats(..., workers=N)` judges in N spawned processes
(`concurrent.futures.ProcessPoolExecutor`, "spawn" context: no forked copies of the parent's heap
or threads). On a Parquet source whose row groups are at most 8 chunks long (the usual layout of
files written in batches) **each worker reads its own rows**: the parent plans work units from the
file metadata (runs of whole chunks, long first and single chunks at the end, so the workers finish
together), sends only their row ranges, and merges the returned counts. No text crosses a process
boundary: before, the parent read, converted and pickled every chunk (~33 CPU-us per pair, on the
same two cores as the judges) and held up to N + 1 chunks (the parent peaked at ~600 MB; now
~185 MB). Other sources (CSV, a DataFrame, Parquet with larger row groups, where a unit would
decode rows it drops) are read here and sent chunk by chunk, at most N + 1 in flight. Either way
results are merged in chunk order, so they are identical to one process. A cancel sets a shared
event that the judges in every worker check before each principle.

    from icai_core.chunked import chunked_principle_stats
    res = chunked_principle_stats("pairs.parquet", chunk_rows=10_000, workers=2)
    res.stats                         # the pooled principle_stats table
    res.stats_by_annotator()          # {annotator: table}
    res.n_distinct_pairs("annotator") # distinct pairs of one annotator
"""

from __future__ import annotations

import gc
import os
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
        # Rows of each annotator in one stable sort (names in order of first appearance, rows ascending
        # within each): linear in the rows whatever the number of annotators (a crowd file has thousands;
        # one comparison of the whole column per name was rows x annotators).
        ann_codes, uniq_names = pd.factorize(pairs["annotator"].astype(str), sort=False)
        names = [str(x) for x in uniq_names]
        order = np.argsort(ann_codes, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(ann_codes, minlength=len(names)))[:-1])
    else:
        names, groups = [ALL], [np.arange(len(pairs))]
    out: dict[str, Counts] = {}
    for name, rows in zip(names, groups, strict=True):
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
    for table in _rechunk(batches, chunk_rows):
        yield _as_text_frame(table)


def _rechunk(batches, chunk_rows: int) -> Iterator:
    """Arrow tables of exactly `chunk_rows` rows (the last one may be shorter) from record batches of
    any sizes (zero-copy slices; a chunk may span row groups or files)."""
    import pyarrow as pa

    pending: list = []
    size = 0
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, chunk_rows - size)
            pending.append(batch.slice(0, take))
            size += take
            batch = batch.slice(take)
            if size == chunk_rows:
                yield pa.Table.from_batches(pending)
                pending, size = [], 0
    if size:
        yield pa.Table.from_batches(pending)


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
_W: dict = {}  # per worker process: the cancel event, the progress counters and the lazily built embedder

# A worker reads its own Parquet rows when no row group is larger than this many chunks: a work unit
# that starts inside a row group decodes (and drops) the rows before its start, at most this much.
_MAX_ROW_GROUP_CHUNKS = 8


class _ChunkError(ValueError):
    """Bad labels in one chunk: its first row (0-based, in the source), its number of rows, the message.

    A ValueError whose args are exactly its fields, so it pickles back from a worker process."""

    def __init__(self, first_row: int, n_rows: int, message: str):
        super().__init__(first_row, n_rows, message)
        self.first_row, self.n_rows, self.message = first_row, n_rows, message


class _EventToken:
    """A CancelToken look-alike over a multiprocessing Event (what the judges check is `.cancelled`)."""

    def __init__(self, event):
        self._event = event

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def _drop_ties(chunk: pd.DataFrame) -> pd.DataFrame:
    return chunk[chunk["preferred"].str.strip().str.lower() != "tie"].reset_index(drop=True)


def _judge_chunk(first_row: int, chunk: pd.DataFrame, keys: list[str], embedder, cancel,
                 exclude_ties: bool) -> dict[str, Counts]:
    """`chunk_counts_by_annotator` of one chunk of the source, whose first row is `first_row`; bad
    labels raise `_ChunkError` naming the chunk's rows of the source (before ties are dropped)."""
    n = len(chunk)
    try:
        return chunk_counts_by_annotator(_drop_ties(chunk) if exclude_ties else chunk, keys, embedder=embedder,
                                         cancel=cancel)
    except ValueError as exc:
        raise _ChunkError(first_row, n, str(exc)) from exc
    finally:
        _forget_vectors(embedder)


def _worker_init(event, embed_spec, done_rows=None, done_chunks=None) -> None:
    # One polars thread per worker: the workers already keep every core busy (polars reads this when
    # it is imported, at the first text kernel of the first chunk).
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    _W.clear()
    _W.update(token=_EventToken(event), embed_spec=embed_spec, embedder=None, rows=done_rows, chunks=done_chunks)


def _worker_start(warm_lock, *args) -> None:
    """The pool's initializer: `_worker_init`; the compiled token kernels loaded one worker at a time
    (`warm_lock`: with no on-disk cache yet, the first worker compiles them, ~13 CPU-s, and the others
    then load its cache, ~1 s, instead of all compiling at once); then `gc.freeze()`, so the per-chunk
    `gc.collect()` no longer walks the ~100k objects of the imported modules (63 ms a chunk
    measured, ~0 ms frozen)."""
    _worker_init(*args)
    from icai_core import token_kernel

    with warm_lock:
        token_kernel.warm()
    gc.freeze()


def _worker_embedder():
    if _W.get("embed_spec") is None:
        return None
    if _W["embedder"] is None:
        from icai_core.embed import Embedder

        _W["embedder"] = Embedder(**_W["embed_spec"])
    return _W["embedder"]


def _worker_counts(first_row: int, chunk: pd.DataFrame, keys: list[str], exclude_ties: bool) -> dict[str, Counts]:
    """One chunk sent by the parent (a CSV or DataFrame source, or Parquet with large row groups)."""
    try:
        return _judge_chunk(first_row, chunk, keys, _worker_embedder(), _W["token"], exclude_ties)
    finally:
        del chunk
        gc.collect()


# --------------------------------------------------------------- workers that read their own Parquet rows
@dataclass(frozen=True)
class _Layout:
    """What a worker needs to read any run of rows of a Parquet source itself: its files (in the order
    of `iter_pair_chunks`), the row counts of each file's row groups, and the columns to read."""

    files: tuple[str, ...]
    row_groups: tuple[tuple[int, ...], ...]
    columns: tuple[str, ...]

    @property
    def n_rows(self) -> int:
        return sum(sum(g) for g in self.row_groups)

    def group_starts(self) -> list[int]:
        """The source row at which each row group starts."""
        out, row = [], 0
        for groups in self.row_groups:
            for n in groups:
                out.append(row)
                row += n
        return out


def _parquet_layout(source, chunk_rows: int) -> _Layout | None:
    """The layout of a Parquet source whose row groups are small enough for workers to read their own
    rows (none larger than `_MAX_ROW_GROUP_CHUNKS` chunks), else None (the parent reads and sends)."""
    if isinstance(source, pd.DataFrame):
        return None
    path = Path(source)
    if not (path.is_dir() or path.suffix.lower() in (".parquet", ".pq")):
        return None
    import pyarrow.parquet as pq

    files = sorted(p for p in path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        return None  # iter_pair_chunks raises the message
    groups = []
    for f in files:
        meta = pq.ParquetFile(f).metadata
        groups.append(tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups)))
    if max((n for g in groups for n in g), default=0) > _MAX_ROW_GROUP_CHUNKS * chunk_rows:
        return None
    names = pq.ParquetFile(files[0], pre_buffer=False).schema_arrow.names
    _check_columns(names, files[0])
    return _Layout(tuple(str(f) for f in files), tuple(groups), tuple(_wanted(names)))


def _plan_units(layout: _Layout, chunk_rows: int, workers: int) -> list[tuple[int, int]]:
    """Work units: runs [start, stop) of whole chunks of the source, for the workers to take in turn.

    Guided self-scheduling: each unit is 1 / (2 x workers) of the chunks still unplanned, so the first
    units are long (each pays one reader set-up and at most one partial row group of decoding) and the
    last ones are single chunks (the workers finish together). A unit ends at a row group's start when
    one lies in its second half, so the next unit decodes nothing it drops.
    """
    n_rows = layout.n_rows
    n_chunks = -(-n_rows // chunk_rows)
    aligned = {r // chunk_rows for r in layout.group_starts() if r % chunk_rows == 0}
    units, k = [], 0
    while k < n_chunks:
        size = max(1, (n_chunks - k) // (2 * workers))
        snap = [b for b in range(k + 1 + size // 2, k + size + 1) if b in aligned]
        end = snap[-1] if snap else k + size
        units.append((k * chunk_rows, min(end * chunk_rows, n_rows)))
        k = end
    return units


def _read_rows(layout: _Layout, start: int, stop: int, chunk_rows: int) -> Iterator:
    """Rows [start, stop) of the source in chunks of `chunk_rows` from `start`: exactly the chunks of
    `iter_pair_chunks` there when `start` is a multiple of `chunk_rows`. Only the row groups that hold
    them are read (one at a time, `pre_buffer=False` as in `iter_pair_chunks`)."""
    import pyarrow.parquet as pq

    def batches():
        row = 0  # the source row of the current row group's first row
        for f, groups in zip(layout.files, layout.row_groups, strict=True):
            wanted, first = [], None
            for i, n in enumerate(groups):
                if row + n > start and row < stop:
                    wanted.append(i)
                    first = row if first is None else first
                row += n
            if not wanted:
                continue
            skip, left = max(0, start - first), stop - max(start, first)
            reader = pq.ParquetFile(f, pre_buffer=False)
            # use_threads=False: the workers already keep every core busy (9.2 against 10.2 CPU-us per
            # pair of decoding, measured with Arrow's threads).
            for batch in reader.iter_batches(batch_size=chunk_rows, row_groups=wanted, columns=list(layout.columns),
                                             use_threads=False):
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                batch = batch.slice(skip, left)
                skip, left = 0, left - batch.num_rows
                yield batch
                if left == 0:
                    break

    return _rechunk(batches(), chunk_rows)


def _worker_unit(layout: _Layout, start: int, stop: int, chunk_rows: int, keys: list[str],
                 exclude_ties: bool) -> tuple[int, dict[str, Counts]]:
    """(chunks judged, merged per-annotator counts) of the source rows [start, stop), read and judged
    here chunk by chunk; the shared counters tell the parent each chunk's rows as soon as it is done."""
    token, embedder = _W["token"], _worker_embedder()
    out: dict[str, Counts] = {}
    n_chunks, first = 0, start
    for table in _read_rows(layout, start, stop, chunk_rows):
        check(token)
        chunk = _as_text_frame(table)
        del table
        out = merge_by_annotator(out, _judge_chunk(first, chunk, keys, embedder, token, exclude_ties))
        first += len(chunk)
        n_chunks += 1
        for counter, step in ((_W.get("rows"), len(chunk)), (_W.get("chunks"), 1)):
            if counter is not None:
                with counter.get_lock():
                    counter.value += step
        del chunk
        gc.collect()
    return n_chunks, out


def _pool(workers: int, embed_spec, *counters):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    event = ctx.Event()
    made = [ctx.Value("q", 0) for _ in counters]
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_start,
                               initargs=(ctx.Lock(), event, embed_spec, *made))
    return pool, event, made


def _results_by_units(layout: _Layout, chunk_rows: int, keys, workers: int, embed_spec, cancel: CancelToken | None,
                      exclude_ties: bool, poll_s: float = 0.2) -> Iterator[tuple[int, int, dict[str, Counts] | None]]:
    """(rows, chunks, counts or None) as the workers judge a Parquet source that they read themselves.

    The parent sends only unit descriptions (no text crosses a process boundary) and yields progress
    as (rows, chunks, None) from shared counters, and each unit's counts as (0, 0, counts) in unit
    order (= chunk order), so the merged result is the one of one process."""
    from concurrent.futures import wait

    pool, event, (rows_v, chunks_v) = _pool(workers, embed_spec, "rows", "chunks")
    futures = [pool.submit(_worker_unit, layout, a, b, chunk_rows, keys, exclude_ties)
               for a, b in _plan_units(layout, chunk_rows, workers)]
    seen_rows = seen_chunks = nxt = 0
    finished = False
    try:
        while nxt < len(futures):
            if cancel is not None and cancel.cancelled:
                event.set()
                raise Cancelled("cancelled by the user")
            # The oldest unit only: results are merged in unit order, and a later unit that is already
            # done would make a wait on all of them return at once (a busy loop until the oldest ends).
            wait([futures[nxt]], timeout=poll_s)
            r, c = rows_v.value, chunks_v.value
            if r != seen_rows or c != seen_chunks:
                yield r - seen_rows, c - seen_chunks, None
                seen_rows, seen_chunks = r, c
            while nxt < len(futures) and futures[nxt].done():
                _, part = futures[nxt].result()  # re-raises a worker's _ChunkError
                futures[nxt] = None
                nxt += 1
                yield 0, 0, part
        # Every unit is done, so the counters are final (a worker counts a chunk before its unit returns).
        if rows_v.value != seen_rows or chunks_v.value != seen_chunks:
            yield rows_v.value - seen_rows, chunks_v.value - seen_chunks, None
        finished = True
    finally:
        if not finished:
            event.set()  # running units stop at their next principle; queued ones are dropped
        pool.shutdown(wait=finished, cancel_futures=True)


def _results_in_order(chunks: Iterator[pd.DataFrame], keys, workers: int, embed_spec, cancel: CancelToken | None,
                      exclude_ties: bool, poll_s: float = 0.2) -> Iterator[tuple[int, int, dict[str, Counts]]]:
    """(rows, 1, per-annotator counts) of each chunk read here and judged in `workers` spawned
    processes, in chunk order; at most `workers + 1` chunks are in flight."""
    from concurrent.futures import TimeoutError

    pool, event, _ = _pool(workers, embed_spec)
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
            pending.popleft()
            return rows, 1, res

    finished = False
    first = 0
    try:
        for chunk in chunks:
            check(cancel)
            while len(pending) > workers:
                yield next_done()
            pending.append((len(chunk), pool.submit(_worker_counts, first, chunk, keys, exclude_ties)))
            first += len(chunk)
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


def _results_here(chunks: Iterator[pd.DataFrame], keys, embedder, cancel,
                  exclude_ties: bool) -> Iterator[tuple[int, int, dict[str, Counts]]]:
    first = 0
    for chunk in chunks:
        check(cancel)
        n = len(chunk)
        res = _judge_chunk(first, chunk, keys, embedder, cancel, exclude_ties)
        del chunk
        first += n
        yield n, 1, res


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
    Bad labels raise ValueError naming the rows of the chunk (rows of the source, ties included).

    With `workers > 1` on a Parquet source whose row groups are at most 8 chunks long, each worker
    reads its own rows (`_results_by_units`: no text is pickled between processes, the parent only
    merges counts); other sources are read here and sent to the workers chunk by chunk.
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
    layout = _parquet_layout(source, chunk_rows) if workers > 1 else None
    if layout is not None:
        results = _results_by_units(layout, chunk_rows, ks, workers, embed_spec, cancel, exclude_ties)
    else:
        chunks = iter_pair_chunks(source, chunk_rows)
        results = (_results_in_order(chunks, ks, workers, embed_spec, cancel, exclude_ties) if workers > 1
                   else _results_here(chunks, ks, embedder if use_embeddings else None, cancel, exclude_ties))
    by_ann: dict[str, Counts] = {}
    done = n_chunks = 0
    try:
        for rows, k, part in results:
            if part is not None:
                by_ann = merge_by_annotator(by_ann, part)
            if k:
                done += rows
                n_chunks += k
                if progress is not None:
                    progress(done, max(n_rows, done), f"Judged {done:,} rows ({n_chunks} chunks)")
    except _ChunkError as exc:
        raise ValueError(f"{name}: rows {exc.first_row + 1:,}-{exc.first_row + exc.n_rows:,} (data rows, 1-based): "
                         f"{exc.message}") from exc
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    total = pooled(by_ann, ks)
    has_annotators = list(by_ann) != [ALL]
    return ChunkedResult(total.stats(alpha), total, n_chunks, by_ann if has_annotators else {}, workers, alpha)
