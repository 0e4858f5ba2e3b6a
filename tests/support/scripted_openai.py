"""A scripted OpenAI-compatible HTTP server for tests. TEST FIXTURE ONLY — never a product backend.

It listens on 127.0.0.1:<free port> (stdlib `ThreadingHTTPServer`) and implements:

* ``POST /v1/chat/completions`` — answers with OpenAI-shaped JSON including ``usage``;
* ``GET  /v1/models``           — lists ``server.models``;
* ``POST /v1/embeddings``       — FAKE deterministic vectors from sha256 of each input (not semantic).

How an answer is chosen (a fixed, documented rule)
-------------------------------------------------
1. If the last user message contains a line ``SCRIPTED_REPLY: <text>``, the answer is ``<text>``
   (lets a test script any answer, e.g. malformed JSON, inline in its prompt).
2. Else, if any line of the system prompt (the first system message; if there is none, the first
   user message) equals a registered *marker* — by convention the first line, e.g.
   ``TASK: propose_principles`` — that marker's responder answers. Markers registered on the server
   instance win over markers registered globally with ``register_responder``.
3. Else the default responder answers: ``ECHO: <last user message>``, or, when the request asked for
   ``response_format={"type": "json_object"}``, the JSON ``{"echo": "<last user message>"}``.

A responder is ``responder(messages: list[dict], body: dict) -> str | Reply`` (``body`` is the full
request JSON: model, temperature, max_tokens, response_format, ...; plus ``body["_authorization"]``,
the request's Authorization header, for responders that script an endpoint echoing the key). ``Reply(text, finish_reason)``
lets a responder answer with a finish_reason other than "stop" (e.g. replay a raw answer a real model
gave with finish_reason "length"); ``replay_responder([...])`` answers a fixed sequence of raw
answers in arrival order. A line ``SCRIPTED_FINISH: <reason>`` in the last user message sets the
finish_reason of a SCRIPTED_REPLY. Register one with::

    server.register("TASK: propose_principles", my_responder)          # this server only

    @register_responder("TASK: vote")                                  # every server in the process
    def vote(messages, body): ...

Usage reported: prompt_tokens = ceil(chars of all message contents / 4) + 4 per message + 3;
completion_tokens = ceil(chars of the answer / 4) (at least 1).

Behaviours of real servers (all off by default)
-----------------------------------------------
* ``enforce_max_tokens=True``: an answer longer than ``max_tokens * 4`` characters is cut there and
  sent with finish_reason "length" (what a real server does with a runaway answer).
* ``reject_json_schema=True``: a request with ``response_format.type == "json_schema"`` gets HTTP 400
  "response_format type 'json_schema' is not supported" (an older llama.cpp / vLLM);
  ``reject_response_format=True`` does the same for any response_format (json_object too).
* ``echo_key=True``: every answer text and every error message contains the bearer token the
  request carried (a misbehaving endpoint; tests check the key reaches no file).
* ``not_chat_models=[...]``: those models answer HTTP 404 "This is not a chat model ..." (OpenAI's
  answer for a completion-only model on /v1/chat/completions).

Fault injection
---------------
``server.add_fault(kind, first_n=N)``, ``server.add_fault(kind, every_k=K)`` or
``server.add_fault(kind, at=(i, j))`` applies to chat completion calls counted from 1 in arrival
order *from the moment the fault is added* (every attempt counts, retries included): ``first_n=2``
hits the next two calls, ``every_k=3`` every third, ``at=(11,)`` only the 11th. Kinds:

* ``"429"``       — HTTP 429 with ``Retry-After: <retry_after>`` (default 0 s);
* ``"500"``       — HTTP 500 (also ``"502"``, ``"503"``);
* ``"401"``       — HTTP 401 invalid key; ``"404"`` — model not found;
* ``"slow"``      — sleep ``delay_s`` (default 2 s) before answering normally (beyond a client timeout);
* ``"malformed"`` — HTTP 200 whose answer text is broken JSON (``{"principles": ["be concise",``);
* ``"bad_body"``  — HTTP 200 whose HTTP body is not JSON at all (HTML);
* ``"bad_shape"`` — HTTP 200 JSON without ``choices`` (a proxy's or another API's answer);
* ``"length"``    — the answer cut to half its length with finish_reason "length";
* ``"drop"``      — close the connection without any response.

The first matching fault (in the order added) applies. ``require_key`` makes every request without
``Authorization: Bearer <require_key>`` fail with 401; ``strict_models`` makes unknown models 404.

Every request is recorded (``server.requests``: method, path, JSON body, Authorization header), so a
test can assert the key went over HTTP. The server never writes anything to disk.
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Truncated(Exception):
    """A request body shorter than its Content-Length: the client was killed while sending it. Such a
    request is not recorded (it never reached the API), so call counts are those of whole requests."""


@dataclass(frozen=True)
class Reply:
    """A scripted answer with its finish_reason ("stop", "length", ...)."""

    text: str
    finish_reason: str = "stop"


Responder = Callable[[list[dict], dict], "str | Reply"]

GLOBAL_RESPONDERS: dict[str, Responder] = {}
MALFORMED_ANSWER = '{"principles": ["be concise",'
FAULT_KINDS = ("429", "500", "502", "503", "401", "404", "slow", "malformed", "bad_body", "bad_shape",
               "length", "drop")


def replay_responder(answers, *, cycle: bool = True) -> Responder:
    """A responder that answers `answers` (str or Reply) in arrival order (cycling, or repeating the
    last one when cycle=False). Thread-safe."""
    items = list(answers)
    if not items:
        raise ValueError("replay_responder needs at least one answer")
    lock = threading.Lock()
    state = {"n": 0}

    def responder(messages: list[dict], body: dict) -> str | Reply:
        with lock:
            n = state["n"]
            state["n"] += 1
        return items[n % len(items)] if cycle else items[min(n, len(items) - 1)]

    return responder


def register_responder(marker: str, responder: Responder | None = None):
    """Register a responder for a system-prompt marker in every ScriptedOpenAI of this process.

    Use directly (``register_responder("TASK: x", fn)``) or as a decorator."""

    def _add(fn: Responder) -> Responder:
        GLOBAL_RESPONDERS[marker.strip()] = fn
        return fn

    return _add(responder) if responder is not None else _add


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def last_user_message(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return message_text(m.get("content"))
    return message_text(messages[-1].get("content")) if messages else ""


def system_prompt(messages: list[dict]) -> str:
    for m in messages:
        if m.get("role") == "system":
            return message_text(m.get("content"))
    for m in messages:
        if m.get("role") == "user":
            return message_text(m.get("content"))
    return ""


def echo_responder(messages: list[dict], body: dict) -> str:
    """Default: 'ECHO: <last user message>' or {"echo": ...} in JSON mode."""
    last = last_user_message(messages)
    fmt = body.get("response_format") or {}
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return json.dumps({"echo": last})
    return f"ECHO: {last}"


def count_prompt_tokens(messages: list[dict]) -> int:
    return sum(math.ceil(len(message_text(m.get("content"))) / 4) + 4 for m in messages) + 3


def fake_embedding(text: str, dim: int = 64) -> list[float]:
    """FAKE, deterministic, unit-length vector from sha256(text) — no semantics whatsoever."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{counter}\x00{text}".encode()).digest()
        for (n,) in struct.iter_unpack(">I", digest):
            values.append(n / 0xFFFFFFFF * 2.0 - 1.0)
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


