"""Distinct pair tables built from real shared texts, for benchmarks that must not flatter the cache.

The judges and the embedder work once per *distinct* text, so replicating rows measures a cache, not
the product. Here every synthetic text is a crossover of two real texts of the same role (prompt or
response) at sentence boundaries: the head of one real text followed by the tail of another. Length,
markdown, lexicon hits and languages therefore keep their real distribution (every sentence is real),
while the texts are distinct (collisions are redrawn and a final check proves it). Labels are drawn
from the real label shares.

    from bench.synth import distinct_pairs, write_parquet
    df = distinct_pairs(50_000, seed=0)
    write_parquet("/tmp/p.parquet", 1_000_000, seed=0)   # in batches: bounded memory
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILES = ("alpacaeval1_gpt4_judge.csv", "arena_llama3_70b_human.csv", "hh_rlhf_harmless_test.csv")
_SENT_END = re.compile(r"(?<=[.!?\n])\s+")


def data_dir() -> Path:
    env = os.environ.get("PRINCIPIA_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def real_pairs(files=DEFAULT_FILES) -> pd.DataFrame:
    """The real pairs of the shared files (canonical columns), as the product's loader reads them."""
    from icai_core.data import load_pairs

    frames = [load_pairs(data_dir() / f).pairs[["id", "prompt", "text_a", "text_b", "preferred"]] for f in files]
    return pd.concat(frames, ignore_index=True)


def _pieces(texts) -> list[list[str]]:
    """Each text split after sentence terminators / line breaks, keeping the separators in place."""
    out = []
    for t in texts:
        t = "" if t is None else str(t)
        cuts = [m.end() for m in _SENT_END.finditer(t)]
        bounds = [0, *cuts, len(t)]
        out.append([t[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)] or [""])
    return out


class _Crossover:
    """Draws distinct texts: head (first k pieces) of one real text + tail (from piece j) of another."""

    def __init__(self, texts, rng: np.random.Generator):
        uniq = list(dict.fromkeys(str(t) for t in texts if isinstance(t, str)))
        self.pieces = _pieces(uniq)
        self.rng = rng
        self.seen: set[int] = set()

    def draw(self, n: int) -> list[str]:
        out: list[str] = []
        m = len(self.pieces)
        while len(out) < n:
            k = n - len(out)
            r, s = self.rng.integers(0, m, k), self.rng.integers(0, m, k)
            u, v = self.rng.random(k), self.rng.random(k)
            for i in range(k):
                pr, ps = self.pieces[r[i]], self.pieces[s[i]]
                cut_r = int(u[i] * len(pr)) + 1  # keep at least one piece of the first text
                cut_s = int(v[i] * len(ps))
                text = "".join(pr[:cut_r]) + "".join(ps[cut_s:]) if r[i] != s[i] else "".join(pr)
                h = hash(text)
                if h in self.seen:
                    continue
                self.seen.add(h)
                out.append(text)
        return out


def iter_distinct_pairs(n: int, seed: int = 0, batch: int = 50_000, files=DEFAULT_FILES,
                        annotators: int = 1) -> Iterator[pd.DataFrame]:
    """Yield `n` pairs in batches; every prompt and every response of all batches is distinct.

    With `annotators` = k > 1 every distinct pair is judged by k annotators (`ann-0` ... `ann-{k-1}`):
    k rows per pair, next to each other, each with its own label drawn from the real label shares,
    so there are n * k rows and n distinct pairs (the multi-annotator layout of the shared files).
    """
    base = real_pairs(files)
    rng = np.random.default_rng(seed)
    prompts = _Crossover(base["prompt"], rng)
    responses = _Crossover(pd.concat([base["text_a"], base["text_b"]]), rng)
    labels = base["preferred"].to_numpy()
    done = 0
    while done < n:
        k = min(batch, n - done)
        texts = responses.draw(2 * k)
        df = pd.DataFrame(
            {
                "id": [f"syn-{i}" for i in range(done, done + k)],
                "prompt": prompts.draw(k),
                "text_a": texts[:k],
                "text_b": texts[k:],
            }
        )
        if annotators > 1:
            df = df.loc[df.index.repeat(annotators)].reset_index(drop=True)
            ann = np.tile(np.arange(annotators), k)
            df["id"] = df["id"] + "-" + pd.Series(ann).astype(str)
            df["annotator"] = pd.Series([f"ann-{a}" for a in ann], dtype="str")
        df["preferred"] = labels[rng.integers(0, len(labels), len(df))]
        yield df.astype({"prompt": "str", "text_a": "str", "text_b": "str", "preferred": "str"})
        done += k


def distinct_pairs(n: int, seed: int = 0, files=DEFAULT_FILES, annotators: int = 1) -> pd.DataFrame:
    return pd.concat(list(iter_distinct_pairs(n, seed=seed, files=files, annotators=annotators)), ignore_index=True)


def write_parquet(path, n: int, seed: int = 0, batch: int = 50_000, files=DEFAULT_FILES,
                  annotators: int = 1) -> Path:
    """Write `n` distinct pairs (times `annotators` rows) to one Parquet file, one row group per batch
    (memory stays bounded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    writer = None
    try:
        for df in iter_distinct_pairs(n, seed=seed, batch=batch, files=files, annotators=annotators):
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return path
