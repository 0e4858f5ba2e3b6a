"""The judge report card: agreement between annotators, position bias, length/list bias, ties, self-preference.

AlpacaEval's judge table (agreement with human annotators, price, length bias...) generalised to any
uploaded file with an ``annotator`` column, and reproducible from the file alone. Every interval is
cluster-robust by prompt (`inference.cluster_ids`), because one prompt usually has several pairs.

Pairs are identified by their **content**, not by an id column: prompt plus the two texts, in either
order. Two rows with the same prompt and the same two texts are the same pair, even when A and B are
swapped; that is how a pair "shown in both orders" is detected (`swap_consistency`), and how
labels of two annotators are matched (`agreement`). Labels are compared as "which text was chosen"
(or tie), so a swapped presentation cannot look like a disagreement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from icai_core.inference import (
    ClusteredMean,
    _num,
    cluster_ids,
    clustered_mean,
    fit_logit,
    model_design,
    text_lengths,
)
from icai_core.stats import encode_preferred

__all__ = [
    "PositionBias",
    "pair_keys",
    "agreement",
    "agreement_table",
    "position_bias",
    "order_is_known",
    "swap_consistency",
    "self_preference",
    "prefer_more",
    "report_card",
]


# --------------------------------------------------------------------------------------------------
# Content keys
# --------------------------------------------------------------------------------------------------


def pair_keys(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(key, flipped)`` per row: an order-insensitive id of (prompt, {text_a, text_b}), and whether
    the row shows the two texts in the opposite of the canonical order (by content hash), hashed from
    the Arrow buffers (`inference.text_hashes`: no copy of a long text)."""
    n = len(pairs)
    if n == 0:
        return np.zeros(0, dtype=object), np.zeros(0, dtype=bool)
    from icai_core.inference import _mix, ordered_text_hashes, text_hashes

    hp = text_hashes(pairs["prompt"]) if "prompt" in pairs else text_hashes([""] * n)
    lo, hi, flipped = ordered_text_hashes(pairs)  # canonical order: the smaller content hash first
    return _mix(hp, lo, hi).astype(str).astype(object), flipped


