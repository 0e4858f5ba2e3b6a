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
  json_mode[, json_schema]): a rerun makes zero repeated calls. Identical requests inside one batch
  are sent once. A damaged cache file is moved aside (`llm_cache.sqlite.corrupt-<ts>`) and a fresh
  one started, with one warning.
* `estimate_cost` predicts, before a run, exactly the number of calls a fault-free run will send.
* The API key never appears in `repr`, `to_dict`, logs, exception text, cache rows or pickles, even
  when an endpoint echoes it in a 200 answer (answer texts are scrubbed before they are returned or
  cached).

API used by the pipeline (issues 10, 11, 14)
--------------------------------------------
* `ChatRequest(messages, max_tokens=None, temperature=None, json_mode=False, tag="", json_schema=None)`:
  with `json_schema` the client sends `response_format={"type": "json_schema", ...}`, falls back to
  `{"type": "json_object"}` and then to plain text when the endpoint rejects it, and remembers per
  endpoint and model what worked (`endpoint_caps(config) -> EndpointCaps`).
* `ChatResult.finish_reason` and `ChatResult.truncated` (finish_reason == "length"). A cut-off JSON
  answer is never cached as final: it is resent once with twice the max_tokens; if still cut off it
  is returned with `truncated=True` (and cached marked as truncated). Free text is not resent.
* `LLMUsage.faults` counts faults by kind (http_429, http_5xx, http_4xx, timeout, connection,
  unreachable, malformed_body, empty, truncated) and `LLMUsage.response_format` the mode each answer
  used; both are in `to_dict()`. `LLMUsage.from_dict` / `add` and `LLMClient.carry_usage(previous)`
  let a resumed run record the cost of all its processes.
* One malformed 200 body is an invalid answer for that request (`error_kind="malformed_body"`),
  never fatal. `raise_if_fatal(results)` is the one place that decides what is fatal: wrong key /
  model / URL, or a batch in which every request failed on the server side (5xx, 429, timeouts,
  bodies that are not chat completions) -- with a message that says so.
* `preflight(config) -> None`: one cheap request before a run; `LLMError` with one clear message for
  unreachable, unauthorised, unknown or not-a-chat-model endpoints.

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


# query parameters that carry a credential when a key is put in the base URL (Azure-style proxies,
# gateways): their values are secrets like the API key itself
_URL_SECRET_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "token", "access_token", "auth",
                                "sig", "signature", "password", "secret", "code"})


