"""Session state, cached computations and shared widgets of the Principia app.

Session model (all in `st.session_state`):

* ``dataset``  -> `LoadedDataset` (the canonical pair table + where it came from)
* ``audit``    -> `icai_core.audit.AuditResult` of the loaded dataset (or absent)
* ``audit_job``-> `ui.jobs.BackgroundJob` while an audit runs in the background
* ``engine``   -> `ui.engine.EngineSettings` (the API key lives only here)

Expensive work is cached across sessions with `st.cache_resource` / `st.cache_data`, keyed by the
dataset's content hash and the audit configuration -- never by the engine settings or the API key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import streamlit as st

from ui.engine import EngineSettings
from ui.jobs import BackgroundJob

DATASET = "dataset"
AUDIT = "audit"
JOB = "audit_job"
ENGINE = "engine"
SELECTION = "selection"  # current constitution thresholds (dict)
ANNOTATOR = "annotator"  # the annotator whose analysis the pages show

NO_DATA_MESSAGE = "No data loaded yet — load data on the **Data** page or click **Demo** on the Home page."
NO_AUDIT_MESSAGE = (
    "No audit yet — run the offline audit on the **Principles** page (or click **Demo** on Home)."
)


@dataclass
class LoadedDataset:
    name: str
    pairs: pd.DataFrame
    hash: str
    format: str = ""
    source: str = "upload"  # upload | demo | bundled
    report: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.pairs)


# --------------------------------------------------------------------------- state accessors
def ss() -> Any:
    return st.session_state


def engine() -> EngineSettings:
    if ENGINE not in st.session_state:
        st.session_state[ENGINE] = EngineSettings()
    return st.session_state[ENGINE]


def get_dataset() -> LoadedDataset | None:
    return st.session_state.get(DATASET)


def get_audit():
    """The current run (either engine), presenting the annotator chosen in the sidebar."""
    audit = st.session_state.get(AUDIT)
    ds = get_dataset()
    if audit is not None and ds is not None and audit.dataset_hash != ds.hash:
        return None  # stale: belongs to a dataset that is no longer loaded
    if audit is None:
        return None
    name = st.session_state.get(ANNOTATOR)
    if name in getattr(audit, "analyses", {}):
        return audit.view(name)
    return audit


def set_audit(result) -> None:
    """Make `result` (a RunResult of either engine) the current run; its id goes into the URL so a
    browser reload or a copied link reopens it."""
    st.session_state[AUDIT] = result
    if st.session_state.get(ANNOTATOR) not in result.analyses:
        st.session_state[ANNOTATOR] = result.annotator
    st.session_state.pop(SELECTION, None)
    if getattr(result, "run_id", None):
        st.query_params["run"] = result.run_id
        st.session_state["_qp_run"] = result.run_id


def get_job() -> BackgroundJob | None:
    return st.session_state.get(JOB)


def pairs_hash(pairs: pd.DataFrame) -> str:
    """Content hash of a pair table (the audit's cache key)."""
    from icai_core.audit import dataset_hash

    return dataset_hash(pairs)


def workspace():
    """The app's workspace (PRINCIPIA_HOME or ~/.principia); None when it cannot be used."""
    from icai_core.workspace import Workspace, WorkspaceError

    try:
        return Workspace()
    except WorkspaceError:
        return None


def set_dataset(ds: LoadedDataset, *, persist: bool = True) -> None:
    """Make `ds` the current dataset; drop the audit of a previous dataset and stop its job.

    The dataset is kept in the workspace and its hash put in the URL (`?data=<hash>`), so a browser
    reload finds it again."""
    old = get_dataset()
    st.session_state[DATASET] = ds
    if persist:
        ws = workspace()
        if ws is not None:
            st.query_params["data"] = ds.hash
            st.session_state["_qp_data"] = ds.hash
            _save_dataset_in_background(ws, ds)
    if old is None or old.hash != ds.hash:
        job = get_job()
        if job is not None and job.running:
            job.cancel()
        st.session_state.pop(JOB, None)
        st.session_state.pop(AUDIT, None)
        st.session_state.pop(SELECTION, None)
        st.session_state.pop(ANNOTATOR, None)
        if "run" in st.query_params:
            del st.query_params["run"]
        for k in list(st.session_state.keys()):
            if str(k).startswith(("thr_", "cmp_", "ex_", "cl_")):
                del st.session_state[k]
        # A cached audit of the same data and default config is reused at once.
        for key, cached in audit_cache().items():
            if key[0] == ds.hash:
                set_audit(cached)
                break


def _save_dataset_in_background(ws, ds: LoadedDataset) -> None:
    """Write the dataset into the workspace in a daemon thread: Parquet of 100k pairs takes ~5 s on a
    loaded machine, which the upload's script run must not wait for. Best effort: a full disk must not
    stop the session (a reload then says the dataset is not on the server any more)."""

    def _save():
        with contextlib.suppress(Exception):
            ws.save_dataset(ds.pairs, ds.name, ds.hash)

    threading.Thread(target=_save, name="principia-save-dataset", daemon=True).start()


def dataset_from_load_result(result: Any, *, name: str, source: str) -> LoadedDataset:
    pairs = result.pairs
    return LoadedDataset(
        name=name,
        pairs=pairs,
        hash=pairs_hash(pairs),
        format=str(getattr(result, "format", "") or ""),
        source=source,
        report=getattr(result, "report", None),
    )


# --------------------------------------------------------------------------- audit runs
@st.cache_resource(show_spinner=False)
def audit_cache() -> dict:
    """Process-wide store of finished audits keyed by (dataset hash, config key)."""
    return {}


def config_key(config: Any) -> str:
    return repr(sorted(dataclasses.asdict(config).items()))



def start_audit(ds: LoadedDataset, config: Any) -> BackgroundJob | None:
    """Start the offline audit of `ds` in a background thread (or reuse a cached result).

    The run is recorded in the workspace's run store like a CLI run (same lifecycle and status
    words) and its result saved, so it is listed on Home and reopens after a reload."""
    key = (ds.hash, config_key(config))
    cached = audit_cache().get(key)
    if cached is not None:
        set_audit(cached)
        st.session_state.pop(JOB, None)
        return None
    running = get_job()
    if running is not None and running.running:
        running.cancel()
    from icai_core.audit import run_offline_audit

    pairs = ds.pairs
    name = ds.name

    def work(progress, cancel):
        ws = workspace()
        if ws is None:  # no usable home: run without recording
            return run_offline_audit(pairs, config, dataset_name=name, dataset_hash=ds.hash, progress=progress,
                                     cancel=cancel)
        with ws, ws.run("offline_audit", name, ds.hash, config.to_dict()) as run:
            # the hash the app already has: hashing 100k pairs again costs seconds no cancel check reaches
            result = run_offline_audit(pairs, config, dataset_name=name, dataset_hash=ds.hash,
                                       progress=run.wrap(progress), cancel=cancel, cache_dir=ws.cache_dir,
                                       run_id=run.id)
            run.finish(result, message="audit finished (app)")
        return result

    job = BackgroundJob(work, label="offline audit", key=key)
    st.session_state[JOB] = job
    st.session_state.pop(AUDIT, None)
    st.session_state.pop(SELECTION, None)
    return job


def collect_finished_job() -> BackgroundJob | None:
    """Move a finished job's result into the session (and the cross-session cache)."""
    job = get_job()
    if job is None or job.running:
        return job
    if job.status == "done" and job.result is not None:
        ds = get_dataset()
        if ds is not None and job.key and job.key[0] == ds.hash:
            set_audit(job.result)
            if st.session_state.get("show_map", True):
                warm_principle_map(job.result)
            cache = audit_cache()
            cache[job.key] = job.result
            while len(cache) > 8:
                cache.pop(next(iter(cache)))
        st.session_state.pop(JOB, None)
    return job


def wait_for_job(timeout: float = 120.0) -> None:
    """Block until the current job finishes (used by scripted runs, e.g. `?run=1`)."""
    job = get_job()
    if job is not None:
        job.wait(timeout)
        collect_finished_job()


def job_panel(job_key: str = JOB, *, collect=None, poll_every: float = 0.5) -> None:
    """Progress bar + cancel button of a running background job; reruns the page when it finishes.

    `collect(job)` moves a finished job's result into the session (default: the audit's collector).
    """
    collect = collect or (lambda _job: collect_finished_job())

    @st.fragment(run_every=poll_every)
    def _poll():
        job = st.session_state.get(job_key)
        if job is None:
            return
        if job.running:
            st.progress(job.fraction, text=f"{job.label}: {job.message} ({job.elapsed:.0f} s)")
            if st.button("Cancel", key=f"cancel_{job_key}", icon=":material/cancel:"):
                job.cancel()  # the job counts as cancelled at once; its thread stops at its next check
                st.rerun()
        else:
            st.rerun()

    job = st.session_state.get(job_key)
    if job is None:
        return
    if not job.running:
        collect(job)
        if job.status == "cancelled":
            st.warning(f"The {job.label} was cancelled. Work done so far is cached; run it again to resume."
                       + (f" (Its current step, “{escape_md(job.message.split(' — ')[0])}”, is still stopping in the "
                          "background; its result will be discarded.)" if job.stopping else ""))
        elif job.status == "failed":
            st.error(f"The {job.label} failed: {job.error}")
        # The note stays while a cancelled job's thread is still stopping and for one more run after
        # the run that first showed it (a Cancel's own rerun is often followed at once by another).
        if job.status != "done" and not job.stopping:
            if getattr(job, "note_shown", False):
                st.session_state.pop(job_key, None)
            job.note_shown = True
        return
    _poll()


# --------------------------------------------------------------------------- cached derived results
@st.cache_data(show_spinner=False, max_entries=512)
def rebuild_cached(
    dataset_hash: str,
    cfg_key: str,
    annotator: str,
    min_relevance: float,
    min_abs_strength: float,
    alpha: float,
    max_size: int,
    require_significant: bool,
    _audit: Any,
):
    """`AuditResult.rebuild` memoised by dataset hash + config + thresholds (the sliders)."""
    return _audit.rebuild(
        min_relevance=min_relevance,
        min_abs_strength=min_abs_strength,
        alpha=alpha,
        max_size=int(max_size),
        require_significant=require_significant,
    )


def default_selection(audit: Any) -> dict:
    return dict(audit.config.constitution_settings())


def current_selection(audit: Any) -> dict:
    sel = st.session_state.get(SELECTION)
    if not sel:
        sel = default_selection(audit)
        st.session_state[SELECTION] = sel
    return dict(sel)


def current_constitution(audit: Any):
    """(constitution, reconstruction, selection) for the current thresholds (cached)."""
    sel = current_selection(audit)
    if sel == default_selection(audit):
        return audit.constitution, audit.reconstruction, sel
    const, recon = rebuild_cached(
        audit.dataset_hash,
        config_key(audit.config) + str(getattr(audit, "run_id", "")),
        audit.annotator,
        float(sel["min_relevance"]),
        float(sel["min_abs_strength"]),
        float(sel["alpha"]),
        int(sel["max_size"]),
        bool(sel["require_significant"]),
        _audit=audit,
    )
    return const, recon, sel


def principle_objects(audit: Any):
    """The Principle objects behind an audit's vote columns (texts and inverse texts), or None."""
    if audit is None:
        return None
    try:
        return audit.principle_objects()
    except Exception:
        return None


# --------------------------------------------------------------------------- gates and widgets
def require_data() -> LoadedDataset:
    ds = get_dataset()
    if ds is None:
        st.info(NO_DATA_MESSAGE, icon=":material/info:")
        c1, c2 = st.columns(2)
        c1.page_link("pages/data.py", label="Go to the Data page", icon=":material/upload_file:")
        if HOME is not None:
            c2.page_link(HOME, label="Home (Demo)", icon=":material/home:")
        st.stop()
    return ds


def require_audit(ds: LoadedDataset):
    job_panel()
    audit = get_audit()
    if audit is None:
        if get_job() is None:
            st.info(NO_AUDIT_MESSAGE, icon=":material/info:")
            st.page_link("pages/principles.py", label="Go to the Principles page", icon=":material/science:")
        st.stop()
    return audit


HOME = None  # the Home st.Page, set by app.py on every run


def dataset_badge() -> None:
    """Sidebar line naming the loaded dataset and the audit state."""
    ds = get_dataset()
    with st.sidebar:
        if ds is None:
            st.caption("No dataset loaded.")
            return
        st.caption(f"**Dataset:** {escape_md(ds.name)} · {ds.n:,} rows")
        job = get_job()
        if job is not None and job.running:
            st.caption(f"Audit running… {job.fraction:.0%}")
        elif get_audit() is not None:
            annotator_picker()



def annotator_label(name: str, result: Any = None) -> str:
    if result is not None and name in result.analyses:
        a = result.analyses[name]
        if a.pooled:
            return f"all annotators pooled ({a.n_pairs:,} pairs)"
        label = "the annotator" if name == "all" else name
        return f"{label} ({a.n_pairs:,} pairs)"
    return name


def annotator_picker() -> None:
    """Sidebar: which annotator the pages show (each annotator is audited separately)."""
    raw = st.session_state.get(AUDIT)
    if raw is None:
        return
    engine = "LLM engine (ICAI)" if getattr(raw, "engine", "offline") == "llm" else "offline engine"
    st.caption(f"Run ready ({engine})" + (f" · id `{raw.run_id}`" if getattr(raw, "run_id", None) else ""))
    names = list(raw.analyses)
    if len(names) > 1:
        current = st.session_state.get(ANNOTATOR)
        st.selectbox("Annotator", names, index=names.index(current) if current in names else 0,
                     format_func=lambda n: annotator_label(n, raw), key=ANNOTATOR,
                     help="Each annotator is audited on its own pairs; pick whose principles the pages show.")


def escape_md(text: Any) -> str:
    """Escape user text for st.markdown/captions: the app's one choke point is `ui.safe.md`."""
    from ui.safe import md

    return md(text)


def fmt_pct(x: Any) -> str:
    try:
        return f"{float(x):.1%}"
    except (TypeError, ValueError):
        return "n/a"


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0


# --------------------------------------------------------------------------- datasets
DEMO_FALLBACK_NAME = "bundled demo dataset"


def demo_name() -> str:
    try:
        from icai_core import data

        return str(data.DEFAULT_DEMO)
    except Exception:
        return DEMO_FALLBACK_NAME


def demo_description() -> str:
    try:
        from icai_core import data

        return str(data.DEMO_DATASETS.get(data.DEFAULT_DEMO, data.DEFAULT_DEMO))
    except Exception:
        return DEMO_FALLBACK_NAME


def load_demo_dataset(*, start: bool = True) -> LoadedDataset | None:
    """Load the bundled demo dataset (and start its audit). Errors are shown, never raised."""
    from icai_core import data

    try:
        result = data.load_demo()
    except Exception as exc:  # a broken install: say so plainly
        st.error(f"Could not load the demo dataset: {exc}")
        return None
    ds = dataset_from_load_result(result, name=demo_name(), source="demo")
    set_dataset(ds)
    if start and get_audit() is None:
        # The demo runs the measurable judges without the (slower) embedding-based ones.
        from icai_core.audit import AuditConfig

        start_audit(ds, AuditConfig(use_embeddings=False))
    return ds


def bundled_choices() -> dict[str, Any]:
    """name -> path of the bundled real samples offered by icai_core.data."""
    try:
        from icai_core import data

        return dict(data.bundled_datasets())
    except Exception:
        return {}


@st.cache_data(show_spinner=False, max_entries=32)
def summary_cached(dataset_hash: str, *, _pairs: pd.DataFrame) -> dict:
    from icai_core.data import dataset_summary

    return dataset_summary(_pairs)


_MAP_CACHE: dict[tuple, Any] = {}
_MAP_LOCK = threading.Lock()


def _map_key(audit: Any) -> tuple:
    return (getattr(audit, "run_id", None), audit.dataset_hash, audit.annotator,
            tuple(j.key for j in audit.judges))


def map_frame_cached(audit: Any):
    """The principle map of this run and annotator (icai_core.principle_map), memoised per process;
    thread-safe, so the background warm-up and the page never compute it twice."""
    key = _map_key(audit)
    with _MAP_LOCK:
        hit = _MAP_CACHE.get(key)
        if hit is not None:
            return hit
        from icai_core.principle_map import map_frame
        from icai_core.workspace import Workspace

        embedder = Workspace().embedder()
        frame = map_frame(audit.judges, audit.stats, embedder=embedder, seed=audit.config.seed)
        _MAP_CACHE[key] = frame
        while len(_MAP_CACHE) > 16:
            _MAP_CACHE.pop(next(iter(_MAP_CACHE)))
        return frame


def warm_principle_map(audit: Any) -> None:
    """Compute the principle map of a finished run in a background thread (best effort)."""
    if _map_key(audit) in _MAP_CACHE:
        return

    def _run():
        try:
            map_frame_cached(audit)
        except Exception:  # the page shows the error when it computes the map itself
            pass

    threading.Thread(target=_run, name="principia-map-warmup", daemon=True).start()


def principle_map(audit: Any):
    """(map frame, None) of the run's judges for the annotator shown, or (None, reason)."""
    try:
        return map_frame_cached(audit), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def load_bundled(name: str) -> LoadedDataset | None:
    from icai_core import data

    choices = bundled_choices()
    if name not in choices:
        st.error(f"Unknown bundled dataset {name!r}. Available: {', '.join(choices) or 'none'}.")
        return None
    try:
        result = data.load_pairs(choices[name], name=name)
    except data.DataError as exc:
        st.error(str(exc))
        return None
    ds = dataset_from_load_result(result, name=name, source="bundled")
    set_dataset(ds)
    return ds


def open_run(run_id: str) -> bool:
    """Load a recorded run (CLI or app) into the session: its dataset and its result, exactly as saved
    (no recomputation). Shows a message and returns False when it cannot be opened."""
    ws = workspace()
    if ws is None:
        st.error("Principia's home folder is not usable, so saved runs cannot be opened. Set PRINCIPIA_HOME "
                 "to a writable folder and restart the app.")
        return False
    with ws:
        info = ws.get_run(run_id)
        if info is None:
            st.warning(f"There is no run {escape_md(run_id)} on this server (the link may come from another "
                       "machine). Recent runs are listed on Home.")
            return False
        try:
            result = ws.load_result(run_id)
        except KeyError as exc:
            st.warning(f"Run {escape_md(run_id)} ({escape_md(info.get('status', ''))}) cannot be reopened: "
                       f"{escape_md(exc.args[0])}")
            return False
        except Exception as exc:  # a damaged row: say so, keep the app usable
            st.error(f"Run {escape_md(run_id)} could not be read ({type(exc).__name__}). Run the audit again.")
            return False
    ds = LoadedDataset(name=result.dataset_name, pairs=result.all_pairs, hash=result.dataset_hash,
                       source="run")
    set_dataset(ds, persist=False)
    st.query_params["data"] = ds.hash
    set_audit(result)
    return True


def apply_query_params() -> None:
    """The URL holds the session's place: `?run=<id>` reopens a recorded run, `?data=<hash>` a dataset
    loaded earlier on this server, `?dataset=<bundled name>` (or `demo`) a bundled dataset. Each is
    applied once per session, so a browser reload lands where the user was."""
    run_id = st.query_params.get("run")
    if run_id and st.session_state.get("_qp_run") != run_id:
        st.session_state["_qp_run"] = run_id
        if open_run(run_id):
            return
    data_hash = st.query_params.get("data")
    if data_hash and st.session_state.get("_qp_data") != data_hash and get_dataset() is None:
        st.session_state["_qp_data"] = data_hash
        ws = workspace()
        found = ws.load_dataset(data_hash) if ws is not None else None
        if found is not None:
            pairs, name = found
            set_dataset(LoadedDataset(name=name, pairs=pairs, hash=data_hash, source="saved"), persist=False)
        else:
            st.warning("The dataset in this link is not on this server any more: load it again on the Data page.")
    name = st.query_params.get("dataset")
    if not name or st.session_state.get("_qp_dataset") == name:
        return
    st.session_state["_qp_dataset"] = name
    if name == "demo":
        load_demo_dataset(start=False)
    else:
        load_bundled(name)


def sync_query_params() -> None:
    """Keep the URL on the session's place after every run (page switches clear query params), so a
    reload or a copied address reopens the same dataset and run."""
    raw = st.session_state.get(AUDIT)
    ds = get_dataset()
    try:
        if raw is not None and getattr(raw, "run_id", None) and (ds is None or raw.dataset_hash == ds.hash):
            if st.query_params.get("run") != raw.run_id:
                st.query_params["run"] = raw.run_id
            st.session_state["_qp_run"] = raw.run_id
        if ds is not None and ds.source in ("upload", "saved", "run", "bundled", "demo"):
            if st.query_params.get("data") != ds.hash:
                st.query_params["data"] = ds.hash
            st.session_state["_qp_data"] = ds.hash
    except Exception:  # the URL is a convenience; never break a page over it
        pass


def share_url(run_id: str) -> str:
    """The address that opens this run on this server (Feedback Forensics' share link, no hosted service)."""
    base = ""
    try:
        base = str(st.context.url or "").split("?")[0]
    except Exception:
        base = ""
    return f"{base}?run={run_id}"


def recent_runs(limit: int = 8) -> pd.DataFrame | None:
    ws = workspace()
    if ws is None:
        return None
    try:
        with ws:
            if ws.store.recovered:  # a damaged store was replaced: say what happened, once per session
                if not st.session_state.get("_store_recovered_shown"):
                    st.session_state["_store_recovered_shown"] = True
                    st.warning(ws.store.recovered)
            return ws.list_runs(limit=limit)
    except Exception:
        return None


def run_constitution(run_id: str) -> dict | None:
    """The constitution saved with a past run, or None."""
    ws = workspace()
    if ws is None:
        return None
    try:
        with ws:
            return ws.store.load_result(run_id, "constitution")
    except Exception:
        return None


class RunRecorder:
    """Records an app job through the workspace's run lifecycle (best effort: a store problem never
    stops the job). `kind` is the store's run kind; `config` must hold no key."""

    def __init__(self, kind: str, dataset_name: str, data_hash: str, config: dict, client: Any = None):
        self.run_id = None
        self._ws = workspace()
        self._run = None
        if self._ws is not None:
            try:
                self._run = self._ws.run(kind, dataset_name, data_hash, config, client=client)
                self.run_id = self._run.id
            except Exception:
                self._run = None

    @property
    def store(self):
        return self._ws.store if self._run is not None else None

    def wrap(self, progress):
        return self._run.wrap(progress) if self._run is not None else progress

    def finish(
        self, exc: BaseException | None, results: dict | None = None, *, message: str = "finished (app)",
        cost: dict | None = None, result: Any = None,
    ) -> None:
        """Mark the run done (saving `result` and `results`, name -> object), cancelled or failed."""
        if self._run is None:
            return
        try:
            if exc is None:
                self._run.finish(result, message=message, results=results, cost=cost)
            else:
                self._run.fail(exc)
        except Exception:
            pass
        finally:
            with contextlib.suppress(Exception):
                self._ws.close()
