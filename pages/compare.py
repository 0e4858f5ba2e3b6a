"""Compare annotators: principle strength per group (a split column) or per dataset, differences, diff."""

from __future__ import annotations

import streamlit as st

from icai_core import figures as F
from ui import common as C
from ui import compare_ui as CU
from ui import widgets as W

st.title("Compare annotators")
ds = C.require_data()
audit = C.require_audit(ds)

st.caption(
    "Does a human reward the same things as the GPT-4 judge? Split the loaded data by a column "
    "(annotator, model, language, category…) or compare whole datasets. Each principle's strength is "
    "measured per group; differences are tested with Benjamini-Hochberg correction."
)
mode = st.radio(
    "Compare",
    ["groups", "datasets"],
    format_func={"groups": "Groups within this dataset", "datasets": "Several datasets"}.get,
    key="cmp_mode",
    horizontal=True,
)

# --------------------------------------------------------------------------- judge report card
annotators = sorted(audit.all_pairs["annotator"].astype(str).unique()) if "annotator" in audit.all_pairs else []
if len(annotators) > 1:
    st.subheader("Judge report card")
    st.caption(
        "AlpacaEval's judge table, generalised and computed on this file: each annotator's agreement with "
        "a reference annotator on the pairs both judged (95% CI clustered by prompt, Cohen's κ), how often "
        "it prefers the longer response or the one with more list items, position bias where presentation "
        "order is known (and swap consistency where a pair was shown in both orders), tie rate and "
        "self-preference where the annotator is also a model that wrote responses."
    )
    r1, r2 = st.columns([1, 2])
    guess = next((a for a in annotators if "human" in a.lower()), annotators[0])
    reference = r1.selectbox("Reference annotator", annotators, index=annotators.index(guess), key="cmp_reference")
    pooled = r2.multiselect("Pool these annotators into one group (e.g. all GPT-4 runs)",
                            [a for a in annotators if a != reference], key="cmp_pool")
    groups = (("pooled: " + ", ".join(pooled)[:60], tuple(pooled)),) if len(pooled) > 1 else ()
    card, agree = CU.report_card_cached(audit.dataset_hash, str(audit.run_id), reference, groups, _audit=audit)
    st.dataframe(
        card, hide_index=True, width="stretch", key="cmp_card",
        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in card.columns
                       if card[c].dtype.kind == "f"},
    )
    for row in agree:
        if row.get("message"):
            st.caption(f"{C.escape_md(row['a'])} vs {C.escape_md(row['b'])}: {C.escape_md(row['message'])}")
    with st.expander("Agreement between every pair of annotators"):
        _, all_pairs_agree = CU.report_card_cached(audit.dataset_hash, str(audit.run_id), None, (), _audit=audit)
        st.dataframe(CU.agreement_matrix(all_pairs_agree, annotators).style.format("{:.1%}", na_rep="—"),
                     width="stretch", key="cmp_agree_matrix")
    st.divider()

result = None
if mode == "groups":
    label_col = (getattr(ds.report, "mapping", None) or {}).get("preferred")
    candidates = CU.split_columns(audit.all_pairs, exclude=(label_col,) if label_col else ())
    if not candidates:
        st.info(
            "This dataset has no column with 2 to 30 distinct values to split by (e.g. `annotator`, "
            "`model_a`, `language`, `category`). Compare several datasets instead."
        )
        st.stop()
    default = next(
        (c for c in ("annotator", "category", "model_a", "language") if c in candidates),
        next(iter(candidates)),
    )
    c1, c2 = st.columns([2, 1])
    by = c1.selectbox(
        "Split by",
        list(candidates),
        index=list(candidates).index(default),
        format_func=lambda c: f"{c} ({candidates[c]} values)",
        key="cmp_by",
    )
    min_pairs = c2.number_input("Min. labelled pairs per group", 5, 1000, 20, 5, key="cmp_min_pairs")
    result = CU.compare_groups_cached(
        audit.dataset_hash,
        C.config_key(audit.config) + str(getattr(audit, "run_id", "")),
        by,
        int(min_pairs),
        float(audit.config.alpha),
        _audit=audit,
    )
