"""Reconstruct an annotator's preferences from a constitution, on held-out pairs.

This is ICAI's validation (Findeis et al., 2024): a constitution is good when its principles let us
predict the original annotations. Here the principles' votes come from the vote matrix (no LLM call),
and the constitution is combined by a few transparent methods, all fitted on the TRAIN split only and
scored on the TEST split against simple baselines. Agreement excludes tied test labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from icai_core.constitution import Constitution, build_constitution
from icai_core.stats import encode_preferred, principle_stats, votes_array, wilson_ci

RESULT_COLUMNS = ["method", "agreement", "ci_low", "ci_high", "n_test", "n_correct", "description"]
METHODS = [
    "logistic_regression",
    "weighted_majority",
    "best_single_principle",
    "random_constitution",
    "majority_class",
    "random_guess",
]
_LABEL = {1: "a", -1: "b"}
BASELINES = ("best_single_principle", "random_constitution", "majority_class", "random_guess")


def strongest_baseline(table: pd.DataFrame) -> tuple[str, float] | None:
    """(method, agreement) of the baseline that agrees best with the held-out choices in a `reconstruct`
    table, the constitution's own methods left out; None when the table has none. A headline compares
    the constitution with this one: against the majority class alone, a constitution that length
    (the best single principle on most judges) beats would still look like a gain."""
    if table is None or not len(table):
        return None
    t = table[table["method"].isin(BASELINES)]
    agreement = pd.to_numeric(t["agreement"], errors="coerce")
    if agreement.notna().sum() == 0:
        return None
    best = agreement.idxmax()
    return str(t.loc[best, "method"]), float(agreement[best])


def constitution_vs_baseline(table: pd.DataFrame) -> tuple[float, str, float] | None:
    """(the constitution's held-out agreement (logistic regression), the strongest baseline's method, its
    agreement), or None when the table lacks either: what Home, the Constitution page and the report's
    fallback verdict compare."""
    base = strongest_baseline(table)
    if base is None:
        return None
    own = table.loc[table["method"] == "logistic_regression", "agreement"]
    return (float(own.iloc[0]), *base) if len(own) else None


def content_groups(pairs: pd.DataFrame) -> np.ndarray:
    """One id per distinct (prompt, text_a, text_b): rows that judge the same pair (several annotators,
    repeated runs) share an id, so a split can keep them on the same side."""
    cols = [c for c in ("prompt", "text_a", "text_b") if c in pairs.columns]
    return pd.util.hash_pandas_object(pairs[cols].astype(str), index=False).to_numpy()


def split_train_test(
    preferred: Any, test_size: float = 0.3, seed: int = 0, stratify: bool = True, groups: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split into sorted positional index arrays ``(train_index, test_index)``.

    With ``stratify`` each label ("a", "b", "tie") is split separately in the proportion
    ``test_size`` (largest-remainder rounding so the test split has ``round(test_size * n)`` rows), so
    ties land in both splits proportionally. The same ``seed`` gives the same split.

    ``groups`` (one id per row, e.g. ``content_groups(pairs)``): rows of one group always land on the
    same side, so the same pair judged by several annotators cannot be both trained and tested on.
    Groups are then split like rows (stratified on each group's first label), which makes the test
    share approximate. Without repeated ids this is exactly the ungrouped split.
    """
    if not 0 < test_size < 1:
        raise ValueError("test_size must be a fraction in (0, 1)")
    if groups is not None:
        codes = pd.factorize(pd.Series(np.asarray(groups)))[0]
        if len(np.unique(codes)) < len(codes):
            y_rows = encode_preferred(preferred)
            _, first = np.unique(codes, return_index=True)
            g_train, g_test = split_train_test(y_rows[first], test_size, seed, stratify)
            test_mask = np.isin(codes, g_test)
            return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    y = encode_preferred(preferred)
    n = len(y)
    rng = np.random.default_rng(seed)
    n_test_total = int(round(test_size * n))
    if n >= 2:
        n_test_total = min(max(n_test_total, 1), n - 1)
    if not stratify:
        perm = rng.permutation(n)
        return np.sort(perm[n_test_total:]), np.sort(perm[:n_test_total])

    groups = [np.flatnonzero(y == label) for label in (1, -1, 0)]
    sizes = np.array([len(g) for g in groups], dtype=float)
    quota = sizes * n_test_total / n if n else sizes * 0
    alloc = np.floor(quota).astype(int)
    remainder = n_test_total - int(alloc.sum())
    for i in np.argsort(-(quota - alloc), kind="mergesort")[:remainder]:
        alloc[i] += 1
    test_parts, train_parts = [], []
    for g, k in zip(groups, alloc, strict=True):
        perm = rng.permutation(g)
        test_parts.append(perm[:k])
        train_parts.append(perm[k:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))


