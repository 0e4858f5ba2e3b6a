"""Judge report card on real files, each number against an independent computation in the test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score

from icai_core import reportcard as rc
from icai_core.data import load_pairs

HUMAN = "human_crowd_majority_of_4"
GPT4_PRD = "gpt-4 (PRD reviewer)"


@pytest.fixture(scope="module")
def alpaca(shared_data):
    return load_pairs(shared_data / "alpacaeval_human_vs_gpt4.csv").pairs


@pytest.fixture(scope="module")
def prd(shared_data):
    return load_pairs(shared_data / "prd_vicuna80_human_vs_gpt4.csv").pairs


def test_gpt4_runs_agree_with_the_human_majority_as_published(alpaca):
    rows = rc.agreement_table(alpaca, reference=HUMAN)
    assert len(rows) == 8
    human = alpaca[alpaca["annotator"] == HUMAN].set_index("pair_id")["preferred"]
    for row in rows:
        run = alpaca[alpaca["annotator"] == row["b"]].set_index("pair_id")["preferred"]
        joined = pd.concat([human.rename("h"), run.rename("g")], axis=1, join="inner")
        assert row["n_shared"] == len(joined) == 521
        assert row["agreement"] == pytest.approx((joined["h"] == joined["g"]).mean(), abs=1e-12)
        assert row["kappa"] == pytest.approx(cohen_kappa_score(joined["h"], joined["g"]), abs=1e-9)
        assert 0.66 <= row["agreement"] <= 0.72  # AlpacaEval: ~65-70 %; the data README: 67-71 %
        lo, hi = row["ci"]
        assert lo < row["agreement"] < hi and hi - lo < 0.1


def test_agreement_with_several_votes_per_pair_is_the_weighted_kappa(prd):
    gpt4 = prd[prd["annotator"] == GPT4_PRD]
    mturk = prd[prd["annotator"] == "human_mturk"]
    got = rc.agreement(gpt4, mturk)
    # by hand: every (GPT-4 label, MTurk vote) combination of a pair, weighted 1/(n_a n_b)
    g = gpt4.groupby("pair_id")["preferred"].apply(list)
    m = mturk.groupby("pair_id")["preferred"].apply(list)
    la, lb, w, per_pair = [], [], [], []
    for pid in g.index.intersection(m.index):
        combos = [(x, z) for x in g[pid] for z in m[pid]]
        per_pair.append(np.mean([x == z for x, z in combos]))
        for x, z in combos:
            la.append(x)
            lb.append(z)
            w.append(1 / len(combos))
    assert got["n_shared"] == len(per_pair) == 480
    assert got["agreement"] == pytest.approx(np.mean(per_pair), abs=1e-12)
    assert got["kappa"] == pytest.approx(cohen_kappa_score(la, lb, sample_weight=w), abs=1e-9)


def _position_by_hand(d: pd.DataFrame) -> tuple[float, float]:
    """Raw binomial p of P(first) and the model-controlled intercept's clustered p."""
    dec = d[d["preferred"] != "tie"]
    y = (dec["preferred"] == "a").astype(float).to_numpy()
    raw = binomtest(int(y.sum()), len(y), 0.5).pvalue
    models = sorted(set(dec["model_a"]) | set(dec["model_b"]))
    counts = pd.concat([dec["model_a"], dec["model_b"]]).value_counts()
    ref = sorted(models, key=lambda x: (-counts[x], x))[0]
    cols = [np.ones(len(dec))] + [
        ((dec["model_a"] == m).astype(float) - (dec["model_b"] == m).astype(float)).to_numpy()
        for m in models if m != ref
    ]
    res = sm.GLM(y, np.column_stack(cols), family=sm.families.Binomial()).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(dec["prompt"])[0]})
    return raw, float(res.pvalues[0])


def test_prd_position_bias_gpt4_detected_mturk_not(prd):
    gpt4 = prd[prd["annotator"] == GPT4_PRD]
    mturk = prd[prd["annotator"] == "human_mturk"]
    known, why = rc.order_is_known(gpt4)
    assert known and "both orders" in why  # each model pair is shown in both orders on different questions
    pg, pm = rc.position_bias(gpt4), rc.position_bias(mturk)
    raw_g, ctl_g = _position_by_hand(gpt4)
    raw_m, ctl_m = _position_by_hand(mturk)
    dec = gpt4[gpt4["preferred"] != "tie"]
    assert pg.testable and pg.p_first == pytest.approx((dec["preferred"] == "a").mean(), abs=1e-12)
    assert pg.p_first > 0.55 and pg.significant and raw_g < 0.05
    assert pg.controlled_p == pytest.approx(ctl_g, rel=1e-6) and ctl_g < 0.01
    assert pm.testable and not pm.significant and raw_m > 0.05
    assert pm.controlled_p == pytest.approx(ctl_m, rel=1e-6)
    assert "nan" not in pg.sentence and "significant position bias" in pg.sentence


