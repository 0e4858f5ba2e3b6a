"""The only module that talks HTTP to a language model (any OpenAI-compatible endpoint).

Works with OpenAI, vLLM, Ollama, LM Studio, OpenRouter and anything else that serves
`POST {base_url}/chat/completions` in the OpenAI format. See docs/llm.md for the full contract.

Key points
----------
* `LLMClient.complete_many` sends a batch concurrently (asyncio semaphore, `config.concurrency`)
  with the official `openai.AsyncOpenAI` client whose own retries are disabled; our retries use
  exponential backoff with jitter on 429 / 5xx / timeouts / connection errors and honour
  `Retry-After` (capped at `config.backoff_max_s`). Non-retryable errors (401, 400, 404, ...) fail
  only the request concerned, with a clear message.
* The batch always runs on a fresh event loop in a worker thread, so it can be called from a plain
  thread, from inside a running loop, or from a Streamlit script. Progress callbacks are invoked
  in the *calling* thread (the worker forwards events through a queue).
* `ResponseCache` (SQLite) is keyed by sha256(base_url, model, messages, temperature, max_tokens,
  json_mode): a rerun makes zero repeated calls. Identical requests inside one batch are sent once.
* `estimate_cost` predicts, before a run, exactly the number of calls a fault-free run will send.
* The API key never appears in `repr`, `to_dict`, logs, exception text, cache rows or pickles.

Token estimates use a simple approximation: one token per 4 characters of message content, plus 4
tokens per message and 3 for the reply priming (close to OpenAI's accounting for English text).
Actual runs use the `usage` numbers the server returns (estimated the same way when it sends none).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import hashlib
import json
import logging
import math
import os
import queue
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from icai_core.jobs import Cancelled, CancelToken

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
NO_KEY_PLACEHOLDER = "no-key"  # sent to local servers (Ollama, LM Studio, vLLM) that need no key

# USD per 1M tokens (input, output). Public list prices; override with LLMConfig.input_price_per_m /
# output_price_per_m. Lookup strips a provider prefix ("openai/gpt-4o" on OpenRouter) and matches the
# longest known prefix, so dated snapshots ("gpt-4o-2024-08-06") resolve to their family.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
}

# Error kinds carried by ChatResult.error_kind / LLMError.kind.
FATAL_KINDS = frozenset({"auth", "model_not_found", "unreachable", "bad_response"})


# --------------------------------------------------------------------------------------------
# Secrets: every API key a config has seen is registered so it can be scrubbed from any text.
# --------------------------------------------------------------------------------------------
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_KEYLIKE = re.compile(r"\b(sk|gsk|xai)-[A-Za-z0-9_\-*]{8,}")
_ENV_KEYS = ("PRINCIPIA_API_KEY", "OPENAI_API_KEY")


def register_secret(secret: str | None) -> None:
    """Remember a secret (>= 8 characters) so `scrub` removes it from any text."""
    if secret and len(secret) >= 8:
        with _SECRETS_LOCK:
            _SECRETS.add(secret)


def known_secrets() -> list[str]:
    """Registered secrets plus API keys present in the environment (longest first)."""
    with _SECRETS_LOCK:
        found = set(_SECRETS)
    for name in _ENV_KEYS:
        value = os.environ.get(name)
        if value and len(value) >= 8:
            found.add(value)
    return sorted(found, key=len, reverse=True)


def scrub(text: Any) -> str:
    """Return `str(text)` with every known API key and key-looking token replaced by '***'."""
    out = str(text)
    for secret in known_secrets():
        if secret in out:
            out = out.replace(secret, "***")
    return _KEYLIKE.sub(lambda m: f"{m.group(1)}-***", out)


class _ScrubFilter(logging.Filter):
    """Logging filter that scrubs secrets from records of the HTTP libraries and this module."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # pragma: no cover - malformed log call elsewhere
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


# Logger filters do not apply to child loggers, so the HTTP libraries' modules are listed explicitly.
for _name in (
    __name__,
    "openai",
    "openai._base_client",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "httpcore2.http11",
    "httpcore2.connection",
):
    logging.getLogger(_name).addFilter(_ScrubFilter())