def _signs_of(constitution: Any) -> dict[str, int]:
    """Constitution | {key: ±1} | [key, ...] | [(key, ±1), ...] -> ordered {key: ±1}."""
    if constitution is None:
        return {}
    if isinstance(constitution, Constitution):
        return constitution.signs
    if isinstance(constitution, Mapping):
        items = list(constitution.items())
    else:
        items = [(c, 1) if isinstance(c, str) else tuple(c) for c in constitution]
    out: dict[str, int] = {}
    for key, sign in items:
        if sign not in (1, -1):
            raise ValueError(f"sign of principle {key!r} must be +1 or -1, got {sign!r}")
        out[str(key)] = int(sign)
    return out


@dataclass
class ReconstructionResult:
    """Agreement of each method with the held-out labels.

    ``table`` has columns ``method, agreement, ci_low, ci_high, n_test, n_correct, description``.
    ``predictions`` holds, per non-tie test pair (indexed like the votes), the true label and each
    method's predicted label ("a"/"b"); random_constitution is omitted (it is an average of draws).
    """

    table: pd.DataFrame
    n_train: int
    n_train_ties: int
    n_test: int
    n_test_ties: int
    train_index: np.ndarray
    test_index: np.ndarray
    constitution_signs: dict[str, int]
    majority_label: str
    best_principle: str | None
    weights: pd.Series
    logistic_coef: pd.Series | None
    predictions: pd.DataFrame
    random_constitution_agreements: list[float] = field(default_factory=list)

    def agreement(self, method: str) -> float:
        row = self.table.loc[self.table["method"] == method, "agreement"]
        if row.empty:
            raise KeyError(method)
        return float(row.iloc[0])


def _log_odds_weights(signed_train: np.ndarray, y_train: np.ndarray) -> np.ndarray:
    """Laplace-smoothed log-odds of each column's train accuracy: log((agree + 1) / (disagree + 1))."""
    prod = signed_train * y_train[:, None]
    agree = np.count_nonzero(prod == 1, axis=0)
    disagree = np.count_nonzero(prod == -1, axis=0)
    return np.log((agree + 1.0) / (disagree + 1.0))


def _weighted_vote(signed: np.ndarray, weights: np.ndarray, fallback: int) -> np.ndarray:
    score = signed.astype(float) @ weights if signed.shape[1] else np.zeros(len(signed))
    pred = np.sign(score).astype(np.int8)
    pred[pred == 0] = fallback
    return pred


def _row(method: str, correct: int, n_test: int, alpha: float, description: str) -> dict[str, Any]:
    lo, hi = wilson_ci(correct, n_test, alpha)
    return {
        "method": method,
        "agreement": correct / n_test if n_test else float("nan"),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n_test": n_test,
        "n_correct": int(correct),
        "description": description,
    }


