"""compare_groups / compare_datasets / constitution_diff on real cross-annotator data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as sps

from icai_core.compare import DIFF_COLUMNS, REST, compare_datasets, compare_groups, constitution_diff
from icai_core.constitution import Constitution, ConstitutionEntry
from icai_core.stats import STATS_COLUMNS, bh_qvalues, principle_stats
from tests.support.realvotes import load, needs_data, simple_votes

pytestmark = needs_data
HUMAN = "human_crowd_majority_of_4"
Z = 1.959963984540054


@pytest.fixture(scope="module")
def human_vs_gpt4():
    df = load("alpacaeval_human_vs_gpt4.csv")
    return df, simple_votes(df, shorter=False)


def test_group_by_annotator_all_nine_one_vs_rest(human_vs_gpt4):
    df, votes = human_vs_gpt4
    res = compare_groups(votes, df, "annotator", paired=False)
    k, g = votes.shape[1], df["annotator"].nunique()
    assert g == 9 and res.mode == "one_vs_rest" and res.skipped.empty
    assert res.groups == sorted(df["annotator"].unique())
    assert list(res.per_group.columns) == ["group", *STATS_COLUMNS]
    assert len(res.per_group) == k * g
    assert res.strength_matrix.shape == (k, g)
    assert res.strength_ci_low.shape == res.strength_ci_high.shape == (k, g)
    assert (res.strength_ci_low <= res.strength_matrix).all().all()
    assert (res.strength_matrix <= res.strength_ci_high).all().all()
    assert list(res.differences.columns) == DIFF_COLUMNS
    assert len(res.differences) == k * g
    assert set(res.differences["group_b"]) == {REST}
    assert (res.differences["n_b"] == len(df) - 521).all()
    # BH across all k*g tests
    q = bh_qvalues(res.differences["p_value"].to_numpy())
    assert res.differences["q_value"].to_numpy() == pytest.approx(q)
    assert res.differences["q_value"].to_numpy() == pytest.approx(
        sps.false_discovery_control(res.differences["p_value"].to_numpy())
    )
    # per-group stats are principle_stats of the group's rows
    human = df["annotator"] == HUMAN
    direct = principle_stats(votes[human], df.loc[human, "preferred"]).set_index("key")
    mine = res.per_group[res.per_group["group"] == HUMAN].set_index("key")
    pd.testing.assert_series_equal(mine["strength"], direct["strength"])
    assert res.strength_matrix.loc["length", HUMAN] == pytest.approx(direct.loc["length", "strength"])
    # on these 521 pairs the crowd majority and every GPT-4 run reward the longer answer
    assert (res.strength_matrix.loc["length"] > 0).all()
    assert res.matrix("accuracy").shape == (k, g)


def test_human_vs_two_gpt4_runs_pairwise_by_hand(human_vs_gpt4):
    df, votes = human_vs_gpt4
    keep = df["annotator"].isin([HUMAN, "gpt4_alpacafarm_gpt4_b1_seed0", "gpt4_alpacafarm_gpt4_b5_seed0"])
    sub, v = df[keep].reset_index(drop=True), votes[keep].reset_index(drop=True)
    res = compare_groups(v, sub, "annotator", paired=False)
    assert res.mode == "pairwise" and len(res.groups) == 3
    assert len(res.differences) == 3 * v.shape[1]  # 3 pairs of groups x principles

    row = res.differences[
        (res.differences["key"] == "length")
        & (res.differences["group_a"] == "gpt4_alpacafarm_gpt4_b1_seed0")
        & (res.differences["group_b"] == HUMAN)
    ].iloc[0]

    # The reference: statsmodels OLS of the score on a constant and a group dummy, with standard errors
    # clustered by prompt (judgements of one prompt are not independent; the rows are not the unit).
    two = sub["annotator"].isin(["gpt4_alpacafarm_gpt4_b1_seed0", HUMAN]) & sub["preferred"].isin(["a", "b"])
    y = sub.loc[two, "preferred"].map({"a": 1, "b": -1}).to_numpy()
    score = v.loc[two, "length"].to_numpy() * y
    dummy = (sub.loc[two, "annotator"] == "gpt4_alpacafarm_gpt4_b1_seed0").to_numpy().astype(float)
    fit = sm.OLS(score, sm.add_constant(dummy)).fit(cov_type="cluster",
                                                      cov_kwds={"groups": pd.factorize(sub.loc[two, "prompt"])[0]})
    diff, se = fit.params[1], fit.bse[1]
    assert row["difference"] == pytest.approx(diff)
    assert row["diff_ci_low"] == pytest.approx(diff - Z * se)
    assert row["diff_ci_high"] == pytest.approx(diff + Z * se)
    assert row["z"] == pytest.approx(diff / se)
    assert row["p_value"] == pytest.approx(2 * sps.norm.sf(abs(diff / se)))
    # the two sides judged the same prompts, so their residuals covary within a prompt: the clustered
    # interval is narrower than the row-level one, which treats the two samples as independent
    sa, sb = score[dummy == 1], score[dummy == 0]
    naive = math.sqrt(sa.var(ddof=1) / len(sa) + sb.var(ddof=1) / len(sb))
    assert se < 0.9 * naive


def test_same_pairs_are_compared_with_a_paired_test_by_hand(human_vs_gpt4):
    """Human majority vs one GPT-4 run judged the same 521 pairs: the default test is paired."""
    df, votes = human_vs_gpt4
    g4 = "gpt4_alpacafarm_gpt4_b1_seed0"
    keep = df["annotator"].isin([HUMAN, g4])
    sub, v = df[keep].reset_index(drop=True), votes[keep].reset_index(drop=True)
    res = compare_groups(v, sub, "annotator")
    row = res.differences.set_index(["key", "group_a"]).loc[("length", g4)]
    assert row["comparison"] == "paired" and row["n_a"] == row["n_b"] == 521

    def scores(name):
        part = sub[sub["annotator"] == name].sort_values("pair_id")
        y = part["preferred"].map({"a": 1, "b": -1}).to_numpy()
        return v.loc[part.index, "length"].to_numpy() * y

    d = scores(g4) - scores(HUMAN)
    prompts = sub[sub["annotator"] == HUMAN].sort_values("pair_id")["prompt"]
    fit = sm.OLS(d, np.ones(len(d))).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(prompts)[0]})
    se = fit.bse[0]  # the per-pair differences, clustered by prompt
    assert row["difference"] == pytest.approx(d.mean())
    assert row["diff_ci_low"] == pytest.approx(d.mean() - Z * se)
    assert row["p_value"] == pytest.approx(2 * sps.norm.sf(abs(d.mean() / se)))
    # pairing removes the between-pair variance: a narrower interval than the independent test
    indep = compare_groups(v, sub, "annotator", paired=False).differences.set_index(["key", "group_a"])
    assert row["diff_ci_high"] - row["diff_ci_low"] < (
        indep.loc[("length", g4), "diff_ci_high"] - indep.loc[("length", g4), "diff_ci_low"])
    # with nine annotators (one vs the rest) the paired test is used too
    many = compare_groups(votes, df, "annotator")
    assert set(many.differences["comparison"]) == {"paired_one_vs_rest"}


def test_small_groups_are_reported_not_dropped(human_vs_gpt4):
    df, votes = human_vs_gpt4
    pairs = df.copy()
    tiny = pairs.index[pairs["annotator"] == HUMAN][:12]
    pairs.loc[tiny, "annotator"] = "tiny_group"
    res = compare_groups(votes, pairs, "annotator", min_pairs=20)
    assert "tiny_group" not in res.groups
    skipped = res.skipped.set_index("group")
    assert skipped.loc["tiny_group", "n"] == 12 and skipped.loc["tiny_group", "n_rows"] == 12
    assert "tiny_group" not in set(res.per_group["group"])
    assert any("tiny_group" in note for note in res.notes)
    # grouping by a Series works and everything can be skipped
    res_all = compare_groups(votes, pairs, pairs["annotator"], min_pairs=10_000)
    assert res_all.groups == [] and len(res_all.skipped) == 10 and res_all.differences.empty


def test_compare_datasets_uses_common_principles(human_vs_gpt4):
    df, votes = human_vs_gpt4
    alpaca1 = load("alpacaeval1_gpt4_judge.csv")
    v1 = simple_votes(alpaca1, shorter=False).drop(columns=["questions"])
    res = compare_datasets(
        [("alpacaeval1", v1, alpaca1["preferred"]), ("human_vs_gpt4", votes, df["preferred"])]
    )
    assert res.groups == ["alpacaeval1", "human_vs_gpt4"] and res.mode == "pairwise"
    assert list(res.strength_matrix.index) == ["length", "bullets"]
    assert any("questions" in note for note in res.notes)
    length = res.differences.set_index("key").loc["length"]
    # GPT-4 judging text-davinci-003 pairs rewards length far more than on the AlpacaFarm pairs
    assert length["difference"] > 0.3 and length["significant"]
    with pytest.raises(ValueError):
        compare_datasets([("x", v1, alpaca1["preferred"]), ("x", v1, alpaca1["preferred"])])


def test_constitution_diff():
    def entry(key, inverted):
        return ConstitutionEntry(key, f"text {key}", 0.2, 0.7, 0.5, 0.001, inverted)

    a = Constitution([entry("length", False), entry("bullets", False), entry("hedging", True)])
    b = Constitution([entry("length", False), entry("hedging", False), entry("emoji", False)])
    diff = constitution_diff(a, b)
    assert diff.both == ["length"]
    assert diff.flipped == ["hedging"]
    assert diff.only_a == ["bullets"]
    assert diff.only_b == ["emoji"]
    table = diff.table.set_index("key")
    assert table.loc["hedging", "strength_a"] == -0.2 and table.loc["hedging", "strength_b"] == 0.2
    assert list(diff.table["key"]) == ["length", "bullets", "hedging", "emoji"]


def test_groups_of_prompts_are_compared_with_intervals_clustered_by_prompt():
    """Categories are a property of the prompt (~16 judgements per prompt here): a row-level test
    treats the judgements of one prompt as independent and claims too much. Every difference is the
    group dummy's coefficient of statsmodels OLS with standard errors clustered by prompt, and on these
    disjoint prompt sets the intervals are wider than the row-level ones for most principles."""
    df = load("alpacaeval1_gpt4_judge.csv")
    votes = simple_votes(df, shorter=False)
    res = compare_groups(votes, df, "category", paired=False)
    assert res.mode == "pairwise" and set(res.differences["comparison"]) == {"pairwise"}
    decided = df["preferred"].isin(["a", "b"])
    y = df["preferred"].map({"a": 1, "b": -1, "tie": 0}).fillna(0).to_numpy()
    ratios = []
    for row in res.differences.itertuples(index=False):
        rows = decided & df["category"].isin([row.group_a, row.group_b])
        score = votes.loc[rows, row.key].to_numpy() * y[rows.to_numpy()]
        dummy = (df.loc[rows, "category"] == row.group_a).to_numpy().astype(float)
        if np.ptp(score) == 0:
            continue
        fit = sm.OLS(score, sm.add_constant(dummy)).fit(
            cov_type="cluster", cov_kwds={"groups": pd.factorize(df.loc[rows, "prompt"])[0]})
        assert row.difference == pytest.approx(fit.params[1], abs=1e-12)
        assert row.diff_ci_high - row.diff_ci_low == pytest.approx(2 * Z * fit.bse[1], rel=1e-9)
        sa, sb = score[dummy == 1], score[dummy == 0]
        ratios.append(fit.bse[1] / math.sqrt(sa.var(ddof=1) / len(sa) + sb.var(ddof=1) / len(sb)))
    assert len(ratios) >= 20 and np.median(ratios) > 1.2  # 1.4-1.9 here