class LLMError(RuntimeError):
    """A clear, key-free error about the model endpoint. `kind` is one of: auth, model_not_found,
    unreachable, bad_response, bad_request, rate_limited, server, timeout, connection, empty,
    cancelled, other."""

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(scrub(message))
        self.kind = kind

    @classmethod
    def from_result(cls, result: ChatResult) -> LLMError:
        return cls(result.error or "unknown error", result.error_kind or "other")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
def normalize_base_url(base_url: str) -> str:
    """Strip trailing slashes; add '/v1' to a bare host such as 'http://localhost:11434'."""
    url = (base_url or DEFAULT_BASE_URL).strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parsed = urlparse(url)
    if parsed.path in ("", "/"):
        url = url + "/v1"
    return url


def lookup_price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for a known model family, else None."""
    name = (model or "").strip().lower()
    candidates = [name]
    if "/" in name:
        candidates.append(name.rsplit("/", 1)[1])
    for cand in candidates:
        if cand in PRICES:
            return PRICES[cand]
        best = None
        for known in PRICES:
            if cand.startswith(known + "-") and (best is None or len(known) > len(best)):
                best = known
        if best is not None:
            return PRICES[best]
    return None


@dataclass
class LLMConfig:
    """Endpoint and sampling settings. The API key is kept out of repr, to_dict, logs and pickles.

    `api_key`: explicit argument, else env `PRINCIPIA_API_KEY`, else env `OPENAI_API_KEY`, else none
    (local servers such as Ollama accept any key; a placeholder is sent).
    """

    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    api_key: str | None = field(default=None, repr=False, compare=False)
    concurrency: int = 16
    max_retries: int = 5
    timeout_s: float = 60.0
    temperature: float = 0.0
    max_tokens: int = 512
    input_price_per_m: float | None = None  # None -> PRICES table (0 with a note when unknown)
    output_price_per_m: float | None = None
    backoff_base_s: float = 1.0  # first retry waits ~base, then doubles (with jitter)
    backoff_max_s: float = 30.0  # cap for backoff and for a server's Retry-After

    def __post_init__(self) -> None:
        self.base_url = normalize_base_url(self.base_url)
        if not self.api_key:
            self.api_key = None
            for name in _ENV_KEYS:
                if os.environ.get(name):
                    self.api_key = os.environ[name]
                    break
        register_secret(self.api_key)
        self.concurrency = max(1, int(self.concurrency))
        self.max_retries = max(0, int(self.max_retries))

    # -- prices -------------------------------------------------------------------------------
    def prices(self) -> tuple[float, float, str]:
        """(input USD/1M, output USD/1M, note). Unknown models cost 0 with note 'price unknown'."""
        table = lookup_price(self.model)
        if self.input_price_per_m is not None or self.output_price_per_m is not None:
            base_in, base_out = table or (0.0, 0.0)
            p_in = self.input_price_per_m if self.input_price_per_m is not None else base_in
            p_out = self.output_price_per_m if self.output_price_per_m is not None else base_out
            return float(p_in), float(p_out), "prices set by the user"
        if table is None:
            return 0.0, 0.0, f"price unknown for model '{self.model}' (counted as $0; set prices to override)"
        return table[0], table[1], f"list price for '{self.model}'"

    # -- safe views ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe settings WITHOUT the API key (what a run store may persist)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "api_key"}
        return out

    def redacted(self) -> dict[str, Any]:
        """Settings for display: the key shown only as 'set' / 'not set'."""
        out = self.to_dict()
        out["api_key"] = "set" if self.api_key else "not set"
        return out

    def __str__(self) -> str:
        return repr(self)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["api_key"] = None  # never pickled; re-read from the environment on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if not self.api_key:
            for name in _ENV_KEYS:
                if os.environ.get(name):
                    self.api_key = os.environ[name]
                    break


@dataclass
class ChatRequest:
    """One chat completion. None for max_tokens / temperature means "use the config's value"."""

    messages: list[dict]
    max_tokens: int | None = None
    temperature: float | None = None
    json_mode: bool = False
    tag: str = ""


@dataclass
class ChatResult:
    """Outcome of one request. Exactly one of `text` / `error` is set.

    `cached` is True for cache hits (and for duplicates of a request sent in the same batch); their
    `cost` is 0. Tokens are the server's usage (or the stored usage for cache hits)."""

    text: str | None
    error: str | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    tag: str = ""
    attempts: int = 0
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@dataclass
class CostEstimate:
    calls: int  # requests that will be sent (cache hits and in-batch duplicates excluded)
    cached_calls: int  # requests answered from the cache / by a duplicate
    prompt_tokens: int
    completion_tokens: int
    dollars: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class LLMUsage:
    """Running totals for one LLMClient. `calls` counts requests sent (first attempts), `retries`
    the extra attempts, so HTTP requests made = calls + retries. Tokens and dollars count only
    what was sent (cache hits are free)."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dollars: float = 0.0
    usage_estimated: int = 0  # answers whose server sent no usage (tokens estimated)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Token approximation
# --------------------------------------------------------------------------------------------
def approx_tokens(text: str) -> int:
    """Approximate token count: ceil(characters / 4)."""
    return math.ceil(len(text or "") / 4)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: count text parts
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def approx_prompt_tokens(messages: Sequence[dict]) -> int:
    """chars/4 per message content + 4 per message + 3 for the reply priming."""
    return sum(approx_tokens(_content_text(m.get("content"))) + 4 for m in messages) + 3


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------
@dataclass
class CachedResponse:
    text: str
    prompt_tokens: int
    completion_tokens: int


def default_home() -> Path:
    return Path(os.environ.get("PRINCIPIA_HOME") or Path.home() / ".principia")


def default_cache_path() -> Path:
    return default_home() / "llm_cache.sqlite"


class ResponseCache:
    """SQLite cache of successful answers, keyed by sha256(base_url, model, messages, temperature,
    max_tokens, json_mode). Stores the answer text and token usage; never the API key. Thread-safe."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = str(path) if path is not None else str(default_cache_path())
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, model TEXT, text TEXT NOT NULL,"
                " prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)"
            )
            self._conn.commit()

    @staticmethod
    def make_key(
        base_url: str,
        model: str,
        messages: Sequence[dict],
        temperature: float,
        max_tokens: int,
        json_mode: bool,
    ) -> str:
        payload = json.dumps(
            [
                normalize_base_url(base_url),
                model,
                list(messages),
                float(temperature),
                int(max_tokens),
                bool(json_mode),
            ],
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get(self, key: str) -> CachedResponse | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedResponse]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, CachedResponse] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, text, prompt_tokens, completion_tokens FROM responses WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, text, pt, ct in rows:
                    out[key] = CachedResponse(text, int(pt or 0), int(ct or 0))
        return out

    def put(
        self, key: str, text: str, prompt_tokens: int = 0, completion_tokens: int = 0, model: str = ""
    ) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO responses (key, model, text, prompt_tokens, completion_tokens, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, model, text, int(prompt_tokens), int(completion_tokens), time.time()),
            )
            self._conn.commit()

    def delete(self, key: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM responses WHERE key = ?", (key,))
            self._conn.commit()

    def clear(self) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM responses")
            self._conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()


# --------------------------------------------------------------------------------------------
# JSON answers
# --------------------------------------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\r?\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _try_load(text: str) -> dict | list | None:
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch in "{["][:64]
    for fix in (False, True):
        for i in starts:
            candidate = text[i:]
            if fix:
                candidate = _TRAILING_COMMA.sub(r"\1", candidate)
            try:
                value, _end = decoder.raw_decode(candidate)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict | list):
                return value
    return None