def _canonical_labels(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(key, label) with label in {"first", "second", "tie"} of the canonical text order."""
    key, flipped = pair_keys(pairs)
    y = encode_preferred(pairs["preferred"], pairs.index)
    canon = np.where(flipped, -y, y)
    lab = np.select([canon == 1, canon == -1], ["first", "second"], "tie").astype(object)
    return key, lab


# --------------------------------------------------------------------------------------------------
# Agreement
# --------------------------------------------------------------------------------------------------


def agreement(pairs_a: pd.DataFrame, pairs_b: pd.DataFrame, *, alpha: float = 0.05) -> dict[str, Any]:
    """Agreement of two annotators on the pairs both judged, with a clustered CI and Cohen's kappa.

    Per shared pair, agreement is the probability that a random label of A equals a random label of
    B (1 or 0 when each judged the pair once; e.g. 2/3 when one of three MTurk votes differs from a
    single GPT-4 label). The headline is the mean over shared pairs (each distinct pair counts once),
    its interval is cluster-robust by prompt. Cohen's kappa uses the same pair-weighted label
    distribution: ``(p_o - p_e) / (1 - p_e)`` with ``p_e = sum_l pA(l) pB(l)``, labels a/b/tie in the
    orientation in which A first saw the pair; it equals
    ``sklearn.metrics.cohen_kappa_score`` on all label combinations weighted ``1/(nA nB)`` (tested).
    Ties are a third label. Keys: ``n_shared, agreement, ci, kappa, message``.
    """
    ka, la = _canonical_labels(pairs_a)
    kb, lb = _canonical_labels(pairs_b)
    labels = ["first", "second", "tie"]
    ca = pd.crosstab(pd.Series(ka, name="k"), pd.Series(la, name="l")).reindex(columns=labels, fill_value=0)
    cb = pd.crosstab(pd.Series(kb, name="k"), pd.Series(lb, name="l")).reindex(columns=labels, fill_value=0)
    shared = ca.index.intersection(cb.index)
    out: dict[str, Any] = {"n_shared": int(len(shared))}
    if len(shared) == 0:
        out.update(agreement=None, ci=[None, None], kappa=None,
                   message="the two annotators judged no pair in common, so agreement is undefined")
        return out
    pa = ca.loc[shared].to_numpy(dtype=float, copy=True)
    pb = cb.loc[shared].to_numpy(dtype=float, copy=True)
    pa /= pa.sum(axis=1, keepdims=True)
    pb /= pb.sum(axis=1, keepdims=True)
    per_pair = (pa * pb).sum(axis=1)
    # Kappa's chance term depends on which text is called "A": use the orientation in which annotator
    # A first saw each pair (for the usual file, where all annotators share one orientation, this is
    # Cohen's kappa of the a/b labels as written).
    first = pd.Series(np.arange(len(ka)), index=ka).groupby(level=0).first()
    _, flipped_a = pair_keys(pairs_a)
    flip = flipped_a[first.loc[shared].to_numpy()]
    pa[flip, :2] = pa[flip, 1::-1]
    pb[flip, :2] = pb[flip, 1::-1]
    cl_all = cluster_ids(pairs_a)
    cl = cl_all[first.loc[shared].to_numpy()]
    est = clustered_mean(per_pair, cl, null=0.0, alpha=alpha, bounds=(0.0, 1.0))
    p_o = float(per_pair.mean())
    p_e = float((pa.mean(axis=0) * pb.mean(axis=0)).sum())
    kappa = (p_o - p_e) / (1 - p_e) if p_e < 1 else None
    msg = est.message
    if kappa is None:
        msg = "both annotators gave one and the same label on every shared pair, so kappa is undefined"
    out.update(agreement=p_o, ci=est.ci, kappa=_num(kappa), message=msg)
    return out


def agreement_table(
    pairs: pd.DataFrame,
    *,
    reference: str | None = None,
    groups: dict[str, list[str]] | None = None,
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Agreement between annotators of one file: ``[{a, b, n_shared, agreement, ci, kappa, message}]``.

    With ``reference`` every annotator is compared with it; otherwise every pair of annotators.
    ``groups`` (name -> annotators) adds pooled sides, e.g. ``{"all GPT-4 runs": [...]}``; a pooled
    side's label distribution per pair is that of all its members' labels.
    """
    if "annotator" not in pairs:
        return []
    sides: dict[str, pd.DataFrame] = {
        str(a): d for a, d in pairs.groupby(pairs["annotator"].astype(str), sort=True)
    }
    for name, members in (groups or {}).items():
        sides[str(name)] = pairs[pairs["annotator"].astype(str).isin([str(m) for m in members])]
    names = list(sides)
    if reference is not None and str(reference) not in sides:
        raise ValueError(f"reference annotator {reference!r} is not in the file (annotators: {', '.join(names)})")
    if reference is not None:
        combos = [(str(reference), b) for b in names if b != str(reference)]
    else:
        combos = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    rows = []
    for a, b in combos:
        rows.append({"a": a, "b": b} | agreement(sides[a], sides[b], alpha=alpha))
    return rows


# --------------------------------------------------------------------------------------------------
# Position
# --------------------------------------------------------------------------------------------------


def _truthy(s: pd.Series) -> np.ndarray:
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "yes"]).to_numpy()


def order_is_known(pairs: pd.DataFrame) -> tuple[bool, str]:
    """Whether column order (A, B) can be taken as the order the annotator saw, and why.

    No: when a ``swapped`` column marks any row True (the file's orientation was randomised when it
    was made, so A is not "shown first"). Yes: when the same pair appears in both orders, or the same
    two models appear in both orders (a counterbalanced presentation design). Otherwise unknown (say
    so with ``order_known=True`` where the file keeps the shown order).
    """
    if "swapped" in pairs and _truthy(pairs["swapped"]).any():
        return False, ("the file marks some rows as swapped (A/B order was randomised when the file was made), "
                       "so A is not the response shown first")
    key, flipped = pair_keys(pairs)
    both = pd.Series(flipped).groupby(key).nunique()
    if (both > 1).any():
        return True, f"{int((both > 1).sum())} pairs appear in both orders"
    if "model_a" in pairs and "model_b" in pairs:
        ma = pairs["model_a"].fillna("").astype(str).to_numpy()
        mb = pairs["model_b"].fillna("").astype(str).to_numpy()
        known = (ma != "") & (mb != "") & (ma != mb)
        if known.any():
            ordered = set(zip(ma[known], mb[known], strict=True))
            n_both = sum(1 for x, y in ordered if (y, x) in ordered) // 2
            if n_both:
                return True, f"{n_both} model pairs appear in both orders (a counterbalanced design)"
    return False, ("presentation order unknown: no pair or model pair appears in both orders; "
                   "pass order_known=True if A is always the response shown first")


