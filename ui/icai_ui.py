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
    from icai_core.icai import config_dict, run_icai
    from icai_core.jobs import Cancelled
    from icai_core.store import RunStore

    client = client_for(engine)
    pairs = ds.pairs
    data_hash = ds.hash
    name = ds.name

    def work(progress, cancel):
        store = RunStore()
        run_cfg = {"icai": config_dict(config), "llm": client.config.redacted()}
        run_id = store.find_resumable("icai", data_hash, run_cfg) or store.create_run(
            "icai", name, data_hash, run_cfg
        )
        try:
            result = run_icai(
                pairs, client, config, store=store, run_id=run_id, progress=progress, cancel=cancel
            )
        except Cancelled:
            store.update(
                run_id, status="cancelled", message="cancelled in the app", cost=client.usage.to_dict()
            )
            raise
        except Exception as exc:
            store.update(run_id, status="failed", error=str(exc), cost=client.usage.to_dict())
            raise
        store.update(run_id, status="done", message="finished (app)", cost=client.usage.to_dict())
        store.save_result(run_id, "constitution", result.constitution.to_dict())
        store.close()
        return {"hash": data_hash, "result": result}

    st.session_state.pop(RESULT, None)
    st.session_state[JOB] = BackgroundJob(work, label="ICAI run")


def collect(job: BackgroundJob) -> None:
    if job.status == "done" and job.result is not None:
        st.session_state[RESULT] = job.result
        st.session_state.pop(JOB, None)


def current_result(ds: C.LoadedDataset):
    stored = st.session_state.get(RESULT)
    if stored is None or stored.get("hash") != ds.hash:
        return None
    return stored["result"]
