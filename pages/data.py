"""Data: upload (auto-detected format, column-mapping fallback), bundled samples, summary, preview."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from icai_core import figures as F
from ui import common as C
from ui import intake as I

st.title("Data")
st.caption(
    "Pairwise preference data: one row per judged pair — a prompt, two responses and which one the "
    "annotator preferred. CSV, TSV, JSON, JSON Lines and Parquet; the Principia/ICAI CSV, AlpacaEval "
    "annotations, Chatbot Arena battles and HH-RLHF chosen/rejected files are recognised automatically."
)

TIES = {"keep": "Keep ties (excluded from accuracy and strength)", "exclude": "Drop tied pairs at load"}

tab_upload, tab_bundled = st.tabs(["Upload a file", "Bundled samples"])

# --------------------------------------------------------------------------- upload
with tab_upload:
    uploaded = st.file_uploader(
        "Preference file",
        type=I.UPLOAD_TYPES,
        key="upload_file",
        help="Up to 500 MB. Nothing leaves this machine.",
    )
    ties = st.radio("Ties", list(TIES), format_func=TIES.get, key="ties", horizontal=True)
    if uploaded is not None:
        content = uploaded.getvalue()
        mapping = (
            st.session_state.get("_mapping")
            if st.session_state.get("_mapping_for") == uploaded.file_id
            else None
        )
        sig = (uploaded.file_id, ties, repr(mapping))
        outcome = st.session_state.get("_upload_outcome")
        if outcome is None or st.session_state.get("_upload_sig") != sig:
            with st.spinner(f"Reading {uploaded.name}…"):
                outcome = I.handle_upload(uploaded.name, content, ties=ties, mapping=mapping)
            st.session_state["_upload_sig"] = sig
            st.session_state["_upload_outcome"] = outcome
            if outcome.ok:
                C.set_dataset(C.dataset_from_load_result(outcome.result, name=uploaded.name, source="upload"))
        if outcome.error:
            st.error(outcome.error, icon=":material/error:")
        if outcome.needs_mapping:
            st.markdown("**Say which column holds what** — the layout was not recognised.")
            with st.form("mapping_form"):
                opts = [""] + outcome.columns
                choices = {}
                cols = st.columns(4)
                for i, fld in enumerate(I.mapping_fields()):
                    if fld == "values":
                        continue
                    guess = I.suggested_value(outcome.suggested, fld)
                    required = fld in ("text_a", "text_b", "preferred")
                    choices[fld] = cols[i % 4].selectbox(
                        fld + (" *" if required else ""),
                        opts,
                        index=opts.index(guess) if guess in opts else 0,
                        key=f"map_{fld}",
                    )
                pref_col = I.suggested_value(outcome.suggested, "preferred")
                values_text = st.text_input(
                    "Preference labels (optional)",
                    value=I.format_value_map(getattr(outcome.suggested, "values", None) or {})
                    or I.suggested_value_map_text(uploaded.name, content, pref_col),
                    key="map_values",
                    help="How the preference column's values map to a / b / tie, e.g. `1=a, 2=b, 0=tie`. "
                    "Not needed for a/b/tie, A/B, text_a/text_b or model_a/model_b labels.",
                )
                submitted = st.form_submit_button("Load with this mapping", type="primary")
            if submitted:
                try:
                    st.session_state["_mapping"] = I.mapping_from_choices(choices, values_text)
                    st.session_state["_mapping_for"] = uploaded.file_id
                    st.rerun()
                except ValueError as exc:
                    st.error(f"{uploaded.name}: {exc} (the fields marked * are required).")
    else:
        st.session_state.pop("_upload_outcome", None)
        st.session_state.pop("_upload_sig", None)

# --------------------------------------------------------------------------- bundled samples
with tab_bundled:
    choices = C.bundled_choices()
    if not choices:
        st.caption("No bundled samples in this installation.")
    else:
        from icai_core.data import DEMO_DATASETS

        name = st.selectbox(
            "Bundled sample (real public judgements)",
            list(choices),
            format_func=lambda n: DEMO_DATASETS.get(n, n),
            key="bundled_choice",
        )
        if st.button("Load sample", key="bundled_load", icon=":material/dataset:"):
            C.load_bundled(name)

# --------------------------------------------------------------------------- summary + preview
ds = C.get_dataset()
if ds is None:
    st.info(C.NO_DATA_MESSAGE, icon=":material/info:")
    st.stop()

st.divider()
st.subheader(f"Loaded: {C.escape_md(ds.name)}")
report = ds.report
if report is not None:
    fmt = getattr(report, "format", ds.format)
    st.caption(
        f"Format: **{C.escape_md(fmt)}** ({C.escape_md(getattr(report, 'file_type', '').upper())}) · "
        f"{getattr(report, 'rows_read', ds.n):,} rows read, {getattr(report, 'rows_kept', ds.n):,} kept"
        + "".join(
            f" · excluded {n:,}: {C.escape_md(r)}" for r, n in (getattr(report, "excluded", {}) or {}).items()
        )
    )
    for w in getattr(report, "warnings", []) or []:
        st.warning(w)

summary = C.summary_cached(ds.hash, _pairs=ds.pairs)
counts = summary["preference_counts"]
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Pairs", f"{summary['rows']:,}")
m2.metric("A preferred", C.fmt_pct(summary["preference_shares"]["a"]), help=f"{counts['a']:,} pairs")
m3.metric("B preferred", C.fmt_pct(summary["preference_shares"]["b"]), help=f"{counts['b']:,} pairs")
m4.metric("Ties", f"{counts['tie']:,}")
m5.metric("Annotators", len(summary["annotators"]) or "—")
if summary.get("distinct_pairs") and summary["distinct_pairs"] != summary["rows"]:
    st.caption(f"{summary['distinct_pairs']:,} distinct pairs (several annotators judged the same pair).")
empty = summary["empty_texts"]["responses_total"]
if empty:
    st.caption(f"{empty:,} empty responses (kept: real model failures are data too).")

c1, c2 = st.columns([3, 2])
with c1:
    kind = st.segmented_control(
        "Length plot",
        ["hist", "box"],
        default="hist",
        format_func={"hist": "Histogram", "box": "Box"}.get,
        key="len_kind",
    )
    st.plotly_chart(F.length_distribution(ds.pairs, kind=kind or "hist"), key="len_chart")
with c2:
    st.plotly_chart(F.preference_balance(ds.pairs), key="balance_chart")
    if summary["annotators"]:
        ann = pd.DataFrame(list(summary["annotators"].items()), columns=["annotator", "rows"])
        st.dataframe(ann, hide_index=True, width="stretch", height=min(35 * (len(ann) + 1) + 3, 250))

st.subheader("Preview")
st.dataframe(ds.pairs.head(200), hide_index=True, width="stretch", height=320)
st.page_link(
    "pages/principles.py", label="Next: run the audit on the Principles page", icon=":material/arrow_forward:"
)
