"""Plotly figure builders for the app and the HTML report (no Streamlit here).

Every builder takes plain DataFrames in the shapes the core modules produce and returns a
`plotly.graph_objects.Figure`. Hover texts that contain data (principle texts, group names) are
passed as `customdata`/`text`, which plotly renders as text, never as HTML markup of ours; the HTML
report embeds the figures through plotly's own JSON serialisation.
"""

from __future__ import annotations

import html
import re
import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go

# Colours: blue = rewards side A-wise "picks" agreeing with annotator, red = penalised.
POS = "#2f6db5"
NEG = "#c0392b"
NEUTRAL = "#9aa5b1"
NOISE = "#c8c8c8"
SIDE_COLORS = {"A": "#2f6db5", "B": "#e08a1e"}
PALETTE = [
    "#2f6db5",
    "#e08a1e",
    "#2ca02c",
    "#9467bd",
    "#d62728",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#7f7f7f",
    "#1f4e79",
    "#ff9896",
    "#98df8a",
    "#c5b0d5",
]
LAYOUT = dict(template="plotly_white", margin=dict(l=10, r=10, t=50, b=10), font=dict(size=13))


def _wrap(text: str, width: int = 60) -> str:
    """Wrap a hover text; escape it because plotly hover labels interpret a small HTML subset."""
    text = "" if text is None else str(text)
    return "<br>".join(html.escape(line) for line in textwrap.wrap(text, width) or [""])


def _label(key: str, text: str | None = None, width: int = 48) -> str:
    """Short axis label for a principle: its key, readable."""
    return str(key).replace("_", " ")


# --------------------------------------------------------------------------- sign convention
# One rule on every page, in the reports and on Home: a principle is shown in the direction the
# annotator *rewards*, in words, with a strength that is positive for that wording. A principle of the
# library whose strength is negative is shown with its inverse wording and +|strength| (CI mirrored);
# this is also how it enters a constitution. So no page ever says "penalised: <easier to read>".
SIGN_RULE = (
    "Each principle is worded in the direction this annotator rewards (a library principle the annotator "
    "goes against is shown with its opposite wording), so strength is ≥ 0 for the wording shown: "
    "strength = relevance × (2·accuracy − 1), with its 95% CI."
)


def _inverse_texts(principles) -> dict[str, str]:
    out: dict[str, str] = {}
    if principles is None:
        return out
    if isinstance(principles, pd.DataFrame):
        if {"key", "inverse_text"} <= set(principles.columns):
            return {str(k): str(v) for k, v in zip(principles["key"], principles["inverse_text"], strict=False)}
        return out
    if isinstance(principles, dict):
        principles = list(principles.values())
    for p in principles:
        key = getattr(p, "key", None)
        inv = getattr(p, "inverse_text", None)
        if key is not None and inv:
            out[str(key)] = str(inv)
    return out


def _default_inverse(text: str) -> str:
    try:
        from icai_core.constitution import default_inverse_text

        return default_inverse_text(text)
    except Exception:  # pragma: no cover - constitution always importable
        return f"Not: {text}"