@dataclass
class Fault:
    kind: str
    first_n: int | None = None
    every_k: int | None = None
    retry_after: float = 0.0
    delay_s: float = 2.0
    offset: int = 0  # chat calls already received when the fault was added
    at: tuple[int, ...] = ()  # exact 1-based call numbers (since the fault was added)

    def applies(self, chat_index: int) -> bool:
        n = chat_index - self.offset  # 1-based count of calls since the fault was added
        if n < 1:
            return False
        if n in self.at:
            return True
        if self.first_n is not None and n <= self.first_n:
            return True
        return bool(self.every_k) and n % self.every_k == 0


@dataclass
class RecordedRequest:
    index: int  # 1-based over all requests
    method: str
    path: str
    body: Any
    authorization: str | None
    headers: dict[str, str] = field(default_factory=dict)
    chat_index: int | None = None  # 1-based over chat completion calls
    fault: str | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default backlog (5) refuses bursts of concurrent connections
    scripted: ScriptedOpenAI


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        return

    # -- helpers ----------------------------------------------------------------------------------
    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self._send_raw(status, data, "application/json", headers)

    def _send_raw(self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _error(self, status: int, message: str, etype: str, code: str | None, headers=None) -> None:
        srv = self.server.scripted
        if srv.echo_key:
            message = f"{message} (you sent: {self.headers.get('Authorization')})"
        self._send_json(
            status, {"error": {"message": message, "type": etype, "param": None, "code": code}}, headers
        )

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:  # the client died mid-request (a killed `icai run`): not a call
            raise _Truncated
        try:
            return json.loads(raw.decode() or "null")
        except ValueError:
            return raw.decode(errors="replace")

    # -- routes -------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        srv = self.server.scripted
        rec = srv._record("GET", self.path, None, self.headers)
        if not srv._authorized(rec):
            return self._error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if self.path.rstrip("/").endswith("/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in srv.models]
            return self._send_json(200, {"object": "list", "data": data})
        return self._error(404, f"no route GET {self.path}", "invalid_request_error", None)

    def do_POST(self) -> None:  # noqa: N802
        srv = self.server.scripted
        try:
            body = self._read_body()
        except _Truncated:
            self.close_connection = True
            return
        path = self.path.rstrip("/")
        is_chat = path.endswith("/chat/completions")
        rec = srv._record("POST", self.path, body, self.headers, chat=is_chat)
        if not srv._authorized(rec):
            return self._error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if is_chat:
            return self._chat(srv, rec, body if isinstance(body, dict) else {})
        if path.endswith("/embeddings"):
            return self._embeddings(srv, body if isinstance(body, dict) else {})
        return self._error(404, f"no route POST {self.path}", "invalid_request_error", None)

    def _embeddings(self, srv: ScriptedOpenAI, body: dict) -> None:
        inputs = body.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        dim = int(body.get("dimensions") or srv.embedding_dim)
        data = [
            {"object": "embedding", "index": i, "embedding": fake_embedding(str(t), dim)}
            for i, t in enumerate(inputs)
        ]
        tokens = sum(math.ceil(len(str(t)) / 4) for t in inputs)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "scripted-embedding"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _chat(self, srv: ScriptedOpenAI, rec: RecordedRequest, body: dict) -> None:
        model = str(body.get("model", ""))
        fault = srv._fault_for(rec.chat_index or 0)
        rec.fault = fault.kind if fault else None
        with srv._lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            if fault is not None:
                kind = fault.kind
                if kind == "429":
                    return self._error(
                        429,
                        "Rate limit reached (scripted).",
                        "rate_limit_error",
                        "rate_limit_exceeded",
                        {"Retry-After": f"{fault.retry_after:g}"},
                    )
                if kind in ("500", "502", "503"):
                    return self._error(int(kind), "The server had an error (scripted).", "server_error", None)
                if kind == "401":
                    return self._error(
                        401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                    )
                if kind == "404":
                    return self._error(
                        404,
                        f"The model `{model}` does not exist.",
                        "invalid_request_error",
                        "model_not_found",
                    )
                if kind == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if kind == "bad_body":
                    return self._send_raw(200, b"<html><body>not an API</body></html>", "text/html")
                if kind == "bad_shape":
                    return self._send_json(200, {"object": "list", "data": [], "status": "ok"})
                if kind == "slow":
                    time.sleep(fault.delay_s)
            if srv.strict_models and model not in srv.models:
                return self._error(
                    404, f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found"
                )
            if model in srv.not_chat_models:
                return self._error(
                    404,
                    "This is not a chat model and thus not supported in the v1/chat/completions endpoint. "
                    "Did you mean to use v1/completions?",
                    "invalid_request_error",
                    None,
                )
            fmt = body.get("response_format")
            fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
            if fmt_type is not None and (
                srv.reject_response_format or (srv.reject_json_schema and fmt_type == "json_schema")
            ):
                return self._error(
                    400,
                    f"response_format type '{fmt_type}' is not supported by this server",
                    "invalid_request_error",
                    None,
                )
            if srv.latency_s:
                time.sleep(srv.latency_s)
            messages = body.get("messages") or []
            finish = "stop"
            if fault is not None and fault.kind == "malformed":
                text = MALFORMED_ANSWER
            else:
                # the responder also sees the Authorization header the request carried (a copy of the
                # body with "_authorization"), so a test can script an endpoint that echoes the key
                got = srv.answer(messages, {**body, "_authorization": rec.authorization})
                text, finish = (got.text, got.finish_reason) if isinstance(got, Reply) else (str(got), "stop")
            if fault is not None and fault.kind == "length":
                text, finish = text[: max(1, len(text) // 2)], "length"
            limit = body.get("max_tokens") or body.get("max_completion_tokens")
            if srv.enforce_max_tokens and limit and len(text) > 4 * int(limit):
                text, finish = text[: 4 * int(limit)], "length"
            if srv.echo_key:
                text = f"{text} [debug: you sent {rec.authorization}]"
            pt = count_prompt_tokens(messages)
            ct = max(1, math.ceil(len(text) / 4))
            payload = {
                "id": f"chatcmpl-scripted-{rec.chat_index}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
            }
            self._send_json(200, payload)
        finally:
            with srv._lock:
                srv.in_flight -= 1


class ScriptedOpenAI:
    """Scripted OpenAI-compatible server on 127.0.0.1 (see the module docstring for the rules)."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency_s: float = 0.0,
        models: tuple[str, ...] | list[str] = ("scripted-model",),
        require_key: str | None = None,
        strict_models: bool = False,
        embedding_dim: int = 64,
        enforce_max_tokens: bool = False,
        reject_json_schema: bool = False,
        reject_response_format: bool = False,
        echo_key: bool = False,
        not_chat_models: tuple[str, ...] | list[str] = (),
    ):
        self.default_responder: Responder = responder or echo_responder
        self.responders: dict[str, Responder] = {}
        self.latency_s = latency_s
        self.models = list(models)
        self.require_key = require_key
        self.strict_models = strict_models
        self.embedding_dim = embedding_dim
        self.enforce_max_tokens = enforce_max_tokens
        self.reject_json_schema = reject_json_schema
        self.reject_response_format = reject_response_format
        self.echo_key = echo_key
        self.not_chat_models = list(not_chat_models)
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._chat_count = 0
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- configuration ----------------------------------------------------------------------
    def register(self, marker: str, responder: Responder) -> None:
        """Answer requests whose system prompt has a line equal to `marker` with `responder`."""
        self.responders[marker.strip()] = responder

    def add_fault(
        self,
        kind: str,
        *,
        first_n: int | None = None,
        every_k: int | None = None,
        retry_after: float = 0.0,
        delay_s: float = 2.0,
        at: tuple[int, ...] | list[int] = (),
    ) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {FAULT_KINDS}")
        if first_n is None and every_k is None and not at:
            raise ValueError("give first_n, every_k or at")
        with self._lock:
            fault = Fault(kind, first_n, every_k, retry_after, delay_s, offset=self._chat_count,
                          at=tuple(int(i) for i in at))
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def reset(self) -> None:
        """Forget recorded requests and faults; restart the chat call counter."""
        with self._lock:
            self.requests.clear()
            self.faults.clear()
            self._chat_count = 0
            self.max_in_flight = 0

    # -- answers ----------------------------------------------------------------------------
    def responder_for(self, messages: list[dict]) -> Responder:
        lines = {line.strip() for line in system_prompt(messages).splitlines() if line.strip()}
        for registry in (self.responders, GLOBAL_RESPONDERS):
            for marker, fn in registry.items():
                if marker in lines:
                    return fn
        return self.default_responder

    def answer(self, messages: list[dict], body: dict) -> str | Reply:
        """The answer text, or a Reply when a finish_reason other than "stop" is scripted."""
        lines = last_user_message(messages).splitlines()
        finish = next((ln[len("SCRIPTED_FINISH:"):].strip() for ln in lines if ln.startswith("SCRIPTED_FINISH:")),
                      None)
        for line in lines:
            if line.startswith("SCRIPTED_REPLY:"):
                text = line[len("SCRIPTED_REPLY:") :].strip()
                return Reply(text, finish) if finish else text
        got = self.responder_for(messages)(messages, body)
        return got if isinstance(got, Reply) else str(got)

    # -- recording ----------------------------------------------------------------------------
    def _record(self, method: str, path: str, body: Any, headers: Any, chat: bool = False) -> RecordedRequest:
        with self._lock:
            chat_index = None
            if chat:
                self._chat_count += 1
                chat_index = self._chat_count
            rec = RecordedRequest(
                index=len(self.requests) + 1,
                method=method,
                path=path,
                body=body,
                authorization=headers.get("Authorization"),
                headers={k: v for k, v in headers.items()},
                chat_index=chat_index,
            )
            self.requests.append(rec)
        return rec

    def _authorized(self, rec: RecordedRequest) -> bool:
        return self.require_key is None or rec.authorization == f"Bearer {self.require_key}"

    def _fault_for(self, chat_index: int) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.applies(chat_index):
                    return fault
        return None

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.chat_index is not None]

    @property
    def chat_count(self) -> int:
        """Chat completion HTTP calls received (retries included)."""
        with self._lock:
            return self._chat_count

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> ScriptedOpenAI:
        if self._httpd is not None:
            return self
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.scripted = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ScriptedOpenAI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = [
    "FAULT_KINDS",
    "GLOBAL_RESPONDERS",
    "MALFORMED_ANSWER",
    "Fault",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ScriptedOpenAI",
    "count_prompt_tokens",
    "echo_responder",
    "fake_embedding",
    "last_user_message",
    "register_responder",
    "replay_responder",
    "system_prompt",
]
