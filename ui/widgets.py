"""Reusable Streamlit widgets: statistic tables, the pair viewer and the example browser.

Pair texts (prompt, responses) are untrusted: they are rendered with `st.text` (plain text, no
markdown, no HTML) inside fixed-height containers, never with `unsafe_allow_html`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from icai_core.evidence import BINOMIAL, CLUSTERED, clustered_stats  # noqa: F401 (re-exported for the pages)
from ui import safe as S

ALPHAS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.2]
VOTE_LABEL = {1: "A", -1: "B", 0: "—"}
CHOICE_LABEL = {"a": "A", "b": "B", "tie": "tie"}


def nearest(options: list[float], value: float) -> float:
    return min(options, key=lambda o: abs(o - value))


def stats_column_config() -> dict:
    pct = st.column_config.NumberColumn(format="percent")
    signed = st.column_config.NumberColumn(format="%+.3f")
    return {
        "relevance": pct,
        "accuracy": pct,
        "accuracy_ci_low": pct,
        "accuracy_ci_high": pct,
        "agreement": pct,
        "ci_low": pct,
        "ci_high": pct,
        "strength": signed,
        "strength_ci_low": signed,
        "strength_ci_high": signed,
        "support": st.column_config.NumberColumn(format="%.3f"),
        "q_value": st.column_config.NumberColumn(format="%.2g"),
        "p_value": st.column_config.NumberColumn(format="%.2g"),
        "text": st.column_config.TextColumn(width="large"),
        "description": st.column_config.TextColumn(width="large"),
    }


def _fmt(x: float, fmt: str) -> str:
    """`format(x, fmt)` without a minus sign on a value that rounds to zero ("-0.000" reads as a sign)."""
    out = format(x, fmt)
    if out.startswith("-") and not any(ch in "123456789" for ch in out):
        out = ("+" if fmt.startswith("+") else "") + out[1:]
    return out


def _ci(lo: pd.Series, hi: pd.Series, fmt: str) -> list[str]:
    return [
        "" if pd.isna(a) or pd.isna(b) else f"[{_fmt(a, fmt)}, {_fmt(b, fmt)}]"
        for a, b in zip(lo, hi, strict=True)
    ]


# The principle table's inference labels and its clustered numbers live in icai_core.evidence, so the app,
# the HTML report and the Markdown summary share one significant set (re-exported here for the pages).


def stats_view(stats: pd.DataFrame, selected: Iterable[str] = (), principles: pd.DataFrame | None = None):
    """Readable principle table in the one sign convention (`figures.SIGN_RULE`): each principle in the
    wording the annotator rewards, its strength ≥ 0 for that wording, one CI column per measure,
    sorted by strength.

    With a `clustered_stats` frame the strength CI and q-value are the clustered ones, the binomial
    accuracy CI is left out (it would be the one interval that assumes independent rows), and the
    length-controlled effect is added in the same sign convention (mirrored for a reversed wording,
    like the strength) with its *length proxy* flag. The column names stay the same either way (other
    pages and tests read them); `stats_table` labels the columns with the inference (`column_labels`)
    and ``attrs["inference"]`` of the returned frame says which one it is."""
    from icai_core.figures import rewarded_view, short_wording

    clustered = stats.attrs.get("inference") == CLUSTERED
    tag = CLUSTERED if clustered else BINOMIAL
    s = rewarded_view(stats, principles)
    if principles is not None and "family" in getattr(principles, "columns", []) and "family" not in s.columns:
        s = s.merge(principles[["key", "family"]], on="key", how="left")
    acc = s["reward_accuracy"] if "reward_accuracy" in s else s.get("accuracy")
    acc_lo = s.get("reward_accuracy_ci_low", s.get("accuracy_ci_low"))
    acc_hi = s.get("reward_accuracy_ci_high", s.get("accuracy_ci_high"))
    # the inference columns come first, so they are on screen at 1280 px without scrolling sideways
    cols: dict[str, Any] = {
        "principle": [short_wording(w) for w in s["wording"]],
        "rewarded principle": s["wording"],
        "strength": s["reward"],
        "strength 95% CI": _ci(s["reward_ci_low"], s["reward_ci_high"], "+.3f"),
        "q-value": s["q_value"],
        "significant": s["significant"].astype(bool),
    }
    if clustered:
        sign = np.where(s["reversed"].astype(bool), -1.0, 1.0)
        lo, hi = sign * s["effect_ci_low"], sign * s["effect_ci_high"]
        eff = sign * s["effect"]
        ci = _ci(pd.Series(np.fmin(lo, hi)), pd.Series(np.fmax(lo, hi)), "+.2f")
        cols.update({
            "controlled effect [95% CI]": [
                f"{_fmt(e, '+.2f')} {c}" if pd.notna(e) else _no_fit(st_, m)
                for e, c, st_, m in zip(eff, ci, s["effect_status"], s["effect_message"], strict=True)],
            "length proxy": s["proxy_for_length"].astype(bool),
            "q (controlled)": s["effect_q"],
            "length-controlled effect": eff,
            "effect 95% CI": ci,
        })
    cols.update({"relevance": s["relevance"], "accuracy": acc})
    if not clustered:
        cols["accuracy 95% CI"] = _ci(acc_lo, acc_hi, ".1%") if acc_lo is not None else ""
    cols.update({
        "n relevant": s["n_relevant"],
        "in constitution": s["key"].isin(set(selected)),
        "opposite wording": s["reversed"].astype(bool),
        "family": s["family"] if "family" in s else "",
        "key": s["key"],
    })
    out = pd.DataFrame(cols)
    out.attrs["inference"] = tag
    return out


def _no_fit(status: Any, message: Any) -> str:
    """Why a principle has no length-controlled effect, in two or three words (the full sentence is in
    summary.json)."""
    msg = str(message or "")
    if status == "is_covariate":
        return "— (length itself)"
    if "never votes" in msg:
        return "— (never votes)"
    if "separation" in msg:
        return "— (separates the choices)"
    return "— (no fit)"


# Shown by `stats_table`; the numeric effect and its CI stay in the frame (tests, exports) but are shown
# once, as the one text column "controlled effect [95% CI]", so the table fits 1280 px.
# Likewise the full wording ("Select the response that ...") is in the frame, and the table shows the part
# after "Select the response that" (`figures.short_wording`), which is what tells the principles apart.
_HIDDEN = ("rewarded principle", "length-controlled effect", "effect 95% CI")


def column_labels(inference: str) -> dict[str, str]:
    """The displayed names of the columns whose numbers depend on the inference (`CLUSTERED` or
    `BINOMIAL`): the interval and the q-value say which one made them, on screen."""
    short = "clustered" if inference == CLUSTERED else inference
    return {"strength 95% CI": f"95% CI ({short})", "accuracy 95% CI": f"accuracy CI ({short})",
            "q-value": f"q ({short})"}


def stats_table(
    stats: pd.DataFrame, selected: Iterable[str] = (), principles: pd.DataFrame | None = None, **kw
):
    view = stats_view(stats, selected, principles)
    label = column_labels(view.attrs["inference"])
    cfg = stats_column_config()
    clustered = view.attrs["inference"] == CLUSTERED
    how = ("the strength's test clustered by prompt (cluster-robust Wald)" if clustered else
           "the binomial sign test per row, not clustered by prompt")
    cfg["q-value"] = st.column_config.NumberColumn(
        label["q-value"], format="%.2g", width=88,
        help=f"Benjamini-Hochberg over the principles, from {how}; *significant* = q < α.")
    cfg["principle"] = st.column_config.TextColumn(
        "rewarded principle", width=220, pinned=True,
        help="Select the response that … : worded in the direction the annotator rewards (strength ≥ 0 for "
        "this wording). Click a cell for the whole text.")
    cfg["strength"] = st.column_config.NumberColumn(format="%+.3f", width=65)
    cfg["strength 95% CI"] = st.column_config.TextColumn(
        label["strength 95% CI"], width=130 if clustered else 230,
        help=f"95% CI of the strength, {'clustered by prompt' if clustered else 'binomial, NOT clustered'}.")
    cfg["accuracy 95% CI"] = st.column_config.TextColumn(label["accuracy 95% CI"], width="medium")
    cfg["n relevant"] = st.column_config.NumberColumn(format="%d", width="small")
    cfg["opposite wording"] = st.column_config.CheckboxColumn(
        help="The library states this principle the other way round; the annotator rewards the opposite.")
    cfg["significant"] = st.column_config.CheckboxColumn(width=72)
    cfg["controlled effect [95% CI]"] = st.column_config.TextColumn(
        "length-controlled", width=150,
        help="Length-controlled effect: the logistic coefficient of the principle's vote with the length "
        "difference as covariate (log-odds, 95% CI clustered by prompt), for the wording shown. '—': no fit "
        "(the length covariate itself, a principle that never votes, or one whose votes separate the "
        "choices).")
    cfg["q (controlled)"] = st.column_config.NumberColumn(format="%.2g", width=100)
    cfg["length proxy"] = st.column_config.CheckboxColumn(
        width=85,
        help="Significant alone but not once length is controlled: largely a proxy for length (as in the "
        "report).")
    order = [c for c in view.columns if c not in _HIDDEN]
    st.dataframe(view, hide_index=True, width="stretch", column_config=cfg, column_order=order, **kw)


# --------------------------------------------------------------------------- pairs
def text_box(label: str, text: Any, *, height: int = 260, highlight: bool = False) -> None:
    """Untrusted text, shown verbatim (st.text) in a scrollable box."""
    st.markdown(f"**{label}**" + ("  :green-badge[preferred]" if highlight else ""))
    with st.container(height=height, border=True):
        body = "" if text is None else str(text)
        st.text(body if body else "(empty response)")


def render_pair(row: pd.Series, *, height: int = 260) -> None:
    pref = str(row.get("preferred", ""))
    meta = [
        f"{k}: {row[k]}"
        for k in ("annotator", "model_a", "model_b", "category", "language")
        if k in row and row[k]
    ]
    if meta:
        st.caption(" · ".join(S.md(m) for m in meta))
    text_box("Prompt", row.get("prompt", ""), height=min(height, 160))
    a, b = st.columns(2)
    with a:
        text_box("Response A", row.get("text_a", ""), height=height, highlight=pref == "a")
    with b:
        text_box("Response B", row.get("text_b", ""), height=height, highlight=pref == "b")


def vote_table(
    votes_row: pd.Series,
    preferred: str,
    texts: dict[str, str],
    constitution: Any = None,
    only_relevant: bool = True,
    reversed_keys: Iterable[str] = (),
) -> pd.DataFrame:
    """Each principle's vote on one pair. `texts` are the wordings to show (the rewarded wording,
    `figures.rewarded_view`); for keys in `reversed_keys` that wording is the library's opposite, so
    the vote is turned round with it (the wording and the side it picks always match)."""
    signs = dict(getattr(constitution, "signs", {}) or {})
    flip = set(reversed_keys)
    target = {"a": 1, "b": -1}.get(preferred, 0)
    rows = []
    for key, v in votes_row.items():
        v = int(v) * (-1 if key in flip else 1)
        if only_relevant and v == 0:
            continue
        agrees = "—" if v == 0 or target == 0 else ("✓ agrees" if v == target else "✗ disagrees")
        rows.append(
            {
                "principle": texts.get(key, key),
                "key": key,
                "vote": VOTE_LABEL.get(v, str(v)),
                "vs annotator": agrees,
                "in constitution": "yes" if key in signs else "",
            }
        )
    return pd.DataFrame(rows, columns=["principle", "key", "vote", "vs annotator", "in constitution"])


FILTERS = {
    "all": "All pairs",
    "wrong": "Held-out pairs the constitution gets wrong",
    "right": "Held-out pairs the constitution gets right",
    "tie": "Ties",
}


def example_browser(audit: Any, constitution: Any, recon: Any, *, key: str = "ex") -> None:
    pairs = audit.pairs
    votes = audit.votes
    from icai_core.figures import rewarded_view

    rv = rewarded_view(audit.stats, getattr(audit, "principles", None))
    texts = dict(zip(rv["key"], rv["wording"], strict=False))
    flipped = set(rv.loc[rv["reversed"].astype(bool), "key"])
    preds = getattr(recon, "predictions", None)
    method = "logistic_regression"
    c1, c2, c3 = st.columns([2, 1, 1])
    flt = c1.radio(
        "Show",
        list(FILTERS),
        format_func=FILTERS.get,
        key=f"{key}_filter",
        horizontal=True,
        label_visibility="collapsed",
    )
    if flt in ("wrong", "right") and preds is not None and method in getattr(preds, "columns", []):
        ok = preds[method] == preds["preferred"]
        idx = preds.index[~ok] if flt == "wrong" else preds.index[ok]
    elif flt == "tie":
        idx = pairs.index[pairs["preferred"] == "tie"]
    else:
        idx = pairs.index
    idx = list(idx)
    if not idx:
        st.info("No pair matches this filter.")
        return
    n = len(idx)
    pos = c2.number_input(f"Pair (1–{n:,})", 1, n, 1, 1, key=f"{key}_pos")
    only_rel = c3.toggle("Only principles that vote", True, key=f"{key}_only_rel")
    i = idx[int(pos) - 1]
    row = pairs.loc[i]
    pref = str(row["preferred"])
    verdict = f"Annotator's choice: **{CHOICE_LABEL.get(pref, pref)}**"
    if preds is not None and i in preds.index and method in preds.columns:
        p = preds.loc[i, method]
        verdict += (
            f" · constitution predicts **{CHOICE_LABEL.get(p, p)}** ({'right' if p == pref else 'wrong'})"
        )
    split = "held-out" if _in(i, pairs.index, audit.test_index) else "training"
    st.markdown(f"{verdict} · {split} pair · id {S.code(row['id'])}")
    render_pair(row)
    st.markdown("**Each principle's vote**")
    vt = vote_table(votes.loc[i], pref, texts, constitution, only_relevant=only_rel, reversed_keys=flipped)
    st.caption("Principles in the wording the annotator rewards; *vote* = the response that wording favours.")
    st.dataframe(
        vt,
        hide_index=True,
        width="stretch",
        column_config={"principle": st.column_config.TextColumn(width="large")},
    )


def _in(label: Any, index: pd.Index, positions: np.ndarray) -> bool:
    try:
        pos = index.get_loc(label)
    except KeyError:
        return False
    return bool(np.isin(pos, positions))


def cross_validated_box(audit, lead: str) -> None:
    """The evidence stage's cross-validated verdict against length alone, when the run has one: a
    warning unless the constitution's gain over length has a CI above zero."""
    from icai_core.evidence import cross_validated

    cv = cross_validated(audit)
    if cv is not None and cv.verdict:
        (st.info if cv.beats_length else st.warning)(f"**{lead}:** {S.md(cv.verdict)}")


def reconstruction_verdict(audit, table) -> None:
    """What the reconstruction shows, in words: the constitution against the strongest baseline on these
    held-out pairs (not the weakest), then the cross-validated verdict against length alone at the
    audit's thresholds (the evidence stage's, as in the report), when the run has one."""
    from icai_core.figures import METHOD_LABELS
    from icai_core.reconstruct import constitution_vs_baseline

    vs = constitution_vs_baseline(table)
    if vs is not None:
        agree, method, base = vs
        gap = (agree - base) * 100
        text = (f"The constitution agrees with {agree:.1%} of these held-out choices, {gap:+.1f} points against "
                f"the strongest baseline ({METHOD_LABELS.get(method, method)}, {base:.1%}).")
        if gap > 0:
            st.caption(text)
        else:
            st.warning(text + " It does not beat it here.")
    cross_validated_box(audit, "Cross-validated at the audit's thresholds")
