"""Principles: run the audit (background thread, progress, cancel), the principle table, the map."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from icai_core import figures as F
from icai_core.evidence import evidence_effects, presented_stats
from ui import common as C
from ui import icai_ui as IC
from ui import widgets as W


def _icai_section(ds) -> None:
    """ICAI through the LLM engine: estimate, run in the background, results."""
    eng = C.engine()
    title = (f"ICAI with the local model ({C.escape_md(eng.model_label)})" if eng.is_local
             else f"ICAI with the LLM engine ({C.escape_md(eng.model)})")
    with st.expander(title, expanded=True):
        st.caption(
            "Inverse Constitutional AI: the LLM proposes principles from training pairs, near-duplicates are "
            "clustered (UMAP + HDBSCAN), the representatives (plus the measurable library) are tested on "
            "every pair, and an LLM annotator reconstructs held-out choices with the constitution."
        )
        if eng.is_local:
            st.caption(
                "Local engine: llama.cpp serves the model file on 127.0.0.1 from the moment you click "
                f"**Run ICAI** ({int(eng.threads)} thread{'s' if int(eng.threads) != 1 else ''}; the first "
                "start loads the model), no key, no cost. A small CPU model answers slowly (seconds per "
                "call): start with few pairs."
            )
        from icai_core.icai import ICAIConfig

        c1, c2, c3 = st.columns(3)
        n_prop = c1.number_input("Pairs for proposals", 5, 2000, 50, 5, key="icai_prop")
        n_cand = c2.number_input("Max. candidate principles", 2, 100, 20, 1, key="icai_cand")
        n_ann = c3.number_input("Held-out pairs annotated", 5, 2000, 100, 5, key="icai_ann")
        config = ICAIConfig(
            max_propose_pairs=int(n_prop), max_candidates=int(n_cand), max_annotate_pairs=int(n_ann),
            use_embeddings=_use_embeddings(), discover=_discover_on(),
        )
        job = st.session_state.get(IC.JOB)
        busy = job is not None and job.running
        b1, b2 = st.columns([1, 1])
        if b1.button("Estimate cost", key="icai_estimate", icon=":material/calculate:"):
            try:
                st.session_state["icai_estimate_table"] = IC.estimate_table(ds.pairs, config, eng)
            except Exception as exc:  # shown, never raised
                st.error(f"Could not estimate the cost: {exc}")
        if b2.button("Run ICAI", type="primary", key="icai_run", disabled=busy, icon=":material/smart_toy:"):
            problem = IC.start_icai(ds, config, eng)
            if problem is None:
                st.rerun()
            st.session_state["icai_problem"] = problem
        else:
            st.session_state.pop("icai_problem", None)
        if st.session_state.get("icai_problem"):
            st.error(f"ICAI did not start: {C.escape_md(st.session_state['icai_problem'])}")
        est = st.session_state.get("icai_estimate_table")
        if est is not None:
            st.dataframe(
                est,
                hide_index=True,
                width="stretch",
                column_config={"dollars": st.column_config.NumberColumn(format="$%.2f")},
            )
        C.job_panel(IC.JOB, collect=IC.collect, poll_every=POLL_S)
        result = IC.current_result(ds)
        if result is None:
            return
        m1, m2, m3, m4 = st.columns(4)
        n_llm = sum(j.kind == "llm" for j in result.judges)
        m1.metric("Proposals", f"{len(result.proposals) if result.proposals is not None else 0:,}")
        m2.metric("Clusters", getattr(result.clusters, "n_clusters", 0))
        m3.metric("Candidates tested", f"{n_llm} proposed + {len(result.judges) - n_llm} measurable")
        usage = result.usage or {}
        m4.metric("LLM cost", f"${float(usage.get('dollars', 0) or 0):.2f}",
                  help=f"{int(usage.get('calls', 0) or 0):,} model calls" + (
                      " on the local model (no cost)" if eng.is_local else ""))
        counts = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in (result.stage_counts or {}).items()}
        if counts:
            st.caption("Model answers per stage: " + " · ".join(
                f"{k}: {c['valid']} valid, {c['recovered']} recovered, {c['invalid']} invalid"
                for k, c in counts.items()))
        for note in result.notes:
            st.warning(C.escape_md(note))
        if getattr(result.clusters, "points", None) is not None and len(result.clusters.points):
            st.plotly_chart(
                F.principle_scatter(result.clusters.points, title="Proposed principles (size = proposals)"),
                key="icai_map",
            )
        st.caption("This ICAI run is the current run: its constitution, reconstruction, comparison of "
                   "annotators and report are on the other pages.")
        if result.llm_reconstruction is not None and len(result.llm_reconstruction):
            st.plotly_chart(F.reconstruction_bar(result.llm_reconstruction), key="icai_recon")


def _use_embeddings() -> bool:
    return bool(st.session_state.get("use_embeddings", False))


def _discover_on() -> bool:
    return bool(st.session_state.get("discover", False))


def _audit_config():
    """The offline audit this page asks for: the embeddings and discovery toggles."""
    from icai_core.audit import AuditConfig

    return AuditConfig(use_embeddings=_use_embeddings(), discover=_discover_on())


def _n_prompts(effects: pd.DataFrame) -> str:
    """The number of prompt clusters the CIs are clustered over (the largest per-principle count)."""
    n = pd.to_numeric(effects.get("n_clusters", pd.Series(dtype=float)), errors="coerce").max()
    return f"{int(n):,}" if pd.notna(n) else "?"


def _discovery_section(audit) -> None:
    """The directions discovery found in this data: keyword description, support, marginal and
    length-controlled effects; those kept are principles like any other (table, map, constitution)."""
    table = (getattr(audit, "extras", None) or {}).get("discovery")
    if table is None or len(table) == 0:
        return
    kept = table[table["kept"].astype(bool)] if "kept" in table else table
    st.subheader("Discovered directions")
    st.caption(
        f"Offline discovery (WIMHF-style: sparse dictionary on the embedding differences of the two "
        f"responses) learned {len(table)} directions in this data and kept {len(kept)}: a direction is dropped "
        "when a measurable judge already names it, when it votes on too few pairs or when no word describes "
        "it (column *reason*). Each is described by the words over-represented on its side (log-odds, "
        "informative Dirichlet prior); effects are logistic coefficients without and with the length "
        "difference as covariate (CIs clustered by prompt). Kept directions are tested, enter the "
        "constitution and appear on the map (diamonds) like any other principle."
    )
    cols = [c for c in ("key", "text", "name_source", "fidelity", "low_fidelity", "support", "strength",
                        "marginal_coef", "marginal_q", "controlled_coef", "controlled_q", "kept", "reason")
            if c in table.columns]
    st.dataframe(
        table[cols],
        hide_index=True,
        width="stretch",
        key="discovery_table",
        column_config={
            "text": st.column_config.TextColumn("description", width="large"),
            "strength": st.column_config.NumberColumn(format="%+.3f"),
            "marginal_coef": st.column_config.NumberColumn("marginal effect", format="%+.3f"),
            "controlled_coef": st.column_config.NumberColumn("length-controlled effect", format="%+.3f"),
            "marginal_q": st.column_config.NumberColumn("q (marginal)", format="%.3g"),
            "controlled_q": st.column_config.NumberColumn("q (controlled)", format="%.3g"),
        },
    )


# Progress poll of a running job on this page. Not 0.5 s: after every script run, fragment reruns
# included, Streamlit runs a full gc.collect(2) holding the GIL (runner.postScriptGC), which takes
# ~0.5 s of CPU once sentence-transformers is imported (600k objects); polled every 0.5 s it starved
# the audit thread, and an audit with discovery that takes 17 s alone did not finish in 10 min
# in the app on the busy 2-core machine.
POLL_S = 2.0

_POSITIONS = ("top center", "bottom center", "middle right", "middle left", "top right", "top left",
              "bottom right", "bottom left")


def _label_positions(frame: pd.DataFrame, width_px: float = 640.0, height_px: float = 490.0) -> dict:
    """key -> plotly textposition, chosen so that the map's labels overlap as little as possible.

    Why: plotly places every label "top center", and principles with similar wording sit close
    together, so their labels printed over each other. Greedy, deterministic: the most supported
    principles are placed first; each label takes the first of `_POSITIONS` whose box (10 px font,
    ~6 px per character) overlaps no label placed so far, no marker and stays inside the plot, else the
    least overlapping. The layout's x and y ranges are padded by `_PAD` in `_map_chart` so that the
    boxes measured here fit."""
    if frame is None or len(frame) == 0:
        return {}
    x = frame["x"].astype(float).to_numpy()
    y = frame["y"].astype(float).to_numpy()
    span_x = float(x.max() - x.min()) or 1.0
    span_y = float(y.max() - y.min()) or 1.0
    inner = 1 + 2 * _PAD  # the axes show the data span padded by _PAD on each side
    px = ((x - x.min()) / span_x + _PAD) / inner * width_px
    py = ((y - y.min()) / span_y + _PAD) / inner * height_px  # y up
    sup = frame["support"].astype(float).clip(lower=0).to_numpy()
    radius = (8 + 22 * (sup / sup.max()) ** 0.5) / 2 if sup.max() > 0 else sup * 0 + 6
    markers = [(px[i] - radius[i], py[i] - radius[i], px[i] + radius[i], py[i] + radius[i]) for i in range(len(px))]
    placed: list[tuple[float, float, float, float]] = []
    out: dict = {}

    def box(i: int, pos: str) -> tuple[float, float, float, float]:
        w, h, r = 6.0 * len(str(frame["label"].iloc[i])), 13.0, radius[i] + 2
        vert, horiz = pos.split()
        x0 = {"center": px[i] - w / 2, "right": px[i] + r, "left": px[i] - r - w}[horiz]
        y0 = {"top": py[i] + r, "bottom": py[i] - r - h, "middle": py[i] - h / 2}[vert]
        return x0, y0, x0 + w, y0 + h

    def overlap(a, b) -> float:
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    frame_box = (0.0, 0.0, width_px, height_px)

    def cost(b, others) -> float:  # overlapping area + area outside the plot (a cut-off label)
        outside = (b[2] - b[0]) * (b[3] - b[1]) - overlap(b, frame_box)
        return sum(overlap(b, o) for o in others) + 2.0 * outside

    for i in sorted(range(len(px)), key=lambda i: (-sup[i], str(frame["key"].iloc[i]))):
        others = placed + [m for j, m in enumerate(markers) if j != i]
        best = min(_POSITIONS, key=lambda pos: (cost(box(i, pos), others), _POSITIONS.index(pos)))
        placed.append(box(i, best))
        out[str(frame["key"].iloc[i])] = best
    return out


_PAD = 0.12  # share of the data's span added on each side of the map's axes (room for edge labels)


def _map_chart(frame: pd.DataFrame):
    """The principle map figure with its labels spread out and a taller plot, legend below."""
    from icai_core.principle_map import map_figure

    fig = map_figure(frame)
    positions = _label_positions(frame)
    for trace in fig.data:
        keys = [str(row[0]) for row in trace.customdata]
        trace.textposition = [positions.get(k, "top center") for k in keys]
        trace.cliponaxis = False
    x, y = frame["x"].astype(float), frame["y"].astype(float)
    sx, sy = float(x.max() - x.min()) or 1.0, float(y.max() - y.min()) or 1.0
    fig.update_layout(height=640, legend=dict(orientation="h", yanchor="top", y=-0.08, x=0),
                      margin=dict(l=40, r=40, t=60, b=90))
    fig.update_xaxes(range=[x.min() - _PAD * sx, x.max() + _PAD * sx])
    fig.update_yaxes(range=[y.min() - _PAD * sy, y.max() + _PAD * sy])
    return fig


st.title("Principles")
ds = C.require_data()

# --------------------------------------------------------------------------- run controls
with st.container(border=True):
    st.markdown(f"**Dataset:** {C.escape_md(ds.name)} · {ds.n:,} rows")
    c1, c2, c3 = st.columns([3, 2, 3])  # wide enough for the toggles' labels at 1280 px
    c1.toggle(
        "Use sentence embeddings",
        value=bool(st.session_state.get("use_embeddings", False)),
        key="_use_embeddings_widget",
        on_change=lambda: st.session_state.update(use_embeddings=st.session_state["_use_embeddings_widget"]),
        help="Adds the embedding-based judge (semantic closeness to the prompt, bundled MiniLM, local). "
        "Off by default: it embeds every prompt and response, about 14 ms per distinct text on 2 idle CPU "
        "cores the first time (12,139 texts took 189 s; cached afterwards; see docs/benchmarks.md), while "
        "the other judges take well under 1 ms per pair.",
    )
    c1.toggle(
        "Discover directions in the data",
        value=_discover_on(),
        key="_discover_widget",
        on_change=lambda: st.session_state.update(discover=st.session_state["_discover_widget"]),
        help="Finds directions in which preferred and rejected responses differ that no measurable judge "
        "names (embeddings of both responses, sparse dictionary, keyword descriptions; no LLM). It "
        "embeds every response (about 40 s for 140 distinct pairs on a busy 2-core machine; cached "
        "afterwards). Discovered directions are tested like any other principle.",
    )
    job = C.get_job()
    running = job is not None and job.running
    if c2.button(
        "Run offline audit", type="primary", icon=":material/play_arrow:", disabled=running, key="run_audit"
    ):
        C.start_audit(ds, _audit_config())
        st.rerun()
    with c3:
        if not C.engine().icai_ready:
            st.caption(
                "ICAI with an LLM (principle proposals) needs the LLM engine or a local GGUF model: set "
                "one up on the Home page."
            )

if C.engine().icai_ready:
    _icai_section(ds)

C.job_panel(poll_every=POLL_S)
audit = C.get_audit()
if audit is None:
    if C.get_job() is None:
        st.info("Click **Run offline audit** to measure which principles this annotator rewards.")
    st.stop()

# --------------------------------------------------------------------------- headline + table
effects, _ = evidence_effects(audit)
alpha = float(audit.config.alpha)
# the clustered numbers of the evidence stage, as summary.json and the report have them; else the binomial
# ones, labelled (icai_core.evidence.presented_stats: one function for every view)
stats = presented_stats(audit)
no_evidence = stats.attrs.get("no_evidence", "")
sig = stats[stats["significant"].astype(bool)]
m1, m2, m3, m4 = st.columns(4)
m1.metric("Distinct pairs", f"{audit.analysis.n_pairs:,}",
          help=f"{C.annotator_label(audit.annotator, audit)}; {len(audit.pairs):,} rows")
m2.metric("Principles tested", len(stats))
if effects is not None:
    n_sig_proxy = int(sig["proxy_for_length"].astype(bool).sum()) if "proxy_for_length" in sig else 0
    m3.metric("Significant", len(sig), delta=f"{n_sig_proxy} length proxies" if n_sig_proxy else None,
              delta_color="off", delta_arrow="off",
              help=f"Benjamini-Hochberg q < {alpha:g} with the strength's test clustered by prompt: the set "
              "summary.json marks significant. A length proxy is significant alone but not once length is "
              "controlled.")
else:
    m3.metric("Significant (binomial)", len(sig), help=f"Benjamini-Hochberg q < {alpha:g} on the binomial "
              "test per row, NOT clustered by prompt (no evidence stage in this run): judgements that share "
              "a prompt are counted as independent, so this may claim more than the data show.")
m4.metric("Audit time", f"{audit.timings.get('total_s', 0):.1f} s")
cfg = audit.config
st.caption(
    f"This audit: embedding-based judges {'on' if cfg.use_embeddings else 'off'} · "
    f"discovery {'on' if cfg.discover else 'off'} · "
    f"held-out split {cfg.test_size:.0%} (seed {cfg.seed}) · α = {cfg.alpha:g}."
)

st.subheader("Principle table")
if effects is not None:
    n_proxy = int(stats["proxy_for_length"].sum())
    proxies = ("*length proxy* marks a principle significant alone but not once length is controlled "
               f"({'none here' if n_proxy == 0 else f'{n_proxy} here'})")
    st.caption(
        F.SIGN_RULE + f" Strength CIs and q-values are clustered by prompt ({_n_prompts(effects)} prompts: "
        "judgements of one prompt are not independent), as in summary.json; *significant* = "
        f"Benjamini-Hochberg q < {alpha:g}. The *length-controlled effect* is the logistic coefficient of the "
        f"principle's vote with the length difference as covariate (log-odds, same sign rule); {proxies}. "
        "The CIs are per principle, not adjusted for the number tested; *significant* and *length proxy* use "
        "the Benjamini-Hochberg q-values, so an interval that excludes 0 can still fall short of them. "
        "Accuracy is shown without a CI (a binomial one would assume independent rows)."
        + (" q-values below 1e-10 come from a normal approximation far in its tail: read them as "
           "\"< 1e-10\", not as the digits shown." if (stats["q_value"] < 1e-10).any() else "")
    )
else:
    st.warning(
        f"No clustered evidence for this run: {C.escape_md(no_evidence)} The table falls back to the binomial "
        "CIs and q-values per row (*binomial, not clustered*): they treat judgements that share a prompt as "
        "independent, so intervals may be too narrow and the *significant* set too large, and there is no "
        "length-controlled effect."
        + ("" if "could not be computed" in no_evidence else
           " Run the offline audit again (the evidence stage is on by default) to get them.")
    )
    st.caption(F.SIGN_RULE + f" *Significant* after Benjamini-Hochberg at α = {alpha:g} (binomial test).")
W.stats_table(stats, audit.constitution.keys, audit.principles, key="principles_table")
if effects is not None:
    failed = stats[~stats["effect_status"].isin(["ok"])]
    if len(failed):
        st.caption(f"No length-controlled effect for {len(failed)} of {len(stats)} principles ('—', with the "
                   "reason): the length covariate itself, principles that never vote on a decided pair, or whose "
                   "votes agree with every choice they touch (separation; summary.json has each message).")

tab_bar, tab_scatter = st.tabs(["Strength", "Relevance vs accuracy"])
with tab_bar:
    st.plotly_chart(F.strength_bar(stats, selected=audit.constitution.keys, principles=audit.principles), key="principles_strength")
with tab_scatter:
    st.plotly_chart(F.relevance_accuracy(stats, principles=audit.principles), key="principles_relacc")

_discovery_section(audit)

# --------------------------------------------------------------------------- map + clusters
st.subheader("Principle map")
if not st.toggle("Show the principle map", value=True, key="show_map"):
    st.stop()
st.caption(
    "The candidate principles of this run (the measurable library, and discovered or LLM-proposed ones "
    "when present), embedded with the bundled MiniLM model and laid out in 2-D; near-duplicates form "
    "clusters (outlined: each cluster's most central member, weighted by |strength|). Colour = signed "
    "strength of the wording shown (red: the annotator penalises it); size = support (relevant pairs)."
)
with st.spinner("Embedding and clustering the principle texts…"):
    frame, err = C.principle_map(audit)
if frame is None:
    st.warning(f"The principle map is unavailable: {C.escape_md(err)}")
    st.stop()
st.plotly_chart(_map_chart(frame), key="principle_map")
layout = frame.attrs.get("layout") or frame.attrs.get("method")
if layout:
    st.caption(f"Layout: {C.escape_md(layout)}.")
points = frame
clusters = (
    frame[frame["cluster"] >= 0]
    .groupby("cluster")
    .agg(size=("key", "size"), mean_strength=("strength", "mean"),
         max_abs_strength=("strength", lambda s: s.abs().max()),
         representative=("text", lambda t: t.iloc[0]))
    .reset_index()
)
reps = frame[frame["is_representative"].astype(bool)].set_index("cluster")["text"]
if len(clusters):
    clusters["representative"] = clusters["cluster"].map(reps).fillna(clusters["representative"])
st.markdown("**Clusters**")
st.dataframe(
    clusters,
    hide_index=True,
    width="stretch",
    column_config={
        "representative": st.column_config.TextColumn(width="large"),
        "mean_strength": st.column_config.NumberColumn("mean strength", format="%+.3f"),
        "max_abs_strength": st.column_config.NumberColumn("max |strength|", format="%.3f"),
    },
)

options = sorted((int(c) for c in points["cluster"].unique()), key=lambda c: (c == -1, c))
label = {c: ("noise (no cluster)" if c == -1 else f"cluster {c}") for c in options}
choice = st.selectbox("Inspect a cluster", options, format_func=label.get, key="cl_choice")
members = points[points["cluster"] == choice]
keys = [k for k in members.get("key", pd.Series(dtype=str)) if k in set(stats["key"])]
st.markdown(f"**{label[choice]}: {len(members)} principles**")
W.stats_table(
    stats[stats["key"].isin(keys)], audit.constitution.keys, audit.principles, key="cluster_members"
)

if keys:
    top = stats[stats["key"].isin(keys)].sort_values("strength", key=abs, ascending=False).iloc[0]
    st.markdown(
        f"**Example pairs** where the cluster's strongest principle votes — "
        f"{C.escape_md(top['text'])} (strength {top['strength']:+.3f})"
    )
    col = audit.votes[top["key"]]
    target = audit.pairs["preferred"].map({"a": 1, "b": -1}).fillna(0).astype(int)
    relevant = (col != 0) & (target != 0)
    # distinct prompts, two where the principle agrees with the annotator and one where it does not
    agree = audit.pairs[relevant & (col == target)].drop_duplicates("prompt").index[:2]
    disagree = audit.pairs[relevant & (col != target)].drop_duplicates("prompt").index[:1]
    shown = list(agree) + list(disagree)
    if not shown:
        st.caption("This principle never votes on a labelled pair.")
    for i in shown:
        row = audit.pairs.loc[i]
        vote = W.VOTE_LABEL[int(col.loc[i])]
        agrees = "agrees" if int(target.loc[i]) == int(col.loc[i]) else "disagrees"
        with st.expander(
            f"Pair {C.escape_md(row['id'])}: principle picks {vote}, annotator picked "
            f"{W.CHOICE_LABEL.get(row['preferred'], row['preferred'])} ({agrees})"
        ):
            W.render_pair(row, height=200)