else:
    choices = CU.dataset_choices(ds)
    default = [n for n in choices if n == ds.name][:1]
    picked = st.multiselect(
        "Datasets (the loaded one and the bundled samples)",
        list(choices),
        default=st.session_state.get("cmp_datasets_default", default),
        key="cmp_datasets",
        help="E.g. AlpacaEval's GPT-4 judge vs the human crowd vs Chatbot Arena users.",
    )
    run = st.button(
        "Compare datasets",
        type="primary",
        key="cmp_run",
        disabled=len(picked) < 2,
        icon=":material/compare_arrows:",
    )
    if run:
        CU.start_dataset_compare(
            picked, choices, use_embeddings=audit.config.use_embeddings, alpha=audit.config.alpha
        )
    C.job_panel(CU.JOB, collect=CU.collect)
    stored = st.session_state.get(CU.RESULT)
    if stored is not None and sorted(stored["names"]) == sorted(picked):
        result = stored["result"]
    elif len(picked) < 2:
        st.info("Pick at least two datasets.")

if result is None:
    st.stop()
st.session_state["cmp_last"] = result  # the Report page includes the latest comparison

for note in result.notes:
    st.caption(note)
if len(result.skipped):
    with st.expander(f"{len(result.skipped)} group(s) skipped (too few labelled pairs)"):
        st.dataframe(result.skipped, hide_index=True, width="stretch")
if len(result.groups) < 2:
    st.warning("Fewer than two groups have enough labelled pairs to compare.")
    st.stop()

texts = dict(zip(audit.stats["key"], audit.stats["text"], strict=False))
st.subheader(f"Principle strength by {result.by}")
st.caption("Each cell: the principle's strength in that group's rows, with its row-level (binomial) interval; "
           "the tests of differences below cluster by prompt.")
st.plotly_chart(
    F.strength_heatmap(
        result.strength_matrix, result.strength_ci_low, result.strength_ci_high, texts=texts, title=""
    ),
    key="cmp_heatmap",
)

st.subheader("Significant differences")
diff = result.differences
sig = diff[diff["significant"].astype(bool)].copy()
sig = sig.reindex(sig["difference"].abs().sort_values(ascending=False).index)
if sig.empty:
    st.info("No principle's strength differs significantly between these groups.")
else:
    paired = diff["comparison"].str.startswith("paired")
    how = ("paired on the pairs both sides judged" if paired.all() else
           "the difference of the two groups' mean scores" if not paired.any() else
           "paired where both sides judged the same pairs, else the difference of the groups' mean scores")
    st.caption(
        f"{len(sig)} of {len(diff)} tests significant (Benjamini-Hochberg q < {result.alpha:g} over all of them; "
        f"{'every pair of groups' if result.mode == 'pairwise' else 'each group vs all others'}). Each test is "
        f"{how}, with a 95% CI clustered by prompt: judgements of one prompt are not independent."
    )
    cols = [
        "text",
        "group_a",
        "group_b",
        "strength_a",
        "strength_b",
        "difference",
        "diff_ci_low",
        "diff_ci_high",
    ]
    cols += ["q_value"]
    st.dataframe(
        sig[cols],
        hide_index=True,
        width="stretch",
        column_config={
            **W.stats_column_config(),
            "strength_a": st.column_config.NumberColumn(format="%+.3f"),
            "strength_b": st.column_config.NumberColumn(format="%+.3f"),
            "difference": st.column_config.NumberColumn(format="%+.3f"),
            "diff_ci_low": st.column_config.NumberColumn(format="%+.3f"),
            "diff_ci_high": st.column_config.NumberColumn(format="%+.3f"),
        },
        key="cmp_sig_table",
    )

st.subheader("Constitution diff")
g1c, g2c = st.columns(2)
ga = g1c.selectbox("Group A", result.groups, index=0, key="cmp_diff_a")
gb = g2c.selectbox("Group B", result.groups, index=min(1, len(result.groups) - 1), key="cmp_diff_b")
sel = C.current_selection(audit)
d = CU.group_constitution_diff(result, ga, gb, sel)
st.caption(
    "Each group's constitution is selected from its own statistics with the thresholds of the "
    "Constitution page: " + ", ".join(f"{k} = {v}" for k, v in sel.items()) + "."
)
m1, m2, m3, m4 = st.columns(4)
m1.metric("Shared", len(d.both))
m2.metric("Flipped", len(d.flipped))
m3.metric(f"Only {ga}"[:40], len(d.only_a))
m4.metric(f"Only {gb}"[:40], len(d.only_b))
if d.table.empty:
    st.info(
        "Neither group's constitution has a principle at these thresholds (too few pairs per group for "
        "significance?). Loosen the thresholds on the Constitution page."
    )
st.dataframe(CU.diff_view(d, ga, gb), hide_index=True, width="stretch", key="cmp_diff_table")
