"""Constitution & reconstruction: thresholds -> constitution (live), agreement vs baselines, examples."""

from __future__ import annotations

import streamlit as st

from icai_core import figures as F
from ui import common as C
from ui import widgets as W

st.title("Constitution & reconstruction")
ds = C.require_data()
audit = C.require_audit(ds)

st.caption(
    "A constitution is the short list of principles that best explains the annotator's choices. It is "
    "selected on the **training split** only and scored on the **held-out** pairs. Move the thresholds: "
    "the constitution and its agreement update at once."
)

# --------------------------------------------------------------------------- thresholds
defaults = C.default_selection(audit)
sel = C.current_selection(audit)
with st.container(border=True):
    c1, c2, c3, c4, c5 = st.columns([1, 1, 1, 1, 1])
    min_rel = c1.slider(
        "Min relevance",
        0.0,
        0.5,
        float(sel["min_relevance"]),
        0.01,
        key="thr_min_relevance",
        help="Share of labelled pairs on which the principle expresses a preference.",
    )
    min_str = c2.slider(
        "Min |strength|",
        0.0,
        1.0,
        float(sel["min_abs_strength"]),
        0.005,
        key="thr_min_abs_strength",
        format="%.3f",
        help="relevance × (2·accuracy − 1), in absolute value.",
    )
    alpha = c3.select_slider(
        "Alpha (BH q-value)",
        options=W.ALPHAS,
        value=W.nearest(W.ALPHAS, float(sel["alpha"])),
        key="thr_alpha",
        help="False discovery rate for the Benjamini-Hochberg corrected tests.",
    )
    max_size = c4.slider("Max size", 1, 25, int(sel["max_size"] or 10), 1, key="thr_max_size")
    req_sig = c5.checkbox(
        "Require significance",
        bool(sel["require_significant"]),
        key="thr_require_significant",
        help="Only principles with q-value < alpha can enter.",
    )
    new_sel = {
        "min_relevance": float(min_rel),
        "min_abs_strength": float(min_str),
        "alpha": float(alpha),
        "max_size": int(max_size),
        "require_significant": bool(req_sig),
    }
    st.session_state[C.SELECTION] = new_sel
    if new_sel != defaults and st.button("Reset to defaults", key="thr_reset", icon=":material/restart_alt:"):
        st.session_state[C.SELECTION] = dict(defaults)
        for k in (
            "thr_min_relevance",
            "thr_min_abs_strength",
            "thr_alpha",
            "thr_max_size",
            "thr_require_significant",
        ):
            st.session_state.pop(k, None)
        st.rerun()

constitution, recon, sel = C.current_constitution(audit)

# --------------------------------------------------------------------------- constitution + recon
left, right = st.columns([1, 1], gap="large")
with left:
    st.subheader(f"Constitution ({len(constitution)} principles)")
    n_cand = constitution.settings.get("n_candidates")
    if n_cand is not None:
        st.caption(
            f"{n_cand} of {constitution.settings.get('n_principles_tested', '?')} principles pass the thresholds "
            f"on the {recon.n_train:,} training pairs; the strongest {len(constitution)} are kept."
        )
    if len(constitution) == 0:
        st.warning("No principle passes these thresholds. Lower them to get a constitution.")
    else:
        st.code(constitution.text(), language=None, wrap_lines=True)
        st.dataframe(
            constitution.to_frame()[["key", "strength", "accuracy", "relevance", "q_value", "inverted"]],
            hide_index=True,
            width="stretch",
            column_config=W.stats_column_config(),
        )
with right:
    st.subheader("Reconstruction of held-out choices")
    st.plotly_chart(F.reconstruction_bar(recon.table), key="recon_chart")
    tbl = recon.table.copy()
    tbl["method"] = [F.METHOD_LABELS.get(m, m) for m in tbl["method"]]
    st.dataframe(
        tbl[["method", "agreement", "ci_low", "ci_high", "n_test", "description"]],
        hide_index=True,
        width="stretch",
        column_config=W.stats_column_config(),
    )
    st.caption(
        f"{recon.n_test:,} held-out pairs (ties excluded: {recon.n_test_ties:,}); "
        f"{recon.n_train:,} training pairs."
    )

# --------------------------------------------------------------------------- stats table + chart
st.subheader("All principles")
st.caption(
    "Statistics over all labelled pairs (the constitution itself is selected on the training split). "
    "Solid bars are in the constitution."
)
tab_chart, tab_table = st.tabs(["Strength chart", "Table"])
with tab_chart:
    st.plotly_chart(F.strength_bar(audit.stats, selected=constitution.keys), key="strength_chart")
with tab_table:
    W.stats_table(audit.stats, constitution.keys)

# --------------------------------------------------------------------------- example browser
st.subheader("Example browser")
W.example_browser(audit, constitution, recon, key="ex")
