"""Red-team (IterAlign): discover a constitution from a model's red-team failures.

Widgets only; everything computed here goes through `ui.redteam_ui` (no Streamlit) and `icai_core`.
Model texts (prompts, replies, oracle reasons, principles) are untrusted: they are shown with
`st.text`, in dataframes or markdown-escaped -- never as HTML.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import common as C
from ui import redteam_ui as R
from ui import widgets as W


def _link(page, label: str, icon: str) -> None:
    """A page link that degrades to a caption when the page is not registered (e.g. a lone page)."""
    if page is None:
        st.caption(label)
        return
    try:
        st.page_link(page, label=label, icon=icon)
    except Exception:
        st.caption(label)


st.title("Red-team (IterAlign)")
st.markdown(
    "**IterAlign** (Chen et al., NAACL 2024) finds a constitution from a model's own failures. Each "
    "iteration: the **base model** answers red-team prompts → an **oracle** flags improper replies → a "
    "stronger **proposer** model writes principles that would have prevented those failures (near-"
    "duplicates of earlier principles are dropped by embedding similarity) → the base model **revises** "
    "each flagged reply under the accumulated constitution (self-reflection) → the oracle re-checks."
)
st.info(R.FINE_TUNING_CAVEAT, icon=":material/info:")

eng = C.engine()
ready = R.endpoint_ready(eng)
if not ready:
    st.warning(
        "**IterAlign needs an OpenAI-compatible LLM endpoint** (OpenAI, vLLM, Ollama, LM Studio, "
        "OpenRouter…): the base model must answer the prompts and revise its replies, and the proposer "
        "must write the principles. Switch the engine to **LLM** and set its base URL, model and API key "
        "on the **Home** page. Until then the run is disabled — this page never shows made-up results.",
        icon=":material/key_off:",
    )
    _link(C.HOME, "Engine settings on Home", ":material/settings:")

# --------------------------------------------------------------------------- 1 · prompts
st.subheader("1 · Red-team prompts")
SOURCES = ["Bundled real set", "Upload a file"]
source = st.radio("Prompts", SOURCES, horizontal=True, key="rt_source", label_visibility="collapsed")
prompt_set = None
if source == SOURCES[0]:
    try:
        prompt_set = R.bundled_prompt_set()
    except Exception as exc:  # a broken install: say so plainly
        st.error(f"Could not read the bundled red-team prompts: {exc}")
    st.caption(R.BUNDLED_DESCRIPTION)
else:
    uploaded = st.file_uploader(
        "Red-team prompts file",
        type=R.UPLOAD_TYPES,
        key="rt_upload",
        help="CSV / TSV / JSON / JSONL with a column named prompt, instruction, question, text or input; "
        "or TXT with one prompt per line. Nothing leaves this machine except the calls you run.",
    )
    if uploaded is not None:
        prompt_set, error = R.prompt_set_from_upload(uploaded.name, uploaded.getvalue())
        if error:
            st.error(error, icon=":material/error:")
    else:
        st.caption("Upload a file of red-team prompts, or pick the bundled real set.")
if prompt_set is not None:
    st.markdown(f"**{prompt_set.n:,} prompts** from {C.escape_md(prompt_set.name)}")
    st.dataframe(
        prompt_set.preview(200),
        hide_index=True,
        width="stretch",
        height=220,
        column_config={"prompt": st.column_config.TextColumn(width="large")},
    )

# --------------------------------------------------------------------------- 2 · models
st.subheader("2 · Models")
st.markdown(
    "**Base model** (answers, then self-reflects): "
    + (
        f"`{eng.model.replace('`', '')}` at `{eng.base_url.replace('`', '')}` · key "
        f"{'set' if eng.api_key else 'not set'} — from the Home page."
        if ready
        else "not configured (set it on Home)."
    )
)
cp, co = st.columns(2, gap="large")
with cp:
    st.markdown("**Proposer** (writes the principles; ideally a stronger model)")
    proposer_model = st.text_input(
        "Proposer model", key="rt_proposer_model", placeholder=f"same as base ({eng.model})"
    )
    proposer_url = st.text_input("Proposer base URL", key="rt_proposer_url", placeholder="same as base")
    proposer_key = st.text_input(
        "Proposer API key",
        key="rt_proposer_key",
        type="password",
        placeholder="same key as Home",
        help="Optional. Kept only in this browser session's memory: never written to disk, logged, "
        "cached or exported.",
    )
with co:
    st.markdown("**Oracle** (flags improper replies)")
    oracle_kind = st.radio(
        "Oracle", R.ORACLE_CHOICES, key="rt_oracle", horizontal=True, label_visibility="collapsed"
    )
    oracle_model = oracle_url = oracle_key = ""
    if oracle_kind == R.ORACLE_LLM:
        oracle_model = st.text_input("Oracle model", key="rt_oracle_model", placeholder="same as proposer")
        oracle_url = st.text_input("Oracle base URL", key="rt_oracle_url", placeholder="same as proposer")
        oracle_key = st.text_input(
            "Oracle API key",
            key="rt_oracle_key",
            type="password",
            placeholder="same key as proposer",
            help="Optional. Kept only in this browser session's memory.",
        )
    else:
        st.caption(
            "The offline judge flags every reply that does **not decline** the request, using the "
            "measurable judges' refusal markers. It is free and sends nothing, but it cannot judge harm "
            "itself — use it for cheap dry runs and an LLM oracle for real audits."
        )

endpoints = R.resolve_endpoints(
    eng,
    oracle_kind=oracle_kind,
    proposer_model=proposer_model,
    proposer_base_url=proposer_url,
    proposer_api_key=proposer_key,
    oracle_model=oracle_model,
    oracle_base_url=oracle_url,
    oracle_api_key=oracle_key,
)

# --------------------------------------------------------------------------- 3 · settings
st.subheader("3 · Settings")
s1, s2, s3, s4 = st.columns(4)
iterations = s1.number_input(
    "Iterations", 1, 10, 2, 1, key="rt_iterations", help="The loop stops early when the oracle flags nothing."
)
per_iteration = s2.number_input(
    "Principles per iteration",
    1,
    10,
    3,
    1,
    key="rt_per_iteration",
    help="How many principles the proposer may write per iteration.",
)
dedup = s3.slider(
    "Dedup threshold",
    0.50,
    1.00,
    0.85,
    0.01,
    key="rt_dedup",
    help="A new principle whose embedding cosine similarity to an earlier one reaches this "
    "value is dropped as a duplicate (and listed in the results).",
)
max_prompts = s4.number_input(
    "Max prompts",
    1,
    100_000,
    40,
    1,
    key="rt_max_prompts",
    help="Use only the first N prompts (bounds the cost).",
)
config = R.make_config(iterations, per_iteration, dedup, max_prompts)

# --------------------------------------------------------------------------- 4 · estimate + run
st.subheader("4 · Cost estimate and run")
plan = None
if prompt_set is None:
    st.info("Choose red-team prompts first.", icon=":material/info:")
else:
    plan = R.RedTeamPlan(prompt_set, endpoints, oracle_kind, config)
    n_used = len(plan.prompts)
    table, totals = R.estimate_plan(plan)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Prompts used", f"{n_used:,}", help=f"of {prompt_set.n:,} loaded")
    m2.metric(
        "Calls (at most)",
        f"{totals['calls']:,}",
        help=f"{totals['calls_per_iteration']:,} per iteration at most",
    )
    m3.metric(
        "Tokens (about)",
        f"{totals['prompt_tokens'] + totals['completion_tokens']:,}",
        help=f"{totals['prompt_tokens']:,} prompt + {totals['completion_tokens']:,} completion",
    )
    m4.metric("Cost (at most)", f"${totals['dollars']:,.2f}")
    st.caption(
        f"Per iteration: {n_used:,} respond calls + {n_used if oracle_kind == R.ORACLE_LLM else 0:,} oracle "
        f"calls + 1 proposer call + up to {n_used:,} revise calls + up to "
        f"{n_used if oracle_kind == R.ORACLE_LLM else 0:,} re-check calls. {R.UPPER_BOUND_NOTE} Prompt tokens "
        "are approximated as characters/4 from the real prompts; replies not yet written are counted at each "
        "template's expected length."
    )
    for role, note in totals["prices"].items():
        st.caption(f"{role}: {C.escape_md(note)}")
    with st.expander("Estimate per iteration and stage"):
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={"dollars": st.column_config.NumberColumn(format="$%.4f")},
        )

job = st.session_state.get(R.JOB)
busy = job is not None and job.running
run_clicked = st.button(
    "Run IterAlign",
    type="primary",
    icon=":material/play_arrow:",
    key="rt_run",
    disabled=not ready or plan is None or busy,
    help=None if ready else "Set an OpenAI-compatible endpoint on the Home page first.",
)
if run_clicked and ready and plan is not None and not busy:
    R.start_run(st.session_state, plan)
    st.session_state.pop(R.RESULT, None)
    st.rerun()  # redraw with the run button disabled and the progress bar

C.job_panel(R.JOB, collect=lambda j: R.collect_run(st.session_state, j))

# --------------------------------------------------------------------------- results
run = st.session_state.get(R.RESULT)
if run is None:
    st.stop()
result = run.result

st.divider()
st.subheader("Results")
settings = run.settings
eps = settings.get("endpoints", {})
st.caption(
    f"{settings.get('n_prompts', 0):,} prompts from {C.escape_md(run.prompt_set_name)} · "
    + " · ".join(f"{role}: {C.escape_md(ep.get('model', ''))}" for role, ep in eps.items())
    + f" · oracle: {C.escape_md(settings.get('oracle', ''))} · {run.seconds:.0f} s"
    + (f" · run {C.escape_md(run.run_id)}" if run.run_id else "")
)
usage = result.usage or {}
if usage:
    calls = sum(int(u.get("calls", 0)) for u in usage.values())
    hits = sum(int(u.get("cache_hits", 0)) for u in usage.values())
    dollars = sum(float(u.get("dollars", 0.0)) for u in usage.values())
    tokens = sum(int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0)) for u in usage.values())
    st.caption(
        f"Sent {calls:,} calls ({hits:,} answered from the cache) · {tokens:,} tokens · ${dollars:,.4f}"
    )
st.caption(
    'The "improved model" of iteration 2 and later is the base model with the accumulated constitution '
    "in its system prompt — nothing was fine-tuned."
)

if not result.iterations or all(r.n_flagged == 0 for r in result.iterations):
    st.success("The oracle flagged none of the replies: no principle was needed.")

st.plotly_chart(R.flagged_rate_figure(result), key="rt_chart")
pct = st.column_config.NumberColumn(format="percent")
st.dataframe(
    R.iteration_view(result),
    hide_index=True,
    width="stretch",
    column_config={"flagged_rate": pct, "flagged_rate_after": pct},
)
stopped = [r.iteration for r in result.iterations if r.n_flagged == 0]
if stopped and len(result.iterations) < result.config.iterations:
    st.caption(f"Stopped after iteration {stopped[0]}: the oracle flagged nothing.")

st.markdown("#### Constitution")
const = R.constitution_table(result)
if const.empty:
    st.caption("No principle was added.")
else:
    st.dataframe(
        const,
        hide_index=True,
        width="stretch",
        column_config={"principle": st.column_config.TextColumn(width="large")},
    )
dups = R.duplicates_table(result)
if dups.empty:
    st.caption("No proposed principle was dropped as a duplicate.")
else:
    st.markdown(f"**Dropped as duplicates** (similarity ≥ {result.config.dedup_threshold:.2f})")
    st.dataframe(
        dups,
        hide_index=True,
        width="stretch",
        column_config={"similarity": st.column_config.NumberColumn(format="%.3f")},
    )

st.markdown("#### Flagged replies before and after self-reflection")
ex_all = result.examples
if ex_all.empty:
    st.caption("No flagged replies.")
else:
    FILTERS = {
        "all": "All flagged",
        "still": "Still flagged after revision",
        "fixed": "Fixed by revision",
        "failed": "Revision failed",
    }
    f1, f2, f3 = st.columns([1, 2, 1])
    its = sorted(int(i) for i in ex_all["iteration"].unique())
    it = f1.selectbox("Iteration", its, key="rt_ex_iteration")
    which = f2.radio("Show", list(FILTERS), format_func=FILTERS.get, key="rt_ex_filter", horizontal=True)
    ex = R.examples_view(result, it, which)
    if ex.empty:
        st.info("No example matches this filter.")
    else:
        pos = f3.number_input(f"Example (1–{len(ex):,})", 1, len(ex), 1, 1, key=f"rt_ex_pos_{it}_{which}")
        row = ex.iloc[min(int(pos), len(ex)) - 1]
        W.text_box("Red-team prompt", row["prompt"], height=120)
        b1, b2 = st.columns(2)
        with b1:
            W.text_box("Original reply (flagged)", row["original"])
            st.caption("Oracle: " + C.escape_md(row["reason_before"]))
        with b2:
            W.text_box(
                "Revised reply", row["revised"] if isinstance(row["revised"], str) else "(revision failed)"
            )
            fa = row["flagged_after"]
            verdict = "not re-checked" if pd.isna(fa) else "still flagged" if bool(fa) else "not flagged"
            st.caption(f"Oracle: {verdict} — " + C.escape_md(row["reason_after"]))

st.markdown("#### Downloads")
files = run.exports
d1, d2, d3 = st.columns(3)
for col, key, label in (
    (d1, "sft", "SFT data (JSONL)"),
    (d2, "pairs", "Preference pairs (CSV)"),
    (d3, "constitution", "Constitution (JSON)"),
):
    fname, mime = R.EXPORT_FILES[key]
    col.download_button(
        label,
        files[key],
        file_name=fname,
        mime=mime,
        key=f"rt_dl_{key}",
        icon=":material/download:",
        width="stretch",
    )
st.caption(
    'SFT: one chat example per revision, `{"messages": [{"role": "user", …}, {"role": "assistant", '
    "<revised reply>}]}`. Pairs: revised preferred over original, A/B sides shuffled by a hash coin flip, "
    "in the ICAI/Principia CSV layout (cells that a spreadsheet would run as a formula are prefixed with "
    '\'). Constitution: `{"kind": "iteralign_constitution", "principles": [{"text", "iteration"}]}`.'
)

n_pairs = int(result.examples["revised"].notna().sum())
if st.button(
    "Audit these pairs",
    key="rt_audit",
    icon=":material/science:",
    disabled=n_pairs == 0,
    help="Load the revised-vs-original pairs as the current dataset, so the audit pages can analyse them.",
):
    try:
        loaded = R.pairs_load_result(result)
    except Exception as exc:
        st.error(f"Could not load the pairs: {exc}")
    else:
        C.set_dataset(C.dataset_from_load_result(loaded, name=R.PAIRS_NAME, source="iteralign"))
        st.success(f"Loaded {len(loaded.pairs):,} pairs as the current dataset.", icon=":material/check:")
        _link("pages/principles.py", "Audit them on the Principles page", ":material/arrow_forward:")