def url_secrets(url: str | None) -> list[str]:
    """The credentials a URL carries -- the password of `http://user:PASSWORD@host` and the values of
    key-like query parameters (`?api-key=...`), decoded and as written -- so that a key given inside
    the base URL is scrubbed like the API key (issue 11, item 2)."""
    from urllib.parse import parse_qsl, quote, urlsplit

    if not url:
        return []
    try:
        parts = urlsplit(str(url))
        password = parts.password
        query = parse_qsl(parts.query, keep_blank_values=False)
    except ValueError:
        return []
    found = [password] if password else []
    for name, value in query:
        low = name.lower()
        if low in _URL_SECRET_PARAMS or low.endswith(("key", "token", "secret")):
            found.append(value)
    return [v for s in found for v in {s, quote(s, safe="")} if v]


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
        for secret in url_secrets(self.base_url):  # a key written into the URL is a secret too
            register_secret(secret)
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
        """JSON-safe settings WITHOUT the API key (what a run store may persist); credentials inside
        the base URL are replaced by *** (use `dataclasses.replace` to copy a config, not this)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "api_key"}
        if url_secrets(self.base_url):
            out["base_url"] = scrub(self.base_url)
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
    """One chat completion. None for max_tokens / temperature means "use the config's value".

    `json_schema`: the JSON Schema of the answer (a bare schema, or a `{"name", "schema", "strict"}`
    payload as built by `prompts.*_schema`). The client sends `response_format={"type":
    "json_schema", ...}` where the endpoint accepts it, else `{"type": "json_object"}`, else plain
    text (see `LLMClient`); it implies JSON mode. `json_mode` alone asks for `json_object`."""

    messages: list[dict]
    max_tokens: int | None = None
    temperature: float | None = None
    json_mode: bool = False
    tag: str = ""
    json_schema: dict | None = None


@dataclass
class ChatResult:
    """Outcome of one request. Exactly one of `text` / `error` is set.

    `cached` is True for cache hits (and for duplicates of a request sent in the same batch); their
    `cost` is 0. Tokens are the server's usage (or the stored usage for cache hits).
    `finish_reason` is the server's ("stop", "length", ...; None when it sent none); `truncated`
    means the answer was cut off at max_tokens even after the client's one retry with twice the
    budget, so the caller should parse it as incomplete (see `icai_core.answers`)."""

    text: str | None
    error: str | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    tag: str = ""
    attempts: int = 0
    error_kind: str | None = None
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


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
    what was sent (cache hits are free).

    `faults` counts every faulty HTTP attempt or answer by kind: http_429, http_5xx, http_4xx,
    timeout, connection, unreachable, malformed_body (a 200 whose body is not a chat completion),
    empty (an empty answer), truncated (cut off at max_tokens; each cut-off attempt counts).
    `response_format` counts the structured-output mode each sent request finally used
    (json_schema / json_object / text).

    A resumed run continues the totals of its earlier processes with `from_dict` + `add` (or
    `LLMClient.carry_usage`), so its cost record is the sum, not the last process's share."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dollars: float = 0.0
    usage_estimated: int = 0  # answers whose server sent no usage (tokens estimated)
    faults: dict[str, int] = field(default_factory=dict)
    response_format: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["faults"] = dict(sorted(self.faults.items()))
        out["response_format"] = dict(sorted(self.response_format.items()))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LLMUsage:
        """Totals from `to_dict()` output (unknown keys ignored, missing ones 0)."""
        out = cls()
        for f in dataclasses.fields(cls):
            value = (data or {}).get(f.name)
            if value is None:
                continue
            if isinstance(getattr(out, f.name), dict):
                setattr(out, f.name, {str(k): int(v) for k, v in dict(value).items()})
            else:
                setattr(out, f.name, type(getattr(out, f.name))(value))
        return out

    def add(self, other: LLMUsage | dict[str, Any]) -> LLMUsage:
        """Add another usage's totals to this one (in place); returns self."""
        other = other if isinstance(other, LLMUsage) else LLMUsage.from_dict(other)
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                for k, v in theirs.items():
                    mine[k] = mine.get(k, 0) + int(v)
            else:
                setattr(self, f.name, mine + theirs)
        return self


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
    finish_reason: str | None = None


class CacheError(RuntimeError):
    """The LLM response cache cannot be opened (unwritable folder, bad path); the message says what
    to do. A damaged cache file is not an error: it is moved aside and replaced."""


