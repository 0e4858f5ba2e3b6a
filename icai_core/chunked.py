"""Streaming audit statistics: judges and principle stats over pair files of any size, in bounded memory.

The in-memory audit holds every text, every intermediate feature and the whole vote matrix at once
(~30 KB per distinct pair), so memory grows with the data. Here pairs are read in chunks (Parquet
row group by row group via `pyarrow.parquet.ParquetFile.iter_batches`, CSV via `pyarrow.csv.open_csv`
streaming, or slices of a DataFrame), the measurable judges vote on one chunk at a time, and only
the sufficient statistics of the principle stats are kept: per principle the number of agreeing and disagreeing votes among
decided pairs, plus the numbers of decided and tied pairs. `stats.stats_from_counts` turns the
merged counts into exactly the table `stats.principle_stats` builds from the full vote matrix: the
judges' votes depend only on each pair's own texts, so chunking changes no vote.

`chunk_counts` is the unit of work: a pure function of one DataFrame chunk, whose results merge by
addition (`Counts.merge`), so any engine that maps it over shards (processes, Ray, Dask) and sums the
results gets the same table as one process.

    from icai_core.chunked import chunked_principle_stats
    res = chunked_principle_stats("pairs.parquet", chunk_rows=10_000)
    res.stats          # the principle_stats table
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from icai_core import judges
from icai_core.jobs import CancelToken, Progress, check
from icai_core.stats import stats_from_counts, vote_counts

__all__ = ["ChunkedResult", "Counts", "chunk_counts", "chunked_principle_stats", "iter_pair_chunks"]

REQUIRED = ("text_a", "text_b", "preferred")
TEXT_COLUMNS = ("prompt", "text_a", "text_b", "preferred")


@dataclass
class Counts:
    """Sufficient statistics of the principle stats for some set of pairs (they add up)."""

    keys: list[str]
    n_agree: np.ndarray
    n_disagree: np.ndarray
    n: int  # decided (non-tie) pairs
    n_ties: int
    n_pairs: int

    @classmethod
    def empty(cls, keys: list[str]) -> Counts:
        z = np.zeros(len(keys), dtype=np.int64)
        return cls(list(keys), z, z.copy(), 0, 0, 0)

    def merge(self, other: Counts) -> Counts:
        if list(other.keys) != list(self.keys):
            raise ValueError("cannot merge counts of different principles")
        return Counts(self.keys, self.n_agree + other.n_agree, self.n_disagree + other.n_disagree,
                      self.n + other.n, self.n_ties + other.n_ties, self.n_pairs + other.n_pairs)

    def stats(self, alpha: float = 0.05) -> pd.DataFrame:
        """The `stats.principle_stats` table (same columns and order) from the counts alone."""
        principles = [judges.get_principle(k) for k in self.keys]
        table = stats_from_counts(self.keys, self.n_agree, self.n_disagree, self.n, self.n_ties, principles, alpha,
                                  sort=False)
        table["n_invalid"] = np.zeros(len(self.keys), dtype=np.int64)  # measurable judges always answer
        table = table.sort_values("strength", ascending=False, kind="mergesort", na_position="last")
        return table.reset_index(drop=True)


@dataclass
class ChunkedResult:
    stats: pd.DataFrame
    counts: Counts
    n_chunks: int

    @property
    def n_pairs(self) -> int:
        return self.counts.n_pairs


def _keys(keys: Iterable[str] | None, use_embeddings: bool) -> list[str]:
    ks = [p.key for p in judges.PRINCIPLES] if keys is None else [judges.get_principle(k).key for k in keys]
    return [k for k in ks if use_embeddings or k not in judges.EMBEDDING_KEYS]


def chunk_counts(pairs: pd.DataFrame, keys: list[str], embedder=None, cancel: CancelToken | None = None) -> Counts:
    """Votes of the measurable judges on one chunk, reduced to agree/disagree counts (the unit of work)."""
    votes = judges.compute_votes(pairs, keys, embedder=embedder, cancel=cancel)
    n_agree, n_disagree, n, n_ties = vote_counts(votes, pairs["preferred"].reset_index(drop=True)
                                                 .set_axis(votes.index))
    return Counts(list(votes.columns), n_agree, n_disagree, n, n_ties, len(pairs))


def _as_text_frame(table) -> pd.DataFrame:
    """An Arrow table/batch -> DataFrame of str columns (missing prompt -> empty), as the judges expect."""
    df = table.to_pandas()
    if "prompt" not in df.columns:
        df["prompt"] = ""
    for c in TEXT_COLUMNS:
        df[c] = df[c].where(df[c].notna(), "").astype("str")
    return df


def _check_columns(names: Iterable[str], source) -> None:
    missing = [c for c in REQUIRED if c not in set(names)]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {', '.join(missing)}; a streamed audit needs the canonical columns "
            "text_a, text_b, preferred (a / b / tie) and optionally prompt. Convert other formats with "
            "`icai_core.data.load_pairs` first."
        )


def iter_pair_chunks(source, chunk_rows: int = 10_000) -> Iterator[pd.DataFrame]:
    """Chunks of at most `chunk_rows` pairs from a Parquet file/folder, a CSV file or a DataFrame.

    Only the canonical text columns are read. Memory is bounded by the chunk size (plus one Arrow
    read block), not by the size of the source.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    if isinstance(source, pd.DataFrame):
        _check_columns(source.columns, "the pair table")
        cols = [c for c in TEXT_COLUMNS if c in source.columns]
        for s in range(0, len(source), chunk_rows):
            yield _as_text_frame_pd(source.iloc[s : s + chunk_rows][cols])
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
        cols = [c for c in TEXT_COLUMNS if c in names]
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=16 << 20),
            parse_options=pcsv.ParseOptions(delimiter=delim, newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(include_columns=cols, column_types={c: pa.string() for c in cols},
                                                strings_can_be_null=False),
        )
        batches = iter(reader)
    else:
        import pyarrow.parquet as pq

        # One row group at a time (ParquetFile.iter_batches): a dataset scanner reads ahead up to 16
        # batches and several files, so its memory grows with the file (3.5 GB on 1M pairs).
        files = sorted(p for p in path.rglob("*.parquet")) if path.is_dir() else [path]
        if not files:
            raise ValueError(f"{path}: no .parquet files in this folder")
        names = pq.ParquetFile(files[0]).schema_arrow.names
        _check_columns(names, files[0])
        cols = [c for c in TEXT_COLUMNS if c in names]
        batches = (b for f in files for b in pq.ParquetFile(f).iter_batches(batch_size=chunk_rows, columns=cols))
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