def evaluate(
    votes: pd.DataFrame,
    preferred: Any,
    constitution: Any = None,
    *,
    train_index: Any = None,
    test_index: Any = None,
    test_size: float = 0.3,
    seed: int = 0,
    n_random: int = 20,
    alpha: float = 0.05,
) -> ReconstructionResult:
    """Fit each reconstruction method on the train pairs and score it on the test pairs.

    ``constitution``: a ``Constitution``, ``{key: ±1}``, a list of keys (sign +1) or of ``(key, ±1)``.
    ``train_index``/``test_index`` are positional; when both are omitted the pairs are split with
    ``split_train_test(preferred, test_size, seed)``. Only train labels are used for fitting.
    """
    arr = votes_array(votes)
    y = encode_preferred(preferred, votes.index)
    if train_index is None and test_index is None:
        train_index, test_index = split_train_test(y, test_size=test_size, seed=seed)
    elif train_index is None or test_index is None:
        raise ValueError("give both train_index and test_index, or neither")
    train_index = np.asarray(train_index, dtype=np.int64)
    test_index = np.asarray(test_index, dtype=np.int64)
    if np.intersect1d(train_index, test_index).size:
        raise ValueError("train_index and test_index overlap: the evaluation would leak test labels")

    signs = _signs_of(constitution)
    columns = [str(c) for c in votes.columns]
    col_pos = {c: i for i, c in enumerate(columns)}
    missing = [k for k in signs if k not in col_pos]
    if missing:
        raise KeyError(f"votes have no column for constitution principle(s): {missing}")
    keys = list(signs)
    cpos = np.array([col_pos[k] for k in keys], dtype=np.int64)
    sign_arr = np.array([signs[k] for k in keys], dtype=np.int8)

    tr = train_index[y[train_index] != 0]
    te = test_index[y[test_index] != 0]
    n_train_ties = int(len(train_index) - len(tr))
    n_test_ties = int(len(test_index) - len(te))
    y_tr, y_te = y[tr].astype(np.int8), y[te].astype(np.int8)
    n_test = len(te)

    n_a, n_b = int((y_tr == 1).sum()), int((y_tr == -1).sum())
    majority = 1 if n_a >= n_b else -1
    maj_label = _LABEL[majority]
    signed = arr[:, cpos] * sign_arr if len(keys) else np.zeros((len(arr), 0), dtype=np.int8)
    s_tr, s_te = signed[tr], signed[te]

    rows: list[dict[str, Any]] = []
    preds: dict[str, np.ndarray] = {}
    ties_note = f"; {n_test_ties} tied test pairs excluded" if n_test_ties else ""

    # logistic regression over the signed votes
    coef: pd.Series | None = None
    if len(keys) and n_a > 0 and n_b > 0:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(max_iter=1000)
        model.fit(s_tr.astype(float), y_tr)
        pred = model.predict(s_te.astype(float)).astype(np.int8) if n_test else np.zeros(0, np.int8)
        coef = pd.Series(model.coef_[0], index=keys, name="coef")
        desc = (
            f"L2 logistic regression (C=1, with intercept) on the {len(keys)} constitution principles' "
            f"signed votes, fit on {len(tr)} train pairs"
        )
    else:
        pred = np.full(n_test, majority, dtype=np.int8)
        desc = "no constitution principles or a single train class: falls back to the train majority class"
    preds["logistic_regression"] = pred
    rows.append(_row("logistic_regression", int((pred == y_te).sum()), n_test, alpha, desc + ties_note))

    # weighted majority vote
    weights = _log_odds_weights(s_tr, y_tr) if len(keys) else np.zeros(0)
    pred = _weighted_vote(s_te, weights, majority)
    preds["weighted_majority"] = pred
    rows.append(
        _row(
            "weighted_majority",
            int((pred == y_te).sum()),
            n_test,
            alpha,
            f"sum of the {len(keys)} signed votes weighted by train log-odds log((agree+1)/(disagree+1)); "
            f"zero sum -> train majority '{maj_label}'" + ties_note,
        )
    )

    # best single principle (highest train strength)
    if len(keys):
        cand, cand_signed_tr, cand_signed_te = keys, s_tr, s_te
    else:
        all_tr = arr[tr]
        raw = (all_tr * y_tr[:, None]).sum(axis=0)
        sgn = np.where(raw < 0, -1, 1).astype(np.int8)
        cand, cand_signed_tr, cand_signed_te = columns, all_tr * sgn, arr[te] * sgn
    best: str | None = None
    if len(cand) and len(tr):
        train_strength = (cand_signed_tr * y_tr[:, None]).sum(axis=0) / len(tr)
        j = int(np.argmax(train_strength))
        best = cand[j]
        pred = cand_signed_te[:, j].astype(np.int8).copy()
        pred[pred == 0] = majority
        desc = (
            f"'{best}' alone (highest train strength {train_strength[j]:+.3f}"
            f"{', inverted' if len(keys) and signs[best] < 0 else ''}); not relevant -> train majority"
        )
    else:
        pred = np.full(n_test, majority, dtype=np.int8)
        desc = "no principles: train majority class"
    preds["best_single_principle"] = pred
    rows.append(_row("best_single_principle", int((pred == y_te).sum()), n_test, alpha, desc + ties_note))

    # random constitutions of the same size, same weighted majority
    agreements: list[float] = []
    k = len(keys)
    if k and n_test and n_random > 0:
        rng = np.random.default_rng([seed, 1])
        for _ in range(n_random):
            pick = rng.choice(len(columns), size=min(k, len(columns)), replace=False)
            w = _log_odds_weights(arr[tr][:, pick], y_tr)
            p = _weighted_vote(arr[te][:, pick], w, majority)
            agreements.append(float((p == y_te).mean()))
        mean = float(np.mean(agreements))
        if len(agreements) > 1:
            half = float(sps.t.ppf(1 - alpha / 2, len(agreements) - 1)) * float(
                np.std(agreements, ddof=1) / math.sqrt(len(agreements))
            )
        else:
            half = float("nan")
        rows.append(
            {
                "method": "random_constitution",
                "agreement": mean,
                "ci_low": max(0.0, mean - half),
                "ci_high": min(1.0, mean + half),
                "n_test": n_test,
                "n_correct": int(round(mean * n_test)),
                "description": (
                    f"mean over {len(agreements)} seeded draws of {k} of the {len(columns)} principles, "
                    f"weighted majority; CI is the t interval of the mean across draws, "
                    f"n_correct is the rounded mean" + ties_note
                ),
            }
        )
    else:
        rows.append(
            {
                "method": "random_constitution",
                "agreement": float("nan"),
                "ci_low": float("nan"),
                "ci_high": float("nan"),
                "n_test": n_test,
                "n_correct": 0,
                "description": "not computed: empty constitution or no test pairs" + ties_note,
            }
        )

    # majority class (= reconstruction without any constitution)
    pred = np.full(n_test, majority, dtype=np.int8)
    preds["majority_class"] = pred
    rows.append(
        _row(
            "majority_class",
            int((pred == y_te).sum()),
            n_test,
            alpha,
            f"always the train majority '{maj_label}' ({n_a} a / {n_b} b in train): no constitution"
            + ties_note,
        )
    )

    # random guess
    coin = np.random.default_rng([seed, 2]).choice(np.array([1, -1], dtype=np.int8), size=n_test)
    preds["random_guess"] = coin
    rows.append(
        _row(
            "random_guess",
            int((coin == y_te).sum()),
            n_test,
            alpha,
            "seeded fair coin (expected 50%); realised agreement" + ties_note,
        )
    )

    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    table["n_test"] = table["n_test"].astype(np.int64)
    table["n_correct"] = table["n_correct"].astype(np.int64)
    pred_frame = pd.DataFrame(
        {"preferred": [_LABEL[int(v)] for v in y_te]}
        | {m: [_LABEL[int(v)] for v in p] for m, p in preds.items()},
        index=votes.index[te],
    )
    return ReconstructionResult(
        table=table,
        n_train=int(len(tr)),
        n_train_ties=n_train_ties,
        n_test=n_test,
        n_test_ties=n_test_ties,
        train_index=train_index,
        test_index=test_index,
        constitution_signs=signs,
        majority_label=maj_label,
        best_principle=best,
        weights=pd.Series(weights, index=keys, name="weight", dtype=float),
        logistic_coef=coef,
        predictions=pred_frame,
        random_constitution_agreements=agreements,
    )


