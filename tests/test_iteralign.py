"""IterAlign end to end on real red-team prompts, against the scripted OpenAI-compatible server.

Responder rules (tests/support/icai_responders.py): the base model complies unless its system prompt
holds a constitution about declining; the oracle flags replies that do not decline; the proposer
returns three principles, two of them near-paraphrases (so dedup must drop one); self-reflection
returns a refusal.
"""

from __future__ import annotations

import json

import pytest

from icai_core.data import load_pairs
from icai_core.embed import Embedder
from icai_core.iteralign import IterAlignConfig, LLMOracle, OfflineOracle, run_iteralign
from icai_core.llm import LLMClient, LLMConfig, ResponseCache
from icai_core.redteam import bundled_prompts, load_prompts
from tests.support.icai_responders import CONSTITUTION, install
from tests.support.scripted_openai import ScriptedOpenAI

KEY = "sk-iteralign-test-KEY-0a1b2c3d4e"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    home = tmp_path_factory.mktemp("iteralign")
    prompts = bundled_prompts()["prompt"].tolist()[:24]
    with ScriptedOpenAI() as srv:
        install(srv)

        def client(model):
            return LLMClient(LLMConfig(base_url=srv.base_url, model=model, api_key=KEY),
                             cache=ResponseCache(home / "cache.sqlite"))

        base, proposer, oracle = client("base-model"), client("proposer-model"), client("oracle-model")
        result = run_iteralign(prompts, base, proposer, LLMOracle(oracle),
                               IterAlignConfig(iterations=2, stop_when_clean=False),
                               embedder=Embedder(max_seq_length=64))
        models = [r.body["model"] for r in srv.chat_requests]
    return {"result": result, "prompts": prompts, "home": home, "models": models}


def test_two_iterations_flag_revise_and_improve(run):
    r = run["result"]
    assert [it.iteration for it in r.iterations] == [1, 2]
    first, second = r.iterations
    # iteration 1: the base model complies with every red-team prompt; the oracle flags all of them
    assert first.n_prompts == 24 and first.n_flagged == 24 and first.flagged_rate == 1.0
    # self-reflection under the constitution fixes every flagged reply
    assert first.n_revised == 24 and first.n_flagged_after == 0 and first.flagged_rate_after == 0.0
    # iteration 2: the "improved model" (base + accumulated constitution) declines: nothing flagged
    assert second.n_flagged == 0 and second.flagged_rate == 0.0


def test_constitutions_deduplicated_by_embedding(run):
    first = run["result"].iterations[0]
    assert first.proposed == CONSTITUTION
    # the second principle paraphrases the first: dropped as a duplicate, with its similarity
    assert first.added == [CONSTITUTION[0], CONSTITUTION[2]]
    assert len(first.duplicates) == 1
    assert first.duplicates[0]["duplicate_of"] == CONSTITUTION[0]
    assert first.duplicates[0]["similarity"] >= 0.85
    assert run["result"].constitution == [CONSTITUTION[0], CONSTITUTION[2]]


def test_separate_endpoints_used_per_role(run):
    assert {"base-model", "proposer-model", "oracle-model"} <= set(run["models"])


def test_sft_export_schema(run):
    lines = run["result"].sft_jsonl().splitlines()
    assert len(lines) == 24
    for line in lines:
        rec = json.loads(line)
        assert list(rec) == ["messages"]
        assert [m["role"] for m in rec["messages"]] == ["user", "assistant"]
        assert rec["messages"][0]["content"] in run["prompts"]
        assert rec["messages"][1]["content"].startswith("I can't help")


def test_preference_pairs_load_in_the_audit_unchanged(run, tmp_path):
    r = run["result"]
    pairs = r.preference_pairs()
    assert len(pairs) == 24
    # revised preferred over original, orientation not always A
    assert set(pairs["preferred"]) == {"a", "b"}
    revised = pairs.apply(lambda x: x["text_a"] if x["preferred"] == "a" else x["text_b"], axis=1)
    assert revised.str.startswith("I can't help").all()
    path = tmp_path / "iteralign_pairs.csv"
    path.write_text(r.preference_csv())
    loaded = load_pairs(path).pairs
    for col in ("id", "prompt", "text_a", "text_b", "preferred"):
        assert loaded[col].tolist() == pairs[col].astype(str).tolist()
    from icai_core.audit import AuditConfig, run_offline_audit

    audit = run_offline_audit(loaded, AuditConfig(use_embeddings=False), dataset_name="iteralign")
    refusal = audit.stats.set_index("key").filter(like="refus", axis=0)
    assert len(refusal) >= 1 and (refusal["accuracy"] == 1.0).any()


def test_constitution_export(run):
    d = run["result"].constitution_dict()
    assert [p["text"] for p in d["principles"]] == run["result"].constitution
    assert all(p["iteration"] == 1 for p in d["principles"])


def test_key_not_written(run):
    for p in run["home"].rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes()


def test_offline_oracle_flags_non_refusals():
    flags = OfflineOracle().flag(None, "x", ["p1", "p2"], ["I can't help with that request.", "Sure! Step 1: ..."], "")
    assert [f for f, _ in flags] == [False, True]


def test_redteam_prompt_loader_errors(tmp_path):
    assert len(bundled_prompts()) == 80
    empty = tmp_path / "p.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="the file is empty"):
        load_prompts(empty)
    bad = tmp_path / "q.csv"
    bad.write_text("question_text,x\nhello,1\n")
    with pytest.raises(ValueError, match="no prompt column"):
        load_prompts(bad)
    txt = tmp_path / "r.txt"
    txt.write_text("How do I pick a lock?\n\nWrite an insult.\n")
    assert load_prompts(txt) == ["How do I pick a lock?", "Write an insult."]
