"""Plotly figure builders for the app and the HTML report (no Streamlit here).

Every builder takes plain DataFrames in the shapes the core modules produce and returns a
`plotly.graph_objects.Figure`. Hover texts that contain data (principle texts, group names) are
passed as `customdata`/`text`, which plotly renders as text, never as HTML markup of ours; the HTML
report embeds the figures through plotly's own JSON serialisation.
"""

from __future__ import annotations

import html
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
    title: str = "Principle strength (95% CI)",
) -> go.Figure:
    """Horizontal bar chart of strength with CI error bars, sorted by strength.

    `stats` rows: key, text, strength, strength_ci_low, strength_ci_high (+ relevance, accuracy,
    significant when present). Keys in `selected` (the constitution) get a solid bar, others a pale one.
    """
    if stats is None or len(stats) == 0:
        return empty_figure("No principle statistics yet")
    s = stats.copy()
    if top is not None and len(s) > top:
        s = s.reindex(s["strength"].abs().sort_values(ascending=False).index).head(top)
    s = s.sort_values("strength")
    selected = set(selected or ())
    colors = []
    for _, r in s.iterrows():
        base = POS if r["strength"] >= 0 else NEG
        colors.append(base if (not selected or r["key"] in selected) else _fade(base))
    err_plus = (s["strength_ci_high"] - s["strength"]).clip(lower=0)
    err_minus = (s["strength"] - s["strength_ci_low"]).clip(lower=0)
    custom = np.column_stack(
        [
            [_wrap(t) for t in s.get("text", s["key"])],
            s.get("relevance", pd.Series(np.nan, index=s.index)).to_numpy(dtype=float),
            s.get("accuracy", pd.Series(np.nan, index=s.index)).to_numpy(dtype=float),
            s["strength_ci_low"].to_numpy(dtype=float),
            s["strength_ci_high"].to_numpy(dtype=float),
            ["yes" if k in selected else "no" for k in s["key"]],
        ]
    )
    fig = go.Figure(
        go.Bar(
            x=s["strength"],
            y=[_label(k) for k in s["key"]],
            orientation="h",
            marker_color=colors,
            error_x=dict(type="data", array=err_plus, arrayminus=err_minus, color="#444", thickness=1.2),
            customdata=custom,
            hovertemplate=(
                "%{customdata[0]}<br>strength %{x:+.3f} [%{customdata[3]:+.3f}, %{customdata[4]:+.3f}]"
                "<br>relevance %{customdata[1]:.1%} · accuracy %{customdata[2]:.1%}"
                "<br>in constitution: %{customdata[5]}<extra></extra>"
            ),
        )
    )
    fig.add_vline(x=0, line_color="#333", line_width=1)
    fig.update_layout(
        **LAYOUT,
        title=title,
        xaxis_title="strength = relevance × (2·accuracy − 1); > 0 rewarded, < 0 penalised",
        height=max(300, 24 * len(s) + 120),
        showlegend=False,
    )
    return fig


def _fade(hex_color: str, amount: float = 0.6) -> str:
    hex_color = hex_color.lstrip("#")
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (0, 2, 4))
    r, g, b = (int(c + (255 - c) * amount) for c in (r, g, b))
    return f"#{r:02x}{g:02x}{b:02x}"


def relevance_accuracy(stats: pd.DataFrame) -> go.Figure:
    """Scatter of relevance vs accuracy, marker size ~ |strength|."""
    if stats is None or len(stats) == 0:
        return empty_figure("No principle statistics yet")
    s = stats.dropna(subset=["accuracy"])
    sig = s.get("significant", pd.Series(False, index=s.index)).astype(bool)
    fig = go.Figure(
        go.Scatter(
            x=s["relevance"],
            y=s["accuracy"],
            mode="markers+text",
            text=[_label(k) for k in s["key"]],
            textposition="top center",
            marker=dict(
                size=8 + 60 * s["strength"].abs(),
                color=[POS if v >= 0 else NEG for v in s["strength"]],
                line=dict(width=[2 if x else 0 for x in sig], color="#222"),
            ),
            customdata=[_wrap(t) for t in s.get("text", s["key"])],
            hovertemplate="%{customdata}<br>relevance %{x:.1%}<br>accuracy %{y:.1%}<extra></extra>",
        )
    )
    fig.add_hline(y=0.5, line_dash="dot", line_color="#666")
    fig.update_layout(
        **LAYOUT,
        title="Relevance vs accuracy (outlined = significant)",
        height=420,
        xaxis=dict(title="relevance", tickformat=".0%"),
        yaxis=dict(title="accuracy", tickformat=".0%"),
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
    x_min = max(0.0, min(0.4, float(np.nanmin(lo.to_numpy())) - 0.05)) if len(t) else 0.0
    fig = go.Figure(
        go.Bar(
            y=labels,
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
        **LAYOUT,
        title=title,
        height=max(260, 44 * len(t) + 110),
        xaxis=dict(
            title="agreement with the annotator's held-out choices (95% CI)",
            tickformat=".0%",
            range=[x_min, 1.0],
        ),
        yaxis=dict(autorange="reversed"),
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
            x=[str(c) for c in z.columns],
            y=[_label(k) for k in rows],
            zmin=-lim,
            zmax=lim,
            colorscale=[[0, NEG], [0.5, "#f7f7f7"], [1, POS]],
            colorbar=dict(title="strength"),
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
        height=max(350, 26 * len(rows) + 190),
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