def parse_json_answer(text: Any) -> dict | list | None:
    """Extract the first JSON object/array from a model answer; never raises.

    Strips ```json fences, skips leading prose, tolerates trailing text and trailing commas.
    Returns None when no JSON object or array can be found."""
    try:
        if not isinstance(text, str) or not text.strip():
            return None
        stripped = text.strip().lstrip("\ufeff")
        for block in _FENCE.findall(stripped):
            found = _try_load(block.strip())
            if found is not None:
                return found
        return _try_load(stripped)
    except Exception:  # pragma: no cover - defensive by contract
        return None


# --------------------------------------------------------------------------------------------
# Error classification
# --------------------------------------------------------------------------------------------
def _server_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    msg = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            msg = inner.get("message")
        elif isinstance(inner, str):
            msg = inner
        if msg is None:
            msg = body.get("message")
    if msg is None:
        msg = getattr(exc, "message", None) or str(exc)
    msg = scrub(str(msg)).strip()
    return msg[:300] + ("..." if len(msg) > 300 else "")


def _retry_after_seconds(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            return max(0.0, parsed.timestamp() - time.time())
    except Exception:
        return None


class _BadResponse(ValueError):
    """A 200 answer that does not have the OpenAI chat completion shape."""


@dataclass
class _Failure:
    kind: str
    message: str
    retryable: bool
    retry_after: float | None = None


def _classify(exc: Exception, config: LLMConfig) -> _Failure:
    import openai

    url = config.base_url
    if isinstance(exc, openai.APITimeoutError):
        return _Failure("timeout", f"the request to {url} timed out after {config.timeout_s:g} s", True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        cause_name = type(cause).__name__ if cause is not None else ""
        if cause is None or "Connect" in cause_name or isinstance(cause, OSError):
            detail = f" ({cause_name})" if cause_name else ""
            return _Failure(
                "unreachable",
                f"could not reach the endpoint at {url}{detail}; is the server running and the base URL right?",
                True,
            )
        return _Failure(
            "connection", f"the connection to {url} broke before an answer arrived ({cause_name})", True
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        server = _server_message(exc)
        if status == 401:
            hint = "" if config.api_key else " (no API key was set: use PRINCIPIA_API_KEY or OPENAI_API_KEY)"
            return _Failure("auth", f"the endpoint rejected the API key (HTTP 401){hint}: {server}", False)
        if status == 403:
            return _Failure("auth", f"the endpoint refused access (HTTP 403): {server}", False)
        if status == 404:
            return _Failure(
                "model_not_found",
                f"model '{config.model}' not found at {url} (HTTP 404): {server}",
                False,
            )
        if status == 429:
            return _Failure(
                "rate_limited", f"rate limited by {url} (HTTP 429): {server}", True, _retry_after_seconds(exc)
            )
        if status in (408, 409) or status >= 500:
            return _Failure(
                "server", f"server error {status} from {url}: {server}", True, _retry_after_seconds(exc)
            )
        return _Failure("bad_request", f"the endpoint rejected the request (HTTP {status}): {server}", False)
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError | _BadResponse):
        return _Failure(
            "bad_response",
            f"{url} returned a response that is not OpenAI-compatible chat completion JSON; "
            "check the base URL (it usually ends in /v1)",
            False,
        )
    if isinstance(exc, openai.OpenAIError):
        return _Failure("other", f"OpenAI client error: {scrub(exc)}", False)
    return _Failure("other", f"unexpected error talking to {url}: {type(exc).__name__}: {scrub(exc)}", False)


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------
@dataclass
class _Job:
    key: str
    request: ChatRequest
    indices: list[int]
    max_tokens: int
    temperature: float


_SKIPPED = object()  # marker: job not started because of cancellation


class LLMClient:
    """Batch chat completions against one OpenAI-compatible endpoint, with cache and accounting."""

    def __init__(self, config: LLMConfig, cache: ResponseCache | str | os.PathLike[str] | None = None):
        self.config = config
        self.cache = ResponseCache(cache) if isinstance(cache, str | os.PathLike) else cache
        self.usage = LLMUsage()
        self._lock = threading.Lock()
        # Parameter adaptations learned from 400 answers (e.g. servers without response_format).
        self._no_json_mode = False
        self._use_max_completion_tokens = False
        self._no_temperature = False

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.config.base_url!r}, model={self.config.model!r})"

    # -- keys and estimates -------------------------------------------------------------------
    def _effective(self, request: ChatRequest) -> tuple[int, float]:
        max_tokens = request.max_tokens if request.max_tokens is not None else self.config.max_tokens
        temperature = request.temperature if request.temperature is not None else self.config.temperature
        return int(max_tokens), float(temperature)

    def cache_key(self, request: ChatRequest) -> str:
        max_tokens, temperature = self._effective(request)
        return ResponseCache.make_key(
            self.config.base_url,
            self.config.model,
            request.messages,
            temperature,
            max_tokens,
            request.json_mode,
        )

    def _plan(
        self, requests: Sequence[ChatRequest]
    ) -> tuple[list[_Job], dict[str, CachedResponse], list[str]]:
        """Group identical requests, look them up in the cache. Returns (jobs to send, hits, keys)."""
        keys = [self.cache_key(r) for r in requests]
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        jobs: dict[str, _Job] = {}
        for i, (key, req) in enumerate(zip(keys, requests, strict=True)):
            if key in hits:
                continue
            if key in jobs:
                jobs[key].indices.append(i)
            else:
                max_tokens, temperature = self._effective(req)
                jobs[key] = _Job(key, req, [i], max_tokens, temperature)
        return list(jobs.values()), hits, keys

    def estimate_cost(
        self, requests: Sequence[ChatRequest], expected_completion_tokens: int | None = None
    ) -> CostEstimate:
        """Predict calls, tokens and dollars before a run. `calls` equals the requests a fault-free
        run sends (cache hits and duplicates excluded). Prompt tokens are approximated (chars/4);
        completion tokens are `expected_completion_tokens` per call, or each request's max_tokens
        (an upper bound) when None."""
        requests = list(requests)
        jobs, _hits, _keys = self._plan(requests)
        prompt = sum(approx_prompt_tokens(j.request.messages) for j in jobs)
        if expected_completion_tokens is None:
            completion = sum(j.max_tokens for j in jobs)
            basis = "completion tokens at max_tokens (upper bound)"
        else:
            completion = int(expected_completion_tokens) * len(jobs)
            basis = f"{int(expected_completion_tokens)} completion tokens per call"
        p_in, p_out, price_note = self.config.prices()
        dollars = prompt * p_in / 1e6 + completion * p_out / 1e6
        note = f"{price_note}; prompt tokens approximated as characters/4; {basis}"
        return CostEstimate(len(jobs), len(requests) - len(jobs), prompt, completion, dollars, note)

    def invalidate(self, request: ChatRequest) -> None:
        """Drop a cached answer (e.g. one that could not be parsed) so the next run asks again."""
        if self.cache is not None:
            self.cache.delete(self.cache_key(request))

    # -- public calls ---------------------------------------------------------------------------
    def complete(self, request: ChatRequest, *, raise_on_error: bool = False) -> ChatResult:
        """One request (cached). With raise_on_error, an error result raises LLMError."""
        result = self.complete_many([request])[0]
        if raise_on_error and not result.ok:
            raise LLMError.from_result(result)
        return result

    def complete_many(
        self,
        requests: Sequence[ChatRequest],
        progress: Progress | None = None,
        cancel: CancelToken | None = None,
        *,
        fail_fast: bool = True,
    ) -> list[ChatResult]:
        """Send a batch concurrently; results are aligned with `requests`.

        Cache hits are answered first. Progress is reported per completed request, in the calling
        thread. Cancellation is checked before each request starts: pending requests are not
        started, finished ones are cached, then `Cancelled` is raised with the partial results in
        its `partial` attribute (None for requests that were not answered).
        With `fail_fast`, a fatal error (auth, model not found, endpoint unreachable, not an
        OpenAI-compatible response) stops new requests: the rest fail with the same message unsent.
        """
        requests = list(requests)
        total = len(requests)
        if total == 0:
            return []
        jobs, hits, keys = self._plan(requests)
        results: list[ChatResult | None] = [None] * total
        for i, key in enumerate(keys):
            hit = hits.get(key)
            if hit is not None:
                results[i] = ChatResult(
                    hit.text, None, True, hit.prompt_tokens, hit.completion_tokens, 0.0, requests[i].tag
                )
        n_hits = sum(r is not None for r in results)
        with self._lock:
            self.usage.cache_hits += n_hits
        if progress is not None:
            progress(n_hits, total, f"{n_hits}/{total} answers ({n_hits} from cache)")
        if not jobs:
            return [r for r in results if r is not None]

        events: queue.Queue = queue.Queue()
        stop = threading.Event()
        box: dict[str, Any] = {}

        def worker() -> None:
            try:
                box["skipped"] = asyncio.run(
                    self._run_jobs(jobs, results, events, stop, cancel, n_hits, total, fail_fast)
                )
            except BaseException as exc:  # pragma: no cover - surfaced below
                box["error"] = exc
            finally:
                events.put(None)

        thread = threading.Thread(target=worker, name="icai-llm-batch", daemon=True)
        thread.start()
        try:
            while True:
                event = events.get()
                if event is None:
                    break
                if progress is not None:
                    progress(*event)
        except BaseException:
            stop.set()  # e.g. KeyboardInterrupt or a UI callback that raised: stop starting requests
            thread.join(timeout=self.config.timeout_s + 5)
            raise
        thread.join()
        if "error" in box:
            raise box["error"]
        if box.get("skipped"):
            exc = Cancelled("cancelled by the user")
            exc.partial = results  # type: ignore[attr-defined]
            raise exc
        return results  # type: ignore[return-value]  # every entry is set when nothing was skipped

    # -- async core -----------------------------------------------------------------------------
    async def _run_jobs(
        self,
        jobs: list[_Job],
        results: list[ChatResult | None],
        events: queue.Queue,
        stop: threading.Event,
        cancel: CancelToken | None,
        done_start: int,
        total: int,
        fail_fast: bool,
    ) -> bool:
        import openai

        config = self.config
        semaphore = asyncio.Semaphore(config.concurrency)
        state = {"done": done_start, "skipped": False, "fatal": None}

        def cancelled() -> bool:
            return stop.is_set() or (cancel is not None and cancel.cancelled)

        def finish(job: _Job, result: ChatResult) -> None:
            for n, i in enumerate(job.indices):
                if n == 0:
                    results[i] = result
                else:
                    results[i] = dataclasses.replace(result, cached=result.ok, cost=0.0, tag=job.request.tag)
            state["done"] += len(job.indices)
            if result.ok:
                with self._lock:
                    self.usage.cache_hits += len(job.indices) - 1
            status = "error" if not result.ok else "ok"
            events.put((state["done"], total, f"{state['done']}/{total} answers (last: {status})"))

        async def run_one(client: Any, job: _Job) -> None:
            async with semaphore:
                if cancelled():
                    state["skipped"] = True
                    return
                fatal = state["fatal"]
                if fatal is not None:
                    with self._lock:
                        self.usage.failures += 1
                    finish(
                        job,
                        ChatResult(
                            None, f"not sent: {fatal.message}", tag=job.request.tag, error_kind=fatal.kind
                        ),
                    )
                    return
                result = await self._send_with_retries(client, job, cancelled)
                if result.error_kind in FATAL_KINDS and fail_fast and state["fatal"] is None:
                    state["fatal"] = _Failure(result.error_kind, result.error or "", False)
                if result.error_kind == "cancelled":
                    state["skipped"] = True
                    return
                finish(job, result)

        client = openai.AsyncOpenAI(
            api_key=config.api_key or NO_KEY_PLACEHOLDER,
            base_url=config.base_url,
            timeout=config.timeout_s,
            max_retries=0,
        )
        try:
            await asyncio.gather(*(run_one(client, job) for job in jobs))
        finally:
            with contextlib.suppress(Exception):
                await client.close()
        return bool(state["skipped"])

    def _params(self, job: _Job) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.config.model, "messages": job.request.messages}
        if self._use_max_completion_tokens:
            params["max_completion_tokens"] = job.max_tokens
        else:
            params["max_tokens"] = job.max_tokens
        if not self._no_temperature:
            params["temperature"] = job.temperature
        if job.request.json_mode and not self._no_json_mode:
            params["response_format"] = {"type": "json_object"}
        return params

    def _adapt(self, exc: Exception, job: _Job) -> bool:
        """Learn from a 400 that names an unsupported parameter; True if a resend makes sense."""
        import openai

        if not isinstance(exc, openai.BadRequestError):
            return False
        msg = _server_message(exc).lower()
        if job.request.json_mode and not self._no_json_mode and "response_format" in msg:
            self._no_json_mode = True
            return True
        if not self._use_max_completion_tokens and "max_completion_tokens" in msg:
            self._use_max_completion_tokens = True
            return True
        if (
            not self._no_temperature
            and "temperature" in msg
            and ("unsupported" in msg or "not support" in msg)
        ):
            self._no_temperature = True
            return True
        return False

    async def _send_with_retries(self, client: Any, job: _Job, cancelled: Callable[[], bool]) -> ChatResult:
        config = self.config
        tag = job.request.tag
        attempts = 0
        adaptations = 0
        with self._lock:
            self.usage.calls += 1
        while True:
            attempts += 1
            try:
                response = await client.chat.completions.create(**self._params(job))
                return self._accept(job, response, attempts)
            except Exception as exc:  # classified below
                if adaptations < 3 and self._adapt(exc, job):
                    adaptations += 1
                    with self._lock:
                        self.usage.retries += 1
                    continue
                failure = _classify(exc, config)
            if not failure.retryable or attempts > config.max_retries:
                with self._lock:
                    self.usage.failures += 1
                message = failure.message
                if failure.retryable:
                    message = f"{message} (gave up after {attempts} attempts)"
                log.warning("LLM request failed (%s): %s", failure.kind, scrub(message))
                return ChatResult(None, message, tag=tag, attempts=attempts, error_kind=failure.kind)
            if failure.retry_after is not None:
                delay = min(failure.retry_after, config.backoff_max_s)
                delay += random.uniform(0, 0.1 * delay)
            else:
                delay = min(config.backoff_max_s, config.backoff_base_s * 2 ** (attempts - 1))
                delay *= random.uniform(0.5, 1.0)
            log.info(
                "retrying LLM request after %s in %.2f s (attempt %d)", failure.kind, delay, attempts + 1
            )
            with self._lock:
                self.usage.retries += 1
            deadline = time.monotonic() + delay
            while True:
                remaining = deadline - time.monotonic()
                if cancelled():
                    return ChatResult(None, "cancelled", tag=tag, attempts=attempts, error_kind="cancelled")
                if remaining <= 0:
                    break
                await asyncio.sleep(min(0.05, remaining))

    def _accept(self, job: _Job, response: Any, attempts: int) -> ChatResult:
        try:
            text = response.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise _BadResponse("response without choices[0].message") from exc
        usage = getattr(response, "usage", None)
        estimated = usage is None or getattr(usage, "prompt_tokens", None) is None
        if estimated:
            pt = approx_prompt_tokens(job.request.messages)
            ct = approx_tokens(text or "")
        else:
            pt = int(usage.prompt_tokens or 0)
            ct = int(usage.completion_tokens or 0)
        p_in, p_out, _note = self.config.prices()
        cost = pt * p_in / 1e6 + ct * p_out / 1e6
        with self._lock:
            self.usage.prompt_tokens += pt
            self.usage.completion_tokens += ct
            self.usage.dollars += cost
            self.usage.usage_estimated += int(estimated)
        if text is None or not str(text).strip():
            with self._lock:
                self.usage.failures += 1
            return ChatResult(
                None,
                "the model returned an empty answer",
                False,
                pt,
                ct,
                cost,
                job.request.tag,
                attempts,
                "empty",
            )
        text = str(text)
        if self.cache is not None:
            self.cache.put(job.key, text, pt, ct, self.config.model)
        return ChatResult(text, None, False, pt, ct, cost, job.request.tag, attempts, None)


