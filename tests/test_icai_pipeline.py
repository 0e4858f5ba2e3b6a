"""The ICAI pipeline end to end on real data, against the scripted OpenAI-compatible server.

The server (tests/support, a test fixture) answers by the documented rules in
tests/support/icai_responders.py; the real `openai` client talks to it over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from icai_core.data import load_pairs
from icai_core.embed import Embedder
from icai_core.icai import ICAIConfig, estimate_run, run_icai
from icai_core.interop import from_annotated_pairs, to_annotated_pairs
from icai_core.llm import LLMClient, LLMConfig, ResponseCache
from icai_core.store import RunStore
from tests.support.icai_responders import install
from tests.support.scripted_openai import ScriptedOpenAI

KEY = "sk-principia-test-KEY-9f8e7d6c5b4a"
ROOT = Path(__file__).resolve().parent.parent
CONFIG = ICAIConfig(max_propose_pairs=60, max_annotate_pairs=60, include_measurable=True)


def candidates(result):
    """The judges the LLM proposed and voted with (cluster representatives)."""
    return [j for j in result.judges if j.kind == "llm"]


@pytest.fixture(scope="module")
def real_pairs(shared_data):
    pairs = load_pairs(shared_data / "alpacaeval1_gpt4_judge.csv").pairs
    return pairs.sample(n=240, random_state=7).sort_index().reset_index(drop=True)


@pytest.fixture(scope="module")
def embedder():
    return Embedder(max_seq_length=64)


@pytest.fixture(scope="module")
def first_run(real_pairs, embedder, tmp_path_factory):
    home = tmp_path_factory.mktemp("icai_home")
    with ScriptedOpenAI() as srv:
        install(srv)
        client = LLMClient(LLMConfig(base_url=srv.base_url, model="scripted-model", api_key=KEY),
                           cache=ResponseCache(home / "llm_cache.sqlite"))
        store = RunStore(home / "runs.sqlite")
        run_id = store.create_run("icai", "alpacaeval1 sample", "hash", {"api_key": KEY, "model": "m"})
        result = run_icai(real_pairs, client, CONFIG, store=store, run_id=run_id, embedder=embedder)
        calls = srv.chat_count
        auth = {r.authorization for r in srv.chat_requests}
        # rerun with the same cache: zero repeated calls
        client2 = LLMClient(LLMConfig(base_url=srv.base_url, model="scripted-model", api_key=KEY),
                            cache=ResponseCache(home / "llm_cache.sqlite"))
        result2 = run_icai(real_pairs, client2, CONFIG, embedder=embedder)
        calls_after_rerun = srv.chat_count
    return {"result": result, "result2": result2, "calls": calls, "calls_after_rerun": calls_after_rerun,
            "client": client, "client2": client2, "home": home, "auth": auth, "store": store, "run_id": run_id}


def test_pipeline_discovers_length_principle_and_reconstructs(first_run):
    r = first_run["result"]
    # proposals were clustered: paraphrases of the same rule end up together
    assert len(r.proposals) >= 60
    assert 2 <= len(candidates(r)) <= CONFIG.max_candidates
    texts = " | ".join(c.text for c in candidates(r)).lower()
    assert "detailed" in texts
    # GPT-4 (AlpacaEval 1.0) rewards length in this real data, and the scripted voter votes by length:
    # the discovered length principle must enter the constitution with a significant positive strength
    entry = next(e for e in r.constitution.entries if "detailed" in e.text.lower())
    assert entry.strength > 0.3 and not entry.inverted
    rec = r.llm_reconstruction.set_index("method")
    with_c, without = rec.loc["llm_with_constitution"], rec.loc["llm_no_constitution"]
    # the scripted annotator without a constitution always answers A (position bias): ~ chance level
    assert without["ci_low"] < 0.5 < without["ci_high"] + 0.1
    assert with_c["agreement"] > without["agreement"] + 0.15
    assert with_c["n_test"] + with_c["n_invalid"] == 60
    assert "llm_random_constitution" in rec.index
    assert {"weighted_majority", "majority_class"} <= set(r.reconstruction.table["method"])


def test_estimate_equals_calls_made(first_run, real_pairs):
    r, client = first_run["result"], first_run["client"]
    fresh = LLMClient(LLMConfig(base_url="http://127.0.0.1:9/v1", model="scripted-model", api_key=KEY))
    est = estimate_run(real_pairs, CONFIG, fresh, n_candidates=len(candidates(r)))
    assert sum(e.calls for e in est.values()) == first_run["calls"] == client.usage.calls
    # the estimate before clustering is an upper bound
    upper = estimate_run(real_pairs, CONFIG, fresh)
    assert sum(e.calls for e in upper.values()) >= first_run["calls"]


def test_rerun_makes_zero_repeated_calls(first_run):
    assert first_run["calls_after_rerun"] == first_run["calls"]
    assert first_run["client2"].usage.calls == 0
    assert first_run["client2"].usage.cache_hits == first_run["calls"]
    pd.testing.assert_frame_equal(first_run["result"].votes, first_run["result2"].votes)


def test_key_sent_over_http_but_never_written(first_run, tmp_path):
    assert first_run["auth"] == {f"Bearer {KEY}"}
    from icai_core.interop import write_icai_outputs

    write_icai_outputs(first_run["result"], tmp_path)
    first_run["store"].save_result(first_run["run_id"], "icai", {"constitution": first_run["result"].constitution.to_dict()})
    written = list(first_run["home"].rglob("*")) + list(tmp_path.rglob("*"))
    files = [p for p in written if p.is_file()]
    assert len(files) >= 8
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in repr(first_run["client"].config) and KEY not in str(first_run["client"].config.to_dict())


def test_faults_survived_with_correct_accounting(real_pairs, embedder, tmp_path):
    small = real_pairs.head(100).reset_index(drop=True)
    cfg = ICAIConfig(max_propose_pairs=30, max_annotate_pairs=20, include_measurable=False)
    with ScriptedOpenAI() as srv:
        install(srv)
        srv.add_fault("500", first_n=2)
        srv.add_fault("429", every_k=7)
        srv.add_fault("malformed", every_k=11)
        client = LLMClient(LLMConfig(base_url=srv.base_url, model="scripted-model", api_key=KEY,
                                     backoff_base_s=0.01, backoff_max_s=0.05),
                           cache=ResponseCache(tmp_path / "c.sqlite"))
        r = run_icai(small, client, cfg, embedder=embedder)
        recs = srv.chat_requests
    retried = sum(1 for x in recs if x.fault in ("500", "429"))
    assert client.usage.retries == retried > 0
    assert client.usage.failures == 0
    # every malformed answer to a vote call makes that call's principles invalid, none is a crash
    bad_vote_calls = [x for x in recs if x.fault == "malformed"
                      and x.body["messages"][0]["content"].startswith("TASK: vote_principles")]
    batch = min(cfg.principle_batch_size, len(candidates(r)))
    # invalid answers stay invalid (a validity mask), never "not relevant"
    assert r.all_valid is not None
    assert int((~r.all_valid.to_numpy()).sum()) == len(bad_vote_calls) * batch
    assert int(r.stats["n_invalid"].sum()) == len(bad_vote_calls) * batch
    assert r.stage_counts["vote"].invalid == len(bad_vote_calls) * batch
    assert len(r.constitution.entries) >= 1


def test_annotated_pairs_round_trip(first_run):
    r = first_run["result"]
    from icai_core.judges import get_principle

    principles = list(candidates(r)) + [get_principle(k) for k in r.votes.columns if not k.startswith("llm_")]
    assert [p.key for p in principles] == [j.key for j in r.judges]
    doc = to_annotated_pairs(r.pairs, r.votes, principles, dataset_name="alpacaeval1")
    json.dumps(doc)  # JSON-serialisable
    assert doc["metadata"]["version"] == "1.0" and len(doc["comparisons"]) == len(r.pairs)
    pairs, votes, ps = from_annotated_pairs(doc)
    assert list(pairs["preferred"]) == list(r.pairs["preferred"])
    assert (votes.to_numpy() == r.votes.to_numpy()).all()
    assert [p["text"] for p in ps][: len(candidates(r))] == [c.text for c in candidates(r)]


@pytest.mark.slow
def test_cli_run_resumes_after_kill(shared_data, tmp_path):
    """Kill `icai run` mid-way, run it again: it resumes the stored run and repeats no finished call."""
    env = dict(os.environ, PRINCIPIA_API_KEY=KEY, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    src = shared_data / "prd_lfqa_expert.csv"
    with ScriptedOpenAI(latency_s=0.02) as srv:
        install(srv)
        cmd = [sys.executable, "-m", "icai_core.cli", "run", str(src), "--base-url", srv.base_url,
               "--model", "scripted-model", "--cache-dir", str(tmp_path / "home"), "--out", str(tmp_path / "out"),
               "--max-propose-pairs", "40", "--max-annotate-pairs", "30", "--concurrency", "4"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 240
        while srv.chat_count < 120 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = srv.chat_count
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Resuming run" in done.stderr
        # the one-request endpoint check (llm.preflight) before each command is not pipeline work
        bodies = [json.dumps(r.body["messages"], sort_keys=True) for r in srv.chat_requests
                  if not r.body["messages"][0]["content"].startswith('Reply with the JSON {"ok"')]
        n_preflight = len(srv.chat_requests) - len(bodies)
    assert n_preflight == 2  # one per command
    repeated = len(bodies) - len(set(bodies))
    # only requests in flight at the kill (at most the concurrency) may be sent twice
    assert repeated <= 4
    assert killed_at >= 120
    out = tmp_path / "out"
    assert {"constitution.json", "annotated_pairs.json", "votes.csv", "reconstruction.csv"} <= {
        p.name for p in out.iterdir()}
    store = RunStore(tmp_path / "home" / "runs.sqlite")
    runs = store.list_runs()
    assert len(runs) == 1 and runs.iloc[0]["status"] == "done"
    for p in (tmp_path / "home").rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes()


def test_llm_cluster_merge_and_remote_embeddings(real_pairs, embedder, tmp_path):
    """Optional stages: principles embedded by the endpoint's /v1/embeddings, and each multi-member
    cluster summarised by the LLM. The scripted server's vectors are random (sha256), so they form no
    real cluster (every proposal is a candidate of its own); the merge is checked with the bundled
    MiniLM embedder, whose paraphrases do cluster."""
    from icai_core.embed import RemoteEmbedder

    small = real_pairs.head(80).reset_index(drop=True)
    cfg = ICAIConfig(max_propose_pairs=40, max_annotate_pairs=10, include_measurable=False, merge_with_llm=True,
                     random_constitution=False)
    with ScriptedOpenAI() as srv:
        install(srv)
        config = LLMConfig(base_url=srv.base_url, model="scripted-model", api_key=KEY)
        client = LLMClient(config, cache=ResponseCache(tmp_path / "c.sqlite"))
        r_remote = run_icai(small, client, cfg, embedder=RemoteEmbedder(config, model="scripted-embedding"))
        emb_calls = [x for x in srv.requests if x.path.endswith("/embeddings")]
        n_chat = srv.chat_count
        r = run_icai(small, client, cfg, embedder=embedder)
        merge_calls = [x for x in srv.chat_requests[n_chat:]
                       if x.body["messages"][0]["content"].startswith("TASK: merge_cluster")]
    assert emb_calls and all(x.body["model"] == "scripted-embedding" for x in emb_calls)
    assert candidates(r_remote), "random vectors: the most supported proposals are still tested"
    clustered = [c.cluster for c in candidates(r) if c.cluster >= 0]
    points = r.clusters.points
    multi = sum(int((points["cluster"] == c).sum() > 1) for c in clustered)
    assert len(merge_calls) == multi >= 1
    proposed = set(r.proposals["principle"])
    # the scripted merger answers with the first listed member: every candidate is a real proposal
    assert all(c.text in proposed for c in candidates(r))


def test_annotated_pairs_file_loads_in_the_audit(first_run, tmp_path):
    from icai_core.data import load_pairs
    from icai_core.interop import write_icai_outputs

    r = first_run["result"]
    write_icai_outputs(r, tmp_path)
    loaded = load_pairs(tmp_path / "annotated_pairs.json")
    assert loaded.format == "canonical"
    assert any("annotated pairs" in w for w in loaded.report.warnings)
    for col in ("prompt", "text_a", "text_b", "preferred"):
        assert loaded.pairs[col].tolist() == r.pairs[col].tolist()
