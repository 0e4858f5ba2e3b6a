"""The principle map of one data set: its candidate principles placed by meaning, clustered, and
coloured by what the annotators reward.

Points are the judges of *this* run: directions discovered in the data (`icai_core.discover`), LLM
proposals when there are any, and the measurable library. Each point is the judge's wording embedded
with the bundled MiniLM (the shared "Select the response that" removed, see
`ClusterConfig.strip_prefix`) and clustered by `icai_core.cluster.cluster_principles`:

* up to `ClusterConfig.small_max` (60) distinct texts: average-linkage clustering on cosine distance
  and a PCA layout (deterministic and stable when a principle is added; no seed is used);
* more texts: UMAP (random_state = `seed`) + HDBSCAN and a UMAP layout.

`frame.attrs["layout"]` says which. A cluster's representative is the member closest to the
|strength|-weighted centre of the cluster (support-weighted where no strength was measured).

Sign convention (`orient`):

* `"as_written"` (default): the judge's own text and its signed strength; a negative value means
  the annotators prefer the opposite, and the hover says so in words;
* `"rewarded"`: a judge with negative strength is shown with its inverse text and +|strength|, so
  every wording on the map is one the annotators reward.

Either way the hover's number always has the sign that belongs to the wording it shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from icai_core.judge import Judge

__all__ = ["MAP_COLUMNS", "map_frame", "map_figure", "short_label"]

MAP_COLUMNS = [
    "key",
    "text",
    "x",
    "y",
    "cluster",
    "strength",
    "support",
    "kind",
    "inverted",
    "is_representative",
    "label",
    "hover",
]
_PREFIX = "select the response that "


def short_label(text: str, width: int = 38) -> str:
    """The text without "Select the response that", cut at a word boundary to about `width` chars."""
    t = " ".join(str(text).split())
    if t.lower().startswith(_PREFIX):
        t = t[len(_PREFIX):]
    t = t.rstrip(".")
    # discovered directions: "uses more of the words “a”, “b” and fewer of “c”" -> "more “a”, “b” / fewer “c”"
    t = t.replace("uses more of the words ", "more ").replace("uses fewer of the words ", "fewer ")
    t = t.replace(" and fewer of ", " / fewer ").replace(" and more of ", " / more ")
    if len(t) <= width:
        return t
    cut = t[:width].rsplit(" ", 1)[0]
    return (cut or t[:width]) + "\u2026"


def _stats_lookup(stats: pd.DataFrame | None) -> tuple[dict, dict]:
    if stats is None or len(stats) == 0:
        return {}, {}
    st = stats.reset_index() if "key" not in stats.columns else stats
    strength = dict(zip(st["key"].astype(str), st["strength"].astype(float), strict=True)) \
        if "strength" in st.columns else {}
    sup_col = "n_relevant" if "n_relevant" in st.columns else "support" if "support" in st.columns else None
    support = dict(zip(st["key"].astype(str), st[sup_col], strict=True)) if sup_col else {}
    return strength, support


def map_frame(
    judges: Sequence[Judge],
    stats: pd.DataFrame | None = None,
    *,
    embedder=None,
    seed: int = 0,
    orient: str = "as_written",
) -> pd.DataFrame:
    """One row per judge: `MAP_COLUMNS` (key, text shown, x, y, cluster, strength of the text
    shown, support, kind, inverted, is_representative, label, hover).

    `stats`: a table with `key`, `strength` and `n_relevant` (e.g. `icai_core.stats.principle_stats`);
    judges without a row get NaN strength and their own `support`. Support is the number of pairs
    on which the judge voted (`n_relevant`). `embedder`: an `icai_core.embed.Embedder` (default: the
    bundled MiniLM with 64 word pieces, cached in `$PRINCIPIA_HOME/embeddings.sqlite`). `seed`:
    UMAP's random state when there are 60 texts or more (smaller maps need none).
    """
    from icai_core.cluster import ClusterConfig, cluster_principles

    if orient not in ("as_written", "rewarded"):
        raise ValueError(f"orient must be 'as_written' or 'rewarded', not {orient!r}")
    judges = list(judges)
    keys = [j.key for j in judges]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"judge keys must be unique on the map; repeated: {', '.join(dup)}")
    strength_of, support_of = _stats_lookup(stats)
    rows = []
    for j in judges:
        s = float(strength_of.get(j.key, np.nan))
        sup = support_of.get(j.key)
        sup = int(sup) if sup is not None and np.isfinite(sup) else int(j.support)
        inverted = orient == "rewarded" and np.isfinite(s) and s < 0
        text = j.inverse_text if inverted else j.text
        rows.append({"key": j.key, "text": text, "strength": -s if inverted else s, "support": sup,
                     "kind": j.kind, "inverted": bool(inverted), "original_text": j.text,
                     "inverse_text": j.inverse_text})
    frame = pd.DataFrame(rows)
    if frame.empty:
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in MAP_COLUMNS})
        out.attrs.update(layout="none", clustering="none", n_clusters=0)
        return out
    strength = frame["strength"].to_numpy(dtype=float)
    weights = np.where(np.isfinite(strength), np.abs(strength), np.nan)
    if np.isfinite(weights).any():
        # a judge never measured weighs as the weakest measured one: it stays a candidate, not a favourite
        floor = np.nanmin(weights)
        weights = np.where(np.isfinite(weights), weights, floor)
    else:
        weights = frame["support"].to_numpy(dtype=float)
    if embedder is None:
        from icai_core.discover import default_embedder

        embedder = default_embedder(ClusterConfig().max_seq_length)
    res = cluster_principles(
        frame["text"].tolist(), embedder=embedder, config=ClusterConfig(random_state=seed), weights=weights
    )
    pts = res.points
    ip = res.input_point
    frame["x"] = pts["x"].to_numpy()[ip]
    frame["y"] = pts["y"].to_numpy()[ip]
    frame["cluster"] = res.input_cluster
    rep = pts["is_representative"].to_numpy()[ip]
    # one representative per cluster even when two judges share a wording: the first of them
    frame["is_representative"] = rep & ~pd.Series(ip).duplicated().to_numpy()
    frame["label"] = [short_label(t) for t in frame["text"]]
    frame["hover"] = [_hover(r) for r in frame.itertuples()]
    out = frame[MAP_COLUMNS].copy()
    method = res.params.get("method", "")
    out.attrs.update(
        layout=res.params.get("layout", "umap" if method == "umap+hdbscan" else "pca"),
        clustering=method,
        n_clusters=res.n_clusters,
        seed_used=method == "umap+hdbscan",
    )
    return out


def _hover(r) -> str:
    s = r.strength
    if not np.isfinite(s):
        verdict = "strength not measured"
    elif s > 0:
        verdict = f"strength {s:+.3f}: the annotators reward this"
    elif s < 0:
        verdict = f"strength {s:+.3f}: the annotators prefer the opposite ({short_label(r.inverse_text, 80)})"
    else:
        verdict = "strength 0.000: no preference either way"
    note = " (shown inverted: the original wording has the opposite sign)" if r.inverted else ""
    cluster = "no cluster" if r.cluster < 0 else f"cluster {r.cluster}"
    return (f"<b>{r.key}</b> ({r.kind}, {cluster})<br>{r.text}<br>{verdict}{note}<br>"
            f"votes on {r.support:,} pairs")


_SYMBOLS = {"measurable": "circle", "discovered": "diamond", "llm": "square", "llm_annotator": "triangle-up",
            "human": "cross"}


def map_figure(frame: pd.DataFrame, *, title: str = "Principle map"):
    """Plotly scatter of `map_frame`'s output: every point labelled on the plot, colour = signed
    strength of the wording shown (diverging, 0 = white), size ~ sqrt(support), symbol = kind,
    representatives outlined in black; the hover shows the full text and the signed strength."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if frame is None or len(frame) == 0:
        fig.update_layout(title=title, annotations=[dict(text="No principles to map", showarrow=False)])
        return fig
    s = frame["strength"].astype(float)
    lim = float(np.nanmax(np.abs(s))) if np.isfinite(s).any() else 1.0
    lim = lim if lim > 0 else 1.0
    sup = frame["support"].astype(float).clip(lower=0)
    size = 8 + 22 * np.sqrt(sup / sup.max()) if sup.max() > 0 else pd.Series(12.0, index=frame.index)
    for kind, sub in frame.groupby("kind", sort=False):
        idx = sub.index
        fig.add_trace(
            go.Scatter(
                x=sub["x"], y=sub["y"], mode="markers+text", name=str(kind),
                text=sub["label"], textposition="top center", textfont=dict(size=10),
                hovertext=sub["hover"], hoverinfo="text",
                marker=dict(
                    symbol=_SYMBOLS.get(str(kind), "circle"),
                    size=size[idx], color=s[idx].fillna(0.0), coloraxis="coloraxis",
                    line=dict(width=np.where(sub["is_representative"], 2.5, 0.5), color="black"),
                ),
                customdata=np.column_stack([sub["key"], s[idx]]),
                showlegend=True,
            )
        )
    fig.update_layout(
        title=title,
        coloraxis=dict(colorscale="RdBu", cmin=-lim, cmax=lim, cmid=0.0,
                       colorbar=dict(title="strength<br>(of the text shown)")),
        xaxis=dict(showticklabels=False, title=frame.attrs.get("layout", "").upper() + " 1"),
        yaxis=dict(showticklabels=False, title=frame.attrs.get("layout", "").upper() + " 2"),
        legend=dict(title="kind (outlined = cluster representative)"),
        template="plotly_white",
    )
    return fig