def _is_corruption(exc: BaseException) -> bool:
    """A damaged file (SQLITE_CORRUPT / SQLITE_NOTADB / failed integrity check), as opposed to a
    busy or unwritable one: only the former is healed by moving the file aside."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return True
    msg = str(exc).lower()
    return any(m in msg for m in ("malformed", "not a database", "integrity check failed", "corrupt"))


def default_home() -> Path:
    return Path(os.environ.get("PRINCIPIA_HOME") or Path.home() / ".principia")


def default_cache_path() -> Path:
    return default_home() / "llm_cache.sqlite"


class ResponseCache:
    """SQLite cache of successful answers, keyed by sha256(base_url, model, messages, temperature,
    max_tokens, json_mode[, json_schema]). Stores the answer text (scrubbed of every known API key),
    token usage and finish_reason; never the API key. Thread-safe.

    A truncated answer (finish_reason "length") is stored only as the client's final word after
    its retry with a larger budget, with finish_reason kept, so a cache hit reports it as truncated.

    Self-healing: a file that is not a readable SQLite database (truncated, garbage, a failed
    integrity check) is moved aside to `<name>.corrupt-<timestamp>` and a fresh cache is started,
    with one warning in the log; the same happens when corruption shows up later, on a read or a
    write. A cache that cannot be opened at all (an unwritable folder, a path that is a directory)
    raises `CacheError` with the path and what to do, never a raw sqlite3 / OS error."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = str(path) if path is not None else str(default_cache_path())
        self._lock = threading.RLock()
        self.healed: str | None = None  # where a corrupt file was moved, if it was
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                self._heal(exc)
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(
                f"cannot open the LLM response cache {self.path}: {exc}. Check that the folder exists and is "
                "writable (set PRINCIPIA_HOME, or choose another cache folder)."
            ) from None

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        try:
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, model TEXT, text TEXT NOT NULL,"
                " prompt_tokens INTEGER, completion_tokens INTEGER, created REAL, finish_reason TEXT)"
            )
            columns = {row[1] for row in conn.execute("PRAGMA table_info(responses)")}
            if "finish_reason" not in columns:  # a cache written before finish_reason was kept
                conn.execute("ALTER TABLE responses ADD COLUMN finish_reason TEXT")
            check = conn.execute("PRAGMA quick_check(1)").fetchone()
            if not check or str(check[0]).lower() != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check[0] if check else 'no answer'}")
            conn.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        return conn

    def _heal(self, exc: BaseException) -> None:
        """Move a corrupt cache file aside (with its WAL / SHM files) and start an empty cache."""
        with self._lock:
            old = getattr(self, "_conn", None)
            if old is not None:
                with contextlib.suppress(Exception):
                    old.close()
            if self.path == ":memory:":
                self._conn = self._open()
                return
            stamp = time.strftime("%Y%m%d-%H%M%S")
            target = f"{self.path}.corrupt-{stamp}"
            n = 1
            while os.path.exists(target):
                n += 1
                target = f"{self.path}.corrupt-{stamp}-{n}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path, target)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path + suffix, target + suffix)
            self.healed = target
            log.warning(
                "The LLM response cache %s was damaged (%s); it was moved to %s and a fresh cache was "
                "started (earlier answers will be requested again).",
                self.path, scrub(exc), target,
            )
            self._conn = self._open()

    @staticmethod
    def make_key(
        base_url: str,
        model: str,
        messages: Sequence[dict],
        temperature: float,
        max_tokens: int,
        json_mode: bool,
        json_schema: dict | None = None,
    ) -> str:
        fields: list[Any] = [
            normalize_base_url(base_url),
            model,
            list(messages),
            float(temperature),
            int(max_tokens),
            bool(json_mode),
        ]
        if json_schema is not None:  # appended only when set: keys of older requests do not change
            fields.append(json_schema)
        payload = json.dumps(
            fields,
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get(self, key: str) -> CachedResponse | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedResponse]:
        """Cached answers for the keys found (a damaged cache heals and answers nothing)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, CachedResponse] = {}
        with self._lock:
            try:
                for start in range(0, len(keys), 500):
                    chunk = keys[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = self._conn.execute(
                        "SELECT key, text, prompt_tokens, completion_tokens, finish_reason FROM responses"
                        f" WHERE key IN ({marks})",
                        chunk,
                    ).fetchall()
                    for key, text, pt, ct, fr in rows:
                        out[key] = CachedResponse(text, int(pt or 0), int(ct or 0), fr)
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                self._heal(exc)
                return {}
        return out

    def put(
        self,
        key: str,
        text: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        model: str = "",
        finish_reason: str | None = None,
    ) -> None:
        """Store an answer; its text is scrubbed of every known API key first."""
        row = (key, model, scrub(text), int(prompt_tokens), int(completion_tokens), time.time(), finish_reason)
        sql = ("INSERT OR REPLACE INTO responses"
               " (key, model, text, prompt_tokens, completion_tokens, created, finish_reason)"
               " VALUES (?, ?, ?, ?, ?, ?, ?)")
        with self._lock:
            try:
                self._conn.execute(sql, row)
                self._conn.commit()
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                self._heal(exc)
                self._conn.execute(sql, row)
                self._conn.commit()

    def _write(self, sql: str, args: tuple = ()) -> None:
        with self._lock:
            try:
                self._conn.execute(sql, args)
                self._conn.commit()
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                self._heal(exc)

    def delete(self, key: str) -> None:
        self._write("DELETE FROM responses WHERE key = ?", (key,))

    def clear(self) -> None:
        self._write("DELETE FROM responses")

    def __len__(self) -> int:
        with self._lock:
            try:
                return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                self._heal(exc)
                return 0

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
    fault: str = "other"  # the LLMUsage.faults key this failure counts under


def _fault_key(status: int) -> str:
    return "http_429" if status == 429 else "http_5xx" if status >= 500 else f"http_{status // 100}xx"


def _classify(exc: Exception, config: LLMConfig) -> _Failure:
    import openai

    url = config.base_url
    if isinstance(exc, openai.APITimeoutError):
        return _Failure("timeout", f"the request to {url} timed out after {config.timeout_s:g} s", True,
                        fault="timeout")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        cause_name = type(cause).__name__ if cause is not None else ""
        if cause is None or "Connect" in cause_name or isinstance(cause, OSError):
            detail = f" ({cause_name})" if cause_name else ""
            return _Failure(
                "unreachable",
                f"could not reach the endpoint at {url}{detail}; is the server running and the base URL right?",
                True,
                fault="unreachable",
            )
        return _Failure(
            "connection", f"the connection to {url} broke before an answer arrived ({cause_name})", True,
            fault="connection",
        )
    if isinstance(exc, openai.APIStatusError):
        failure = _classify_status(exc, config)
        failure.fault = _fault_key(exc.status_code)
        return failure
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError | _BadResponse):
        return _Failure(
            "malformed_body",
            f"{url} returned an HTTP 200 answer that is not OpenAI-compatible chat completion JSON "
            "(counted as an invalid answer for this request; if every answer looks like this, check that "
            "the base URL ends in /v1)",
            False,
            fault="malformed_body",
        )
    if isinstance(exc, openai.OpenAIError):
        return _Failure("other", f"OpenAI client error: {scrub(exc)}", False)
    return _Failure("other", f"unexpected error talking to {url}: {type(exc).__name__}: {scrub(exc)}", False)


_NOT_CHAT = ("not a chat model", "not supported in the v1/chat/completions", "does not support chat",
             "not a chat completion model", "chat template")


def _classify_status(exc: Any, config: LLMConfig) -> _Failure:
    url = config.base_url
    status = exc.status_code
    server = _server_message(exc)
    if status in (400, 404) and any(m in server.lower() for m in _NOT_CHAT):
        return _Failure(
            "model_not_found",
            f"model '{config.model}' at {url} is not a chat model (HTTP {status}): {server}; "
            "choose a chat / instruct model",
            False,
        )
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


@dataclass
class EndpointCaps:
    """What one endpoint (base_url, model) accepted, learned from its answers and shared by every
    client in the process: None = not tried yet, True = worked, False = rejected (HTTP 400/422, or a
    5xx naming response_format / json_schema / grammar)."""

    json_schema: bool | None = None
    json_object: bool | None = None
    max_completion_tokens: bool = False  # the endpoint wants max_completion_tokens, not max_tokens
    no_temperature: bool = False  # the endpoint rejects a temperature

    def mode_for(self, request: ChatRequest) -> str:
        """The structured-output mode to send for `request`: json_schema, json_object or text."""
        if request.json_schema is not None and self.json_schema is not False:
            return "json_schema"
        if (request.json_mode or request.json_schema is not None) and self.json_object is not False:
            return "json_object"
        return "text"


_CAPS: dict[tuple[str, str], EndpointCaps] = {}
_CAPS_LOCK = threading.Lock()


def endpoint_caps(config: LLMConfig) -> EndpointCaps:
    """The capabilities learned so far for this config's endpoint and model."""
    key = (normalize_base_url(config.base_url), config.model)
    with _CAPS_LOCK:
        return _CAPS.setdefault(key, EndpointCaps())


