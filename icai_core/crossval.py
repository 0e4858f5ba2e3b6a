"""Reconstruction with a verdict: k-fold cross-validation grouped by prompt.

One split with one seed says little, and a split that groups identical pairs but not prompts lets a
prompt (and a shared reference output) sit in train and test. Here every row is predicted exactly
once, by methods fitted on folds that do not contain its prompt (`prompt_folds`: sklearn's
StratifiedKFold over the prompts, groups = `inference.cluster_ids`, each prompt stratified by the side
most of its judgements chose, seeded). The constitution is selected
inside each training fold (`stats.principle_stats` counts -> `constitution.build_constitution`), so
the score of "the constitution" includes the luck of selection, as it must.

Accuracy is the share of decided held-out rows predicted correctly (ties are excluded from fitting
and scoring and counted), with a cluster-robust interval by prompt over the pooled out-of-fold
predictions; AUC is that of the pooled out-of-fold scores with a seeded cluster-bootstrap interval.
The verdict compares the constitution with length alone on the same rows (a paired, clustered
difference), and says plainly when the constitution does not beat length or the majority class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from icai_core import jit
from icai_core.constitution import build_constitution
from icai_core.inference import _num, cluster_ids, clustered_mean, length_diff, normalised_diff
from icai_core.stats import encode_preferred, stats_from_counts, votes_array

__all__ = ["CrossValResult", "cross_validate", "prompt_folds", "style_covariates", "weighted_auc",
           "METHOD_DESCRIPTIONS"]

METHOD_DESCRIPTIONS = {
    "constitution": "logistic regression (C=1, intercept) over the signed votes of the constitution "
    "selected on the training folds",
    "constitution_weighted": "weighted majority of the constitution's signed votes, weights = train "
    "log-odds log((agree+1)/(disagree+1)); zero sum -> train majority",
    "constitution_plus_length": "logistic regression over the constitution's votes and the normalised "
    "length difference",
    "length_only": "logistic regression on the normalised length difference (len_a-len_b)/(len_a+len_b) alone",
    "style_only": "logistic regression on normalised differences of length, list items and markdown "
    "emphasis (Chatbot Arena's style features), no principles",
    "best_single": "the one principle with the highest train |strength| (in its train direction); "
    "not relevant -> train majority",
    "majority": "always the train majority label",
    "random_constitution": "as many principles as the fold's constitution, drawn at random, weighted "
    "majority; averaged over seeded draws",
}


def prompt_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """The fold (0..k-1) of every row: whole prompts per fold, label-balanced, seeded.

    sklearn's StratifiedKFold(shuffle=True) over the distinct prompts, each prompt labelled by the side
    most of its rows chose (+1 A, -1 B, 0 a tie between its rows); a label held by fewer than k prompts
    joins the most common one (StratifiedKFold needs k of each). Why not StratifiedGroupKFold: its
    per-group greedy search is quadratic-ish in practice (measured 9.3 s at 24k prompts, 22-32 s at 50k,
    with no way to report progress), against 0.02 s here; why not GroupKFold(shuffle=True) (as fast):
    it ignores the label, and on small files the folds' share of A drifts (prd_lfqa_expert, 140
    prompts: largest fold deviation 12 points on average over 20 seeds, 5 here; arena 4 vs 0.6). Fold
    sizes: coefficient of variation 0.5-1% at 24k-50k prompts (StratifiedGroupKFold: ~0)."""
    codes, uniq = pd.factorize(pd.Series(groups))
    g = len(uniq)
    lab = np.sign(np.bincount(codes, weights=np.asarray(y, dtype=float), minlength=g)).astype(int)
    vals, counts = np.unique(lab, return_counts=True)
    common = vals[np.argmax(counts)]
    for v, c in zip(vals, counts, strict=True):
        if c < k:
            lab[lab == v] = common
    if len(np.unique(lab)) < 2:  # one label only: a seeded shuffle of the prompts into k folds
        from sklearn.model_selection import KFold

        splits = KFold(k, shuffle=True, random_state=seed).split(np.zeros(g))
    else:
        from sklearn.model_selection import StratifiedKFold

        splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(g), lab)
    fold_of_prompt = np.empty(g, dtype=int)
    for f, (_, te) in enumerate(splits):
        fold_of_prompt[te] = f
    return fold_of_prompt[codes]


def style_covariates(pairs: pd.DataFrame, features: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Normalised A-B differences of the Arena style features: length (characters), list items,
    markdown emphasis (headers + bold). ``features``: `judges.compute_features` output, computed
    when omitted."""
    if features is None:
        from icai_core.judges import compute_features

        features = compute_features(pairs, names=("n_list_items", "n_markdown_emphasis"))
    fa, fb = features
    out = pd.DataFrame(index=pairs.index)
    out["length"] = length_diff(pairs)
    for name in ("n_list_items", "n_markdown_emphasis"):
        out[name] = normalised_diff(fa[name].to_numpy(), fb[name].to_numpy())
    return out


