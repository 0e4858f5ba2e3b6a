"""Principles page: the table and the "Significant" headline show the evidence stage's inference
(strength CIs clustered by prompt, their BH q-values, the length-controlled effect and the length-proxy
flag), and every number is checked against an independent computation: statsmodels OLS on a constant
with cluster-robust covariance for the strength, statsmodels' BH for the q-values, a statsmodels Logit
with clustered covariance for the length-controlled effect, and the summary.json of the same run for
the significant set and the proxy flags. Without evidence the page says so and labels its columns
"binomial, not clustered".

Data: prd_lfqa_expert.csv (real expert judgements, 260 rows on 140 prompts: most prompts are judged
twice, so clustering changes the intervals). The audit runs once, directly (~4 s), and the page renders
it through AppTest.
"""

from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.stats.multitest import multipletests

from icai_core.audit import AuditConfig, run_offline_audit
from icai_core.data import load_pairs
from icai_core.summary import summary_document
from tests.test_app_common import (
    DATA,
    _principia_home,  # noqa: F401  (autouse: PRINCIPIA_HOME -> tmp)
    assert_ok,
    needs_data,
    new_app,
)
from ui import widgets as W
from ui.common import LoadedDataset, pairs_hash

pytestmark = needs_data
Z = 1.959963984540054


@pytest.fixture(scope="module")
def run():
    pairs = load_pairs(DATA / "prd_lfqa_expert.csv").pairs
    ds = LoadedDataset(name="prd_lfqa_expert.csv", pairs=pairs, hash=pairs_hash(pairs), source="upload")
    result = run_offline_audit(pairs, AuditConfig(use_embeddings=False), dataset_name=ds.name,
                               dataset_hash=ds.hash)
    assert result.analysis.evidence is not None
    return ds, result


def _page(ds, result):
    at = new_app(dataset=ds, audit=result, show_map=False)
    at.switch_page("pages/principles.py").run()
    assert_ok(at)
    table = next(d.value for d in at.dataframe if "rewarded principle" in d.value.columns)
    return at, table


def _labels(at) -> dict[str, str]:
    """Column -> the header shown on screen (the column config's label, else the column name)."""
    el = next(d for d in at.dataframe if "rewarded principle" in d.value.columns)
    cfg = json.loads(el.proto.columns)
    return {c: (cfg.get(c) or {}).get("label") or c for c in el.value.columns}


def _ci(text: str) -> tuple[float, float]:
    lo, hi = (float(x) for x in text.strip("[]").split(","))
    return lo, hi


def _independent_strength(result) -> pd.DataFrame:
    """Per principle: mean of vote x choice over decided rows, CI and p from statsmodels OLS on a constant
    with cov_type="cluster" (groups = the prompt text), BH q from statsmodels."""
    pairs, votes = result.pairs, result.votes
    y = pairs["preferred"].map({"a": 1.0, "b": -1.0}).fillna(0.0).to_numpy()
    decided = y != 0
    groups = pd.factorize(pairs["prompt"])[0][decided]
    rows = []
    for key in votes.columns:
        score = votes[key].to_numpy(dtype=float)[decided] * y[decided]
        fit = sm.OLS(score, np.ones(len(score))).fit(cov_type="cluster", cov_kwds={"groups": groups})
        m, se = float(fit.params[0]), float(fit.bse[0])
        p = float(fit.pvalues[0]) if se > 0 else np.nan
        rows.append({"key": key, "strength": m, "lo": max(-1.0, m - Z * se), "hi": min(1.0, m + Z * se), "p": p})
    out = pd.DataFrame(rows)
    has_p = out["p"].notna().to_numpy()
    out["q"] = np.nan
    out.loc[has_p, "q"] = multipletests(out.loc[has_p, "p"], method="fdr_bh")[1]
    return out.set_index("key")