@dataclass
class PositionBias:
    """P(first) with a clustered CI, a model-controlled position test, and swap consistency.

    ``testable`` False means the file cannot tell position from content (``reason`` says why) and
    every number is None. ``p_first`` is the share of decided rows where A (shown first) won;
    ``p_value`` tests 0.5 (clustered). ``controlled_coef``/``controlled_p``: the intercept of a
    logistic with Bradley-Terry model terms (position bias beyond model quality), where models are
    known. ``significant`` uses the controlled test when available, else the raw one.
    ``swap_consistency``: see `swap_consistency` (None when no pair appears in both orders).
    """

    testable: bool
    reason: str
    p_first: float | None = None
    ci: tuple[float | None, float | None] = (None, None)
    p_value: float | None = None
    n: int = 0
    n_pairs: int = 0
    controlled_coef: float | None = None
    controlled_p: float | None = None
    significant: bool = False
    swap_consistency: float | None = None
    n_swapped_pairs: int = 0
    sentence: str = ""

    def to_summary(self) -> dict[str, Any]:
        return {
            "testable": bool(self.testable),
            "p_first": _num(self.p_first),
            "ci": [_num(self.ci[0]), _num(self.ci[1])],
            "p_value": _num(self.p_value),
            "controlled_p": _num(self.controlled_p),
            "significant": bool(self.significant),
            "swap_consistency": _num(self.swap_consistency),
            "n_swapped_pairs": int(self.n_swapped_pairs),
            "n_rows": int(self.n),
            "n_pairs": int(self.n_pairs),
            "basis": self.reason,
            "sentence": self.sentence,
        }


def swap_consistency(pairs: pd.DataFrame) -> tuple[float | None, int]:
    """Share of judgements that pick the same text when a pair is shown in the other order.

    For every pair shown in both orders, compare every judgement in one order with every judgement in
    the other (1 when both choose the same text, or both tie); average per pair, then over pairs.
    Returns ``(consistency, n_pairs_in_both_orders)``; ``(None, 0)`` when there are none.
    """
    key, flipped = pair_keys(pairs)
    _, lab = _canonical_labels(pairs)
    df = pd.DataFrame({"k": key, "f": flipped, "l": lab})
    both = df.groupby("k")["f"].nunique()
    keys = both.index[both > 1]
    if len(keys) == 0:
        return None, 0
    vals = []
    for _, d in df[df["k"].isin(keys)].groupby("k"):
        c1 = d.loc[~d["f"], "l"].value_counts(normalize=True)
        c2 = d.loc[d["f"], "l"].value_counts(normalize=True)
        vals.append(float((c1 * c2.reindex(c1.index, fill_value=0)).sum()))
    return float(np.mean(vals)), int(len(keys))


def position_bias(
    pairs: pd.DataFrame, *, order_known: bool | None = None, alpha: float = 0.05
) -> PositionBias:
    """Position bias of one annotator's rows (see `PositionBias`, `order_is_known`)."""
    if order_known is None:
        known, reason = order_is_known(pairs)
    else:
        known, reason = bool(order_known), ("presentation order stated by the caller" if order_known
                                             else "presentation order stated as unknown")
    cons, n_sw = swap_consistency(pairs)
    if not known:
        return PositionBias(False, reason,
                            sentence=f"Position bias is not testable: {reason}.")
    y = encode_preferred(pairs["preferred"], pairs.index)
    decided = y != 0
    cl = cluster_ids(pairs)
    key, _ = pair_keys(pairs)
    if not decided.any():
        return PositionBias(True, reason, swap_consistency=cons, n_swapped_pairs=n_sw,
                            sentence="Every judgement is a tie, so there is no first-position share to test.")
    est: ClusteredMean = clustered_mean((y[decided] == 1).astype(float), cl[decided], null=0.5, alpha=alpha,
                                        bounds=(0.0, 1.0))
    models = model_design(pairs)
    ctl_coef = ctl_p = None
    if models.shape[1]:
        X = np.column_stack([np.ones(len(pairs))] + [models[c].to_numpy() for c in models.columns])
        fit = fit_logit((y[decided] == 1).astype(float), X[decided], cl[decided],
                        ["position_first", *models.columns], alpha=alpha, required=("position_first",))
        if fit.ok:
            t = fit.term("position_first")
            ctl_coef, ctl_p = t["coef"], t["p_value"]
    test_p = ctl_p if ctl_p is not None else (est.p_value if np.isfinite(est.p_value) else None)
    significant = test_p is not None and test_p < alpha
    pct = f"{100 * est.estimate:.0f}%"
    ci = est.ci
    ci_txt = f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if None not in ci else ""
    verdict = (f"significant position bias (p = {test_p:.3g})" if significant
               else f"no significant position bias (p = {test_p:.2g})" if test_p is not None
               else "no test possible")
    sentence = f"Picks the first-shown response in {pct}{ci_txt} of {int(decided.sum())} decided judgements: {verdict}."
    if ctl_p is not None:
        sentence += " The test controls for which models were compared."
    if cons is not None:
        sentence += f" Shown in both orders, {100 * cons:.0f}% of judgements of {n_sw} pairs stay consistent."
    return PositionBias(
        testable=True,
        reason=reason,
        p_first=est.estimate,
        ci=(ci[0], ci[1]),
        p_value=_num(est.p_value),
        n=int(decided.sum()),
        n_pairs=int(pd.Series(key[decided]).nunique()),
        controlled_coef=ctl_coef,
        controlled_p=ctl_p,
        significant=bool(significant),
        swap_consistency=cons,
        n_swapped_pairs=n_sw,
        sentence=sentence,
    )


# --------------------------------------------------------------------------------------------------
# Biases towards a feature; self-preference
# --------------------------------------------------------------------------------------------------


def prefer_more(pairs: pd.DataFrame, fa: Any, fb: Any, *, alpha: float = 0.05) -> ClusteredMean:
    """Share of decided rows with ``fa != fb`` where the response with the larger value won.

    With character counts this is P(prefer longer); with list-item counts P(prefer more lists).
    Cluster-robust CI by prompt; ``p_value`` tests 0.5.
    """
    fa = np.asarray(fa, dtype=float)
    fb = np.asarray(fb, dtype=float)
    y = encode_preferred(pairs["preferred"], pairs.index)
    use = (y != 0) & (fa != fb) & ~np.isnan(fa) & ~np.isnan(fb)
    won = ((y == 1) & (fa > fb)) | ((y == -1) & (fb > fa))
    return clustered_mean(won[use].astype(float), cluster_ids(pairs)[use], null=0.5, alpha=alpha,
                          bounds=(0.0, 1.0))


def _norm_name(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(s).lower())


def own_model(annotator: str, models: list[str]) -> str | None:
    """The generating model this annotator is, by name (e.g. 'gpt-4 (PRD reviewer)' -> 'gpt4').

    Names are compared lower-case without punctuation; the longest model name (of 3+ characters)
    contained in the annotator's name wins. None when no model matches.
    """
    a = _norm_name(annotator)
    best = None
    for m in models:
        nm = _norm_name(m)
        if len(nm) >= 3 and nm in a and (best is None or len(nm) > len(_norm_name(best))):
            best = m
    return best


def self_preference(
    pairs: pd.DataFrame, annotator: str, *, model: str | None = None, alpha: float = 0.05
) -> dict[str, Any] | None:
    """P(the annotator picks its own model's response) where exactly one side is that model.

    None when the annotator is not (by name) one of the file's models. Keys ``model, rate, ci, n,
    p_value``; ``rate`` is over decided rows (ties excluded). ``model`` forces the model, e.g. to
    compute a reference annotator's rate for the same model (the baseline to read it against).
    """
    if "model_a" not in pairs or "model_b" not in pairs:
        return None
    ma = pairs["model_a"].fillna("").astype(str).to_numpy()
    mb = pairs["model_b"].fillna("").astype(str).to_numpy()
    models = sorted((set(ma) | set(mb)) - {""})
    m = model if model is not None else own_model(annotator, models)
    if m is None or m not in models:
        return None
    y = encode_preferred(pairs["preferred"], pairs.index)
    use = (y != 0) & ((ma == m) ^ (mb == m))
    own = ((y == 1) & (ma == m)) | ((y == -1) & (mb == m))
    est = clustered_mean(own[use].astype(float), cluster_ids(pairs)[use], null=0.5, alpha=alpha, bounds=(0, 1))
    return {"model": m, "rate": _num(est.estimate), "ci": est.ci, "n": est.n, "p_value": _num(est.p_value),
            "message": est.message}