def estimate_cost(
    requests: Sequence[ChatRequest],
    expected_completion_tokens: int | None = None,
    *,
    config: LLMConfig | None = None,
    cache: ResponseCache | None = None,
) -> CostEstimate:
    """Module-level form of `LLMClient.estimate_cost` (default config when none is given)."""
    return LLMClient(config or LLMConfig(), cache).estimate_cost(requests, expected_completion_tokens)


def raise_if_fatal(results: Sequence[ChatResult | None]) -> None:
    """Raise LLMError for the first fatal error (auth, model not found, unreachable, bad response)."""
    for r in results:
        if r is not None and r.error_kind in FATAL_KINDS:
            raise LLMError(
                r.error.removeprefix("not sent: ") if r.error else "fatal error", r.error_kind or "other"
            )


def check_endpoint(config: LLMConfig) -> tuple[bool, str]:
    """For a "Test connection" button: list models, then (if the model is not listed or listing is
    unsupported) send one tiny completion. Returns (ok, human message); never raises."""
    import openai

    url = config.base_url
    timeout = min(float(config.timeout_s), 20.0)
    try:
        client = openai.OpenAI(
            api_key=config.api_key or NO_KEY_PLACEHOLDER, base_url=url, timeout=timeout, max_retries=0
        )
    except Exception as exc:
        return False, scrub(f"could not create a client for {url}: {exc}")
    listed: list[str] | None = None
    try:
        with client:
            try:
                listed = [m.id for m in client.models.list()]
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403):
                    return False, _classify(exc, config).message
                listed = None  # listing unsupported: fall through to a tiny completion
            except openai.APIConnectionError as exc:
                return False, _classify(exc, config).message
            except Exception:
                listed = None
            if listed is not None and config.model in listed:
                return (
                    True,
                    f"Connected to {url}: {len(listed)} models listed, '{config.model}' is available.",
                )
            try:
                client.chat.completions.create(
                    model=config.model,
                    messages=[{"role": "user", "content": "Reply with OK."}],
                    max_tokens=1,
                    temperature=0,
                )
            except Exception as exc:
                failure = _classify(exc, config)
                if listed and failure.kind == "model_not_found":
                    sample = ", ".join(listed[:8]) + (" ..." if len(listed) > 8 else "")
                    return False, f"{failure.message}. Models offered: {sample}"
                return False, failure.message
            extra = "" if listed is None else f" ({len(listed)} models listed)"
            return True, f"Connected to {url}: model '{config.model}' answered a test request{extra}."
    except Exception as exc:  # pragma: no cover - defensive
        return False, scrub(f"unexpected error testing {url}: {type(exc).__name__}: {exc}")