@dataclass
class CrossValResult:
    """Out-of-fold reconstruction of one annotator's choices.

    ``methods``: ``method, accuracy, ci_low, ci_high, auc, auc_ci_low, auc_ci_high, n, description``.
    ``per_principle``: ``key, times_selected, train_strength, heldout_strength, gap`` (strength in the
    direction chosen on the training folds, averaged over folds: a principle whose held-out strength
    falls far below its train strength was selected by luck). ``difference``: constitution minus
    length alone, in accuracy points, with a clustered CI. ``verdict``: one honest sentence.
    """

    folds: int
    seed: int
    n: int
    n_ties: int
    n_prompts: int
    methods: pd.DataFrame
    per_principle: pd.DataFrame
    constitution_sizes: list[int]
    difference: dict[str, Any]
    verdict: str
    oof: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    @property
    def beats_length(self) -> bool:
        """True only when the clustered CI of (constitution - length alone) lies above zero, the rule the
        verdict's "it adds ..." follows."""
        ci = self.difference.get("ci") or [float("nan")]
        lo = float(ci[0]) if ci[0] is not None else float("nan")
        return bool(np.isfinite(lo) and lo > 0)

    def method(self, name: str) -> dict[str, Any]:
        row = self.methods.loc[self.methods["method"] == name]
        if row.empty:
            raise KeyError(name)
        return row.iloc[0].to_dict()

    def to_summary(self) -> dict[str, Any]:
        """The ``reconstruction`` object of summary.json."""
        methods = {}
        for r in self.methods.itertuples(index=False):
            methods[r.method] = {
                "accuracy": _num(r.accuracy),
                "ci": [_num(r.ci_low), _num(r.ci_high)],
                "auc": _num(r.auc),
                "auc_ci": [_num(r.auc_ci_low), _num(r.auc_ci_high)],
                "n": int(r.n),
            }
        return {
            "folds": int(self.folds),
            "grouped_by": "prompt",
            "n": int(self.n),
            "n_ties_excluded": int(self.n_ties),
            "constitution_sizes": [int(k) for k in self.constitution_sizes],
            "methods": methods,
            "difference_vs_length": {k: (_num(v) if not isinstance(v, list) else [_num(x) for x in v])
                                     for k, v in self.difference.items()},
            "verdict": self.verdict,
        }


def _fold_stats(arr: np.ndarray, ok: np.ndarray, y: np.ndarray, keys: list[str], principles: Any) -> pd.DataFrame:
    """`stats_from_counts` on the given rows; an invalid vote leaves that principle's n."""
    prod = np.where(ok, arr * y[:, None], 0)
    n_agree = (prod == 1).sum(axis=0)
    n_dis = (prod == -1).sum(axis=0)
    n = ok.sum(axis=0)
    return stats_from_counts(keys, n_agree, n_dis, n, 0, principles, sort=False)