def test_table_and_headline_show_the_clustered_evidence(run):
    ds, result = run
    at, table = _page(ds, result)
    alpha = result.config.alpha
    ref = _independent_strength(result)
    row_level = result.stats.set_index("key")
    assert table.attrs.get("inference", W.CLUSTERED) == W.CLUSTERED
    assert "accuracy 95% CI" not in table.columns  # no binomial interval beside clustered ones
    checked, widened = 0, 0
    for _, r in table.iterrows():
        e = ref.loc[r["key"]]
        sign = -1.0 if r["opposite wording"] else 1.0
        assert r["strength"] == pytest.approx(sign * e["strength"], abs=1e-9), r["key"]
        lo, hi = sorted((sign * e["lo"], sign * e["hi"]))
        got_lo, got_hi = _ci(r["strength 95% CI"])
        assert got_lo == pytest.approx(lo, abs=6e-4) and got_hi == pytest.approx(hi, abs=6e-4), r["key"]
        if np.isnan(e["q"]):
            assert pd.isna(r["q-value"]) and not r["significant"], r["key"]
        else:
            assert r["q-value"] == pytest.approx(e["q"], rel=1e-6), r["key"]
            assert bool(r["significant"]) == bool(e["q"] < alpha), r["key"]
            checked += 1
        b = row_level.loc[r["key"]]
        widened += (e["hi"] - e["lo"]) > (b["strength_ci_high"] - b["strength_ci_low"]) + 1e-9
    assert checked >= 15
    assert widened >= 10  # repeated prompts: the clustered intervals are wider for most principles
    # the headline counts the independent significant set; it is the set summary.json marks significant
    sig = {k for k, q in ref["q"].items() if q < alpha}
    assert set(table.loc[table["significant"], "key"]) == sig
    doc = summary_document(result)["annotators"][result.annotator]["principles"]
    assert {p["key"] for p in doc if p["marginal"]["significant"]} == sig
    assert next(m for m in at.metric if m.label == "Significant").value == str(len(sig))
    # fewer than the row-level binomial test claims (the page used to show that count)
    assert len(sig) < int(result.stats["significant"].sum())
    # the proxy flags are summary.json's (= the report's "proxy for length" sentence)
    assert set(table.loc[table["length proxy"], "key"]) == {p["key"] for p in doc if p["proxy_for_length"]}
    assert any("clustered by prompt (140 prompts" in c.value for c in at.caption)
    labels = _labels(at)
    assert labels["strength 95% CI"] == "95% CI (clustered)" and labels["q-value"] == "q (clustered)"
    # the inference columns come before relevance / accuracy (on screen at 1280 px)
    cols = list(table.columns)
    assert cols.index("length proxy") < cols.index("relevance")


def test_length_controlled_effect_matches_a_statsmodels_logit(run):
    """logit P(A) = b*vote + c*(len_a-len_b)/(len_a+len_b) + d*model[machine] + e (the design of
    docs/metrics.md: order known in this file, so a position constant; models human/machine, human the
    reference), cluster-robust by prompt; the page shows b (in the rewarded wording) and its CI."""
    ds, result = run
    _, table = _page(ds, result)
    pairs, votes = result.pairs, result.votes
    y = pairs["preferred"].map({"a": 1.0, "b": 0.0})
    decided = y.notna().to_numpy()
    la, lb = pairs["text_a"].str.len().to_numpy(float), pairs["text_b"].str.len().to_numpy(float)
    ld = np.where(la + lb > 0, (la - lb) / np.where(la + lb > 0, la + lb, 1), 0.0)
    machine = (pairs["model_a"] == "machine").astype(float) - (pairs["model_b"] == "machine").astype(float)
    groups = pd.factorize(pairs["prompt"])[0][decided]
    n_ok = 0
    for _, r in table.iterrows():
        if pd.isna(r["length-controlled effect"]):
            assert r["key"] == "longer" or r["effect 95% CI"] == "", r["key"]
            continue
        X = np.column_stack([votes[r["key"]].to_numpy(float), ld, machine.to_numpy(), np.ones(len(ld))])[decided]
        fit = sm.Logit(y.to_numpy()[decided], X).fit(disp=0, cov_type="cluster", cov_kwds={"groups": groups})
        sign = -1.0 if r["opposite wording"] else 1.0
        b, se = float(fit.params[0]), float(fit.bse[0])
        assert r["length-controlled effect"] == pytest.approx(sign * b, abs=2e-3), r["key"]
        lo, hi = _ci(r["effect 95% CI"])
        assert (lo, hi) == pytest.approx(tuple(sorted((sign * (b - Z * se), sign * (b + Z * se)))), abs=0.02)
        shown = r["controlled effect [95% CI]"]  # the one column the page shows for the effect
        assert shown.endswith(r["effect 95% CI"]) and float(shown.split(" [")[0]) == pytest.approx(sign * b, abs=6e-3)
        n_ok += 1
    assert n_ok >= 15
    longer = table.set_index("key").loc["longer"]  # the covariate itself
    assert pd.isna(longer["length-controlled effect"])
    assert longer["controlled effect [95% CI]"] == "— (length itself)"