__all__ = [
    "PRICES",
    "CachedResponse",
    "ChatRequest",
    "ChatResult",
    "CostEstimate",
    "LLMClient",
    "LLMConfig",
    "LLMError",
    "LLMUsage",
    "ResponseCache",
    "approx_prompt_tokens",
    "approx_tokens",
    "check_endpoint",
    "default_cache_path",
    "estimate_cost",
    "lookup_price",
    "normalize_base_url",
    "parse_json_answer",
    "raise_if_fatal",
    "scrub",
]


def embed_remote(config: LLMConfig, texts: Sequence[str], model: str, batch_size: int = 256) -> list[list[float]]:
    """Embeddings from an OpenAI-compatible `/v1/embeddings` endpoint, in input order.

    Used when a user prefers their endpoint's embedding model to the bundled MiniLM. Retries like
    chat calls (429 / 5xx / timeouts with backoff); raises LLMError with the endpoint's message.
    """
    import time as _time

    import openai

    client = openai.OpenAI(api_key=config.api_key or NO_KEY_PLACEHOLDER, base_url=config.base_url,
                           timeout=config.timeout_s, max_retries=0)
    out: list[list[float]] = []
    with client:
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            for attempt in range(config.max_retries + 1):
                try:
                    resp = client.embeddings.create(model=model, input=batch)
                    break
                except Exception as exc:
                    failure = _classify(exc, config)
                    if not failure.retryable or attempt == config.max_retries:
                        raise LLMError(f"embeddings: {failure.message}", failure.kind) from None
                    _time.sleep(min(config.backoff_max_s, config.backoff_base_s * 2**attempt))
            out.extend(d.embedding for d in sorted(resp.data, key=lambda d: d.index))
    return out
