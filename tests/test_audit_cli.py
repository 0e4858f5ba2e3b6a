"""The full offline audit and the `icai` command line on real shared data."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from icai_core.audit import AuditConfig, dataset_hash, run_offline_audit
from icai_core.cli import main
from icai_core.data import load_pairs
from icai_core.jobs import Cancelled, CancelToken


@pytest.fixture(scope="module")
def alpaca_audit(shared_data, tmp_path_factory):
    """The default audit (embedding judge included) on the AlpacaEval 1.0 GPT-4 judge data."""
    pairs = load_pairs(shared_data / "alpacaeval1_gpt4_judge.csv").pairs
    cache = tmp_path_factory.mktemp("cache")
    seen = []
    result = run_offline_audit(pairs, AuditConfig(), dataset_name="alpacaeval1", cache_dir=cache,
                               progress=lambda d, t, m: seen.append((d, t, m)))
    return result, cache, seen


def test_full_audit_reports_cis_and_reconstruction_against_baselines(alpaca_audit):
    result, _, seen = alpaca_audit
    s = result.stats.set_index("key")
    assert len(s) >= 26 and "semantically_closer" in s.index
    assert s[["strength_ci_low", "strength_ci_high", "accuracy_ci_low", "accuracy_ci_high", "q_value"]].notna().all().all()
    assert (s["strength_ci_low"] <= s["strength"]).all() and (s["strength"] <= s["strength_ci_high"]).all()
    # GPT-4 as AlpacaEval 1.0 judge rewards longer responses (a documented bias of LLM judges)
    assert s.loc["longer", "significant"] and s.loc["longer", "strength_ci_low"] > 0.4
    rec = result.reconstruction.table.set_index("method")
    assert {"logistic_regression", "weighted_majority", "best_single_principle", "majority_class",
            "random_constitution", "random_guess"} <= set(rec.index)
    # the constitution reconstructs held-out choices far better than the majority class
    assert rec.loc["weighted_majority", "ci_low"] > rec.loc["majority_class", "ci_high"]
    assert rec.loc["logistic_regression", "agreement"] > 0.7
    assert result.constitution.entries and result.constitution.entries[0].key == "longer"
    # train/test split is disjoint and covers every pair
    assert set(result.train_index).isdisjoint(result.test_index)
    assert len(result.train_index) + len(result.test_index) == len(result.pairs)
    assert seen and seen[-1][2] == "Audit finished"


def test_votes_are_cached_and_rebuild_is_cheap(alpaca_audit):
    result, cache, _ = alpaca_audit
    assert list((cache / "votes").glob(f"{result.dataset_hash}-*.parquet"))
    again = run_offline_audit(result.pairs, AuditConfig(), dataset_name="alpacaeval1", cache_dir=cache)
    pd.testing.assert_frame_equal(again.votes, result.votes)
    assert again.timings["votes_s"] < 2.0
    strict, recon = result.rebuild(max_size=1)
    assert len(strict.entries) == 1 and strict.entries[0].key == "longer"
    assert recon.table.set_index("method").loc["weighted_majority", "n_test"] == len(result.test_index)


def test_dataset_hash_depends_on_content_only(shared_data):
    pairs = load_pairs(shared_data / "prd_lfqa_expert.csv").pairs
    assert dataset_hash(pairs) == dataset_hash(pairs.copy())
    changed = pairs.copy()
    changed.loc[0, "preferred"] = "b" if pairs.loc[0, "preferred"] == "a" else "a"
    assert dataset_hash(changed) != dataset_hash(pairs)


def test_audit_is_cancellable(shared_data):
    pairs = load_pairs(shared_data / "prd_lfqa_expert.csv").pairs
    token = CancelToken()

    def progress(done, total, message):
        if done >= 3:
            token.cancel()

    with pytest.raises(Cancelled):
        run_offline_audit(pairs, AuditConfig(use_embeddings=False), progress=progress, cancel=token)


def test_cli_audit_writes_stats_and_prints_summary(shared_data, tmp_path, capsys):
    out = tmp_path / "results"
    rc = main(["audit", str(shared_data / "arena_llama3_70b_human.csv"), "--out", str(out), "--no-embeddings",
               "--no-cache"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Dataset: arena_llama3_70b_human.csv  (1,119 pairs" in printed
    assert "Constitution (selected on the training split):" in printed
    assert "majority_class" in printed
    files = {p.name for p in out.iterdir()}
    assert {"principle_stats.csv", "principle_stats.json", "constitution.json", "reconstruction.csv",
            "summary.txt", "votes.csv", "report.html", "report.md"} <= files
    stats = pd.read_csv(out / "principle_stats.csv")
    doc = json.loads((out / "principle_stats.json").read_text())
    assert doc["n_pairs"] == 1119 and len(doc["principles"]) == len(stats) >= 25
    assert {"relevance", "accuracy", "strength", "strength_ci_low", "q_value"} <= set(stats.columns)


def test_cli_audit_one_annotator(shared_data, tmp_path, capsys):
    rc = main(["audit", str(shared_data / "alpacaeval_human_vs_gpt4.csv"), "--annotator",
               "human_crowd_majority_of_4", "--out", str(tmp_path), "--no-embeddings", "--no-cache"])
    assert rc == 0
    assert "(521 pairs" in capsys.readouterr().out


def test_cli_bad_input_gives_clear_error_and_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer1,answer2\nq,a,b\n")
    proc = subprocess.run([sys.executable, "-m", "icai_core.cli", "audit", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: bad.csv")
    assert "Traceback" not in proc.stderr
    missing = subprocess.run([sys.executable, "-m", "icai_core.cli", "audit", str(tmp_path / "nope.csv")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_cli_outputs_name_the_clustered_significant_set_of_summary_json(shared_data, tmp_path, capsys):
    """The printed table, principle_stats.csv and .json of `icai audit` use the same significance as
    summary.json (clustered by prompt), not the row-level binomial one: on prd_lfqa_expert (260
    judgements of 140 prompts) the binomial test also calls more_quotes and asks_question significant."""
    out = tmp_path / "out"
    rc = main(["audit", str(shared_data / "prd_lfqa_expert.csv"), "--out", str(out), "--no-embeddings",
               "--no-cache"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "CIs and q-values clustered by prompt" in printed
    summary = json.loads((out / "summary.json").read_text())
    (entry,) = summary["annotators"].values()
    want = {p["key"] for p in entry["principles"] if p["marginal"]["significant"]}
    stats = pd.read_csv(out / "principle_stats.csv")
    assert set(stats.loc[stats["significant"], "key"]) == want
    assert set(stats.loc[stats["binomial_significant"], "key"]) > want  # the difference is real here
    # the direction words follow the significance shown
    assert set(stats.loc[stats["direction"] != "no evidence", "key"]) == want
    doc = json.loads((out / "principle_stats.json").read_text())
    assert {p["key"] for p in doc["principles"] if p["significant"]} == want
    starred = {ln for ln in printed.splitlines() if ln.startswith(" * ")}
    assert len(starred) == len(want)
