"""Data: upload (auto-detected format, column-mapping fallback), bundled samples, summary, preview."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from icai_core import figures as F
from ui import common as C
from ui import intake as I
from ui import jobs as J
from ui import safe as S

st.title("Data")
st.caption(
    "Pairwise preference data: one row per judged pair — a prompt, two responses and which one the "
    "annotator preferred. CSV, TSV, JSON, JSON Lines and Parquet; the Principia/ICAI CSV, AlpacaEval "
    "annotations, Chatbot Arena battles and HH-RLHF chosen/rejected files are recognised automatically."
)

SESSION_UPLOADS = "session_uploads"  # name -> LoadedDataset of every file uploaded in this session
EMPTY_MESSAGE = "No data loaded yet — upload a file above, pick a bundled sample, or click **Demo** on Home."


def remember_upload(ds) -> None:
    """Keep every dataset uploaded in this session (newest last, at most 8) so other pages, e.g. Compare
    several datasets, can offer them again without a new upload."""
    uploads = dict(st.session_state.get(SESSION_UPLOADS) or {})
    uploads.pop(ds.name, None)
    uploads[ds.name] = ds
    while len(uploads) > 8:
        uploads.pop(next(iter(uploads)))
    st.session_state[SESSION_UPLOADS] = uploads


SYNC_ROWS = 20_000  # up to here the Data page computes its statistics before it renders
CHART_SAMPLE = 5_000  # rows drawn for the length figure on larger files (the histogram looks the same)


def _data_stats(pairs: pd.DataFrame) -> dict:
    """The Data page's per-dataset numbers that cost seconds on 100k pairs (distinct pairs and repeated
    rows: hashing every text; P(prefer longer): word counts of every response). Run once per dataset in a shared
    background job (`ui.jobs.shared_job`), so the page stays responsive while they are computed."""
    from icai_core.reconstruct import content_groups

    distinct = int(pd.Series(content_groups(pairs)).nunique()) if len(pairs) else 0
    return {
        "distinct": distinct,
        "repeated": F.repeated_judgements(pairs),
        "prefer_longer": F.length_preference(pairs),
        "pooled_longer": F.length_preference(pairs.drop(columns=["annotator"], errors="ignore")),
    }


def _stats_job(ds):
    """The shared job of `_data_stats`; files up to SYNC_ROWS rows (under a second) are waited for, so
    their numbers show on the first run without a "being computed" flash."""
    pairs = ds.pairs
    job = J.shared_job(("data_stats", ds.hash), lambda progress, cancel: _data_stats(pairs),
                       label="length statistics")
    if ds.n <= SYNC_ROWS:
        job.wait()
    return job


def _chart_rows(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """At most CHART_SAMPLE rows (a fixed-seed random sample) for the length figure, and the number of
    rows it stands for: a histogram of 5k judgements looks like one of 100k, at a twentieth of the word
    counting (31 s for 100k rows on the loaded 2-core machine)."""
    if len(rows) <= CHART_SAMPLE:
        return rows, len(rows)
    return rows.sample(n=CHART_SAMPLE, random_state=0), len(rows)


@st.cache_data(show_spinner=False, max_entries=64)
def _length_figure(dataset_hash: str, annotator: str, kind: str, _rows: pd.DataFrame):
    return F.chosen_rejected_lengths(_rows, kind=kind)


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
            for k in [k for k in st.session_state if str(k).startswith("map_")]:
                del st.session_state[k]  # a new file or mapping: the form starts from its own guesses
            with st.spinner(f"Reading {S.md(uploaded.name)}…"):
                outcome = I.handle_upload(uploaded.name, content, ties=ties, mapping=mapping)
            st.session_state["_upload_sig"] = sig
            st.session_state["_upload_outcome"] = outcome
            if outcome.ok:
                loaded = C.dataset_from_load_result(outcome.result, name=uploaded.name, source="upload")
                C.set_dataset(loaded)
                remember_upload(loaded)
        if outcome.error and outcome.needs_mapping and mapping is None:
            # Not an error: the columns were not recognised, and the form below is pre-filled.
            st.info(S.md(outcome.error), icon=":material/info:")
        elif outcome.error:
            st.error(S.md(outcome.error), icon=":material/error:")
        if outcome.needs_mapping:
            guesses = I.prefill(outcome)
            st.markdown(
                "**Say which column holds what.** Every column whose name we could match is already "
                f"selected ({len(guesses)} of {len(I.mapping_fields()) - 1}); check them, fill in the ones "
                "marked * that are still empty, then load."
            )
            with st.form("mapping_form"):
                opts = [""] + outcome.columns
                choices = {}
                cols = st.columns(4)
                for i, fld in enumerate(f for f in I.mapping_fields() if f != "values"):
                    guess = guesses.get(fld, "")
                    required = fld in ("text_a", "text_b", "preferred")
                    choices[fld] = cols[i % 4].selectbox(
                        I.FIELD_LABELS.get(fld, fld) + (" *" if required else ""),
                        opts,
                        index=opts.index(guess) if guess in opts else 0,
                        key=f"map_{fld}",
                        format_func=lambda c: "(not in this file)" if c == "" else c,
                    )
                pref_col = guesses.get("preferred")
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
                    st.error(f"{S.md(uploaded.name)}: {S.md(exc)} (the fields marked * are required).")
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
    st.info(EMPTY_MESSAGE, icon=":material/info:")
    st.stop()

st.divider()
st.subheader(f"Loaded: {S.md(ds.name)}")
report = ds.report
if report is not None:
    fmt = getattr(report, "format", ds.format)
    st.caption(
        f"Format: **{S.md(fmt)}** ({S.md(getattr(report, 'file_type', '').upper())}) · "
        f"{getattr(report, 'rows_read', ds.n):,} rows read, {getattr(report, 'rows_kept', ds.n):,} kept"
        + "".join(
            f" · excluded {n:,}: {S.md(r)}" for r, n in (getattr(report, "excluded", {}) or {}).items()
        )
    )
    for w in getattr(report, "warnings", []) or []:
        st.warning(S.md(w))

summary = C.summary_cached(ds.hash, _pairs=ds.pairs)
counts = summary["preference_counts"]
stats_job = _stats_job(ds)
stats = stats_job.result if stats_job.status == "done" else None
if stats_job.status == "failed":
    st.error(f"The length statistics could not be computed ({S.md(stats_job.error)}); the rest of the page "
             "works. Reload the page to try again.")
pl = None
if stats is not None:
    prefer_longer, pooled_longer = stats["prefer_longer"], stats["pooled_longer"]
    pl = pooled_longer.iloc[0] if len(pooled_longer) else None
m1, m2, m3, m4, m5, m6 = st.columns(6)
n_distinct = stats["distinct"] if stats is not None else None
m1.metric("Distinct pairs", f"{n_distinct:,}" if n_distinct is not None else "…",
          help=f"{summary['rows']:,} rows (judgements)")
m2.metric("A preferred", C.fmt_pct(summary["preference_shares"]["a"]), help=f"{counts['a']:,} rows")
m3.metric("B preferred", C.fmt_pct(summary["preference_shares"]["b"]), help=f"{counts['b']:,} rows")
m4.metric("Ties", f"{counts['tie']:,}")
m5.metric("Annotators", len(summary["annotators"]) or "—")
m6.metric(
    "P(prefer longer)",
    C.fmt_pct(pl["p_prefer_longer"]) if pl is not None else ("…" if stats is None else "n/a"),
    help=("Share of decided judgements whose responses differ in length that chose the longer one "
          + (f"({int(pl['n_longer_chosen']):,} of {int(pl['n_unequal']):,}; Wilson 95% CI "
             f"{C.fmt_pct(pl['ci_low'])} – {C.fmt_pct(pl['ci_high'])}). 50% = no length preference."
             if pl is not None else "")),
)
if stats_job.running:
    # Word counts of every response run in a background thread; this fragment polls it and reruns the
    # page once the numbers are there, so switching pages or starting the audit never waits for them.
    # Every 2 s, not faster: each fragment rerun costs a gc.collect(2) that starves the worker thread.
    @st.fragment(run_every=2.0)
    def _wait_for_stats():
        if stats_job.running:
            st.caption(f"Counting words and distinct pairs of {ds.n:,} rows in the background… "
                       f"({stats_job.elapsed:.0f} s). The other pages can be used meanwhile.")
        else:
            st.rerun()

    _wait_for_stats()
if n_distinct is not None and n_distinct != summary["rows"]:
    rep = stats["repeated"]
    why = []
    if len(summary["annotators"]) > 1:
        why.append("several annotators judge the same pair")
    if rep["repeats"]:
        why.append(f"{rep['repeats']:,} row{'s' if rep['repeats'] != 1 else ''} repeat a pair the same annotator "
                   "already judged (same prompt and both texts)"
                   + (f", {rep['conflicting']:,} of these pairs with different choices" if rep["conflicting"] else ""))
    st.caption(f"{summary['rows']:,} rows, {n_distinct:,} distinct pairs: {'; '.join(why) or 'repeated pairs'}. "
               "The length figures count each pair once per annotator (its first row); the audit weighs every "
               "row and clusters by prompt.")
empty = summary["empty_texts"]["responses_total"]
if empty:
    st.caption(f"{empty:,} empty responses (kept: real model failures are data too).")

annotators = list(summary["annotators"])
c1, c2 = st.columns([3, 2])
with c1:
    rows, who = ds.pairs, ""
    if len(annotators) > 1:
        who = st.selectbox(
            "Whose judgements", annotators, key="len_annotator", format_func=S.plain,
            help="One annotator at a time, so that each response is counted once.",
        )
        rows = ds.pairs[ds.pairs["annotator"].astype(str) == who]
    kind = st.segmented_control(
        "Length plot", ["hist", "box"], default="hist", format_func={"hist": "Histogram", "box": "Box"}.get,
        key="len_kind",
    )
    shown, n_rows = _chart_rows(rows)
    st.plotly_chart(_length_figure(ds.hash, who, kind or "hist", shown), key="len_chart")
    st.caption("Length of the response the annotator chose vs the one it rejected (ties left out). "
               "A vs B only shows the order the pairs were stored in; chosen vs rejected shows a length bias."
               + (f" Drawn from a random sample of {len(shown):,} of these {n_rows:,} rows (fixed seed), so "
                  "that the page stays fast; the P(prefer longer) numbers use every row." if len(shown) < n_rows
                  else ""))
with c2:
    st.plotly_chart(F.preference_balance(ds.pairs), key="balance_chart")

st.markdown("**P(prefer longer)**: among each annotator's decided judgements whose responses differ in "
            "length, the share that chose the longer one (50% = no length preference).")
if stats is None:
    st.caption("Being computed… the table appears here when the word counts are done.")
else:
    table = prefer_longer.rename(columns={"judgements": "decided", "n_unequal": "unequal length",
                                          "p_prefer_longer": "P(prefer longer)"})
    table["95% CI"] = [
        "" if pd.isna(lo) else f"{lo:.0%} – {hi:.0%}"
        for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)
    ]
    table["median words, chosen / rejected"] = [
        "" if pd.isna(a) else f"{a:.0f} / {b:.0f}"
        for a, b in zip(table["median_chosen"], table["median_rejected"], strict=True)
    ]
    st.dataframe(
        table[["annotator", "decided", "unequal length", "P(prefer longer)", "95% CI",
               "median words, chosen / rejected"]],
        hide_index=True, width="stretch", height=min(35 * (len(table) + 1) + 3, 360),
        column_config={"P(prefer longer)": st.column_config.NumberColumn(format="percent"),
                       "annotator": st.column_config.TextColumn(width="large")},
    )

st.subheader("Preview")
st.dataframe(ds.pairs.head(200), hide_index=True, width="stretch", height=320)
st.page_link(
    "pages/principles.py", label="Next: run the audit on the Principles page", icon=":material/arrow_forward:"
)