def test_without_evidence_the_page_says_so_and_labels_the_binomial_columns(run):
    ds, result = run
    analysis = dataclasses.replace(result.analysis, evidence=None)
    bare = dataclasses.replace(result, analyses={result.annotator: analysis}, _cache={})
    at, table = _page(ds, bare)
    assert any("No clustered evidence for this run" in w.value for w in at.warning)
    assert "Significant (binomial)" in {m.label for m in at.metric}
    assert next(m for m in at.metric if m.label == "Significant (binomial)").value == str(
        int(result.stats["significant"].sum()))
    assert "length-controlled effect" not in table.columns and "accuracy 95% CI" in table.columns
    # the row-level binomial numbers, and the on-screen column labels say which inference made them
    b = result.stats.set_index("key")
    for _, r in table.head(5).iterrows():
        assert r["q-value"] == pytest.approx(b.loc[r["key"], "q_value"], rel=1e-9)
    labels = _labels(at)
    assert labels["strength 95% CI"] == "95% CI (binomial, not clustered)"
    assert labels["q-value"] == "q (binomial, not clustered)"
    assert labels["accuracy 95% CI"] == "accuracy CI (binomial, not clustered)"


def test_an_interval_end_that_rounds_to_zero_has_no_minus_sign():
    assert W._ci(pd.Series([-0.0001, -0.0012]), pd.Series([0.27, -0.0004]), "+.3f") == [
        "[+0.000, +0.270]", "[-0.001, +0.000]"]
    assert W._ci(pd.Series([-0.00001]), pd.Series([0.5]), ".1%") == ["[0.0%, 50.0%]"]