def _logit(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray) -> np.ndarray:
    """P(A) on test rows from an L2 logistic regression (C=1, intercept) fitted on train rows."""
    from sklearn.linear_model import LogisticRegression

    if Xtr.shape[1] == 0 or len(np.unique(ytr)) < 2:
        return np.full(len(Xte), float((ytr == 1).mean()) if len(ytr) else 0.5)
    model = LogisticRegression(C=1.0, max_iter=1000)
    model.fit(Xtr, ytr)
    return model.predict_proba(Xte)[:, list(model.classes_).index(1)]


def _log_odds(signed: np.ndarray, y: np.ndarray) -> np.ndarray:
    prod = signed * y[:, None]
    return np.log(((prod == 1).sum(axis=0) + 1.0) / ((prod == -1).sum(axis=0) + 1.0))


def weighted_auc(pos: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Weighted Mann-Whitney AUC: P(score of a positive > score of a negative), ties count 1/2.

    Equals ``sklearn.metrics.roc_auc_score(pos, score, sample_weight=weight)`` (tested); used inside
    the bootstrap because it skips sklearn's per-call input validation (~100x faster here).
    """
    pos = np.asarray(pos, dtype=bool)
    uniq, inv = np.unique(np.asarray(score, dtype=float), return_inverse=True)
    return _auc_of_ranked(inv, len(uniq), pos, weight)


def _auc_of_ranked(inv: np.ndarray, n_levels: int, pos: np.ndarray, weight: np.ndarray | None) -> float:
    """`weighted_auc` once the scores are ranked (`inv`: each row's index among the `n_levels`
    distinct scores, ascending). The bootstrap ranks its fixed scores once instead of per draw: the
    sort was ~80% of each draw (4.4 of 13.6 s of the evidence at 50k pairs); same arithmetic, same
    values."""
    w = np.ones(len(pos)) if weight is None else np.asarray(weight, dtype=float)
    wp = np.bincount(inv, weights=w * pos, minlength=n_levels)
    wn = np.bincount(inv, weights=w * ~pos, minlength=n_levels)
    below = np.cumsum(wn) - wn
    tot = wp.sum() * wn.sum()
    return float((wp * (below + 0.5 * wn)).sum() / tot) if tot > 0 else float("nan")


_COMPILED_BOOTSTRAP_ROWS = 20_000  # from here the compiled loop pays for importing numba (~0.3-1 s)


def _compiled_bootstrap(n_rows: int) -> bool:
    """Whether `_auc_with_ci` draws with the compiled loop (`_auc_jit`; the same values to the last bit,
    4-5x faster per draw): when numba is loaded already (the judges' tokeniser loads it), or when the
    rows are many enough to repay loading it. On a few thousand rows with cached votes the numpy loop
    is quicker than the import."""
    import sys

    return "numba" in sys.modules or n_rows >= _COMPILED_BOOTSTRAP_ROWS


def _auc_with_ci(y: np.ndarray, score: np.ndarray, clusters: np.ndarray, n_boot: int, seed: int,
                 alpha: float, check=None) -> tuple[float, float, float]:
    """AUC of P(A)-like scores, with a percentile cluster bootstrap (resampling prompts)."""
    from sklearn.metrics import roc_auc_score

    pos = y == 1
    if pos.all() or (~pos).all():
        return float("nan"), float("nan"), float("nan")
    auc = float(roc_auc_score(pos, score))
    codes = pd.factorize(pd.Series(clusters))[0]
    g = int(codes.max()) + 1
    if g < 2 or n_boot <= 0:
        return auc, float("nan"), float("nan")
    rng = np.random.default_rng([seed, 7])
    uniq, inv = np.unique(np.asarray(score, dtype=float), return_inverse=True)
    vals = []
    if _compiled_bootstrap(len(pos)):
        kernel = jit.load("_auc_jit").weighted_auc_parts
        order = np.argsort(inv, kind="stable")
        level_start = np.searchsorted(inv[order], np.arange(len(uniq) + 1)).astype(np.int64)
        pos_sorted, code_sorted = pos[order], codes[order].astype(np.int64)
        for b in range(n_boot):
            if check is not None and b % 25 == 24:
                check()
            times = np.bincount(rng.integers(0, g, size=g), minlength=g).astype(np.float64)
            num, n_pos, n_neg = kernel(level_start, pos_sorted, code_sorted, times)
            if n_pos > 0 and n_neg > 0:  # the draw took rows of both outcomes
                vals.append(float(num / (n_pos * n_neg)))
    else:
        for b in range(n_boot):
            if check is not None and b % 25 == 24:  # ~1 s per 25 draws on 100k rows
                check()
            weight = np.bincount(rng.integers(0, g, size=g), minlength=g)[codes]
            p = pos[weight > 0]
            if p.all() or (~p).all():
                continue
            vals.append(_auc_of_ranked(inv, len(uniq), pos, weight))
    if not vals:
        return auc, float("nan"), float("nan")
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return auc, float(lo), float(hi)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _ci_txt(lo: Any, hi: Any) -> str:
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    return f" [{100 * lo:.0f}, {100 * hi:.0f}]"


def cross_validate(
    votes: pd.DataFrame,
    pairs: pd.DataFrame,
    *,
    valid: pd.DataFrame | None = None,
    principles: Any = None,
    folds: int = 5,
    seed: int = 0,
    alpha: float = 0.05,
    constitution_settings: dict[str, Any] | None = None,
    style: pd.DataFrame | None = None,
    n_random: int = 10,
    n_boot: int = 200,
    step: Any = None,
) -> CrossValResult:
    """k-fold reconstruction grouped by prompt, with a verdict (see module docstring).

    ``votes`` indexed like ``pairs`` (one annotator's rows). ``constitution_settings``: keyword
    arguments of `build_constitution` (defaults otherwise). ``style``: `style_covariates` output;
    when omitted it is computed from the texts. Invalid votes (``valid`` False) are missing for
    selection and count as "no vote" (0) inside the prediction rules. ``step(message)``, when given,
    is called before the split into folds, before each fold and before each method's bootstrap (cancel
checks and progress).
    """
    settings = dict(constitution_settings or {})
    settings.setdefault("alpha", alpha)
    idx = votes.index
    arr_all = votes_array(votes).astype(np.int8)
    keys = [str(c) for c in votes.columns]
    ok_all = np.ones(arr_all.shape, dtype=bool) if valid is None else valid.reindex(
        index=idx, columns=votes.columns, fill_value=False).to_numpy(dtype=bool)
    arr_all = np.where(ok_all, arr_all, 0).astype(np.int8)
    rows = pairs if pairs.index.equals(idx) else pairs.loc[idx]  # the same frame keeps its hashes memoised
    y_all = encode_preferred(rows["preferred"], idx)
    cl_all = cluster_ids(rows)
    dec = y_all != 0
    n_ties = int((~dec).sum())
    arr, ok, y, cl = arr_all[dec], ok_all[dec], y_all[dec].astype(int), cl_all[dec]
    sty = (style if style is not None else style_covariates(rows)).reindex(idx).to_numpy(float)[dec]
    ld = sty[:, 0]
    n = len(y)
    g = len(np.unique(cl)) if n else 0
    k = min(int(folds), g)
    empty_methods = pd.DataFrame(columns=["method", "accuracy", "ci_low", "ci_high", "auc", "auc_ci_low",
                                          "auc_ci_high", "n", "description"])
    if n < 4 or k < 2 or len(np.unique(y)) < 2:
        why = ("there are no decided (non-tie) judgements" if n == 0 else
               f"only {n} decided judgements" if n < 4 else
               f"the judgements come from only {g} prompt(s)" if k < 2 else
               "every decided judgement chose the same side")
        return CrossValResult(k, seed, n, n_ties, g, empty_methods,
                              pd.DataFrame(columns=["key", "times_selected", "train_strength",
                                                    "heldout_strength", "gap"]),
                              [], {}, f"No reconstruction is possible: {why}, so cross-validation cannot "
                              "hold out whole prompts. Add more judged pairs.")

    if step is not None:
        step("reconstruction: splitting the prompts into folds")
    fold_assign = prompt_folds(y, cl, k, seed)
    methods = list(METHOD_DESCRIPTIONS)
    score = {m: np.full(n, np.nan) for m in methods}
    pred = {m: np.zeros(n, dtype=int) for m in methods}
    sizes: list[int] = []
    sel_count = np.zeros(len(keys))
    tr_str = np.zeros((k, len(keys)))
    te_str = np.zeros((k, len(keys)))
    rand_correct = np.zeros(n)
    fold_of = np.zeros(n, dtype=int)
    rng = np.random.default_rng([seed, 3])
    for f in range(k):
        tr, te = np.flatnonzero(fold_assign != f), np.flatnonzero(fold_assign == f)
        if step is not None:
            step(f"reconstruction fold {f + 1} of {k}")
        ytr, yte = y[tr], y[te]
        fold_of[te] = f
        maj = 1 if (ytr == 1).sum() >= (ytr == -1).sum() else -1
        stats = _fold_stats(arr[tr], ok[tr], ytr, keys, principles)
        const = build_constitution(stats, principles=principles, **settings)
        sizes.append(len(const))
        pos = {c: i for i, c in enumerate(keys)}
        cpos = np.array([pos[e.key] for e in const], dtype=int)
        sgn = np.array([e.sign for e in const], dtype=int)
        for e in const:
            sel_count[pos[e.key]] += 1
        S = arr[:, cpos] * sgn if len(cpos) else np.zeros((n, 0))
        # constitution (logistic), + length, weighted majority
        score["constitution"][te] = _logit(S[tr], ytr, S[te])
        score["constitution_plus_length"][te] = _logit(np.column_stack([S[tr], ld[tr]]), ytr,
                                                       np.column_stack([S[te], ld[te]]))
        w = _log_odds(S[tr], ytr) if len(cpos) else np.zeros(0)
        score["constitution_weighted"][te] = S[te] @ w if len(cpos) else 0.0
        score["length_only"][te] = _logit(ld[tr, None], ytr, ld[te, None])
        score["style_only"][te] = _logit(sty[tr], ytr, sty[te])
        # best single principle (train strength, direction from train)
        s_train = stats["strength"].to_numpy(dtype=float)
        s_train = np.nan_to_num(s_train)
        if len(keys):
            j = int(np.argmax(np.abs(s_train)))
            score["best_single"][te] = arr[te, j] * (1 if s_train[j] >= 0 else -1)
        else:
            score["best_single"][te] = 0.0
        score["majority"][te] = 0.0
        for m in ("constitution_weighted", "best_single", "majority"):
            p = np.sign(score[m][te]).astype(int)
            p[p == 0] = maj
            pred[m][te] = p
        for m in ("constitution", "constitution_plus_length", "length_only", "style_only"):
            pred[m][te] = np.where(score[m][te] > 0.5, 1, np.where(score[m][te] < 0.5, -1, maj))
        # random constitutions of the same size
        kk = max(len(cpos), 1)
        rs = np.zeros(len(te))
        rc = np.zeros(len(te))
        for _ in range(n_random):
            pick = rng.choice(len(keys), size=min(kk, len(keys)), replace=False)
            wr = _log_odds(arr[tr][:, pick], ytr)
            sc = arr[te][:, pick] @ wr
            pr = np.sign(sc).astype(int)
            pr[pr == 0] = maj
            rs += sc / n_random
            rc += (pr == yte) / n_random
        score["random_constitution"][te] = rs
        rand_correct[te] = rc
        # per principle, strength in the direction chosen on train
        d_tr = np.where(s_train >= 0, 1, -1)
        te_stats = _fold_stats(arr[te], ok[te], yte, keys, principles)["strength"].to_numpy(dtype=float)
        tr_str[f] = np.abs(s_train)
        te_str[f] = np.nan_to_num(te_stats) * d_tr

    rows = []
    correct_of: dict[str, np.ndarray] = {}
    for m in methods:
        if step is not None:
            step(f"reconstruction: accuracy and AUC of {m}")
        correct = rand_correct if m == "random_constitution" else (pred[m] == y).astype(float)
        correct_of[m] = correct
        acc = clustered_mean(correct, cl, null=0.5, alpha=alpha, bounds=(0, 1))
        if m == "majority":
            auc, alo, ahi = 0.5, float("nan"), float("nan")
        else:
            auc, alo, ahi = _auc_with_ci(y, score[m], cl, n_boot, seed, alpha,
                                         check=(lambda: step("")) if step is not None else None)
        desc = METHOD_DESCRIPTIONS[m]
        if m.startswith("constitution") and max(sizes) == 0:
            desc += " (empty in every fold: falls back to the train majority)"
        rows.append({"method": m, "accuracy": acc.estimate, "ci_low": acc.ci_low, "ci_high": acc.ci_high,
                     "auc": auc, "auc_ci_low": alo, "auc_ci_high": ahi, "n": n, "description": desc})
    table = pd.DataFrame(rows)

    diff = clustered_mean(correct_of["constitution"] - correct_of["length_only"], cl, alpha=alpha)
    difference = {"points": 100 * diff.estimate, "ci": [100 * diff.ci_low, 100 * diff.ci_high],
                  "p_value": diff.p_value}
    per_principle = pd.DataFrame({
        "key": keys,
        "times_selected": sel_count.astype(int),
        "train_strength": tr_str.mean(axis=0),
        "heldout_strength": te_str.mean(axis=0),
    })
    per_principle["gap"] = per_principle["train_strength"] - per_principle["heldout_strength"]
    per_principle = per_principle.sort_values(["times_selected", "train_strength"], ascending=False,
                                              ignore_index=True)
    verdict = _verdict(table, sizes, difference, n, k, g)
    oof = pd.DataFrame({"fold": fold_of, "preferred": y} | {f"score_{m}": score[m] for m in methods}
                       | {f"pred_{m}": pred[m] for m in methods if m != "random_constitution"},
                       index=idx[dec])
    return CrossValResult(k, seed, n, n_ties, g, table, per_principle, sizes, difference, verdict, oof)


def _verdict(table: pd.DataFrame, sizes: list[int], diff: dict[str, Any], n: int, k: int, g: int) -> str:
    get = table.set_index("method")
    c, ln, mj = get.loc["constitution"], get.loc["length_only"], get.loc["majority"]
    where = f"of {n} held-out judgements ({k} folds, grouped by {g} prompts)"
    length_txt = f"length alone {_pct(ln.accuracy)}{_ci_txt(ln.ci_low, ln.ci_high)}"
    if max(sizes) == 0:
        return (f"No principle passed the selection rules in any training fold, so there is no constitution "
                f"to test; {length_txt} {where}, always choosing the majority label {_pct(mj.accuracy)}.")
    lo_k, hi_k = min(sizes), max(sizes)
    size = f"{lo_k}" if lo_k == hi_k else f"{lo_k}-{hi_k}"
    head = (f"The {size}-principle constitution (selected inside each training fold) reconstructs "
            f"{_pct(c.accuracy)}{_ci_txt(c.ci_low, c.ci_high)} {where}; {length_txt}: ")
    d, (dlo, dhi) = diff["points"], diff["ci"]
    dtxt = (f"{d:+.0f} points [{dlo:+.0f}, {dhi:+.0f}]" if np.isfinite(dlo) and np.isfinite(dhi)
            else f"{d:+.0f} points")
    if np.isfinite(dlo) and dlo > 0:
        body = f"it adds {dtxt}."
    elif np.isfinite(dhi) and dhi < 0:
        body = f"it does worse than length alone ({dtxt})."
    else:
        body = f"it does not beat length alone ({dtxt})."
    if c.accuracy <= mj.accuracy:
        body += f" It also does not beat always choosing the majority label ({_pct(mj.accuracy)})."
    return head + body
