"""One pipeline, one result, runs that last (issue 8).

* An ICAI run on a real multi-annotator file (AlpacaEval human majority + GPT-4 runs) through the
  scripted OpenAI-compatible server: one vote pass over the DISTINCT pairs serves every annotator's
  constitution (counted calls), invalid answers stay invalid in stats and exports, and the run renders
  on the Constitution, Compare and Report pages.
* A CLI audit is recorded, listed by `icai runs --json` and on Home, re-rendered by `icai report`, and
  reopened in the app from `?run=<id>` with the same numbers on every page.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from icai_core.cli import main
from icai_core.data import load_pairs
from icai_core.icai import ICAIConfig, run_icai
from icai_core.llm import LLMClient, LLMConfig
from icai_core.reconstruct import content_groups
from icai_core.workspace import Workspace
from tests.support.icai_responders import install
from tests.support.scripted_openai import ScriptedOpenAI
from tests.test_app_common import PAGES, assert_ok, needs_data, new_app

pytestmark = needs_data
KEY = "sk-runs-test-key-5a5a5a5a"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRINCIPIA_HOME", str(path))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield path


@pytest.fixture(scope="module")
def multi_annotator_pairs(shared_data):
    """80 distinct AlpacaFarm pairs, each judged by the human majority and three GPT-4 runs."""
    pairs = load_pairs(shared_data / "alpacaeval_human_vs_gpt4.csv").pairs
    keep = sorted(pairs["annotator"].unique())[:4]
    pairs = pairs[pairs["annotator"].isin(keep)]
    groups = pd.Series(content_groups(pairs), index=pairs.index)
    chosen = groups.drop_duplicates().sample(n=80, random_state=3)
    return pairs[groups.isin(set(chosen))].reset_index(drop=True)


@pytest.fixture(scope="module")
def icai_run(home, multi_annotator_pairs):
    cfg = ICAIConfig(max_propose_pairs=40, max_candidates=8, principle_batch_size=10, max_annotate_pairs=30,
                     include_measurable=True, use_embeddings=False)
    ws = Workspace(home)
    with ScriptedOpenAI() as srv:
        install(srv)
        srv.add_fault("malformed", every_k=13)
        client = LLMClient(LLMConfig(base_url=srv.base_url, model="scripted-model", api_key=KEY,
                                     backoff_base_s=0.01, backoff_max_s=0.05), cache=None)
        with ws.run("icai", "alpacaeval human vs gpt4 (sample)", "h", cfg.to_dict(), client=client) as run:
            result = run_icai(multi_annotator_pairs, client, cfg, store=ws.store, run_id=run.id,
                              dataset_name="alpacaeval human vs gpt4 (sample)", cache_dir=home)
            run.finish(result)
        requests = list(srv.chat_requests)
    ws.close()
    return result, requests, run.id


def _task(req) -> str:
    return req.body["messages"][0]["content"].split("\n", 1)[0]


def test_one_vote_pass_serves_every_annotator(icai_run, multi_annotator_pairs):
    result, requests, _ = icai_run
    n_distinct = len(np.unique(content_groups(multi_annotator_pairs)))
    n_annotators = multi_annotator_pairs["annotator"].nunique()
    assert n_distinct == 80 and len(multi_annotator_pairs) == 80 * n_annotators
    n_llm = sum(j.kind == "llm" for j in result.judges)
    assert 1 <= n_llm <= 8
    vote_calls = [r for r in requests if _task(r) == "TASK: vote_principles"]
    # one call per distinct pair and batch of principles, whatever the number of annotators
    # (a malformed answer is not retried: it is an invalid answer)
    assert len(vote_calls) == n_distinct * -(-n_llm // 10)
    # ...and every annotator gets its own analysis and constitution from those votes
    assert set(result.analyses) == set(multi_annotator_pairs["annotator"])
    for name, a in result.analyses.items():
        assert a.n_pairs == 80 and len(a.rows) == 80
        view = result.view(name)
        assert (view.pairs["annotator"] == name).all()
        assert a.constitution.settings["selected_on"] == "train"
    # votes are identical across the rows of one pair (they do not depend on the annotator)
    g = content_groups(result.all_pairs)
    first = result.all_votes.groupby(g).transform("first")
    pd.testing.assert_frame_equal(first, result.all_votes, check_dtype=False)


def test_invalid_answers_stay_invalid(icai_run, tmp_path):
    result, requests, _ = icai_run
    bad = [r for r in requests if r.fault == "malformed" and _task(r) == "TASK: vote_principles"]
    assert bad, "the fixture should have produced malformed vote answers"
    n_llm = sum(j.kind == "llm" for j in result.judges)
    llm_keys = [j.key for j in result.judges if j.kind == "llm"]
    invalid_items = len(bad) * min(10, n_llm)
    n_annotators = len(result.analyses)
    assert int((~result.all_valid[llm_keys].to_numpy()).sum()) == invalid_items * n_annotators
    # stats count them as invalid, not as "not relevant"
    for a in result.analyses.values():
        s = a.stats.set_index("key")
        assert int(s.loc[llm_keys, "n_invalid"].sum()) == invalid_items
        decided = (result.all_pairs["preferred"].to_numpy()[a.rows] != "tie")
        ok = result.all_valid[llm_keys].to_numpy()[a.rows]
        assert (s.loc[llm_keys, "n"].to_numpy() == (ok & decided[:, None]).sum(axis=0)).all()
    # exports: votes CSV writes "invalid", annotated pairs mark no_pref_reason "invalid"
    from icai_core.cli import write_audit_outputs
    from icai_core.interop import write_icai_outputs

    write_audit_outputs(result, tmp_path)
    write_icai_outputs(result, tmp_path)
    votes = pd.read_csv(tmp_path / "votes.csv", dtype=str)
    cells = votes[[f"vote_{k}" for k in llm_keys]].to_numpy()
    assert int((cells == "invalid").sum()) == invalid_items * n_annotators
    doc = json.loads((tmp_path / "annotated_pairs.json").read_text())
    reasons = [a.get("no_pref_reason") for c in doc["comparisons"] for a in c["annotations"].values()]
    assert reasons.count("invalid") == invalid_items * n_annotators
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["annotators"]) == set(result.analyses)
    assert summary["llm"]["stages"]["vote"]["invalid"] == invalid_items
    kinds = {p["kind"] for entry in summary["annotators"].values() for p in entry["principles"]}
    assert kinds == {"llm", "measurable"}
    for f in tmp_path.iterdir():
        assert KEY.encode() not in f.read_bytes(), f


def test_icai_run_renders_on_every_page(icai_run, home):
    result, _, run_id = icai_run
    at = new_app()
    at.query_params["run"] = run_id
    at.run()
    assert_ok(at)
    assert at.session_state["audit"].run_id == run_id
    names = list(result.analyses)
    for name in names[:2]:
        at.session_state["annotator"] = name
        for page in ("pages/constitution.py", "pages/compare.py", "pages/report.py", "pages/principles.py"):
            at.switch_page(page).run()
            assert_ok(at)
        shown = at.session_state["audit"].view(name)
        assert shown.constitution.text() == result.view(name).constitution.text()
    # Compare: the judge report card over every annotator, against the chosen reference
    at.switch_page("pages/compare.py").run()
    assert_ok(at)
    card = next(d.value for d in at.dataframe if "p_prefer_longer" in getattr(d.value, "columns", []))
    assert set(card["annotator"]) == set(names)
    assert (card["n_pairs"] == 80).all()


def test_cli_audit_is_recorded_listed_reported_and_reopened(shared_data, home, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["audit", str(shared_data / "prd_lfqa_expert.csv"), "--out", str(out), "--no-embeddings",
               "--cache-dir", str(home)])
    assert rc == 0
    printed = capsys.readouterr().out
    run_id = printed.split("Run ", 1)[1].split(" ", 1)[0]
    assert main(["runs", "--json", "--cache-dir", str(home)]) == 0
    runs = json.loads(capsys.readouterr().out)
    mine = next(r for r in runs if r["id"] == run_id)
    assert {"id", "kind", "dataset", "status", "created"} <= set(mine)
    assert mine["kind"] == "offline_audit" and mine["status"] == "done" and mine["dataset"] == "prd_lfqa_expert.csv"
    # icai report re-renders the stored run (no recomputation: the judges are not called)
    import icai_core.judges as J

    calls = []
    orig = J.compute_votes
    J.compute_votes = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        assert main(["report", run_id, "--out", str(tmp_path / "r.html"), "--cache-dir", str(home)]) == 0
    finally:
        J.compute_votes = orig
    assert not calls
    html = (tmp_path / "r.html").read_text()
    assert "prd_lfqa_expert.csv" in html
    assert main(["report", "no-such-run", "--out", str(tmp_path / "x.html"), "--cache-dir", str(home)]) == 2
    # Home lists it; ?run=<id> reopens it on every page with the CLI's numbers
    summary = json.loads((out / "summary.json").read_text())
    entry = next(iter(summary["annotators"].values()))
    strengths = {p["key"]: p["marginal"]["strength"] for p in entry["principles"]}
    home_app = new_app()
    assert "offline_audit" in set(home_app.dataframe[0].value["kind"])
    assert any(o.startswith("prd_lfqa_expert.csv · offline_audit") for o in home_app.selectbox(key="run_pick").options)
    at = new_app()
    at.query_params["run"] = run_id
    at.run()
    assert_ok(at)
    audit = at.session_state["audit"]
    assert audit.run_id == run_id and at.session_state["dataset"].name == "prd_lfqa_expert.csv"
    got = dict(zip(audit.stats["key"], audit.stats["strength"], strict=True))
    assert got.keys() == strengths.keys()
    assert all(abs(got[k] - strengths[k]) < 1e-12 for k in got if strengths[k] is not None)
    for page in PAGES[:-1]:
        at.switch_page(page).run()
        assert_ok(at)
    assert at.session_state["audit"].run_id == run_id  # no new audit was started


def test_bad_paths_give_clear_errors(tmp_path, capsys, shared_data):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert main(["audit", str(shared_data / "prd_lfqa_expert.csv"), "--out", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["runs", "--cache-dir", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_audit_discover_writes_directions_map_and_kinds(shared_data, home, tmp_path, capsys):
    out = tmp_path / "disc"
    rc = main(["audit", str(shared_data / "icai_synthetic_orthogonal.csv"), "--discover", "--no-embeddings",
               "--out", str(out), "--cache-dir", str(home)])
    assert rc == 0
    table = pd.read_csv(out / "discovered_principles.csv")
    assert {"key", "text", "kept"} <= set(table.columns) and len(table) >= 1
    coords = pd.read_csv(out / "principle_map.csv")
    assert {"key", "x", "y"} <= set(coords.columns)
    summary = json.loads((out / "summary.json").read_text())
    entry = next(iter(summary["annotators"].values()))
    kinds = {p["kind"] for p in entry["principles"]}
    assert "measurable" in kinds and kinds <= {"measurable", "discovered"}
    kept = table[table["kept"].astype(str).str.lower() == "true"]
    assert len([p for p in entry["principles"] if p["kind"] == "discovered"]) == len(kept)
    # discovered directions are judges like any other: in the map with their keys
    assert set(kept["key"]) <= set(coords["key"])


@pytest.mark.slow
def test_summary_json_per_annotator_on_alpacaeval_human_vs_gpt4(shared_data, home, tmp_path):
    """Issue 9's machine-readable result through the CLI: one entry per annotator with distinct-pair
    counts, clustered marginal and controlled effects, length / position views, the k-fold verdict, and
    the agreement of every GPT-4 run with the human majority in the published range (66-71%)."""
    out = tmp_path / "ev"
    assert main(["audit", str(shared_data / "alpacaeval_human_vs_gpt4.csv"), "--no-embeddings", "--out", str(out),
                 "--cache-dir", str(home)]) == 0
    doc = json.loads((out / "summary.json").read_text())
    raw = pd.read_csv(shared_data / "alpacaeval_human_vs_gpt4.csv")
    assert set(doc["annotators"]) == set(raw["annotator"].astype(str))
    for name, entry in doc["annotators"].items():
        mine = raw[raw["annotator"].astype(str) == name]
        distinct = mine[["prompt", "text_a", "text_b"]].drop_duplicates().shape[0]
        assert entry["n_pairs"] == distinct == 521 and entry["n_rows"] == len(mine)
        assert 0 <= entry["tie_rate"] <= 1
        for p in entry["principles"]:
            assert {"key", "kind", "marginal", "controlled", "proxy_for_length"} <= set(p)
            assert {"strength", "ci", "q"} <= set(p["marginal"])
        assert {"p_prefer_longer", "ci"} <= set(entry["length"])
        assert {"testable", "p_first", "ci"} <= set(entry["position"])
        rec = entry["reconstruction"]
        assert rec["folds"] == 5 and isinstance(rec["verdict"], str) and rec["verdict"]
        assert {"constitution", "length_only", "best_single", "majority"} <= set(rec["methods"])
        for m in rec["methods"].values():
            assert {"accuracy", "ci", "auc"} <= set(m)
    human = "human_crowd_majority_of_4"
    vs_human = [a for a in doc["agreement"] if human in (a["a"], a["b"])]
    assert len(vs_human) == 8
    for a in vs_human:
        assert a["n_shared"] == 521 and 0.64 <= a["agreement"] <= 0.73, a
        assert {"ci", "kappa"} <= set(a)
    # the text summary states the verdict too
    assert doc["annotators"][human]["reconstruction"]["verdict"] in (out / "summary.txt").read_text()