def test_position_not_testable_where_the_file_randomised_the_order(shared_data):
    arena = load_pairs(shared_data / "arena_llama3_70b_human.csv").pairs
    pos = rc.position_bias(arena)
    assert not pos.testable and "swapped" in pos.reason and pos.p_first is None
    assert pos.to_summary()["p_first"] is None


def test_swap_consistency_of_pairs_shown_in_both_orders(prd):
    """Add the other order of 40 GPT-4 pairs: a content-faithful judge is 100 % consistent, a judge that
    always picks the first-shown text is 0 % consistent on decided pairs; both orders are detected."""
    gpt4 = prd[prd["annotator"] == GPT4_PRD]
    base = gpt4[gpt4["preferred"] != "tie"].head(40)
    flipped = base.copy()
    flipped["text_a"], flipped["text_b"] = base["text_b"], base["text_a"]
    flipped["model_a"], flipped["model_b"] = base["model_b"], base["model_a"]
    flipped.index = flipped.index + 100000
    faithful = flipped.assign(preferred=base["preferred"].map({"a": "b", "b": "a"}).to_numpy())
    first_always = pd.concat([base.assign(preferred="a"), flipped.assign(preferred="a")])
    c1, n1 = rc.swap_consistency(pd.concat([base, faithful]))
    c2, n2 = rc.swap_consistency(first_always)
    assert (c1, n1) == (1.0, 40) and (c2, n2) == (0.0, 40)
    no_models = first_always.drop(columns=["model_a", "model_b", "swapped"])
    known, why = rc.order_is_known(no_models)
    assert known and "40 pairs appear in both orders" in why
    pos = rc.position_bias(no_models)
    assert pos.p_first == 1.0 and pos.swap_consistency == 0.0


def test_self_preference_and_report_card(prd, alpaca):
    gpt4 = prd[prd["annotator"] == GPT4_PRD]
    sp = rc.self_preference(gpt4, GPT4_PRD)
    one = gpt4[(gpt4["model_a"] == "gpt4") ^ (gpt4["model_b"] == "gpt4")]
    one = one[one["preferred"] != "tie"]
    own = ((one["model_a"] == "gpt4") & (one["preferred"] == "a")) | ((one["model_b"] == "gpt4") & (one["preferred"] == "b"))
    assert sp["model"] == "gpt4" and sp["n"] == len(one) and sp["rate"] == pytest.approx(own.mean(), abs=1e-12)
    mturk = prd[prd["annotator"] == "human_mturk"]
    assert rc.self_preference(mturk, "human_mturk") is None
    # the baseline: how often the MTurk workers chose GPT-4's answer in the same comparisons
    prd_card = rc.report_card(prd, reference="human_mturk").set_index("annotator")
    hm = mturk[((mturk["model_a"] == "gpt4") ^ (mturk["model_b"] == "gpt4")) & (mturk["preferred"] != "tie")]
    hown = ((hm["model_a"] == "gpt4") & (hm["preferred"] == "a")) | ((hm["model_b"] == "gpt4") & (hm["preferred"] == "b"))
    assert prd_card.loc[GPT4_PRD, "self_preference"] == pytest.approx(own.mean())
    assert prd_card.loc[GPT4_PRD, "self_preference_reference"] == pytest.approx(hown.mean(), abs=1e-12)
    assert prd_card.loc[GPT4_PRD, "self_preference"] > prd_card.loc[GPT4_PRD, "self_preference_reference"]

    card = rc.report_card(alpaca, reference=HUMAN).set_index("annotator")
    assert (card["n_pairs"] == 521).all() and (card["n_rows"] == 521).all()
    assert card["tie_rate"].eq(0).all()
    run = alpaca[alpaca["annotator"] == "gpt4_alpacafarm_gpt4_b1_seed0"]
    la, lb = run["text_a"].str.len(), run["text_b"].str.len()
    dec = run[la != lb]
    longer_won = np.where(dec["preferred"] == "a", la[la != lb] > lb[la != lb], lb[la != lb] > la[la != lb])
    assert card.loc["gpt4_alpacafarm_gpt4_b1_seed0", "p_prefer_longer"] == pytest.approx(longer_won.mean())
    assert pd.isna(card.loc[HUMAN, "agreement"])
    assert not card["position_testable"].any()