def rewarded_view(stats: pd.DataFrame, principles=None) -> pd.DataFrame:
    """`stats` with the rewarded direction of each principle: ``wording`` (text, or the inverse text
    when strength < 0), ``reward`` (= |strength|), ``reward_ci_low/high`` (the CI of the wording
    shown: mirrored for reversed rows), ``reward_accuracy`` (accuracy of the wording shown) and
    ``reversed`` (True when the library wording is turned round). Sorted by ``reward`` descending.

    `principles`: judges / Principle objects / a DataFrame with key + inverse_text (else a generated
    "other than" wording is used, as the constitution does)."""
    s = stats.copy().reset_index(drop=True)
    inv = _inverse_texts(principles)
    if "inverse_text" in s.columns:
        for k, v in zip(s["key"], s["inverse_text"], strict=False):
            if isinstance(v, str) and v:
                inv.setdefault(str(k), v)
    strength = pd.to_numeric(s["strength"], errors="coerce")
    rev = (strength < 0).fillna(False).to_numpy()
    text = s["text"].astype(str) if "text" in s else s["key"].astype(str)
    s["reversed"] = rev
    s["wording"] = [
        (inv.get(str(k)) or _default_inverse(t)) if r else t for k, t, r in zip(s["key"], text, rev, strict=True)
    ]
    s["reward"] = strength.abs()
    lo = pd.to_numeric(s.get("strength_ci_low", strength), errors="coerce")
    hi = pd.to_numeric(s.get("strength_ci_high", strength), errors="coerce")
    s["reward_ci_low"] = np.where(rev, -hi, lo)
    s["reward_ci_high"] = np.where(rev, -lo, hi)
    if "accuracy" in s:
        acc = pd.to_numeric(s["accuracy"], errors="coerce")
        s["reward_accuracy"] = np.where(rev, 1.0 - acc, acc)
        if "accuracy_ci_low" in s and "accuracy_ci_high" in s:
            alo = pd.to_numeric(s["accuracy_ci_low"], errors="coerce")
            ahi = pd.to_numeric(s["accuracy_ci_high"], errors="coerce")
            s["reward_accuracy_ci_low"] = np.where(rev, 1.0 - ahi, alo)
            s["reward_accuracy_ci_high"] = np.where(rev, 1.0 - alo, ahi)
    order = s["reward"].fillna(-1).sort_values(ascending=False, kind="mergesort").index
    return s.loc[order].reset_index(drop=True)


def short_wording(text: str) -> str:
    """'Select the response that is easier to read.' -> 'is easier to read' (chart labels)."""
    t = str(text).strip().rstrip(".")
    t = re.sub(r"^(Select|Choose|Prefer|Pick) the (response|answer|one) (that|which|with)\s+", "", t, flags=re.I)
    t = re.sub(r"^(Select|Choose|Prefer|Pick) the (response|answer)\s+", "", t, flags=re.I)
    return t


def _esc_label(text: str, width: int = 48) -> str:
    """An axis / legend label of data: escaped (plotly renders a small HTML subset in labels, so a group
    named `<a href=...>` would become a live link) and wrapped."""
    text = "" if text is None else str(text)
    lines = textwrap.wrap(text, width) or [""]
    if len(lines) > 2:
        lines = lines[:2]
        lines[-1] = lines[-1][: max(width - 1, 1)] + "…"
    return "<br>".join(html.escape(line, quote=True) for line in lines)


def _esc_short(text: str, width: int = 26) -> str:
    """A one-line escaped label, cut with an ellipsis (rotated heatmap columns must not wrap)."""
    text = " ".join(("" if text is None else str(text)).split())
    if len(text) > width:
        text = text[: width - 1] + "…"
    return html.escape(text, quote=True)


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=html.escape(message), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(**LAYOUT, xaxis_visible=False, yaxis_visible=False, height=250)
    return fig


# --------------------------------------------------------------------------- data
def response_lengths(pairs: pd.DataFrame) -> pd.DataFrame:
    """Long table side/length (words) of both responses, used by the length plots."""
    a = pairs["text_a"].astype(str).str.split().str.len()
    b = pairs["text_b"].astype(str).str.split().str.len()
    return pd.DataFrame(
        {
            "side": ["A"] * len(a) + ["B"] * len(b),
            "words": np.concatenate([a.to_numpy(), b.to_numpy()]),
        }
    )


def length_distribution(pairs: pd.DataFrame, *, kind: str = "hist", clip_quantile: float = 0.99) -> go.Figure:
    """Distribution of response lengths (words) per side: overlaid histograms or box plots."""
    if pairs is None or len(pairs) == 0:
        return empty_figure("No pairs")
    lengths = response_lengths(pairs)
    cap = float(lengths["words"].quantile(clip_quantile)) if len(lengths) else 0.0
    fig = go.Figure()
    for side in ("A", "B"):
        w = lengths.loc[lengths["side"] == side, "words"]
        if kind == "box":
            fig.add_trace(go.Box(x=w, name=f"Response {side}", marker_color=SIDE_COLORS[side], boxmean=True))
        else:
            fig.add_trace(
                go.Histogram(
                    x=w.clip(upper=cap) if cap > 0 else w,
                    name=f"Response {side} (median {int(w.median()) if len(w) else 0} words)",
                    marker_color=SIDE_COLORS[side],
                    opacity=0.6,
                    nbinsx=50,
                )
            )
    if kind == "box":
        fig.update_layout(xaxis_title="words per response")
    else:
        fig.update_layout(
            barmode="overlay",
            xaxis_title=f"words per response (clipped at the {clip_quantile:.0%} quantile, {cap:.0f})",
            yaxis_title="responses",
        )
    fig.update_layout(
        **LAYOUT,
        title="Response length by side",
        height=330,
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
    )
    return fig