def report_card(
    pairs: pd.DataFrame,
    *,
    reference: str | None = None,
    list_counts: tuple[Any, Any] | None = None,
    order_known: bool | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """One row per annotator: the judge table.

    Columns: ``annotator, n_rows, n_pairs, n_prompts, agreement, agreement_ci_low, agreement_ci_high,
    kappa, n_shared, p_prefer_longer, longer_ci_low, longer_ci_high, p_prefer_more_lists,
    lists_ci_low, lists_ci_high, position_testable, p_first, p_first_ci_low, p_first_ci_high,
    position_p, swap_consistency, tie_rate, self_model, self_preference, self_preference_reference``
    (the reference annotator's rate of choosing the same model on the same pairs). ``list_counts``: the
    list-item counts of text_a and text_b (e.g. ``judges.compute_features`` column
    ``n_list_items``); computed when omitted. Agreement columns are empty without ``reference``
    and for the reference itself.
    """
    if list_counts is None:
        from icai_core.judges import compute_features

        fa, fb = compute_features(pairs, names=("n_list_items",))
        list_counts = (fa["n_list_items"].to_numpy(), fb["n_list_items"].to_numpy())
    la_all, lb_all = (np.asarray(x, dtype=float) for x in list_counts)
    ann = pairs["annotator"].astype(str) if "annotator" in pairs else pd.Series(["(all rows)"] * len(pairs),
                                                                             index=pairs.index)
    if reference is not None and str(reference) not in set(ann):
        raise ValueError(f"reference annotator {reference!r} is not in the file")
    ref_rows = pairs[ann == str(reference)] if reference is not None else None
    rows = []
    pos_index = {ix: i for i, ix in enumerate(pairs.index)}
    for name in sorted(set(ann)):
        d = pairs[ann == name]
        loc = np.array([pos_index[i] for i in d.index], dtype=np.int64)
        key, _ = pair_keys(d)
        y = encode_preferred(d["preferred"], d.index)
        r: dict[str, Any] = {
            "annotator": name,
            "n_rows": int(len(d)),
            "n_pairs": int(pd.Series(key).nunique()),
            "n_prompts": int(d["prompt"].astype(str).nunique()),
        }
        if ref_rows is not None and name != str(reference):
            ag = agreement(d, ref_rows, alpha=alpha)
            r.update(agreement=ag["agreement"], agreement_ci_low=ag["ci"][0], agreement_ci_high=ag["ci"][1],
                     kappa=ag["kappa"], n_shared=ag["n_shared"])
        la, lb = text_lengths(d)
        lon = prefer_more(d, la, lb, alpha=alpha)
        lis = prefer_more(d, la_all[loc], lb_all[loc], alpha=alpha)
        pos = position_bias(d, order_known=order_known, alpha=alpha)
        tie = clustered_mean((y == 0).astype(float), cluster_ids(d), alpha=alpha, bounds=(0, 1))
        sp = self_preference(d, name, alpha=alpha)
        r.update(
            p_prefer_longer=lon.estimate, longer_ci_low=lon.ci_low, longer_ci_high=lon.ci_high,
            p_prefer_more_lists=lis.estimate, lists_ci_low=lis.ci_low, lists_ci_high=lis.ci_high,
            position_testable=pos.testable, p_first=pos.p_first, p_first_ci_low=pos.ci[0],
            p_first_ci_high=pos.ci[1], position_p=pos.controlled_p if pos.controlled_p is not None else pos.p_value,
            swap_consistency=pos.swap_consistency, tie_rate=tie.estimate,
            self_model=sp["model"] if sp else None, self_preference=sp["rate"] if sp else None,
        )
        if sp and ref_rows is not None and name != str(reference):
            on_same = ref_rows[pd.Series(pair_keys(ref_rows)[0], index=ref_rows.index).isin(set(key))]
            base = self_preference(on_same, str(reference), model=sp["model"], alpha=alpha)
            r["self_preference_reference"] = base["rate"] if base else None
        rows.append(r)
    cols = ["annotator", "n_rows", "n_pairs", "n_prompts", "agreement", "agreement_ci_low", "agreement_ci_high",
            "kappa", "n_shared", "p_prefer_longer", "longer_ci_low", "longer_ci_high", "p_prefer_more_lists",
            "lists_ci_low", "lists_ci_high", "position_testable", "p_first", "p_first_ci_low", "p_first_ci_high",
            "position_p", "swap_consistency", "tie_rate", "self_model", "self_preference",
            "self_preference_reference"]
    return pd.DataFrame(rows).reindex(columns=cols)