def forget_endpoint_caps() -> None:
    """Forget every learned capability (tests; a server that was upgraded)."""
    with _CAPS_LOCK:
        _CAPS.clear()


def _response_format(schema: dict) -> dict:
    """`response_format` payload for a JSON schema (a bare schema is wrapped under the name 'answer')."""
    if "schema" in schema and isinstance(schema.get("schema"), dict):
        payload = {"name": str(schema.get("name") or "answer"), "schema": schema["schema"]}
        if "strict" in schema:
            payload["strict"] = bool(schema["strict"])
    else:
        payload = {"name": "answer", "schema": schema}
    return {"type": "json_schema", "json_schema": payload}


_FORMAT_WORDS = ("response_format", "json_schema", "json schema", "grammar", "schema")


class LLMClient:
    """Batch chat completions against one OpenAI-compatible endpoint, with cache and accounting.

    Structured outputs: a request with `json_schema` is sent with `response_format={"type":
    "json_schema"}`; if the endpoint rejects that (HTTP 400 / 422, or a 5xx whose message names
    response_format / json_schema / grammar) the same request is resent with `{"type":
    "json_object"}`, and if that is rejected too, as plain text. What worked is remembered per
    endpoint and model (`endpoint_caps`) for every later request of the process; `usage.response_format`
    counts the mode each answer was obtained with.

    Truncation: a JSON answer (json_mode / json_schema) with finish_reason "length" is never cached
    as final. It is resent once with twice the `max_tokens`; if the second answer is cut off too it
    is returned with `truncated=True` (and cached under the request's key with finish_reason
    "length", so a rerun reports it as truncated without paying again). A free-text answer (IterAlign
    replies) is usable when cut off, so it is not resent -- that would double the cost of every long
    reply -- but returned and cached with `truncated=True`. Every cut-off attempt counts as a
    "truncated" fault.

    Faults: one bad HTTP 200 body (not a chat completion) is an invalid answer for that request
    (`error_kind="malformed_body"`), never fatal for the run; `raise_if_fatal` decides what is.
    """

    truncation_growth = 2  # max_tokens multiplier of the one retry of a cut-off answer

    def __init__(self, config: LLMConfig, cache: ResponseCache | str | os.PathLike[str] | None = None):
        self.config = config
        self.cache = ResponseCache(cache) if isinstance(cache, str | os.PathLike) else cache
        self.usage = LLMUsage()
        self._lock = threading.Lock()
        self.caps = endpoint_caps(config)

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.config.base_url!r}, model={self.config.model!r})"

    # Backwards-compatible views of the learned adaptations.
    @property
    def _no_json_mode(self) -> bool:
        return self.caps.json_object is False

    @property
    def _use_max_completion_tokens(self) -> bool:
        return self.caps.max_completion_tokens

    @property
    def _no_temperature(self) -> bool:
        return self.caps.no_temperature

    def carry_usage(self, previous: LLMUsage | dict[str, Any] | None) -> None:
        """Add the totals of earlier processes of the same run (a resumed run's stored cost record)
        to this client's usage, so the record written next is the sum of every process."""
        if previous:
            with self._lock:
                self.usage.add(previous)

    def _fault(self, kind: str) -> None:
        with self._lock:
            self.usage.faults[kind] = self.usage.faults.get(kind, 0) + 1

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
            request.json_schema,
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
                    hit.text, None, True, hit.prompt_tokens, hit.completion_tokens, 0.0, requests[i].tag,
                    finish_reason=hit.finish_reason,
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

    def _params(self, job: _Job, max_tokens: int | None = None) -> tuple[dict[str, Any], str]:
        """Request parameters for a job and the structured-output mode they use."""
        caps = self.caps
        params: dict[str, Any] = {"model": self.config.model, "messages": job.request.messages}
        budget = job.max_tokens if max_tokens is None else max_tokens
        if caps.max_completion_tokens:
            params["max_completion_tokens"] = budget
        else:
            params["max_tokens"] = budget
        if not caps.no_temperature:
            params["temperature"] = job.temperature
        mode = caps.mode_for(job.request)
        if mode == "json_schema":
            params["response_format"] = _response_format(job.request.json_schema or {})
        elif mode == "json_object":
            params["response_format"] = {"type": "json_object"}
        return params, mode

    def _adapt(self, exc: Exception, job: _Job, mode: str) -> bool:
        """Learn from an answer that names an unsupported parameter; True if a resend makes sense."""
        import openai

        if not isinstance(exc, openai.APIStatusError):
            return False
        status = exc.status_code
        msg = _server_message(exc).lower()
        caps = self.caps
        names_format = any(w in msg for w in _FORMAT_WORDS)
        if mode != "text" and names_format and (status in (400, 422) or status >= 500):
            if mode == "json_schema":
                caps.json_schema = False
                log.info("%s rejected response_format json_schema; falling back to json_object",
                         self.config.base_url)
            else:
                caps.json_object = False
                log.info("%s rejected response_format json_object; falling back to plain text",
                         self.config.base_url)
            return True
        if status not in (400, 422):
            return False
        if not caps.max_completion_tokens and "max_completion_tokens" in msg:
            caps.max_completion_tokens = True
            return True
        if not caps.no_temperature and "temperature" in msg and ("unsupported" in msg or "not support" in msg):
            caps.no_temperature = True
            return True
        return False

    async def _send_with_retries(self, client: Any, job: _Job, cancelled: Callable[[], bool]) -> ChatResult:
        config = self.config
        tag = job.request.tag
        attempts = 0
        adaptations = 0
        budget = job.max_tokens
        grown = False
        with self._lock:
            self.usage.calls += 1
        while True:
            attempts += 1
            params, mode = self._params(job, budget)
            try:
                response = await client.chat.completions.create(**params)
                result = self._accept(job, response, attempts, mode)
            except Exception as exc:  # classified below
                if adaptations < 4 and self._adapt(exc, job, mode):
                    adaptations += 1
                    with self._lock:
                        self.usage.retries += 1
                    continue
                failure = _classify(exc, config)
            else:
                if result.ok and mode != "text":
                    if mode == "json_schema":
                        self.caps.json_schema = True
                    else:
                        self.caps.json_object = True
                if result.truncated:
                    self._fault("truncated")
                    wants_json = job.request.json_mode or job.request.json_schema is not None
                    if wants_json and not grown:
                        grown = True
                        budget = int(budget * self.truncation_growth)
                        with self._lock:
                            self.usage.retries += 1
                        log.info("answer cut off at max_tokens; resending once with max_tokens=%d", budget)
                        continue
                self._store(job, result, mode)
                return result
            self._fault(failure.fault)
            if not failure.retryable or attempts > config.max_retries:
                with self._lock:
                    self.usage.failures += 1
                message = failure.message
                if failure.retryable:
                    message = f"{message} (gave up after {attempts} attempts)"
                log.warning("LLM request failed (%s): %s", failure.kind, scrub(message))
                return ChatResult(None, scrub(message), tag=tag, attempts=attempts, error_kind=failure.kind)
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

    def _store(self, job: _Job, result: ChatResult, mode: str) -> None:
        """Count the answer's response format and cache it (a truncated one only as the final word)."""
        if not result.ok:
            return
        with self._lock:
            self.usage.response_format[mode] = self.usage.response_format.get(mode, 0) + 1
        if self.cache is not None:
            self.cache.put(job.key, result.text or "", result.prompt_tokens, result.completion_tokens,
                           self.config.model, result.finish_reason)

    def _accept(self, job: _Job, response: Any, attempts: int, mode: str = "text") -> ChatResult:
        if isinstance(response, str | bytes) or not hasattr(response, "choices"):
            raise _BadResponse("response without choices")
        try:
            choice = response.choices[0]
            text = choice.message.content
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise _BadResponse("response without choices[0].message") from exc
        if text is not None and not isinstance(text, str):
            raise _BadResponse("choices[0].message.content is not a string")
        finish_reason = getattr(choice, "finish_reason", None)
        finish_reason = str(finish_reason) if finish_reason is not None else None
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
            self._fault("empty")
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
                finish_reason,
            )
        # an endpoint that echoes the key in its answer must not carry it into caches, stores or exports
        text = scrub(str(text))
        return ChatResult(text, None, False, pt, ct, cost, job.request.tag, attempts, None, finish_reason)