def _words(texts: pd.Series) -> np.ndarray:
    return texts.astype(str).str.split().str.len().to_numpy(dtype=float)


def judgements(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct (pair, annotator) judgement: repeated rows of the same annotator on the
    same pair (re-runs, duplicates) are counted once, so no response weighs twice for one annotator."""
    cols = [c for c in ("prompt", "text_a", "text_b", "annotator") if c in pairs.columns]
    return pairs.drop_duplicates(subset=cols)


def repeated_judgements(pairs: pd.DataFrame) -> dict[str, int]:
    """How many rows `judgements` counts once: ``repeats`` (rows of an annotator that judge a pair it
    already judged: same prompt and both texts) and ``conflicting`` (such pairs whose rows disagree on
    the choice; the figures keep the first row of each). A page that counts judgements says so."""
    cols = [c for c in ("prompt", "text_a", "text_b", "annotator") if c in pairs.columns]
    if not cols or not len(pairs):
        return {"repeats": 0, "conflicting": 0}
    keys = pd.util.hash_pandas_object(pairs[cols].astype(str), index=False)
    repeats = int(keys.duplicated().sum())
    conflicting = 0
    if repeats and "preferred" in pairs.columns:
        conflicting = int((pairs["preferred"].astype(str).groupby(keys.to_numpy()).nunique() > 1).sum())
    return {"repeats": repeats, "conflicting": conflicting}


def chosen_rejected_words(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per decided judgement (ties left out): words of the chosen and of the rejected response."""
    d = judgements(pairs)
    d = d[d["preferred"].isin(["a", "b"])]
    wa, wb = _words(d["text_a"]), _words(d["text_b"])
    is_a = (d["preferred"] == "a").to_numpy()
    out = pd.DataFrame({"chosen": np.where(is_a, wa, wb), "rejected": np.where(is_a, wb, wa)}, index=d.index)
    if "annotator" in d.columns:
        out["annotator"] = d["annotator"].astype(str).to_numpy()
    return out


def length_preference(pairs: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """P(prefer longer) per annotator (one row "all" when there is no annotator column): among decided
    judgements whose two responses differ in word count, the share that chose the longer one, with a
    Wilson 95% CI (statsmodels) and the number of judgements it is computed on."""
    from statsmodels.stats.proportion import proportion_confint

    cw = chosen_rejected_words(pairs)
    groups = cw.groupby("annotator", sort=True) if "annotator" in cw.columns else [("all", cw)]
    rows = []
    for name, g in groups:
        differ = g["chosen"] != g["rejected"]
        n = int(differ.sum())
        k = int((g.loc[differ, "chosen"] > g.loc[differ, "rejected"]).sum())
        lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson") if n else (np.nan, np.nan)
        rows.append({"annotator": str(name), "judgements": int(len(g)), "n_unequal": n, "n_longer_chosen": k,
                     "p_prefer_longer": k / n if n else np.nan, "ci_low": lo, "ci_high": hi,
                     "median_chosen": float(g["chosen"].median()) if len(g) else np.nan,
                     "median_rejected": float(g["rejected"].median()) if len(g) else np.nan})
    # the columns even with no decided judgement (an all-tie file): callers index them by name
    return pd.DataFrame(rows, columns=["annotator", "judgements", "n_unequal", "n_longer_chosen", "p_prefer_longer",
                                       "ci_low", "ci_high", "median_chosen", "median_rejected"])


CHOSEN_COLORS = {"chosen": "#2f6db5", "rejected": "#e08a1e"}


def chosen_rejected_lengths(pairs: pd.DataFrame, *, kind: str = "hist", clip_quantile: float = 0.99) -> go.Figure:
    """Length (words) of the chosen vs the rejected response of every decided judgement: the picture of
    a length bias (A vs B says nothing about bias). Pass one annotator's rows so that each response is
    counted once."""
    cw = chosen_rejected_words(pairs) if pairs is not None and len(pairs) else pd.DataFrame()
    if len(cw) == 0:
        return empty_figure("No decided judgement (every pair is a tie)")
    cap = float(np.nanquantile(np.concatenate([cw["chosen"], cw["rejected"]]), clip_quantile))
    fig = go.Figure()
    for side in ("chosen", "rejected"):
        w = cw[side]
        if kind == "box":
            fig.add_trace(go.Box(x=w, name=side, marker_color=CHOSEN_COLORS[side], boxmean=True))
        else:
            fig.add_trace(go.Histogram(x=w.clip(upper=cap) if cap > 0 else w,
                                       name=f"{side} (median {int(w.median())} words)",
                                       marker_color=CHOSEN_COLORS[side], opacity=0.6, nbinsx=50))
    if kind == "box":
        fig.update_layout(xaxis_title="words per response")
    else:
        fig.update_layout(barmode="overlay", yaxis_title="judgements",
                          xaxis_title=f"words per response (clipped at {cap:.0f}, the {clip_quantile:.0%} quantile)")
    fig.update_layout(
        **{**LAYOUT, "margin": dict(l=10, r=10, t=60, b=60)},
        title=f"Chosen vs rejected response length ({len(cw):,} decided judgements)",
        height=340,
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"),
    )
    fig.update_xaxes(automargin=True)
    return fig


def preference_balance(pairs: pd.DataFrame) -> go.Figure:
    """Horizontal stacked bar: share of A / B / tie labels."""
    counts = pairs["preferred"].value_counts() if len(pairs) else pd.Series(dtype=int)
    total = max(int(counts.sum()), 1)
    fig = go.Figure()
    colors = {"a": SIDE_COLORS["A"], "b": SIDE_COLORS["B"], "tie": NEUTRAL}
    names = {"a": "A preferred", "b": "B preferred", "tie": "tie"}
    for key in ("a", "b", "tie"):
        n = int(counts.get(key, 0))
        fig.add_trace(
            go.Bar(
                y=["labels"],
                x=[n / total],
                name=f"{names[key]} ({n:,})",
                orientation="h",
                marker_color=colors[key],
                text=[f"{n / total:.1%}"],
                textposition="inside",
                hovertemplate=f"{names[key]}: {n:,} ({n / total:.1%})<extra></extra>",
            )
        )
    fig.update_layout(
        **LAYOUT,
        barmode="stack",
        height=190,
        xaxis=dict(tickformat=".0%", range=[0, 1]),
        yaxis_visible=False,
        title="Preference balance",
        legend=dict(orientation="h", y=-0.45, yanchor="top", x=0),
    )
    return fig


# --------------------------------------------------------------------------- principles
def strength_bar(
    stats: pd.DataFrame,
    *,
    selected: list[str] | tuple[str, ...] | set[str] | None = None,
    top: int | None = None,
    title: str = "What the annotator rewards: strength (95% CI)",
    principles=None,
) -> go.Figure:
    """Horizontal bars of each principle's strength *in the direction the annotator rewards* (see
    `SIGN_RULE`): labels are the rewarded wording, bars |strength| with the mirrored CI.

    `stats` rows: key, text, strength, strength_ci_low, strength_ci_high (+ relevance, accuracy,
    significant when present). Keys in `selected` (the constitution) get a solid bar, others a pale one.
    """
    if stats is None or len(stats) == 0:
        return empty_figure("No principle statistics yet")
    s = rewarded_view(stats, principles).dropna(subset=["reward"])
    if len(s) == 0:
        return empty_figure("No principle has a strength (no labelled pair)")
    if top is not None and len(s) > top:
        s = s.head(top)
    s = s.iloc[::-1]  # strongest at the top of a horizontal bar chart
    selected = set(selected or ())
    colors = [POS if (not selected or k in selected) else _fade(POS) for k in s["key"]]
    err_plus = (s["reward_ci_high"] - s["reward"]).clip(lower=0)
    err_minus = (s["reward"] - s["reward_ci_low"]).clip(lower=0)
    acc = s.get("reward_accuracy", pd.Series(np.nan, index=s.index))
    custom = np.column_stack(
        [
            [_wrap(t) for t in s["wording"]],
            s.get("relevance", pd.Series(np.nan, index=s.index)).to_numpy(dtype=float),
            acc.to_numpy(dtype=float),
            s["reward_ci_low"].to_numpy(dtype=float),
            s["reward_ci_high"].to_numpy(dtype=float),
            ["yes" if k in selected else "no" for k in s["key"]],
            [html.escape(str(k)) + (" (opposite wording)" if r else "") for k, r in zip(s["key"], s["reversed"],
                                                                                      strict=True)],
        ]
    )
    fig = go.Figure(
        go.Bar(
            x=s["reward"],
            y=[_esc_label(short_wording(t), 46) for t in s["wording"]],
            orientation="h",
            marker_color=colors,
            error_x=dict(type="data", array=err_plus, arrayminus=err_minus, color="#444", thickness=1.2),
            customdata=custom,
            hovertemplate=(
                "%{customdata[0]}<br>strength %{x:+.3f} [%{customdata[3]:+.3f}, %{customdata[4]:+.3f}]"
                "<br>relevance %{customdata[1]:.1%} · accuracy %{customdata[2]:.1%}"
                "<br>in constitution: %{customdata[5]} · key %{customdata[6]}<extra></extra>"
            ),
        )
    )
    fig.add_vline(x=0, line_color="#333", line_width=1)
    fig.update_layout(
        **{**LAYOUT, "margin": dict(l=10, r=20, t=50, b=60)},
        title=title,
        xaxis=dict(title="strength of the rewarded wording", automargin=True),
        yaxis=dict(automargin=True),
        height=max(300, 30 * len(s) + 130),
        showlegend=False,
    )
    return fig


def _fade(hex_color: str, amount: float = 0.6) -> str:
    hex_color = hex_color.lstrip("#")
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (0, 2, 4))
    r, g, b = (int(c + (255 - c) * amount) for c in (r, g, b))
    return f"#{r:02x}{g:02x}{b:02x}"


def relevance_accuracy(stats: pd.DataFrame, *, principles=None, n_labels: int = 8) -> go.Figure:
    """Scatter of relevance vs accuracy of the rewarded wording (so accuracy ≥ 50%), marker size ~
    strength. Only the `n_labels` strongest principles get a text label (the rest: hover), so labels
    neither overlap nor get clipped."""
    if stats is None or len(stats) == 0:
        return empty_figure("No principle statistics yet")
    s = rewarded_view(stats, principles).dropna(subset=["reward_accuracy"])
    if len(s) == 0:
        return empty_figure("No principle has an accuracy (no labelled pair)")
    sig = s.get("significant", pd.Series(False, index=s.index)).astype(bool)
    labels = [_esc_label(short_wording(t), 28) if i < n_labels else "" for i, t in enumerate(s["wording"])]
    positions = ["top center", "bottom center", "middle right", "middle left"]
    fig = go.Figure(
        go.Scatter(
            x=s["relevance"],
            y=s["reward_accuracy"],
            mode="markers+text",
            text=labels,
            textposition=[positions[i % len(positions)] for i in range(len(s))],
            textfont=dict(size=11),
            cliponaxis=False,
            marker=dict(
                size=8 + 60 * s["reward"].fillna(0),
                color=[POS if x else _fade(POS) for x in sig],
                line=dict(width=[2 if x else 0 for x in sig], color="#222"),
            ),
            customdata=[_wrap(t) for t in s["wording"]],
            hovertemplate="%{customdata}<br>relevance %{x:.1%}<br>accuracy %{y:.1%}<extra></extra>",
        )
    )
    fig.add_hline(y=0.5, line_dash="dot", line_color="#666")
    xmax = float(min(1.0, max(0.1, s["relevance"].max() * 1.15)))
    fig.update_layout(
        **{**LAYOUT, "margin": dict(l=10, r=40, t=50, b=50)},
        title=f"Relevance vs accuracy (outlined = significant; the {min(n_labels, len(s))} strongest labelled)",
        height=460,
        xaxis=dict(title="relevance", tickformat=".0%", range=[-0.02, xmax], automargin=True),
        yaxis=dict(title="accuracy of the rewarded wording", tickformat=".0%", range=[0.45, 1.02], automargin=True),
    )
    return fig


def principle_scatter(
    points: pd.DataFrame, *, title: str = "Principle map (UMAP of text embeddings)"
) -> go.Figure:
    """2-D map of principles: colour = cluster (-1 = noise, grey), size ~ support, hover = text.

    `points` columns: text, cluster, x, y, is_representative, support (optional: key).
    """
    if points is None or len(points) == 0:
        return empty_figure("No principles to map")
    p = points.copy()
    if "support" not in p:
        p["support"] = 1.0
    sup = p["support"].astype(float).abs().fillna(0)
    size = 9 + 26 * (sup / sup.max() if sup.max() > 0 else sup)
    p["_size"] = size
    fig = go.Figure()
    clusters = sorted(p["cluster"].unique(), key=lambda c: (c == -1, c))
    for i, c in enumerate(clusters):
        sub = p[p["cluster"] == c]
        color = NOISE if c == -1 else PALETTE[i % len(PALETTE)]
        name = "noise (no cluster)" if c == -1 else f"cluster {c}"
        rep = sub.get("is_representative", pd.Series(False, index=sub.index)).astype(bool)
        fig.add_trace(
            go.Scatter(
                x=sub["x"],
                y=sub["y"],
                mode="markers",
                name=f"{name} ({len(sub)})",
                marker=dict(
                    size=sub["_size"],
                    color=color,
                    opacity=0.85,
                    symbol=["star" if r else "circle" for r in rep],
                    line=dict(width=1, color="#333"),
                ),
                customdata=np.column_stack(
                    [[_wrap(t) for t in sub["text"]], sub["support"].astype(float), [name] * len(sub)]
                ),
                hovertemplate="%{customdata[0]}<br>support %{customdata[1]:.3f}<br>%{customdata[2]}<extra></extra>",
            )
        )
    fig.update_layout(
        **LAYOUT,
        title=title,
        height=520,
        xaxis=dict(title="UMAP 1", showticklabels=False),
        yaxis=dict(title="UMAP 2", showticklabels=False),
        legend=dict(title="cluster (★ = representative)"),
    )
    return fig


# --------------------------------------------------------------------------- reconstruction
METHOD_LABELS = {
    "logistic_regression": "constitution: logistic regression",
    "logistic": "constitution: logistic regression",
    "weighted_majority": "constitution: weighted majority",
    "best_single_principle": "best single principle",
    "best_single": "best single principle",
    "majority_class": "majority class",
    "random_constitution": "random constitution (same size)",
    "random_guess": "random guess",
    "no_constitution": "no constitution",
    "llm_with_constitution": "LLM annotator + constitution",
    "llm_no_constitution": "LLM annotator, no constitution",
    "llm_random_constitution": "LLM annotator + random constitution",
    "llm_with_constitution_flipped": "LLM + constitution, A/B swapped",
}
METHOD_LABELS.update({f"votes_{k}": f"votes: {v}" for k, v in list(METHOD_LABELS.items())})
CONSTITUTION_METHODS = (
    "logistic_regression",
    "logistic",
    "weighted_majority",
    "llm_with_constitution",
    "votes_logistic_regression",
    "votes_weighted_majority",
)


def reconstruction_bar(
    table: pd.DataFrame, *, title: str = "Reconstruction of held-out choices"
) -> go.Figure:
    """Bar chart of agreement with Wilson CI per method (rows: method, agreement, ci_low, ci_high, n_test)."""
    if table is None or len(table) == 0:
        return empty_figure("No reconstruction yet")
    t = table.copy()
    labels = [METHOD_LABELS.get(str(m), str(m).replace("_", " ")) for m in t["method"]]
    is_const = [str(m) in CONSTITUTION_METHODS for m in t["method"]]
    colors = [POS if c else NEUTRAL for c in is_const]
    n = t["n_test"] if "n_test" in t else pd.Series(np.nan, index=t.index)
    lo = t["ci_low"].astype(float)
    hi = t["ci_high"].astype(float)
    finite = lo.to_numpy()[np.isfinite(lo.to_numpy())]
    x_min = max(0.0, min(0.4, float(finite.min()) - 0.05)) if len(finite) else 0.0
    fig = go.Figure(
        go.Bar(
            y=[_esc_label(lb, 40) for lb in labels],
            x=t["agreement"],
            orientation="h",
            marker_color=colors,
            error_x=dict(
                type="data",
                array=(hi - t["agreement"]).clip(lower=0),
                arrayminus=(t["agreement"] - lo).clip(lower=0),
                color="#333",
            ),
            text=[f"{a:.1%}" for a in t["agreement"]],
            textposition="inside",
            insidetextanchor="start",
            customdata=np.column_stack([lo, hi, n]),
            hovertemplate="%{y}<br>agreement %{x:.1%} [%{customdata[0]:.1%}, %{customdata[1]:.1%}]"
            "<br>n = %{customdata[2]}<extra></extra>",
        )
    )
    fig.add_vline(
        x=0.5, line_dash="dot", line_color="#666", annotation_text="chance", annotation_position="top"
    )
    fig.update_layout(
        **{**LAYOUT, "margin": dict(l=10, r=20, t=50, b=60)},
        title=f"{title} (95% CI)",
        height=max(280, 44 * len(t) + 140),
        xaxis=dict(title="agreement", tickformat=".0%", range=[x_min, 1.0], automargin=True),
        yaxis=dict(autorange="reversed", automargin=True),
        showlegend=False,
    )
    return fig


# --------------------------------------------------------------------------- compare
def strength_heatmap(
    strength: pd.DataFrame,
    ci_low: pd.DataFrame | None = None,
    ci_high: pd.DataFrame | None = None,
    *,
    texts: dict[str, str] | None = None,
    title: str = "Principle strength by group",
) -> go.Figure:
    """Heatmap principles (rows) x groups (columns) of strength, diverging colours, CI in hover."""
    if strength is None or strength.size == 0:
        return empty_figure("Nothing to compare")
    z = strength.astype(float)
    lo = ci_low.reindex_like(z).astype(float) if ci_low is not None else z * np.nan
    hi = ci_high.reindex_like(z).astype(float) if ci_high is not None else z * np.nan
    texts = texts or {}
    rows = [str(k) for k in z.index]
    hover_text = np.array([[_wrap(texts.get(k, k), 50) for _ in z.columns] for k in rows], dtype=object)
    custom = np.dstack([lo.to_numpy(), hi.to_numpy()])
    lim = float(np.nanmax(np.abs(z.to_numpy()))) if np.isfinite(z.to_numpy()).any() else 1.0
    lim = max(lim, 0.05)
    fig = go.Figure(
        go.Heatmap(
            z=z.to_numpy(),
            x=[_esc_short(c, 28) for c in z.columns],
            y=[_esc_label(short_wording(texts[k]) if k in texts else _label(k), 40) for k in rows],
            zmin=-lim,
            zmax=lim,
            colorscale=[[0, NEG], [0.5, "#f7f7f7"], [1, POS]],
            colorbar=dict(title="strength<br>(+ rewards,<br>− penalises<br>the wording)"),
            customdata=custom,
            text=hover_text,
            texttemplate="%{z:+.2f}",
            hovertemplate="%{text}<br>group %{x}<br>strength %{z:+.3f} [%{customdata[0]:+.3f}, %{customdata[1]:+.3f}]<extra></extra>",
        )
    )
    layout = {**LAYOUT, "margin": dict(l=10, r=10, t=60 if title else 20, b=10)}
    fig.update_layout(
        **layout,
        title=title or None,
        height=max(350, 32 * len(rows) + 190),
        xaxis=dict(side="top", tickangle=-35, automargin=True),
        yaxis=dict(autorange="reversed", automargin=True),
    )
    return fig


def figure_html(fig: go.Figure, *, include_plotlyjs: bool | str = False, div_id: str | None = None) -> str:
    """Serialise a figure to an HTML fragment (the report embeds plotly.js once, inline)."""
    return fig.to_html(
        full_html=False,
        include_plotlyjs=include_plotlyjs,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )
