"""Constitution & reconstruction: thresholds -> constitution (live), agreement vs baselines, examples."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from icai_core import figures as F
from icai_core.evidence import presented_stats
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
# The sliders own their values through their session-state keys, and nothing else sets them except
# the Reset callback (which runs before the widgets are drawn). So a slider always shows the value in
# force, the constitution is built from exactly those values, and the exports state them.
defaults = C.default_selection(audit)
alphas = sorted(set(W.ALPHAS) | {float(defaults["alpha"])})
WIDGET_KEYS = {
    "min_relevance": "thr_min_relevance",
    "min_abs_strength": "thr_min_abs_strength",
    "alpha": "thr_alpha",
    "max_size": "thr_max_size",
    "require_significant": "thr_require_significant",
}


def _widget_value(name: str, value):
    if name == "alpha":
        return W.nearest(alphas, float(value))
    if name == "max_size":
        return int(value or 10)
    if name == "require_significant":
        return bool(value)
    return float(value)


def _reset_thresholds() -> None:
    for name, key in WIDGET_KEYS.items():
        st.session_state[key] = _widget_value(name, defaults[name])
    st.session_state[C.SELECTION] = dict(defaults)


sel = C.current_selection(audit)
# A different run (or annotator) starts from its own selection, never from another run's sliders.
ident = (getattr(audit, "run_id", None), audit.dataset_hash, C.config_key(audit.config), audit.annotator)
if st.session_state.get("_thr_for") != ident:
    st.session_state["_thr_for"] = ident
    for name, key in WIDGET_KEYS.items():
        st.session_state[key] = _widget_value(name, sel.get(name, defaults[name]))
for name, key in WIDGET_KEYS.items():
    if key not in st.session_state:
        st.session_state[key] = _widget_value(name, sel.get(name, defaults[name]))

with st.container(border=True):
    c1, c2, c3, c4, c5 = st.columns([1, 1, 1, 1, 1])
    min_rel = c1.slider(
        "Min relevance", 0.0, 0.5, step=0.01, key="thr_min_relevance",
        help="Share of labelled pairs on which the principle expresses a preference.",
    )
    min_str = c2.slider(
        "Min |strength|", 0.0, 1.0, step=0.005, key="thr_min_abs_strength", format="%.3f",
        help="relevance × (2·accuracy − 1), in absolute value.",
    )
    alpha = c3.select_slider(
        "Alpha (BH q-value)", options=alphas, key="thr_alpha",
        help="False discovery rate for the Benjamini-Hochberg corrected tests.",
    )
    max_size = c4.slider("Max size", 1, 25, step=1, key="thr_max_size")
    req_sig = c5.checkbox(
        "Require significance", key="thr_require_significant",
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
    at_defaults = all(new_sel[k] == _widget_value(k, defaults[k]) for k in WIDGET_KEYS)
    st.button(
        "Reset to defaults", key="thr_reset", icon=":material/restart_alt:", on_click=_reset_thresholds,
        disabled=at_defaults, help="Back to the thresholds of the audit's configuration: " + ", ".join(
            f"{k.replace('_', ' ')} {defaults[k]}" for k in WIDGET_KEYS),
    )

constitution, recon, sel = C.current_constitution(audit)

# --------------------------------------------------------------------------- constitution + recon
left, right = st.columns([1, 1], gap="large")
with left:
    st.subheader(f"Constitution ({len(constitution)} principle{'' if len(constitution) == 1 else 's'})")
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
        ct = constitution.to_frame()
        view = pd.DataFrame({"principle": [F.short_wording(t) for t in ct["text"]], "strength": ct["strength"],
                             "accuracy": ct["accuracy"], "relevance": ct["relevance"], "q-value": ct["q_value"]})
        shown = presented_stats(audit)  # the whole data's evidence, as on the Principles page
        proxy = dict(zip(shown["key"].astype(str), shown["proxy_for_length"].astype(bool), strict=False)) \
            if "proxy_for_length" in shown else {}
        if proxy:
            view["length proxy"] = [proxy.get(str(k), False) for k in ct["key"]]
        st.dataframe(
            view,
            hide_index=True,
            width="stretch",
            column_config={**W.stats_column_config(), "q-value": st.column_config.NumberColumn(format="%.2g"),
                           "principle": st.column_config.TextColumn(width="medium"),
                           "length proxy": st.column_config.CheckboxColumn(
                               width="small", help="Significant alone but not once length is controlled (on "
                               "all the data, clustered by prompt: the Principles page's flag).")},
        )
        n_proxy = int(view["length proxy"].sum()) if "length proxy" in view else 0
        st.caption("Strength and accuracy on the training split, for the wording shown."
                   + (f" {n_proxy} of the {len(view)} are length proxies: what they add over length alone is "
                      "what the cross-validated verdict measures." if n_proxy else ""))
with right:
    st.subheader("Reconstruction of held-out choices")
    st.plotly_chart(F.reconstruction_bar(recon.table), key="recon_chart")
    st.caption(
        f"{recon.n_test:,} held-out pairs (ties excluded: {recon.n_test_ties:,}); "
        f"{recon.n_train:,} training pairs."
    )
    W.reconstruction_verdict(audit, recon.table)
tbl = recon.table.copy()
tbl["method"] = [F.METHOD_LABELS.get(m, m) for m in tbl["method"]]
tbl["95% CI"] = [f"{lo:.1%} – {hi:.1%}" for lo, hi in zip(tbl["ci_low"], tbl["ci_high"], strict=True)]
st.dataframe(
    tbl[["method", "agreement", "95% CI", "n_test", "description"]].rename(columns={"n_test": "n test"}),
    hide_index=True,
    width="stretch",
    column_config={**W.stats_column_config(),
                   "method": st.column_config.TextColumn(width="medium"),
                   "95% CI": st.column_config.TextColumn(width="medium"),
                   "n test": st.column_config.NumberColumn(format="%d", width="small"),
                   "description": st.column_config.TextColumn(width="large")},
)

# --------------------------------------------------------------------------- stats table + chart
st.subheader("All principles")
st.caption(
    "Statistics over all labelled pairs (the constitution itself is selected on the training split). "
    "Solid bars are in the constitution. " + F.SIGN_RULE + " CIs, q-values and *significant* are those of "
    "the Principles page and the report (clustered by prompt when the evidence stage ran); the "
    "constitution's own selection used the binomial q of its training split."
)
all_stats = presented_stats(audit)
tab_chart, tab_table = st.tabs(["Strength chart", "Table"])
with tab_chart:
    st.plotly_chart(F.strength_bar(all_stats, selected=constitution.keys, principles=audit.principles),
                    key="strength_chart")
with tab_table:
    W.stats_table(all_stats, constitution.keys, audit.principles)

# --------------------------------------------------------------------------- example browser
st.subheader("Example browser")
W.example_browser(audit, constitution, recon, key="ex")
