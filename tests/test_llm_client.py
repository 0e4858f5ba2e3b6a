"""LLMClient against the scripted OpenAI-compatible server, over real HTTP with the real openai client."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from icai_core.jobs import Cancelled, CancelToken
from icai_core.llm import (
    ChatRequest,
    LLMClient,
    LLMConfig,
    LLMError,
    ResponseCache,
    approx_prompt_tokens,
    check_endpoint,
    estimate_cost,
    lookup_price,
    normalize_base_url,
    parse_json_answer,
    raise_if_fatal,
)
from icai_core.store import RunStore
from tests.support.fixtures import scripted_server_fixture  # noqa: F401
from tests.support.scripted_openai import (
    MALFORMED_ANSWER,
    ScriptedOpenAI,
    fake_embedding,
    register_responder,
)

KEY = "sk-test-SECRET-key-0123456789abcdef"


def cfg(server: ScriptedOpenAI, **kw) -> LLMConfig:
    base = {
        "base_url": server.base_url,
        "model": "scripted-model",
        "api_key": KEY,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.5,
        "timeout_s": 10,
    }
    base.update(kw)
    return LLMConfig(**base)


def req(i: int | str, **kw) -> ChatRequest:
    return ChatRequest(
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": f"q{i}"}], **kw
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("PRINCIPIA_API_KEY", raising=False)


# --------------------------------------------------------------------------------------------
# Basic behaviour, concurrency, threads and loops
# --------------------------------------------------------------------------------------------
def test_basic_answer_usage_and_key_sent(scripted_server):
    client = LLMClient(cfg(scripted_server, model="gpt-4o-mini"))
    result = client.complete(req(1))
    assert result.ok and result.text == "ECHO: q1"
    assert not result.cached and result.attempts == 1
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.cost == pytest.approx(result.prompt_tokens * 0.15e-6 + result.completion_tokens * 0.60e-6)
    assert client.usage.calls == 1 and client.usage.dollars == pytest.approx(result.cost)
    sent = scripted_server.chat_requests[0]
    assert sent.authorization == f"Bearer {KEY}"  # the key does travel over HTTP
    assert sent.body["temperature"] == 0.0 and sent.body["max_tokens"] == 512
    assert "response_format" not in sent.body


def test_concurrency_is_much_faster_than_serial(scripted_server):
    LLMClient(cfg(scripted_server)).complete(req("warm-up"))  # imports, first connection
    scripted_server.latency_s = 0.2
    client = LLMClient(cfg(scripted_server, concurrency=16))
    start = time.perf_counter()
    results = client.complete_many([req(i) for i in range(16)])
    elapsed = time.perf_counter() - start
    serial = 16 * 0.2
    assert all(r.ok for r in results)
    assert [r.text for r in results] == [f"ECHO: q{i}" for i in range(16)]
    assert elapsed < 0.4 * serial, f"{elapsed:.2f}s is not concurrent"
    assert scripted_server.max_in_flight >= 8


def test_concurrency_limit_is_respected(scripted_server):
    scripted_server.latency_s = 0.05
    LLMClient(cfg(scripted_server, concurrency=3)).complete_many([req(i) for i in range(12)])
    assert scripted_server.max_in_flight <= 3


def test_works_from_thread_and_inside_running_loop(scripted_server):
    client = LLMClient(cfg(scripted_server))
    out: dict = {}

    def in_thread():
        out["thread"] = client.complete_many([req("t1"), req("t2")])

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(30)
    assert [r.text for r in out["thread"]] == ["ECHO: qt1", "ECHO: qt2"]

    async def inside_loop():  # what Streamlit / Jupyter look like: a loop is already running
        return client.complete_many([req("l1")])

    assert asyncio.run(inside_loop())[0].text == "ECHO: ql1"


def test_progress_is_reported_in_calling_thread(scripted_server):
    client = LLMClient(cfg(scripted_server, concurrency=4))
    calls = []
    caller = threading.get_ident()
    client.complete_many(
        [req(i) for i in range(6)], progress=lambda d, t, m: calls.append((d, t, threading.get_ident()))
    )
    assert calls[0][:2] == (0, 6) and calls[-1][:2] == (6, 6)
    assert [d for d, _t, _i in calls] == sorted(d for d, _t, _i in calls)
    assert all(ident == caller for _d, _t, ident in calls)


def test_empty_batch():
    assert LLMClient(LLMConfig(base_url="http://127.0.0.1:9/v1", api_key=KEY)).complete_many([]) == []


# --------------------------------------------------------------------------------------------
# Retries and errors
# --------------------------------------------------------------------------------------------
def test_retry_on_429_then_success(scripted_server):
    scripted_server.add_fault("429", first_n=2, retry_after=0)
    client = LLMClient(cfg(scripted_server))
    result = client.complete(req(1))
    assert result.ok and result.attempts == 3
    assert client.usage.retries == 2 and client.usage.failures == 0 and client.usage.calls == 1
    assert scripted_server.chat_count == 3


def test_retry_after_is_honoured_and_capped(scripted_server):
    scripted_server.add_fault("429", first_n=1, retry_after=0.4)
    client = LLMClient(cfg(scripted_server, backoff_max_s=5))
    start = time.perf_counter()
    assert client.complete(req(1)).ok
    assert time.perf_counter() - start >= 0.4

    scripted_server.add_fault("429", first_n=1, retry_after=100)  # capped at backoff_max_s
    client = LLMClient(cfg(scripted_server, backoff_max_s=0.2))
    start = time.perf_counter()
    assert client.complete(req(2)).ok
    assert time.perf_counter() - start < 3


def test_500_exhausts_retries_and_counts_failures(scripted_server):
    scripted_server.add_fault("500", every_k=1)
    client = LLMClient(cfg(scripted_server, max_retries=2))
    results = client.complete_many([req(i) for i in range(3)])  # must not raise
    assert all(not r.ok for r in results)
    assert all("server error 500" in r.error and "3 attempts" in r.error for r in results)
    assert client.usage.calls == 3 and client.usage.retries == 6 and client.usage.failures == 3
    assert scripted_server.chat_count == 9


def test_mixed_batch_one_failure_does_not_crash_others(scripted_server):
    scripted_server.add_fault("500", first_n=3)  # the first request burns all its attempts
    client = LLMClient(cfg(scripted_server, max_retries=2, concurrency=1))
    results = client.complete_many([req(i) for i in range(4)])
    assert [r.ok for r in results] == [False, True, True, True]
    assert client.usage.failures == 1 and client.usage.retries == 2


def test_timeout_is_retried(scripted_server):
    scripted_server.add_fault("slow", first_n=1, delay_s=1.5)
    client = LLMClient(cfg(scripted_server, timeout_s=0.4))
    result = client.complete(req(1))
    assert result.ok and result.attempts == 2
    assert client.usage.retries == 1 and client.usage.failures == 0


def test_dropped_connection_is_retried(scripted_server):
    scripted_server.add_fault("drop", first_n=1)
    client = LLMClient(cfg(scripted_server))
    result = client.complete(req(1))
    assert result.ok and result.attempts == 2 and client.usage.retries == 1


def test_401_gives_clear_per_request_error_without_leaking_key():
    with ScriptedOpenAI(require_key="sk-the-right-key-000000000") as server:
        client = LLMClient(cfg(server, concurrency=4))
        results = client.complete_many([req(i) for i in range(5)])
        assert len(results) == 5 and all(not r.ok for r in results)
        assert all("the endpoint rejected the API key" in r.error for r in results)
        assert all(r.error_kind == "auth" for r in results)
        assert all(KEY not in r.error for r in results)
        assert client.usage.failures == 5 and client.usage.retries == 0
        with pytest.raises(LLMError) as info:
            raise_if_fatal(results)
        assert info.value.kind == "auth" and KEY not in str(info.value)
        with pytest.raises(LLMError) as info:
            client.complete(req("x"), raise_on_error=True)
        assert KEY not in str(info.value) and "API key" in str(info.value)

        ok, message = check_endpoint(cfg(server))
        assert not ok and "rejected the API key" in message and KEY not in message


def test_fatal_error_stops_sending_the_rest():
    with ScriptedOpenAI(require_key="sk-the-right-key-000000000") as server:
        client = LLMClient(cfg(server, concurrency=1))
        results = client.complete_many([req(i) for i in range(6)])
        assert server.chat_count == 1
        assert all(r.error_kind == "auth" for r in results)
        assert all(r.error.startswith("not sent:") for r in results[1:])


def test_model_not_found():
    with ScriptedOpenAI(models=["llama3:8b", "qwen2.5:7b"], strict_models=True) as server:
        result = LLMClient(cfg(server, model="gpt-nope")).complete(req(1))
        assert result.error_kind == "model_not_found" and "gpt-nope" in result.error
        ok, message = check_endpoint(cfg(server, model="gpt-nope"))
        assert not ok and "gpt-nope" in message and "llama3:8b" in message
        ok, message = check_endpoint(cfg(server, model="qwen2.5:7b"))
        assert ok and "qwen2.5:7b" in message


def test_unreachable_endpoint_names_base_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    config = LLMConfig(base_url=url, model="m", api_key=KEY, max_retries=1, backoff_base_s=0.01)
    result = LLMClient(config).complete(req(1))
    assert result.error_kind == "unreachable" and url in result.error and KEY not in result.error
    ok, message = check_endpoint(config)
    assert not ok and url in message


def test_non_openai_body_is_a_clear_error(scripted_server):
    scripted_server.add_fault("bad_body", first_n=1)
    result = LLMClient(cfg(scripted_server)).complete(req(1))
    # an invalid answer for this request (not fatal for the run), with the base-URL advice
    assert result.error_kind == "malformed_body" and "/v1" in result.error
    with pytest.raises(LLMError, match="/v1"):
        raise_if_fatal([result])  # ... but when it is every answer of the batch, the run stops


def test_check_endpoint_ok(scripted_server):
    ok, message = check_endpoint(cfg(scripted_server))
    assert ok and "scripted-model" in message
    ok, message = check_endpoint(cfg(scripted_server, model="not-listed-but-served"))
    assert ok and "answered a test request" in message


# --------------------------------------------------------------------------------------------
# Cache, estimates, cancellation
# --------------------------------------------------------------------------------------------
def test_cache_second_run_makes_zero_calls(scripted_server, tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    requests = [req(i) for i in range(8)]
    first = LLMClient(cfg(scripted_server), cache).complete_many(requests)
    assert scripted_server.chat_count == 8 and len(cache) == 8

    client = LLMClient(cfg(scripted_server), ResponseCache(tmp_path / "cache.sqlite"))  # a new process
    second = client.complete_many(requests)
    assert scripted_server.chat_count == 8  # zero new HTTP calls
    assert [r.text for r in second] == [r.text for r in first]
    assert all(r.cached and r.cost == 0 for r in second)
    assert client.usage.calls == 0 and client.usage.cache_hits == 8
    assert second[0].prompt_tokens == first[0].prompt_tokens


def test_cache_key_depends_on_settings(scripted_server, tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    client = LLMClient(cfg(scripted_server), cache)
    client.complete_many([req(1), req(1, temperature=0.7), req(1, max_tokens=20), req(1, json_mode=True)])
    assert scripted_server.chat_count == 4
    LLMClient(cfg(scripted_server, model="other-model"), cache).complete(req(1))
    assert scripted_server.chat_count == 5


def test_duplicates_in_a_batch_are_sent_once(scripted_server):
    client = LLMClient(cfg(scripted_server))
    results = client.complete_many([req(1), req(2), req(1), req(1)])
    assert scripted_server.chat_count == 2
    assert [r.text for r in results] == ["ECHO: q1", "ECHO: q2", "ECHO: q1", "ECHO: q1"]
    assert [r.cached for r in results] == [False, False, True, True]


def test_estimate_equals_calls_made(scripted_server, tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    client = LLMClient(cfg(scripted_server, model="gpt-4o"), cache)
    client.complete_many([req(i) for i in range(3)])  # pre-cache three
    before = scripted_server.chat_count
    requests = [req(i) for i in range(10)] + [req(4), req(5), req(1)]  # 3 cached, 2 in-batch duplicates
    estimate = client.estimate_cost(requests, expected_completion_tokens=10)
    client.complete_many(requests)
    assert estimate.calls == scripted_server.chat_count - before == 7
    assert estimate.cached_calls == len(requests) - 7
    assert estimate.prompt_tokens == sum(approx_prompt_tokens(req(i).messages) for i in range(3, 10))
    assert estimate.completion_tokens == 70
    assert estimate.dollars == pytest.approx(estimate.prompt_tokens * 2.5e-6 + 70 * 10e-6)
    assert client.estimate_cost(requests).calls == 0  # everything is cached now
    # module-level form, unknown model price
    est = estimate_cost([req(i) for i in range(4)], None, config=cfg(scripted_server, model="mystery"))
    assert est.calls == 4 and est.dollars == 0 and "price unknown" in est.note
    assert est.completion_tokens == 4 * 512


def test_cancel_stops_early_and_keeps_finished_results(scripted_server, tmp_path):
    scripted_server.latency_s = 0.05
    cache = ResponseCache(tmp_path / "cache.sqlite")
    token = CancelToken()
    requests = [req(i) for i in range(20)]

    def progress(done, total, message):
        if done >= 4:
            token.cancel()

    client = LLMClient(cfg(scripted_server, concurrency=2), cache)
    with pytest.raises(Cancelled) as info:
        client.complete_many(requests, progress=progress, cancel=token)
    partial = info.value.partial
    finished = [r for r in partial if r is not None]
    assert 4 <= len(finished) < 20
    assert scripted_server.chat_count < 20
    assert len(cache) == len(finished) == scripted_server.chat_count

    sent_before = scripted_server.chat_count
    results = LLMClient(cfg(scripted_server, concurrency=8), cache).complete_many(requests)
    assert all(r.ok for r in results)
    assert scripted_server.chat_count - sent_before == 20 - len(finished)


def test_cancelled_token_sends_nothing(scripted_server):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        LLMClient(cfg(scripted_server)).complete_many([req(1), req(2)], cancel=token)
    assert scripted_server.chat_count == 0


# --------------------------------------------------------------------------------------------
# JSON answers
# --------------------------------------------------------------------------------------------
def test_malformed_json_answers_are_detected(scripted_server):
    scripted_server.add_fault("malformed", every_k=3)
    client = LLMClient(cfg(scripted_server, concurrency=1))
    results = client.complete_many([req(i, json_mode=True) for i in range(9)])
    assert all(r.ok for r in results)  # HTTP-wise fine
    parsed = [parse_json_answer(r.text) for r in results]
    invalid = sum(p is None for p in parsed)  # what a caller counts as invalid answers
    assert invalid == 3
    assert sum(r.text == MALFORMED_ANSWER for r in results) == 3
    assert all(p == {"echo": f"q{i}"} for i, p in enumerate(parsed) if p is not None)
    assert scripted_server.chat_requests[0].body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ("Sure! Here it is:\n```\n[1, 2, 3]\n```\nHope this helps.", [1, 2, 3]),
        ('The answer is {"vote": "A"} because A is shorter. {"x": 2}', {"vote": "A"}),
        ('{"principles": ["a", "b",],}', {"principles": ["a", "b"]}),
        ('prose with a {brace} then {"ok": true}', {"ok": True}),
        (MALFORMED_ANSWER, None),
        ("no json here", None),
        ("", None),
        (None, None),
        (42, None),
        ('"just a string"', None),
        ("[", None),
    ],
)
def test_parse_json_answer(text, expected):
    assert parse_json_answer(text) == expected


# --------------------------------------------------------------------------------------------
# Secrets, config, prices
# --------------------------------------------------------------------------------------------
def test_key_never_written_to_disk_logs_or_errors(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    wrong_key = "sk-wrong-SECRET-key-9876543210fedcba"
    with ScriptedOpenAI(require_key=KEY) as server:
        config = cfg(server, model="gpt-4o")
        cache = ResponseCache(tmp_path / "cache.sqlite")
        store = RunStore(tmp_path / "runs.sqlite")
        client = LLMClient(config, cache)
        run_id = store.create_run("icai", "data.csv", "abc123", config)
        results = client.complete_many([req(i) for i in range(4)])
        store.put_many(run_id, "answers", {str(i): r.text for i, r in enumerate(results)})
        store.save_result(run_id, "config", config)  # pickled: the key must be dropped
        store.save_result(run_id, "usage", client.usage)
        store.update(run_id, status="done", cost=client.usage, message=f"config {config!r} {config}")
        assert server.chat_requests[0].authorization == f"Bearer {KEY}"

        bad = LLMClient(cfg(server, api_key=wrong_key, model="gpt-4o"), cache)
        failed = bad.complete_many([req("other")])
        assert failed[0].error_kind == "auth"
        store.update(
            run_id, status="failed", error=failed[0].error, message=str(LLMError.from_result(failed[0]))
        )
        ok, message = check_endpoint(cfg(server, api_key=wrong_key))
        assert not ok
        store.update(run_id, message=message)
        assert pickle.loads(pickle.dumps(config)).api_key is None
        cache.close()
        store.close()

    for secret in (KEY, wrong_key):
        assert secret not in repr(config) and secret not in str(config)
        assert secret not in json.dumps(config.to_dict()) and secret not in json.dumps(config.redacted())
        assert secret not in caplog.text
        assert secret not in failed[0].error and secret not in message
        files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
        assert any(p.name == "cache.sqlite" for p in files) and any(p.name == "runs.sqlite" for p in files)
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"key written to {path}"


def test_config_key_resolution_and_views(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env-000000")
    assert LLMConfig().api_key == "sk-from-openai-env-000000"
    monkeypatch.setenv("PRINCIPIA_API_KEY", "sk-from-principia-env-000")
    assert LLMConfig().api_key == "sk-from-principia-env-000"
    config = LLMConfig(api_key="sk-explicit-key-00000000")
    assert config.api_key == "sk-explicit-key-00000000"
    assert "api_key" not in config.to_dict() and config.redacted()["api_key"] == "set"
    assert "sk-explicit" not in repr(config)
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("PRINCIPIA_API_KEY")
    assert LLMConfig().api_key is None and LLMConfig().redacted()["api_key"] == "not set"


def test_base_url_normalisation():
    assert normalize_base_url("http://localhost:11434") == "http://localhost:11434/v1"
    assert normalize_base_url("http://localhost:1234/v1/") == "http://localhost:1234/v1"
    assert normalize_base_url("https://openrouter.ai/api/v1") == "https://openrouter.ai/api/v1"
    assert normalize_base_url("localhost:8000") == "http://localhost:8000/v1"


def test_prices():
    assert lookup_price("gpt-4o") == (2.50, 10.00)
    assert lookup_price("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert lookup_price("gpt-4o-2024-08-06") == (2.50, 10.00)
    assert lookup_price("openai/gpt-4.1-mini") == (0.40, 1.60)
    assert lookup_price("llama3:8b") is None
    p_in, p_out, note = LLMConfig(model="llama3:8b").prices()
    assert (p_in, p_out) == (0, 0) and "price unknown" in note
    p_in, p_out, note = LLMConfig(model="llama3:8b", input_price_per_m=1.0, output_price_per_m=2.0).prices()
    assert (p_in, p_out) == (1.0, 2.0)


# --------------------------------------------------------------------------------------------
# The scripted server itself
# --------------------------------------------------------------------------------------------
def test_scripted_server_responders(scripted_server):
    scripted_server.register("TASK: propose_principles", lambda messages, body: '{"principles": ["be kind"]}')
    register_responder("TASK: test_global_marker", lambda messages, body: "global answer")
    client = LLMClient(cfg(scripted_server))
    propose = ChatRequest(
        [
            {"role": "system", "content": "TASK: propose_principles\nYou find principles."},
            {"role": "user", "content": "x"},
        ]
    )
    glob = ChatRequest(
        [{"role": "system", "content": "TASK: test_global_marker"}, {"role": "user", "content": "y"}]
    )
    scripted = ChatRequest([{"role": "user", "content": "hello\nSCRIPTED_REPLY: exactly this"}])
    results = client.complete_many([propose, glob, scripted, req("plain")])
    assert [r.text for r in results] == [
        '{"principles": ["be kind"]}',
        "global answer",
        "exactly this",
        "ECHO: qplain",
    ]


def test_scripted_server_models_and_fake_embeddings(scripted_server):
    with urllib.request.urlopen(scripted_server.base_url + "/models", timeout=5) as resp:
        assert json.load(resp)["data"][0]["id"] == "scripted-model"
    body = json.dumps({"model": "e", "input": ["a", "b"]}).encode()
    request = urllib.request.Request(
        scripted_server.base_url + "/embeddings", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        data = json.load(resp)["data"]
    assert data[0]["embedding"] == fake_embedding("a") and len(data[1]["embedding"]) == 64
    assert sum(v * v for v in data[0]["embedding"]) == pytest.approx(1.0)
