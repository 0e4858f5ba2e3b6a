"""Evidence for ONE annotator, in one call, and the machine-readable summary of issue 9.

The annotator is the unit of an audit: a file where several annotators judged the same pairs is
audited per annotator (`audit_annotators`), each with its own statistics, constitution and
reconstruction. `audit_annotator` runs, for one annotator's rows:

* `inference.controlled_effects`: every principle's marginal strength (clustered CI, BH q) next to
  its length-controlled logistic effect, and the ``proxy_for_length`` flag;
* `inference.style_control`: one multivariate model over all principles plus length;
* `inference.length_view`: P(prefer longer), the binned length curve, LC win rates per model;
* `reportcard.position_bias`, `reportcard.prefer_more` (lists), the tie rate, self-preference;
* `crossval.cross_validate`: prompt-grouped k-fold reconstruction with its verdict.

`AnnotatorEvidence.to_summary()` is exactly the per-annotator object of ``summary.json``;
`agreement_summary` gives its top-level ``agreement`` list and `build_summary` the whole file.
Every number a user sees is either a finite number or ``None`` with a sentence saying why; counts
are distinct pairs and prompts, never rows (rows are reported separately as ``n_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from icai_core.crossval import CrossValResult, cross_validate, style_covariates
from icai_core.inference import (
    ClusteredMean,
    LengthView,
    StyleControl,
    _num,
    cluster_ids,
    clustered_mean,
    controlled_effects,
    length_view,
    memoised_text_hashes,
    style_control,
)
from icai_core.reportcard import (
    PositionBias,
    agreement_table,
    pair_keys,
    position_bias,
    prefer_more,
    self_preference,
)
from icai_core.stats import encode_preferred, resolve_principles

__all__ = [
    "BINOMIAL",
    "CLUSTERED",
    "SINGLE_ANNOTATOR",
    "AnnotatorEvidence",
    "audit_annotator",
    "audit_annotators",
    "agreement_summary",
    "build_summary",
    "clustered_stats",
    "evidence_effects",
    "presented_stats",
    "step_plan",
    "steps_of",
]

SINGLE_ANNOTATOR = "all"  # the key of the one entry of a file without an annotator column

# Which inference made a principle table's intervals and q-values (``attrs["inference"]`` of the frames
# `clustered_stats` / `presented_stats` return; the app's column labels and the report's headers say it).
CLUSTERED = "clustered by prompt"
BINOMIAL = "binomial, not clustered"


def _pct_ci(est: ClusteredMean) -> str:
    ci = est.ci
    txt = f"{100 * est.estimate:.0f}%"
    if None not in ci:
        txt += f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"
    return txt


def _p(p: float) -> str:
    return f"p = {p:.2g}" if p >= 0.001 else "p < 0.001"


def _share_sentence(est: ClusteredMean, what: str, of: str, empty: str) -> str:
    if est.n == 0:
        return empty
    s = f"{what} in {_pct_ci(est)} of {est.n} {of}"
    if np.isfinite(est.p_value):
        s += f" ({_p(est.p_value)} against 50%)"
    elif est.message:
        s += f" ({est.message})"
    return s + "."


@dataclass
class AnnotatorEvidence:
    """Everything issue 9 asks to report about one annotator (see the module docstring)."""

    annotator: str
    n_rows: int
    n_pairs: int
    n_prompts: int
    n_ties: int
    tie_rate: ClusteredMean
    effects: pd.DataFrame
    style: StyleControl
    length: LengthView
    more_lists: ClusteredMean | None
    position: PositionBias
    reconstruction: CrossValResult
    self_preference: dict[str, Any] | None
    texts: dict[str, str] = field(default_factory=dict)
    alpha: float = 0.05

    # ---- sentences -----------------------------------------------------------------------------
    def sentences(self) -> dict[str, str]:
        """Plain-language statements of every headline number (no 'nan' ever)."""
        lv = self.length
        out = {
            "length": _share_sentence(lv.prefer_longer, "Prefers the longer response",
                                      "decided judgements with unequal lengths",
                                      "No decided judgement compares responses of unequal length, so length "
                                      "preference cannot be measured."),
            "ties": ("There are no judgements." if not self.n_rows else
                     f"No ties among {self.n_rows} judgements." if self.n_ties == 0 else
                     f"Every one of the {self.n_rows} judgements is a tie." if self.n_ties == self.n_rows else
                     f"Ties: {self.n_ties} of {self.n_rows} judgements ({_pct_ci(self.tie_rate)})."),
            "position": self.position.sentence,
            "reconstruction": self.reconstruction.verdict,
        }
        if self.more_lists is not None:
            out["lists"] = _share_sentence(self.more_lists, "Prefers the response with more list items",
                                           "decided judgements where the list counts differ",
                                           "No decided judgement compares responses with different numbers "
                                           "of list items.")
        if lv.length_fit.ok:
            t = lv.length_fit.term("length")
            out["length_coef"] = (f"Log-odds of choosing A rise by {t['coef']:.2f} [{t['ci_low']:.2f}, "
                                  f"{t['ci_high']:.2f}] per unit of (len_a-len_b)/(len_a+len_b) ({_p(t['p_value'])}).")
        else:
            out["length_coef"] = f"No length coefficient: {lv.length_fit.message}."
        proxies = self.effects.loc[self.effects["proxy_for_length"], "key"].tolist()
        out["proxies"] = (f"Significant alone but not once length is controlled (proxies for length): "
                          f"{', '.join(proxies)}." if proxies else
                          "No principle is significant alone and explained away by length.")
        if not self.style.ok:
            out["style_control"] = f"The joint style-control model could not be fitted: {self.style.message}."
        elif self.style.separated:
            out["style_control"] = ("Left out of the joint style-control model because they (almost) perfectly "
                                    f"predict the few choices where they apply: {', '.join(self.style.separated)}.")
        if self.self_preference is not None:
            sp = self.self_preference
            if sp["rate"] is None:
                out["self_preference"] = (f"Self-preference for {sp['model']}: no decided judgement compares "
                                          f"{sp['model']} with another model.")
            else:
                out["self_preference"] = (f"Chooses its own model ({sp['model']}) in {100 * sp['rate']:.0f}% of "
                                          f"{sp['n']} decided judgements against another model. This share mixes "
                                          "any self-preference with the models' difference in quality: a better "
                                          "model is chosen more often by any judge.")
        return out

    # ---- summary.json ----------------------------------------------------------------------------
    def principles_summary(self) -> list[dict[str, Any]]:
        rows = []
        for r in self.effects.itertuples(index=False):
            rows.append({
                "key": r.key,
                "text": self.texts.get(r.key, r.key),
                "n": int(r.n),
                "marginal": {"strength": _num(r.strength), "ci": [_num(r.strength_ci_low), _num(r.strength_ci_high)],
                             "p": _num(r.marginal_p), "q": _num(r.marginal_q)},
                "controlled": {"effect": _num(r.effect), "ci": [_num(r.effect_ci_low), _num(r.effect_ci_high)],
                               "p": _num(r.effect_p), "q": _num(r.effect_q), "status": r.status,
                               "message": r.message or ""},
                "proxy_for_length": bool(r.proxy_for_length),
            })
        return rows

    def to_summary(self) -> dict[str, Any]:
        """The per-annotator object of ``summary.json`` (issue 9), JSON-serialisable, NaN-free."""
        lv = self.length
        lt = lv.length_fit.term("length")
        style_terms = [
            {"term": r.term, "coef": _num(r.coef), "ci": [_num(r.ci_low), _num(r.ci_high)], "p": _num(r.p_value),
             "q": _num(r.q_value)}
            for r in self.style.table.itertuples(index=False)
        ]
        return {
            "n_pairs": int(self.n_pairs),
            "n_prompts": int(self.n_prompts),
            "n_rows": int(self.n_rows),
            "tie_rate": _num(self.tie_rate.estimate),
            "tie_rate_ci": self.tie_rate.ci,
            "principles": self.principles_summary(),
            "style_control": {"ok": bool(self.style.ok), "message": self.style.message,
                              "dropped": list(self.style.fit.dropped), "separated": list(self.style.separated),
                              "terms": style_terms},
            "length": {
                "p_prefer_longer": _num(lv.prefer_longer.estimate),
                "ci": lv.prefer_longer.ci,
                "p_value": _num(lv.prefer_longer.p_value),
                "n": int(lv.prefer_longer.n),
                "coef": _num(lt["coef"]),
                "coef_ci": [_num(lt["ci_low"]), _num(lt["ci_high"])],
                "coef_p": _num(lt["p_value"]),
                "bins": [{"bin": b.bin, "n": int(b.n), "p_choose_a": _num(b.p_choose_a),
                          "ci": [_num(b.ci_low), _num(b.ci_high)]} for b in lv.bins.itertuples(index=False)],
                "lc_win_rates": [{"model": w.model, "n_battles": int(w.n_battles), "win_rate": _num(w.win_rate),
                                  "lc_win_rate": _num(w.lc_win_rate)} for w in lv.lc_win_rates.itertuples(index=False)],
            },
            "lists": None if self.more_lists is None else {
                "p_prefer_more_lists": _num(self.more_lists.estimate), "ci": self.more_lists.ci,
                "n": int(self.more_lists.n)},
            "position": self.position.to_summary(),
            "self_preference": self.self_preference,
            "reconstruction": self.reconstruction.to_summary(),
            "sentences": self.sentences(),
        }


# The text features the evidence reads (list items for the report card, the Arena style covariates).
EVIDENCE_FEATURES = ("n_list_items", "n_markdown_emphasis")


def _features_for(pairs: pd.DataFrame, features: tuple[pd.DataFrame, pd.DataFrame] | None):
    if features is not None:
        fa, fb = features
        return fa.loc[pairs.index], fb.loc[pairs.index]
    from icai_core.judges import compute_features

    return compute_features(pairs, names=EVIDENCE_FEATURES)


@memoised_text_hashes()  # its parts hash the same text columns ~24 times
def audit_annotator(
    pairs: pd.DataFrame,
    votes: pd.DataFrame,
    *,
    annotator: str | None = None,
    valid: pd.DataFrame | None = None,
    principles: Any = None,
    order_known: bool | None = None,
    folds: int = 5,
    seed: int = 0,
    alpha: float = 0.05,
    constitution_settings: dict[str, Any] | None = None,
    features: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    n_random: int = 10,
    n_boot: int = 200,
    step: Any = None,
) -> AnnotatorEvidence:
    """All evidence for one annotator's rows.

    ``pairs``: this annotator's rows of the canonical pair table; ``votes`` (and ``valid``) may cover
    more rows and are aligned on ``pairs.index``. ``features``: `judges.compute_features` output for
    (at least) these rows, computed when omitted. ``order_known``: None infers it
    (`reportcard.order_is_known`). ``constitution_settings``: `build_constitution` keywords.
    ``step(message)``: called between the parts (and inside the per-principle fits and the folds),
    so a caller can check its cancel token and move its progress bar; `steps_of` counts the calls
    with a message (an empty message, from inside a bootstrap, asks for the cancel check only).
    """
    tick = step if step is not None else (lambda message: None)
    idx = pairs.index
    if not idx.isin(votes.index).all():
        raise ValueError("votes must have a row for every row of pairs (same index)")
    v = votes.loc[idx]
    ok = valid.loc[idx] if valid is not None else None
    name = annotator if annotator is not None else (
        str(pairs["annotator"].iloc[0]) if "annotator" in pairs and len(pairs) and
        pairs["annotator"].nunique() == 1 else SINGLE_ANNOTATOR)
    y = encode_preferred(pairs["preferred"], idx)
    cl = cluster_ids(pairs)
    key, _ = pair_keys(pairs)
    fa, fb = _features_for(pairs, features)
    known = order_known
    if known is None:
        from icai_core.reportcard import order_is_known

        known = order_is_known(pairs)[0]
    effects = controlled_effects(v, pairs, clusters=cl, valid=ok, order_known=known, alpha=alpha, step=tick)
    style = style_control(v, pairs, clusters=cl, valid=ok, order_known=known, alpha=alpha, step=tick)
    tick("length, list and position views")
    lv = length_view(pairs, clusters=cl, alpha=alpha)
    lists = prefer_more(pairs, fa["n_list_items"].to_numpy(), fb["n_list_items"].to_numpy(), alpha=alpha)
    pos = position_bias(pairs, order_known=order_known, alpha=alpha)
    tie = clustered_mean((y == 0).astype(float), cl, alpha=alpha, bounds=(0.0, 1.0))
    recon = cross_validate(v, pairs, valid=ok, principles=principles, folds=folds, seed=seed, alpha=alpha,
                           constitution_settings=constitution_settings,
                           style=style_covariates(pairs, (fa, fb)), n_random=n_random, n_boot=n_boot, step=tick)
    texts = {k: t.text for k, t in resolve_principles(principles).items()}
    return AnnotatorEvidence(
        annotator=name,
        n_rows=int(len(pairs)),
        n_pairs=int(pd.Series(key).nunique()),
        n_prompts=int(pd.Series(cl).nunique()),
        n_ties=int((y == 0).sum()),
        tie_rate=tie,
        effects=effects,
        style=style,
        length=lv,
        more_lists=lists,
        position=pos,
        reconstruction=recon,
        self_preference=self_preference(pairs, name, alpha=alpha),
        texts=texts,
        alpha=alpha,
    )


# What each piece of `audit_annotator` costs, in seconds per 1,000 rows, measured 2 December 2026
# (seventh session; 31 principles, 5 folds, alone on the idle 2-core Zen 4, at 20,000 and 100,000
# distinct pairs: `bench/evidence_steps.py`). Per 1,000 rows, 20k / 100k: start (the controlled
# effects' shared set-up, before the first principle's fit) 0.023 / 0.029-0.034, principle 0.0023 /
# 0.0012, style control per principle 0.00045 / 0.00025, views 0.036 / 0.045-0.050, split 0.012 /
# 0.0032-0.0037, fold 0.0036 / 0.0017, method 0.017 / 0.014 (from 0.0001 for the majority to 0.029
# for the random constitutions; their mean; 0.0048 since the bootstrap ranks the scores once). The
# earlier weights (principle 0.010, style 0.006 per principle, views 0.11, measured before the
# per-principle fits got faster) made the bar jump through
# the principles and then crawl through the reconstruction: in the app at 100k pairs the time left
# read 4 s with 15 s to go. A piece starts at one `step` call and ends at the next. Only the ratios
# matter within a stage (`step_plan`); the text features (`stages_offline`) are in the same units.
STEP_COST_PER_1000_ROWS = {
    "start": 0.03,            # the stage's own "controlled effects" call, before the first fit
    "principle": 0.0015,      # one principle's clustered strength + length-controlled logit
    "style_per_principle": 0.0003,  # the joint style-control model, per principle in it
    "views": 0.045,           # length, list and position views, tie rate, the cross-validation set-up
    "split": 0.004,           # `crossval.prompt_folds`
    "fold": 0.002,            # one fold: selection + the logistic fits
    "method": 0.005,          # one method's clustered accuracy + bootstrap AUC
}


def step_plan(n_principles: int, folds: int) -> list[float]:
    """The relative cost of the piece that begins at each `step` call of one `audit_annotator` run (plus
    the caller's first call, "start"), in call order: so that the progress fraction after call i,
    ``sum(plan[:i]) / sum(plan)``, is near-linear in time. Why not one unit per call: the calls are
    very unequal (the style-control fit costs ~20 principle fits, the views ~11), and a bar that moves
    per call predicted the time left up to 77% too short (measured in the app at 24k pairs). The style
    control's refits after a separating principle (``"style control without ..."``) are not in the plan:
    the caller does not advance on them."""
    from icai_core.crossval import METHOD_DESCRIPTIONS

    c = STEP_COST_PER_1000_ROWS
    return ([c["start"]] + [c["principle"]] * n_principles + [c["style_per_principle"] * max(n_principles, 1),
                                                              c["views"], c["split"]]
            + [c["fold"]] * folds + [c["method"]] * len(METHOD_DESCRIPTIONS))


def steps_of(n_principles: int, folds: int) -> int:
    """How many times `audit_annotator` calls its `step` with a message (without style-control refits),
    plus the caller's first call: one per principle, one for style control, one for the views, one before
    the split into folds, one per fold, one per reconstruction method (= ``len(step_plan(...))``)."""
    return len(step_plan(n_principles, folds))


def audit_annotators(
    pairs: pd.DataFrame,
    votes: pd.DataFrame,
    *,
    features: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    **kwargs: Any,
) -> dict[str, AnnotatorEvidence]:
    """`audit_annotator` for every annotator of the file (one entry, `SINGLE_ANNOTATOR`, without an
    ``annotator`` column). Features are computed once for the whole file."""
    if features is None:
        from icai_core.judges import compute_features

        features = compute_features(pairs, names=EVIDENCE_FEATURES)
    if "annotator" not in pairs:
        return {SINGLE_ANNOTATOR: audit_annotator(pairs, votes, annotator=SINGLE_ANNOTATOR, features=features,
                                                  **kwargs)}
    out = {}
    names = pairs["annotator"].astype(str)
    for name in sorted(names.unique()):
        out[name] = audit_annotator(pairs[names == name], votes, annotator=name, features=features, **kwargs)
    return out


def agreement_summary(
    pairs: pd.DataFrame,
    *,
    reference: str | None = None,
    groups: dict[str, list[str]] | None = None,
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """The top-level ``agreement`` list of summary.json: ``[{a, b, n_shared, agreement, ci, kappa,
    message}]`` for every pair of annotators (or each against ``reference``); [] with one annotator."""
    return agreement_table(pairs, reference=reference, groups=groups, alpha=alpha)


def build_summary(
    evidence: dict[str, AnnotatorEvidence], agreement: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``{"annotators": {name: evidence.to_summary()}, "agreement": [...]}``."""
    return {"annotators": {name: ev.to_summary() for name, ev in evidence.items()},
            "agreement": list(agreement or [])}


# ---- the one significance every view shows ------------------------------------------------------------
def clustered_stats(stats: pd.DataFrame, effects: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """`stats` with the evidence stage's numbers in place of the row-level ones, for the same audit.

    Why: `stats.principle_stats` tests each principle with a binomial sign test over rows, which assumes
    independent rows; judgements that share a prompt are not independent, so its CIs are too narrow and
    its "significant" set too large. The evidence stage (`inference.controlled_effects`, one row per
    principle in ``effects``) has the strength's CI clustered by prompt, its BH q-value, and the
    length-controlled logistic effect; `summary.annotator_entry` writes exactly these (significant =
    clustered q < alpha) into summary.json, and the app's principle table and the report (HTML table,
    executive summary, Markdown summary) read this frame, so all of them name the same significant set.
    Replaced: ``strength``, ``strength_ci_low/high``, ``p_value``, ``q_value``, ``significant``,
    ``direction``; added:
    ``effect``, ``effect_ci_low/high``, ``effect_q``, ``effect_status``, ``effect_message``,
    ``proxy_for_length``. The binomial accuracy CI columns stay (they describe the accuracy, not the
    test). A principle the evidence has no row for keeps no clustered number (NaN, not significant),
    never its binomial one. ``attrs["inference"]`` is `CLUSTERED`."""
    e = effects.copy()
    e["key"] = e["key"].astype(str)
    e = e.drop_duplicates("key").set_index("key")
    out = stats.copy()
    keys = out["key"].astype(str)

    def col(name: str) -> np.ndarray:
        if name not in e.columns:
            return np.full(len(out), np.nan)
        return pd.to_numeric(keys.map(e[name]), errors="coerce").to_numpy(dtype=float)

    out["strength"] = col("strength")
    out["strength_ci_low"] = col("strength_ci_low")
    out["strength_ci_high"] = col("strength_ci_high")
    out["p_value"] = col("marginal_p")
    out["q_value"] = col("marginal_q")
    out["significant"] = np.nan_to_num(out["q_value"].to_numpy(dtype=float), nan=np.inf) < alpha
    if "direction" in out:  # "rewards" / "penalises" / "no evidence" follows the significance shown
        from icai_core.stats import direction_of

        out["direction"] = direction_of(out["significant"].to_numpy(), out["strength"].to_numpy(dtype=float))
    for c in ("effect", "effect_ci_low", "effect_ci_high", "effect_q"):
        out[c] = col(c)
    out["effect_status"] = keys.map(e["status"]).fillna("missing").to_numpy() if "status" in e else "missing"
    out["effect_message"] = keys.map(e["message"]).fillna("").to_numpy() if "message" in e else ""
    proxy = keys.map(e["proxy_for_length"]) if "proxy_for_length" in e else pd.Series(False, index=out.index)
    out["proxy_for_length"] = proxy.fillna(False).astype(bool).to_numpy()
    out.attrs["inference"] = CLUSTERED
    return out


def cross_validated(audit: Any) -> CrossValResult | None:
    """The evidence stage's prompt-grouped k-fold reconstruction of the presented annotator (with the
    verdict against length alone), or None when the run has no evidence."""
    ev = getattr(getattr(audit, "analysis", None), "evidence", None)
    return getattr(ev, "reconstruction", None)


def evidence_effects(audit: Any) -> tuple[pd.DataFrame | None, str]:
    """The evidence stage's per-principle table of the presented annotator (`AnnotatorEvidence.effects`),
    or None with the reason in words: the stage was off, failed (its note), or the run has none (saved by
    an older version, or an object that is not a `RunResult`)."""
    analysis = getattr(audit, "analysis", None)
    if analysis is None:
        return None, "this result has no evidence stage."
    ev = getattr(analysis, "evidence", None)
    effects = getattr(ev, "effects", None)
    if effects is not None and len(effects) and "strength_ci_low" in effects.columns:
        return effects, ""
    cfg = getattr(getattr(audit, "config", None), "evidence", None)
    if cfg is not None and not getattr(cfg, "evidence", True):
        return None, "the evidence stage was switched off for this run."
    failed = [n for n in getattr(analysis, "notes", []) if "could not be computed" in n]
    if failed:
        return None, failed[0].rstrip(".") + "."
    if ev is not None:
        return None, "the evidence stage produced no per-principle table."
    return None, "this run has no evidence stage (saved before it existed, or it did not reach it)."


def presented_stats(audit: Any) -> pd.DataFrame:
    """The principle table every view of one audit shows (app, HTML report, Markdown summary): the
    clustered `clustered_stats` when the run has evidence, else a copy of the row-level binomial
    ``audit.stats`` labelled `BINOMIAL`, with ``attrs["no_evidence"]`` saying why (empty when clustered).
    One function, so the app, the report and summary.json cannot name different significant sets."""
    effects, why = evidence_effects(audit)
    alpha = float(getattr(getattr(audit, "config", None), "alpha", 0.05))
    if effects is not None:
        out = clustered_stats(audit.stats, effects, alpha)
    else:
        out = audit.stats.copy()
        out.attrs["inference"] = BINOMIAL
    out.attrs["no_evidence"] = why
    return out