class _Tables(HTMLParser):
    """Every <table> of an HTML page as a list of rows (lists of cell texts, the header row first)."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_the_report_names_the_significant_set_of_summary_json_and_the_app(run):
    """HTML table, executive summary and Markdown summary: the clustered significant set (statsmodels,
    independently), which is summary.json's and the page's, not the larger binomial one."""
    from icai_core.figures import rewarded_view
    from icai_core.report import html_report, markdown_summary

    ds, result = run
    alpha = result.config.alpha
    ref = _independent_strength(result)
    sig = {k for k, q in ref["q"].items() if q < alpha}
    assert 0 < len(sig) < int(result.stats["significant"].sum())  # the two inferences disagree on this file
    doc = summary_document(result)["annotators"][result.annotator]["principles"]
    assert {p["key"] for p in doc if p["marginal"]["significant"]} == sig
    _, table = _page(ds, result)
    assert set(table.loc[table["significant"], "key"]) == sig
    wording = dict(zip(*rewarded_view(result.stats, result.principles)[["wording", "key"]].T.to_numpy(),
                       strict=True))
    page = html_report(result)
    parser = _Tables()
    parser.feed(page)
    principle_table = next(t for t in parser.tables if t and "significant" in t[0])
    head = principle_table[0]
    assert "95% CI (clustered by prompt)" in head and "q (clustered by prompt)" in head
    rows = [dict(zip(head, r, strict=True)) for r in principle_table[1:]]
    assert len(rows) == len(result.stats)
    assert {wording[r["principle (rewarded wording)"]] for r in rows if r["significant"] == "yes"} == sig
    for r in rows:  # the q shown is the clustered one
        q = ref.loc[wording[r["principle (rewarded wording)"]], "q"]
        shown = r["q (clustered by prompt)"]
        assert shown == ("n/a" if np.isnan(q) else "< 0.001" if q < 0.001 else f"{q:.3f}")
    summary = page.split("<section class='exec'>")[1].split("</section>")[0]
    findings = summary.split("<h3>The three strongest findings</h3>")[1].split("<h3>")[0]
    assert findings.count("<li>") == min(3, len(sig))
    assert "clustered by prompt" in findings
    md = markdown_summary(result)
    md_rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "[" in ln and "rewarded wording" not in ln]
    assert md_rows
    for ln in md_rows:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        key = wording[cells[0].replace("\\", "")]
        assert (cells[-1] == "✔") == (key in sig), key
    assert "sig. (clustered by prompt)" in md


def test_the_report_labels_the_binomial_fallback(run):
    from icai_core.report import html_report, markdown_summary

    ds, result = run
    analysis = dataclasses.replace(result.analysis, evidence=None)
    bare = dataclasses.replace(result, analyses={result.annotator: analysis}, _cache={})
    page = html_report(bare)
    parser = _Tables()
    parser.feed(page)
    head = next(t for t in parser.tables if t and "significant" in t[0])[0]
    assert "q (binomial, not clustered)" in head
    n_yes = sum(r[head.index("significant")] == "yes"
                for r in next(t for t in parser.tables if t and "significant" in t[0])[1:])
    assert n_yes == int(result.stats["significant"].sum())
    assert "NOT clustered by prompt" in page and "no clustered evidence" in page
    assert "sig. (binomial, not clustered)" in markdown_summary(bare)


def test_home_headline_counts_the_clustered_significant_set(run):
    """Home's "Significant principles" is the count of the Principles page and summary.json, not the
    row-level binomial one (on this file 2 against 4)."""
    ds, result = run
    at = new_app(dataset=ds, audit=result, show_map=False)
    at.run()
    assert_ok(at)
    doc = summary_document(result)["annotators"][result.annotator]["principles"]
    sig = {p["key"] for p in doc if p["marginal"]["significant"]}
    tested = int(result.stats["strength"].notna().sum())
    metric = next(m for m in at.metric if m.label == "Significant principles")
    assert metric.value == f"{len(sig)} of {tested} tested"
    assert len(sig) < int(result.stats["significant"].sum())


def test_home_compares_the_constitution_with_the_strongest_baseline_and_shows_the_verdict(run):
    """Against the majority class alone, a constitution that length beats still looks like a gain (the
    AlpacaEval audit said "+29.0 pts vs majority class" while the best single principle, length, did 2
    points better). Home compares with the strongest baseline on the same held-out pairs, shows the
    cross-validated verdict against length alone (a warning unless its CI is above zero), and says how
    many significant principles are length proxies."""
    ds, result = run
    at = new_app(dataset=ds, audit=result, show_map=False)
    at.run()
    assert_ok(at)
    table = result.reconstruction.table.set_index("method")
    baselines = table.loc[[m for m in ("best_single_principle", "random_constitution", "majority_class",
                                        "random_guess") if m in table.index], "agreement"]
    agree = table.loc["logistic_regression", "agreement"]
    metric = next(m for m in at.metric if m.label == "Held-out agreement")
    labels = {"best_single_principle": "best single principle", "random_constitution": "random constitution "
              "(same size)", "majority_class": "majority class", "random_guess": "random guess"}
    assert metric.delta == f"{(agree - baselines.max()) * 100:+.1f} pts vs {labels[baselines.idxmax()]}"
    cv = result.analysis.evidence.reconstruction
    boxes = at.info if cv.beats_length else at.warning
    assert any(cv.verdict[:60] in b.value.replace("\\", "") for b in boxes), [b.value for b in [*at.info, *at.warning]]
    doc = summary_document(result)["annotators"][result.annotator]["principles"]
    n_proxy = sum(1 for p in doc if p["marginal"]["significant"] and p.get("proxy_for_length"))
    sig_metric = next(m for m in at.metric if m.label == "Significant principles")
    assert sig_metric.delta == (f"{n_proxy} of them length proxies" if n_proxy else None)


def test_the_constitution_page_states_the_cross_validated_verdict(run):
    ds, result = run
    at = new_app(dataset=ds, audit=result, show_map=False)
    at.switch_page("pages/constitution.py").run()
    assert_ok(at)
    cv = result.analysis.evidence.reconstruction
    shown = [b.value.replace("\\", "") for b in [*at.info, *at.warning]]  # markdown escapes
    assert any("Cross-validated at the audit's thresholds" in v and cv.verdict[:60] in v for v in shown), shown


def test_strongest_baseline_leaves_the_constitution_out():
    from icai_core.reconstruct import strongest_baseline

    table = pd.DataFrame({"method": ["logistic_regression", "weighted_majority", "best_single_principle",
                                     "majority_class", "random_guess"],
                          "agreement": [0.79, 0.80, 0.81, 0.50, np.nan]})
    assert strongest_baseline(table) == ("best_single_principle", 0.81)
    assert strongest_baseline(table[table["method"].isin(["logistic_regression", "weighted_majority"])]) is None
    assert strongest_baseline(table.iloc[:0]) is None
    from icai_core.reconstruct import constitution_vs_baseline

    assert constitution_vs_baseline(table) == (0.79, "best_single_principle", 0.81)
    assert constitution_vs_baseline(table[table["method"] != "logistic_regression"]) is None


def test_the_constitution_table_flags_its_length_proxies(run):
    from icai_core.evidence import presented_stats

    ds, result = run
    at = new_app(dataset=ds, audit=result, show_map=False)
    at.switch_page("pages/constitution.py").run()
    assert_ok(at)
    table = next(d.value for d in at.dataframe if "length proxy" in d.value.columns and "q-value" in d.value.columns)
    flags = presented_stats(result).set_index("key")["proxy_for_length"].astype(bool)
    keys = result.constitution.to_frame()["key"].astype(str)
    assert table["length proxy"].tolist() == [bool(flags[k]) for k in keys]


def test_without_evidence_the_report_compares_with_the_strongest_baseline(run):
    from icai_core.figures import METHOD_LABELS
    from icai_core.reconstruct import strongest_baseline
    from icai_core.report import html_report

    ds, result = run
    analysis = dataclasses.replace(result.analysis, evidence=None)
    bare = dataclasses.replace(result, analyses={result.annotator: analysis}, _cache={})
    page = html_report(bare)
    method, _ = strongest_baseline(result.reconstruction.table)
    assert f"for the strongest baseline ({METHOD_LABELS[method]})" in page
    assert "always picking the more frequent side" not in page


def test_tiny_q_values_are_not_read_to_their_digits():
    """A clustered q of 8e-102 (AlpacaEval's length principle over 110 prompts) is a normal tail, not a
    measurement: the Principles page says to read anything below 1e-10 as "< 1e-10"."""
    pairs = load_pairs(DATA / "alpacaeval1_gpt4_judge.csv").pairs
    ds = LoadedDataset(name="alpacaeval1", pairs=pairs, hash=pairs_hash(pairs), source="upload")
    result = run_offline_audit(pairs, AuditConfig(use_embeddings=False), dataset_name=ds.name, dataset_hash=ds.hash)
    at, _ = _page(ds, result)
    from icai_core.evidence import presented_stats

    assert (presented_stats(result)["q_value"] < 1e-10).any()
    assert any('read them as "< 1e-10"' in c.value.replace("\\", "") for c in at.caption)
