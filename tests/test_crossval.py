"""Prompt-grouped cross-validated reconstruction, checked by recomputing baselines by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from icai_core import crossval as cv
from icai_core.data import load_pairs
from icai_core.judges import compute_features, compute_votes


@pytest.fixture(scope="module")
def arena(shared_data):
    pairs = load_pairs(shared_data / "arena_llama3_70b_human.csv").pairs
    votes = compute_votes(pairs)
    style = cv.style_covariates(pairs, compute_features(pairs))
    return pairs, votes, style, cv.cross_validate(votes, pairs, style=style, n_boot=100)


def test_folds_hold_out_whole_prompts_and_length_only_recomputes(arena):
    pairs, votes, style, res = arena
    assert res.folds == 5 and len(res.constitution_sizes) == 5
    fold = res.oof["fold"]
    prompts = pairs.loc[fold.index, "prompt"]
    assert (prompts.groupby(prompts).transform(lambda s: fold[s.index].nunique()) == 1).all()
    # by hand: same splitter, L2 logistic on (len_a - len_b) / (len_a + len_b) from Python len
    y = pairs["preferred"].map({"a": 1, "b": -1}).to_numpy()
    la = np.array([len(t) for t in pairs["text_a"]], dtype=float)
    lb = np.array([len(t) for t in pairs["text_b"]], dtype=float)
    x = ((la - lb) / (la + lb))[:, None]
    groups = pd.factorize(pairs["prompt"])[0]
    correct = np.zeros(len(y))
    score = np.zeros(len(y))
    for tr, te in _by_hand_folds(y, groups, 5, 0):
        m = LogisticRegression(C=1.0, max_iter=1000).fit(x[tr], y[tr])
        correct[te] = m.predict(x[te]) == y[te]
        score[te] = m.predict_proba(x[te])[:, 1]
        maj = 1 if (y[tr] == 1).sum() >= (y[tr] == -1).sum() else -1
        assert (res.oof["pred_majority"].to_numpy()[te] == maj).all()
    got = res.method("length_only")
    assert got["accuracy"] == pytest.approx(correct.mean(), abs=1e-12)
    assert got["auc"] == pytest.approx(roc_auc_score(y == 1, score), abs=1e-12)
    assert res.method("majority")["accuracy"] == pytest.approx(
        (res.oof["pred_majority"] == res.oof["preferred"]).mean())


def _by_hand_folds(y, groups, k, seed):
    """The documented fold rule, written out: StratifiedKFold(shuffle) over the prompts, each labelled by
    the side most of its rows chose (every label here is held by at least k prompts)."""
    prompts = pd.unique(groups)
    side = pd.Series(y).groupby(groups).sum().reindex(prompts).to_numpy()
    lab = np.sign(side).astype(int)
    assert pd.Series(lab).value_counts().min() >= k
    for _, te_p in StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(prompts)), lab):
        te = np.isin(groups, prompts[te_p])
        yield np.flatnonzero(~te), np.flatnonzero(te)


def test_prompt_folds_never_share_a_prompt_and_balance_the_labels(shared_data):
    """Every file with repeated prompts: no prompt in two folds; every fold holds a fifth of the prompts
    (+-1) and its share of A stays near the file's (the point of stratifying; GroupKFold drifts 12 points
    on prd_lfqa_expert)."""
    from icai_core.inference import cluster_ids

    for name in ("prd_lfqa_expert.csv", "alpacaeval1_gpt4_judge.csv"):
        pairs = load_pairs(shared_data / name).pairs
        y = pairs["preferred"].map({"a": 1, "b": -1}).fillna(0).to_numpy()
        dec = y != 0
        y, groups = y[dec].astype(int), cluster_ids(pairs)[dec]
        for seed in range(5):
            fold = cv.prompt_folds(y, groups, 5, seed)
            assert set(fold) == set(range(5))
            per_prompt = pd.Series(fold).groupby(groups).nunique()
            assert (per_prompt == 1).all(), name
            n_prompts = pd.Series(groups).groupby(fold).nunique()
            g = len(per_prompt)
            assert n_prompts.between(g // 5, -(-g // 5)).all(), (name, n_prompts.tolist())
            share = pd.Series(y == 1).groupby(fold).mean()
            assert (share - (y == 1).mean()).abs().max() < 0.08, (name, seed, share.tolist())
    one = cv.prompt_folds(np.ones(12, dtype=int), np.repeat(np.arange(6), 2), 3, 0)  # one label: still whole prompts
    assert sorted(np.bincount(one)) == [4, 4, 4] and (one[::2] == one[1::2]).all()


def test_arena_style_only_auc_and_an_honest_verdict(arena):
    _, _, _, res = arena
    style = res.method("style_only")
    assert 0.55 < style["auc"] < 0.75 and style["auc_ci_low"] < style["auc"] < style["auc_ci_high"]
    summary = res.to_summary()
    for name in ("constitution", "length_only", "best_single", "majority", "style_only"):
        assert set(summary["methods"][name]) >= {"accuracy", "ci", "auc"}
    assert summary["folds"] == 5 and summary["grouped_by"] == "prompt"
    v = res.verdict
    assert "nan" not in v.lower() and "length alone" in v and "1119 held-out judgements" in v
    d = res.difference
    lo, hi = d["ci"]
    if lo > 0:
        assert "it adds" in v
    elif hi < 0:
        assert "does worse" in v
    else:
        assert "does not beat length alone" in v
    # per principle: the constitution's members were selected at most once per fold
    pp = res.per_principle
    assert pp["times_selected"].between(0, 5).all() and pp.loc[0, "times_selected"] >= 1


def test_weighted_auc_equals_sklearn():
    rng = np.random.default_rng(1)
    pos = rng.integers(0, 2, 300).astype(bool)
    score = np.round(rng.normal(size=300) + pos, 1)  # many ties
    w = rng.integers(0, 4, 300).astype(float)
    assert cv.weighted_auc(pos, score, w) == pytest.approx(roc_auc_score(pos, score, sample_weight=w), abs=1e-12)
    assert cv.weighted_auc(pos, score) == pytest.approx(roc_auc_score(pos, score), abs=1e-12)


def test_degenerate_inputs_give_sentences(arena):
    pairs, votes, style, _ = arena
    small = pairs.head(60)
    ties = small.assign(preferred="tie")
    r = cv.cross_validate(votes.loc[ties.index], ties, style=style.loc[ties.index])
    assert r.methods.empty and "no decided" in r.verdict and "nan" not in r.verdict
    one = cv.cross_validate(votes.loc[small.index[:1]], small.head(1), style=style.loc[small.index[:1]])
    assert "only 1 decided" in one.verdict
    empty = cv.cross_validate(votes.loc[small.index], small, style=style.loc[small.index],
                              constitution_settings={"min_abs_strength": 2.0}, n_boot=20)
    assert empty.constitution_sizes == [0] * 5
    assert empty.verdict.startswith("No principle passed the selection rules")
    assert "nan" not in empty.verdict.lower()


@pytest.mark.parametrize("compiled", [False, True])
def test_bootstrap_auc_ranks_once_and_gives_every_draw_the_weighted_auc(monkeypatch, compiled):
    """The bootstrap ranks its fixed scores once (`_auc_of_ranked`, or the compiled one-pass loop of
    `_auc_jit` on many rows); each draw must still be exactly `weighted_auc` of that draw's cluster
    weights. The CI is recomputed here the slow way, draw by draw from the same generator, and must
    match to the last bit, by either path."""
    monkeypatch.setattr(cv, "_compiled_bootstrap", lambda n_rows: compiled)
    rng = np.random.default_rng(5)
    n, g = 3000, 400
    y = np.where(rng.random(n) < 0.45, 1, 0)
    clusters = rng.integers(0, g, n)
    for score in (np.round(rng.random(n), 2), rng.random(n)):  # many ties; none
        auc, lo, hi = cv._auc_with_ci(y, score, clusters, 200, 3, 0.05)
        codes = pd.factorize(pd.Series(clusters))[0]
        k = int(codes.max()) + 1
        draws = np.random.default_rng([3, 7])
        pos = y == 1
        vals = []
        for _ in range(200):
            weight = np.bincount(draws.integers(0, k, size=k), minlength=k)[codes]
            if pos[weight > 0].all() or (~pos[weight > 0]).all():
                continue
            vals.append(cv.weighted_auc(pos, score, weight))
        assert (lo, hi) == tuple(float(q) for q in np.quantile(vals, [0.025, 0.975]))
        assert auc == pytest.approx(cv.weighted_auc(pos, score), abs=1e-12) and lo < auc < hi
