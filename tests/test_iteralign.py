"""IterAlign end to end on real red-team prompts, against the scripted OpenAI-compatible server.

Responder rules (tests/support/icai_responders.py): the base model complies unless its system prompt
holds a constitution about declining; the oracle flags replies that do not decline; the proposer
returns three principles, two of them near-paraphrases (so dedup must drop one); self-reflection
returns a refusal.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from icai_core.data import load_pairs
from icai_core.embed import Embedder
from icai_core.iteralign import IterAlignConfig, LLMOracle, OfflineOracle, run_iteralign
from icai_core.llm import LLMClient, LLMConfig, ResponseCache
from icai_core.redteam import bundled_prompts, load_prompts
from tests.support.icai_responders import CONSTITUTION, RAW_CUT_OFF_ORACLE, install, install_small_model
from tests.support.scripted_openai import Reply, ScriptedOpenAI, fake_embedding

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


def test_stage_counts_of_a_clean_run(run):
    r = run["result"]
    # iteration 1: 24 answers, 24 verdicts, 1 proposal, 24 revisions, 24 re-checks; iteration 2: 24 + 24
    assert r.stages["respond"] == {"valid": 48, "recovered": 0, "invalid": 0, "total": 48, "invalid_rate": 0.0}
    assert r.stages["oracle"]["valid"] == 24 + 24 + 24 and r.stages["oracle"]["invalid"] == 0
    assert r.stages["propose"]["valid"] == 1 and r.stages["revise"]["valid"] == 24
    assert r.warnings == [] and all(it.note == "" for it in r.iterations)
    assert all(it.n_oracle_invalid == 0 for it in r.iterations)


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


# ---------------------------------------------------------------- a small model's raw answers (issue 14)


class HashEmbedder:
    """Deterministic unit vectors (no semantics): these tests check accounting, not deduplication."""

    def embed(self, texts):
        return np.array([fake_embedding(t, 32) for t in texts], dtype=np.float32)


def _small_run(srv, prompts_, **cfg):
    def client(model):
        return LLMClient(LLMConfig(base_url=srv.base_url, model=model, api_key=KEY, backoff_base_s=0.01))

    return run_iteralign(prompts_, client("base"), client("proposer"), LLMOracle(client("oracle")),
                         IterAlignConfig(iterations=1, **cfg), embedder=HashEmbedder())


def test_cut_off_oracle_reasons_are_recovered_not_not_flagged():
    prompts_ = bundled_prompts()["prompt"].tolist()[:12]
    with ScriptedOpenAI() as srv:
        install(srv)
        cut = {p for i, p in enumerate(prompts_) if i % 3 == 0}  # 4 of 12 answers cut mid-"reason"

        def oracle(messages, body):
            user = messages[-1]["content"]
            if any(p[:60] in user for p in cut) and "<reply>\nSure" in user:
                return Reply(RAW_CUT_OFF_ORACLE, "length")
            from tests.support.icai_responders import oracle as rule

            return rule(messages, body)

        srv.register("TASK: oracle_flag", oracle)
        r = _small_run(srv, prompts_)
        oracle_calls = [q for q in srv.chat_requests if "TASK: oracle_flag" in q.body["messages"][0]["content"]]
    first = r.iterations[0]
    # the cut-off verdicts were "flagged": true, so all 12 replies are flagged and revised
    assert first.n_flagged == 12 and first.n_oracle_invalid == 0 and first.n_revised == 12
    assert r.stages["oracle"]["recovered"] == 4 and r.stages["oracle"]["valid"] == 8 + 12
    # each cut-off answer was resent once with twice the budget
    assert len(oracle_calls) == 12 + 4 + 12
    flagged = r.examples.set_index("prompt").loc[sorted(cut), "reason_before"]
    assert flagged.str.endswith("[cut off]").all()


def test_unreadable_oracle_answers_are_invalid_and_stop_the_loop():
    prompts_ = bundled_prompts()["prompt"].tolist()[:6]
    with ScriptedOpenAI() as srv:
        install(srv)
        srv.register("TASK: oracle_flag", lambda m, b: Reply('{"reason": "The reply is', "length"))
        r = _small_run(srv, prompts_)
        proposer_calls = [q for q in srv.chat_requests if q.body["model"] == "proposer"]
    first = r.iterations[0]
    assert first.n_oracle_invalid == 6 and first.n_flagged == 0  # not 6 x "not flagged"
    assert "oracle" in first.note and "6 of 6" in first.note and "larger model" in first.note
    assert r.stages["oracle"]["invalid"] == 6 and r.warnings == [first.note]
    assert proposer_calls == [] and r.constitution == []
    assert "note" in r.iteration_table().columns


def test_proposer_that_repeats_itself_stops_instead_of_revising_under_nothing():
    prompts_ = bundled_prompts()["prompt"].tolist()[:5]
    with ScriptedOpenAI() as srv:
        install_small_model(srv, oracle_cut_every=0)  # oracle fine; the proposer loops inside a string
        r = _small_run(srv, prompts_)
        revise_calls = [q for q in srv.chat_requests if "TASK: self_reflect" in q.body["messages"][0]["content"]]
    first = r.iterations[0]
    assert first.n_flagged == 5 and first.proposed == [] and first.n_revised == 0
    assert revise_calls == []  # nothing was revised under an empty constitution
    assert "no usable principle" in first.note and r.warnings == [first.note]
    assert r.stages["propose"] == {"valid": 0, "recovered": 0, "invalid": 1, "total": 1, "invalid_rate": 1.0}
    assert r.constitution == [] and r.examples.empty
