"""ICAI through the LLM engine, for the Principles page: client, cost estimate, background run.

The API key comes from the session's `EngineSettings` at the moment of a click and goes only into
the `LLMConfig` of that client (which keeps it out of repr, logs, pickles and the run store). No
function here is cached by Streamlit, so the key never becomes a cache key.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ui import common as C
from ui.jobs import BackgroundJob

JOB = "icai_job"
RESULT = "icai_result"


def client_for(engine: Any):
    from icai_core.audit import default_cache_dir
    from icai_core.llm import LLMClient, LLMConfig, ResponseCache

    config = LLMConfig(base_url=engine.base_url, model=engine.model, api_key=engine.api_key or None)
    return LLMClient(config, cache=ResponseCache(default_cache_dir() / "llm_cache.sqlite"))


def estimate_table(pairs: pd.DataFrame, config: Any, engine: Any) -> pd.DataFrame:
    from icai_core.icai import estimate_run

    est = estimate_run(pairs, config, client_for(engine))
    rows = [
        {
            "stage": stage,
            "calls": e.calls,
            "cached": e.cached_calls,
            "prompt tokens": e.prompt_tokens,
            "completion tokens": e.completion_tokens,
            "dollars": e.dollars,
            "note": e.note,
        }
        for stage, e in est.items()
    ]
    df = pd.DataFrame(rows)
    total = {
        "stage": "total",
        "calls": int(df["calls"].sum()),
        "cached": int(df["cached"].sum()),
        "prompt tokens": int(df["prompt tokens"].sum()),
        "completion tokens": int(df["completion tokens"].sum()),
        "dollars": float(df["dollars"].sum()),
        "note": "upper bound for the vote stage (assumes the maximum number of candidates)",
    }
    return pd.concat([df, pd.DataFrame([total])], ignore_index=True)


def start_icai(ds: C.LoadedDataset, config: Any, engine: Any) -> None:
    """Run ICAI in the background through the workspace's run lifecycle (resumable, recorded, saved)."""
    from icai_core.icai import run_icai
    from icai_core.workspace import run_config_record

    client = client_for(engine)
    pairs = ds.pairs
    data_hash = ds.hash
    name = ds.name

    def work(progress, cancel):
        from icai_core import llm

        llm.preflight(client.config)  # one cheap request: a wrong URL / key / model fails at once
        ws = C.workspace()
        if ws is None:
            raise RuntimeError("Principia's home folder is not writable: set PRINCIPIA_HOME and restart the app.")
        with ws, ws.run("icai", name, data_hash, run_config_record(config, client.config), resume=True,
                        client=client) as run:
            result = run_icai(pairs, client, config, store=ws.store, run_id=run.id, progress=run.wrap(progress),
                              cancel=cancel, cache_dir=ws.cache_dir, dataset_name=name)
            run.finish(result, message="ICAI finished (app)")
        return {"hash": data_hash, "result": result}

    st.session_state.pop(RESULT, None)
    st.session_state[JOB] = BackgroundJob(work, label="ICAI run")


def collect(job: BackgroundJob) -> None:
    """A finished ICAI run becomes the current run: every page (Constitution, Compare, Report) shows it."""
    if job.status == "done" and job.result is not None:
        st.session_state[RESULT] = job.result
        ds = C.get_dataset()
        if ds is not None and job.result.get("hash") == ds.hash:
            C.set_audit(job.result["result"])
        st.session_state.pop(JOB, None)


def current_result(ds: C.LoadedDataset):
    """The current run when it came from the LLM engine (else the last ICAI result of this dataset)."""
    audit = C.get_audit()
    if audit is not None and getattr(audit, "engine", "") == "llm":
        return audit
    stored = st.session_state.get(RESULT)
    if stored is None or stored.get("hash") != ds.hash:
        return None
    return stored["result"]