def estimate_cost(
    requests: Sequence[ChatRequest],
    expected_completion_tokens: int | None = None,
    *,
    config: LLMConfig | None = None,
    cache: ResponseCache | None = None,
) -> CostEstimate:
    """Module-level form of `LLMClient.estimate_cost` (default config when none is given)."""
    return LLMClient(config or LLMConfig(), cache).estimate_cost(requests, expected_completion_tokens)


_SERVER_SIDE = {"server": "server errors (HTTP 5xx)", "rate_limited": "rate limits (HTTP 429)",
                "timeout": "timeouts", "connection": "broken connections",
                "malformed_body": "answers that are not chat completion JSON"}


def raise_if_fatal(results: Sequence[ChatResult | None]) -> None:
    """The one place that decides whether a batch's failures end the run. Raises LLMError for

    * the first fatal error (wrong key, unknown model / not a chat model, unreachable endpoint);
    * a batch in which EVERY request failed on the server side (HTTP 5xx, 429, timeouts, broken
      connections or bodies that are not chat completions, after the client's retries): the message
      says so, with the counts by kind and the first error, instead of letting a later stage blame
      the model for "proposing nothing".

    Anything else (some invalid answers among valid ones) is not fatal: the caller counts it."""
    answered = [r for r in results if r is not None]
    for r in answered:
        if r.error_kind in FATAL_KINDS:
            raise LLMError(
                r.error.removeprefix("not sent: ") if r.error else "fatal error", r.error_kind or "other"
            )
    if answered and all(not r.ok and r.error_kind in _SERVER_SIDE for r in answered):
        counts: dict[str, int] = {}
        for r in answered:
            counts[r.error_kind or "other"] = counts.get(r.error_kind or "other", 0) + 1
        detail = ", ".join(f"{n} {_SERVER_SIDE[k]}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        kind = max(counts, key=lambda k: counts[k])
        kind = "bad_response" if kind == "malformed_body" else kind
        hint = (" Check that the base URL ends in /v1." if "malformed_body" in counts
                else " The endpoint is failing; try again later or check the server's log.")
        raise LLMError(
            f"Every one of the {len(answered)} requests to the model failed ({detail}); first error: "
            f"{answered[0].error}.{hint}",
            kind,
        )


def preflight(config: LLMConfig) -> None:
    """One cheap request before a run: returns None when the endpoint answers a chat completion.

    Raises `LLMError` with ONE clear message when the endpoint is unreachable, rejects the key,
    does not know the model, serves a model that is not a chat model, or does not answer in the
    OpenAI chat format -- instead of a run that sends dozens of retried calls. At most two HTTP
    requests plus parameter adaptations (a 5xx / timeout is retried once; a 429 means the endpoint
    is reachable and authorised, so it passes). The request carries a tiny JSON schema, so an
    endpoint that rejects structured outputs is learned here (see `endpoint_caps`)."""
    import openai

    probe = dataclasses.replace(config, timeout_s=min(float(config.timeout_s), 30.0), max_retries=0)
    client = LLMClient(probe)
    request = ChatRequest(
        [{"role": "user", "content": 'Reply with the JSON {"ok": true}.'}],
        max_tokens=16,
        temperature=0.0,
        json_schema={"name": "ping", "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}},
                                                "required": ["ok"], "additionalProperties": False}},
    )
    job = _Job("", request, [0], 16, 0.0)

    async def once() -> ChatResult | _Failure:
        oa = openai.AsyncOpenAI(api_key=probe.api_key or NO_KEY_PLACEHOLDER, base_url=probe.base_url,
                                timeout=probe.timeout_s, max_retries=0)
        try:
            adaptations = 0
            while True:
                params, mode = client._params(job)
                try:
                    response = await oa.chat.completions.create(**params)
                    result = client._accept(job, response, 1, mode)
                    if mode == "json_schema":
                        client.caps.json_schema = True
                    elif mode == "json_object":
                        client.caps.json_object = True
                    return result
                except Exception as exc:
                    if adaptations < 4 and client._adapt(exc, job, mode):
                        adaptations += 1
                        continue
                    return _classify(exc, probe)
        finally:
            with contextlib.suppress(Exception):
                await oa.close()

    outcome: ChatResult | _Failure | None = None
    for attempt in range(2):
        box: dict[str, Any] = {}

        def work(box: dict[str, Any] = box) -> None:
            try:
                box["out"] = asyncio.run(once())
            except BaseException as exc:  # pragma: no cover - surfaced below
                box["error"] = exc

        thread = threading.Thread(target=work, name="icai-llm-preflight", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            raise LLMError(f"could not test the endpoint {config.base_url}: {box['error']}", "other")
        outcome = box["out"]
        if isinstance(outcome, ChatResult):
            return  # an answer, even an empty or cut-off one: the endpoint serves chat completions
        if outcome.kind == "rate_limited":
            return  # reachable and authorised; the run's own retries handle the rate limit
        if outcome.kind in ("server", "timeout", "connection") and attempt == 0:
            time.sleep(min(1.0, config.backoff_max_s))
            continue
        break
    assert isinstance(outcome, _Failure)
    kind = "bad_response" if outcome.kind == "malformed_body" else outcome.kind
    message = outcome.message
    if outcome.kind == "malformed_body":
        message = (f"{config.base_url} does not answer like an OpenAI-compatible chat completion endpoint; "
                   "check the base URL (it usually ends in /v1)")
    raise LLMError(f"The model endpoint is not usable: {message}", kind)


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
    "CacheError",
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
    "EndpointCaps",
    "endpoint_caps",
    "forget_endpoint_caps",
    "normalize_base_url",
    "parse_json_answer",
    "preflight",
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