def _as_text_frame_pd(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reset_index(drop=True).copy()
    if "prompt" not in df.columns:
        df["prompt"] = ""
    for c in TEXT_COLUMNS:
        if df[c].dtype != "str":
            df[c] = df[c].where(df[c].notna(), "").astype("str")
    return df


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


def chunked_principle_stats(
    source,
    *,
    keys: Iterable[str] | None = None,
    chunk_rows: int = 10_000,
    use_embeddings: bool = False,
    embedder=None,
    alpha: float = 0.05,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> ChunkedResult:
    """Principle stats of every pair in `source` (Parquet, CSV or DataFrame), streamed in chunks.

    Equal to `stats.principle_stats(judges.compute_votes(all_pairs), preferred)` (a test checks it on
    real data). With `use_embeddings` the embedding judge runs too (a default cached `Embedder` is
    created unless `embedder` is given). Bad labels raise ValueError naming the rows of the chunk.
    """
    ks = _keys(keys, use_embeddings)
    if use_embeddings and embedder is None:
        from icai_core.audit import default_cache_dir
        from icai_core.embed import Embedder

        embedder = Embedder(cache_path=default_cache_dir() / "embeddings.sqlite", batch_size=128, max_seq_length=64)
    total = Counts.empty(ks)
    n_rows = _total_rows(source)
    n_chunks = 0
    for chunk in iter_pair_chunks(source, chunk_rows):
        check(cancel)
        start = total.n_pairs
        try:
            c = chunk_counts(chunk, ks, embedder=embedder if use_embeddings else None, cancel=cancel)
        except ValueError as exc:
            raise ValueError(f"{source if not isinstance(source, pd.DataFrame) else 'pairs'}: "
                             f"rows {start + 1:,}-{start + len(chunk):,} (data rows, 1-based): {exc}") from exc
        total = total.merge(c)
        n_chunks += 1
        if progress is not None:
            progress(total.n_pairs, max(n_rows, total.n_pairs), f"Judged {total.n_pairs:,} pairs ({n_chunks} chunks)")
    return ChunkedResult(total.stats(alpha), total, n_chunks)