def audit_split(
    votes: pd.DataFrame,
    preferred: Any,
    principles: Any = None,
    *,
    test_size: float = 0.3,
    seed: int = 0,
    stratify: bool = True,
    train_index: Any = None,
    test_index: Any = None,
    alpha: float = 0.05,
    min_relevance: float = 0.05,
    min_abs_strength: float = 0.02,
    max_size: int | None = 10,
    require_significant: bool = True,
    n_random: int = 20,
) -> tuple[pd.DataFrame, Constitution, ReconstructionResult]:
    """Split, compute statistics and select the constitution on TRAIN only, evaluate on TEST.

    Returns ``(train_stats, constitution, result)``. Test labels are used only for scoring. The split
    is ``split_train_test(preferred, test_size, seed, stratify)`` unless both positional
    ``train_index`` and ``test_index`` are given (e.g. a split that keeps all annotators of one
    ``pair_id`` on the same side).
    """
    y = encode_preferred(preferred, votes.index)
    if train_index is None and test_index is None:
        train_index, test_index = split_train_test(y, test_size=test_size, seed=seed, stratify=stratify)
    elif train_index is None or test_index is None:
        raise ValueError("give both train_index and test_index, or neither")
    train_index = np.asarray(train_index, dtype=np.int64)
    test_index = np.asarray(test_index, dtype=np.int64)
    train_votes = votes.iloc[train_index]
    train_stats = principle_stats(train_votes, y[train_index], principles, alpha)
    constitution = build_constitution(
        train_stats,
        min_relevance=min_relevance,
        min_abs_strength=min_abs_strength,
        alpha=alpha,
        max_size=max_size,
        require_significant=require_significant,
        principles=principles,
    )
    constitution.settings.update({"test_size": test_size, "seed": seed, "selected_on": "train"})
    result = evaluate(
        votes,
        y,
        constitution,
        train_index=train_index,
        test_index=test_index,
        seed=seed,
        n_random=n_random,
        alpha=alpha,
    )
    return train_stats, constitution, result
