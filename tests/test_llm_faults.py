"""LLM faults against the scripted OpenAI-compatible server, over real HTTP with the real openai client:
truncated answers, structured-output fallback, faults counted by kind, one bad body is not fatal,
all-5xx batches, preflight, a canary key echoed by the endpoint, and a corrupt response cache.

The raw answers replayed are the ones quoted in issue 14 (a 0.5B model on llama.cpp).
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
from pathlib import Path

import pytest

from icai_core import prompts
from icai_core.answers import parse_proposals, parse_votes
from icai_core.llm import (
    CacheError,
    ChatRequest,
    LLMClient,
    LLMConfig,
    LLMError,
    LLMUsage,
    ResponseCache,
    endpoint_caps,
    forget_endpoint_caps,
    preflight,
    raise_if_fatal,
)
from icai_core.store import RunStore
from tests.support.scripted_openai import Reply, ScriptedOpenAI, count_prompt_tokens, replay_responder

KEY = "sk-faults-SECRET-key-0123456789abcdef"
CANARY = "canary-KEY-7f3e9a1c5b2d4e6f8a0b"  # not key-shaped: only the registered secret can scrub it
TRUNCATED_VOTES = '{"votes": {"1": "A", "2": "None", "3": "B", "4": "A", "5": "B", "6": "A", "'


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("PRINCIPIA_API_KEY", raising=False)
    forget_endpoint_caps()
    yield
    forget_endpoint_caps()


@pytest.fixture
def server():
    with ScriptedOpenAI() as srv:
        yield srv


def cfg(srv: ScriptedOpenAI, **kw) -> LLMConfig:
    base = {"base_url": srv.base_url, "model": "scripted-model", "api_key": KEY, "backoff_base_s": 0.01,
            "backoff_max_s": 0.05, "timeout_s": 10, "max_retries": 2}
    base.update(kw)
    return LLMConfig(**base)


def vote_request(tag: str = "v", n: int = 1, **kw) -> ChatRequest:
    batch = [f"Select the response that is rule {j}" for j in range(1, n + 1)]
    return ChatRequest(prompts.vote_messages(f"prompt {tag}", "a", "b", batch), tag=tag,
                       max_tokens=prompts.vote_max_tokens(n), json_mode=True, json_schema=prompts.vote_schema(n),
                       **kw)


def plain(i, **kw) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": f"q{i}"}], **kw)


# ---------------------------------------------------------------------------- truncation
def test_truncated_votes_retried_once_with_larger_budget_then_recovered(server, tmp_path):
    server.register("TASK: vote_principles", lambda m, b: Reply(TRUNCATED_VOTES, "length"))
    cache = ResponseCache(tmp_path / "cache.sqlite")
    client = LLMClient(cfg(server), cache)
    result = client.complete(vote_request())
    # sent twice: the second time with twice the max_tokens
    budgets = [r.body["max_tokens"] for r in server.chat_requests]
    assert budgets == [72, 144]
    assert result.ok and result.truncated and result.finish_reason == "length"
    assert client.usage.faults == {"truncated": 2} and client.usage.retries == 1 and client.usage.calls == 1
    assert parse_votes(result.text, 1, result.finish_reason) == ([1], ["recovered"])
    # cached only as the final, truncated word: a rerun pays nothing and still sees "truncated"
    row = sqlite3.connect(tmp_path / "cache.sqlite").execute("SELECT finish_reason FROM responses").fetchall()
    assert row == [("length",)]
    again = LLMClient(cfg(server), ResponseCache(tmp_path / "cache.sqlite")).complete(vote_request())
    assert again.cached and again.truncated and server.chat_count == 2


def test_truncated_first_answer_is_not_cached_when_the_retry_completes(server, tmp_path):
    full = '{"votes": {"1": "B"}}'
    server.register("TASK: vote_principles", replay_responder([Reply(TRUNCATED_VOTES, "length"), full],
                                                              cycle=False))
    cache = ResponseCache(tmp_path / "cache.sqlite")
    result = LLMClient(cfg(server), cache).complete(vote_request())
    assert result.text == full and not result.truncated and result.finish_reason == "stop"
    texts = [t for (t,) in sqlite3.connect(tmp_path / "cache.sqlite").execute("SELECT text FROM responses")]
    assert texts == [full]


def test_cut_off_free_text_is_returned_without_a_costly_resend(server):
    server.register("TASK: respond", lambda m, b: Reply("Sure, here is a long reply that goes on", "length"))
    client = LLMClient(cfg(server))
    result = client.complete(ChatRequest([{"role": "system", "content": "TASK: respond"},
                                          {"role": "user", "content": "hi"}], max_tokens=400))
    assert result.ok and result.truncated and server.chat_count == 1
    assert client.usage.faults == {"truncated": 1} and client.usage.retries == 0


def test_runaway_answer_cut_by_a_real_max_tokens(tmp_path):
    # a model that keeps numbering past the batch (issue 14) against a server that enforces max_tokens
    runaway = "{" + '"votes": {' + ", ".join(f'"{j}": "A"' for j in range(1, 200)) + "}}"
    with ScriptedOpenAI(enforce_max_tokens=True) as srv:
        srv.register("TASK: vote_principles", lambda m, b: runaway)
        result = LLMClient(cfg(srv)).complete(vote_request(n=2))
        assert [r.body["max_tokens"] for r in srv.chat_requests] == [96, 192]
    assert result.truncated and len(result.text) == 4 * 192
    assert parse_votes(result.text, 2, result.finish_reason) == ([1, 1], ["recovered", "recovered"])


def test_repeated_proposal_list_replayed(server):
    item = '"Select the response that is more concise"'
    looping = '{"principles": [' + ", ".join([item] * 40)
    server.register("TASK: propose_principles", lambda m, b: Reply(looping[: 4 * b["max_tokens"]], "length"))
    msgs = prompts.PROPOSE.messages(prompt="p", text_a="a", text_b="b", preferred="A", n=3)
    result = LLMClient(cfg(server)).complete(
        ChatRequest(msgs, max_tokens=prompts.proposal_max_tokens(3), json_mode=True,
                    json_schema=prompts.proposal_schema(3)))
    got = parse_proposals(result.text, 3, result.finish_reason)
    assert result.truncated and got.status == "recovered"
    assert got.value == ["Select the response that is more concise"]


# ---------------------------------------------------------------------------- structured outputs
def test_schema_falls_back_to_json_object_and_is_remembered(tmp_path):
    with ScriptedOpenAI(reject_json_schema=True) as srv:
        srv.register("TASK: vote_principles", lambda m, b: '{"votes": {"1": "A"}}')
        client = LLMClient(cfg(srv))
        first = client.complete(vote_request("1"))
        formats = [(r.body.get("response_format") or {}).get("type") for r in srv.chat_requests]
        assert formats == ["json_schema", "json_object"] and first.ok
        assert endpoint_caps(client.config).json_schema is False
        # a new client for the same endpoint does not ask again
        second = LLMClient(cfg(srv)).complete(vote_request("2"))
        formats = [(r.body.get("response_format") or {}).get("type") for r in srv.chat_requests]
        assert formats == ["json_schema", "json_object", "json_object"] and second.ok
        assert client.usage.response_format == {"json_object": 1}


def test_schema_falls_back_to_plain_text(tmp_path):
    with ScriptedOpenAI(reject_response_format=True) as srv:
        srv.register("TASK: vote_principles", lambda m, b: "1: A")
        client = LLMClient(cfg(srv))
        result = client.complete(vote_request())
        formats = [(r.body.get("response_format") or {}).get("type") for r in srv.chat_requests]
        assert formats == ["json_schema", "json_object", None]
        assert result.ok and parse_votes(result.text, 1) == ([1], ["recovered"])
        assert client.usage.response_format == {"text": 1}


def test_schema_is_sent_where_accepted(server):
    server.register("TASK: vote_principles", lambda m, b: '{"votes": {"1": "A", "2": "B"}}')
    client = LLMClient(cfg(server))
    result = client.complete(vote_request(n=2))
    fmt = server.chat_requests[0].body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "votes"
    assert fmt["json_schema"]["schema"]["properties"]["votes"]["required"] == ["1", "2"]
    assert parse_votes(result.text, 2) == ([1, -1], ["valid", "valid"])
    assert endpoint_caps(client.config).json_schema is True


# ---------------------------------------------------------------------------- faults by kind
def test_faults_counted_by_kind_and_one_bad_body_is_not_fatal(server):
    client = LLMClient(cfg(server, concurrency=1, timeout_s=0.5))
    # one request at a time, so call numbers are predictable: 25 requests + 5 retries = 30 calls
    server.add_fault("429", at=(1,))  # request 1, retried
    server.add_fault("500", at=(5, 6, 20))  # request 4 fails twice, request 16 once (each retried)
    server.add_fault("bad_body", at=(11,))  # request 8: a 200 that is not a chat completion
    server.add_fault("slow", at=(15,), delay_s=1.0)  # request 12 times out once
    results = client.complete_many([plain(i) for i in range(25)])
    bad = [i for i, r in enumerate(results) if not r.ok]
    assert bad == [7] and results[7].error_kind == "malformed_body" and "/v1" in results[7].error
    raise_if_fatal(results)  # one invalid answer among 25: not fatal
    assert server.chat_count == 30
    assert client.usage.faults == {"http_429": 1, "http_5xx": 3, "malformed_body": 1, "timeout": 1}
    assert client.usage.to_dict()["faults"] == client.usage.faults
    assert client.usage.calls == 25 and client.usage.retries == 5 and client.usage.failures == 1


def test_bad_shape_body_is_malformed(server):
    server.add_fault("bad_shape", first_n=1)
    client = LLMClient(cfg(server))
    results = client.complete_many([plain(1), plain(2)])
    assert [r.error_kind for r in results].count("malformed_body") == 1
    assert client.usage.faults == {"malformed_body": 1}


def test_every_call_failing_with_500_says_so(server):
    server.add_fault("500", every_k=1)
    client = LLMClient(cfg(server, max_retries=1))
    results = client.complete_many([plain(i) for i in range(4)])
    assert all(r.error_kind == "server" for r in results)
    with pytest.raises(LLMError) as info:
        raise_if_fatal(results)
    msg = str(info.value)
    assert "Every one of the 4 requests" in msg and "HTTP 5xx" in msg and "500" in msg
    assert info.value.kind == "server"
    assert client.usage.faults == {"http_5xx": 8}  # 4 requests x (1 attempt + 1 retry)


def test_every_body_malformed_is_fatal_with_base_url_advice(server):
    server.add_fault("bad_body", every_k=1)
    results = LLMClient(cfg(server)).complete_many([plain(i) for i in range(3)])
    with pytest.raises(LLMError) as info:
        raise_if_fatal(results)
    assert "/v1" in str(info.value) and info.value.kind == "bad_response"


# ---------------------------------------------------------------------------- preflight
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_preflight_ok_and_learns_schema_support():
    with ScriptedOpenAI(reject_json_schema=True) as srv:
        preflight(cfg(srv))
        assert srv.chat_count == 2  # the schema request, then json_object
        assert endpoint_caps(cfg(srv)).json_schema is False
        assert endpoint_caps(cfg(srv)).json_object is True
    with ScriptedOpenAI() as srv:
        preflight(cfg(srv))
        assert srv.chat_count == 1 and endpoint_caps(cfg(srv)).json_schema is True


def test_preflight_unreachable_is_one_clear_error_without_a_retry_storm():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(LLMError) as info:
        preflight(LLMConfig(base_url=url, model="m", api_key=KEY, max_retries=6, backoff_base_s=0.01))
    assert info.value.kind == "unreachable" and url in str(info.value) and KEY not in str(info.value)


@pytest.mark.parametrize(
    ("server_kw", "model", "kind", "words"),
    [
        ({"require_key": "sk-the-right-one-0000000000"}, "scripted-model", "auth", "API key"),
        ({"strict_models": True}, "no-such-model", "model_not_found", "not found"),
        ({"not_chat_models": ["davinci-002"]}, "davinci-002", "model_not_found", "not a chat model"),
    ],
)
def test_preflight_rejects_with_one_request(server_kw, model, kind, words):
    with ScriptedOpenAI(**server_kw) as srv:
        with pytest.raises(LLMError) as info:
            preflight(cfg(srv, model=model))
        assert info.value.kind == kind and words in str(info.value)
        assert srv.chat_count == 1


def test_preflight_not_openai_and_5xx(server):
    server.add_fault("bad_body", first_n=1)
    with pytest.raises(LLMError) as info:
        preflight(cfg(server))
    assert "/v1" in str(info.value) and info.value.kind == "bad_response"
    server.reset()
    server.add_fault("503", every_k=1)
    with pytest.raises(LLMError) as info:
        preflight(cfg(server))
    assert "503" in str(info.value) and server.chat_count == 2  # retried once, not max_retries times
    server.reset()
    server.add_fault("429", every_k=1)
    preflight(cfg(server))  # rate limited: reachable and authorised
    assert server.chat_count == 1


# ---------------------------------------------------------------------------- key hygiene
def test_canary_key_echoed_by_the_endpoint_reaches_no_file(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "home"
    monkeypatch.setenv("PRINCIPIA_HOME", str(home))
    with ScriptedOpenAI(echo_key=True) as srv:
        srv.register("TASK: vote_principles", lambda m, b: Reply(TRUNCATED_VOTES, "length"))
        config = cfg(srv, api_key=CANARY)
        client = LLMClient(config, ResponseCache())  # the default cache under PRINCIPIA_HOME
        results = client.complete_many([plain(1), plain(2, json_mode=True), vote_request()])
        assert all(r.ok for r in results)
        assert any("you sent Bearer ***" in r.text for r in results)  # echoed, and scrubbed
        srv.add_fault("500", every_k=1)
        failed = client.complete_many([plain(3)])
        assert failed[0].error_kind == "server"
        store = RunStore(home / "runs.sqlite")
        run_id = store.create_run("icai", "data.csv", "abc", config)
        store.put_many(run_id, "answers", {str(i): r.text for i, r in enumerate(results)})
        store.update(run_id, status="failed", error=failed[0].error, cost=client.usage.to_dict())
        store.close()
        client.cache.close()
        assert srv.chat_requests[0].authorization == f"Bearer {CANARY}"  # it did go over HTTP
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "llm_cache.sqlite" for p in files)
    for path in files:
        assert CANARY.encode() not in path.read_bytes(), f"key written to {path}"
    assert CANARY not in caplog.text
    assert all(CANARY not in (r.text or "") for r in results) and CANARY not in failed[0].error


# ---------------------------------------------------------------------------- corrupt cache
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_cache_is_moved_aside_and_a_fresh_one_started(server, tmp_path, caplog, damage):
    path = tmp_path / "llm_cache.sqlite"
    cache = ResponseCache(path)
    LLMClient(cfg(server), cache).complete_many([plain(i) for i in range(60)])
    cache.close()
    data = path.read_bytes()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    if damage == "garbage":
        path.write_bytes(b"this is not a database at all" * 100)
    else:
        path.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.WARNING)
    healed = ResponseCache(path)
    moved = list(tmp_path.glob("llm_cache.sqlite.corrupt-*"))
    assert len(moved) == 1 and healed.healed == str(moved[0])
    assert len(healed) == 0
    warnings = [r for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warnings) == 1 and str(moved[0]) in warnings[0].getMessage()
    result = LLMClient(cfg(server), healed).complete(plain(1))
    assert result.ok and len(healed) == 1
    healed.close()
    calls = server.chat_count
    again = LLMClient(cfg(server), ResponseCache(path)).complete(plain(1))  # the fresh cache works
    assert again.cached and server.chat_count == calls


def test_unopenable_cache_is_a_clear_error(tmp_path):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    with pytest.raises(CacheError, match="cannot open the LLM response cache .*a_folder.*writable"):
        ResponseCache(folder)  # a directory, not a file
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="PRINCIPIA_HOME"):
        ResponseCache(blocker / "llm_cache.sqlite")  # its folder cannot be created


# ---------------------------------------------------------------------------- resumed cost
def test_resumed_run_carries_the_earlier_cost(server):
    first = LLMClient(cfg(server, model="gpt-4o-mini"))
    first.complete_many([plain(i) for i in range(3)])
    stored = json.loads(json.dumps(first.usage.to_dict()))  # what the run store keeps
    second = LLMClient(cfg(server, model="gpt-4o-mini"))
    second.carry_usage(stored)
    second.complete_many([plain(i) for i in range(3, 5)])
    assert second.usage.calls == 5 and server.chat_count == 5
    assert second.usage.prompt_tokens == 5 * count_prompt_tokens([{"role": "user", "content": "q0"}])
    assert abs(second.usage.dollars - first.usage.dollars * 5 / 3) < 1e-9  # same-size prompts
    assert LLMUsage.from_dict(second.usage.to_dict()).to_dict() == second.usage.to_dict()
    total = LLMUsage(calls=1, faults={"http_429": 2}).add({"calls": 2, "faults": {"http_429": 1, "timeout": 1}})
    assert total.calls == 3 and total.faults == {"http_429": 3, "timeout": 1}
