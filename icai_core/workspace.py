"""The workspace: where Principia keeps its files, how clients and embedders are built, and the one
run lifecycle (create -> running -> done / cancelled / failed; `interrupted` when its process died).

    home/                    $PRINCIPIA_HOME, else ~/.principia
      runs.sqlite            run store: every run of the CLI and the app, resumable steps, results
      llm_cache.sqlite       LLM response cache (no key inside, ever)
      embeddings.sqlite      sentence-embedding cache
      votes/                 measurable-judge vote cache (Parquet)
      datasets/<hash>.parquet  datasets loaded in the app (a reload or a shared link finds them)

`icai audit`, `icai run`, `icai iteralign` and the app all record runs through `Workspace.run(...)`,
with the same status words everywhere (`icai_core.store.STATUSES`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from icai_core.jobs import Cancelled

log = logging.getLogger("principia.workspace")


class WorkspaceError(RuntimeError):
    """The home folder cannot be used (not writable, a file in the way, ...): the message says what to do."""


def default_home() -> Path:
    home = os.environ.get("PRINCIPIA_HOME")
    return Path(home).expanduser() if home else Path.home() / ".principia"


def _add_costs(base: dict | None, new: dict | None) -> dict | None:
    """Cost of a resumed run = what earlier processes spent + what this one spent (numbers added)."""
    if not base:
        return new
    if not new:
        return base
    out = dict(new)
    for k, v in base.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and isinstance(new.get(k, 0), int | float):
            out[k] = new.get(k, 0) + v
        elif isinstance(v, dict) and isinstance(new.get(k, {}), dict):
            out[k] = _add_costs(v, new.get(k, {}))
        elif k not in out:
            out[k] = v
    return out


@dataclass
class RunHandle:
    """One recorded run. `progress(...)` mirrors progress -- and the cost so far -- into the store (at
    most once a second), so a process that is killed (no `fail`, no `finish`) still leaves the calls it
    paid for in the record and a resumed run adds to them instead of under-reporting (issue 11, item 14);
    `finish(result)` saves the result and marks it done; leaving the `with` block on an exception
    marks it cancelled (Cancelled / KeyboardInterrupt) or failed (anything else, message scrubbed)."""

    workspace: Workspace
    id: str
    resumed: bool = False
    client: Any = None  # an LLMClient whose usage is the run's cost
    _cost_base: dict | None = None
    _last: float = 0.0
    _finished: bool = False

    @property
    def store(self):
        return self.workspace.store

    def cost(self) -> dict | None:
        usage = self.client.usage.to_dict() if self.client is not None else None
        return _add_costs(self._cost_base, usage)

    def wrap(self, progress=None):
        import time

        def _progress(done: int, total: int, message: str = "") -> None:
            if progress is not None:
                progress(done, total, message)
            now = time.time()
            if now - self._last > 1.0:
                self._last = now
                with contextlib.suppress(Exception):
                    self.store.update(self.id, done=done, total=total, message=message, cost=self.cost())

        return _progress

    def finish(self, result: Any = None, *, message: str = "finished", results: dict | None = None,
               cost: dict | None = None) -> None:
        """Mark the run done and save `result` (a RunResult) and any extra named `results`."""
        from icai_core.result import RunResult, save_result

        if isinstance(result, RunResult):
            result.run_id = self.id
            save_result(self.store, self.id, result)
        for name, obj in (results or {}).items():
            self.store.save_result(self.id, name, obj)
        total = _add_costs(self._cost_base, cost) if cost is not None else self.cost()
        self.store.update(self.id, status="done", message=message, cost=total)
        self._finished = True

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled | KeyboardInterrupt):
            self.store.update(self.id, status="cancelled", message="cancelled; run the same command to resume",
                              cost=self.cost())
        else:
            self.store.update(self.id, status="failed", error=f"{type(exc).__name__}: {exc}",
                              message="failed", cost=self.cost())
        self._finished = True

    def __enter__(self) -> RunHandle:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and not self._finished:
            with contextlib.suppress(Exception):
                self.fail(exc)
        return False


class Workspace:
    """Paths, caches, the run store and the run lifecycle of one home folder."""

    def __init__(self, home: str | os.PathLike[str] | None = None):
        self.home = Path(home).expanduser() if home is not None else default_home()
        if self.home.exists() and not self.home.is_dir():
            raise WorkspaceError(f"Principia's home {self.home} is a file, not a folder: remove it, or set "
                                 "PRINCIPIA_HOME to a folder (or use --cache-dir).")
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise WorkspaceError(f"Principia's home {self.home} is not writable ({exc.strerror or exc}): set "
                                 "PRINCIPIA_HOME to a writable folder (or use --cache-dir).") from None
        self._store = None

    # -- paths ---------------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        return self.home

    @property
    def store_path(self) -> Path:
        return self.home / "runs.sqlite"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    # -- services ------------------------------------------------------------------------------
    @property
    def store(self):
        if self._store is None:
            from icai_core.store import RunStore

            self._store = RunStore(self.store_path)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def llm_client(self, llm_config):
        """An LLMClient with this workspace's response cache."""
        from icai_core.llm import LLMClient, ResponseCache

        return LLMClient(llm_config, cache=ResponseCache(self.home / "llm_cache.sqlite"))

    def embedder(self, max_seq_length: int = 64):
        """The bundled MiniLM embedder with this workspace's embedding cache."""
        from icai_core.embed import Embedder

        return Embedder(cache_path=self.home / "embeddings.sqlite", max_seq_length=max_seq_length)

    # -- datasets --------------------------------------------------------------------------------
    def save_dataset(self, pairs: pd.DataFrame, name: str, data_hash: str) -> Path:
        """Keep a loaded dataset so a browser reload or a shared link can reopen it (idempotent)."""
        import json
        import tempfile

        self.datasets_dir.mkdir(parents=True, exist_ok=True)
        path = self.datasets_dir / f"{data_hash}.parquet"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.datasets_dir, suffix=".tmp")
            os.close(fd)
            try:
                pairs.to_parquet(tmp)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        (self.datasets_dir / f"{data_hash}.json").write_text(json.dumps({"name": name}))
        return path

    def load_dataset(self, data_hash: str) -> tuple[pd.DataFrame, str] | None:
        import json

        if not data_hash.isalnum():
            return None
        path = self.datasets_dir / f"{data_hash}.parquet"
        if not path.exists():
            return None
        try:
            pairs = pd.read_parquet(path)
        except Exception as exc:
            log.warning("stored dataset %s is damaged (%s); removing it", path.name, exc)
            path.unlink(missing_ok=True)
            return None
        meta = self.datasets_dir / f"{data_hash}.json"
        name = json.loads(meta.read_text()).get("name", data_hash) if meta.exists() else data_hash
        return pairs, name

    # -- runs --------------------------------------------------------------------------------
    def run(self, kind: str, dataset_name: str, dataset_hash: str, config: Any, *, resume: bool = False,
            client: Any = None) -> RunHandle:
        """Record a run (or resume the newest interrupted / cancelled / failed run with the same kind,
        data and config when `resume`). Use as a context manager around the work."""
        store = self.store
        run_id = store.find_resumable(kind, dataset_hash, config) if resume else None
        if run_id:
            base = (store.get_run(run_id) or {}).get("cost")
            store.update(run_id, status="running", message="resumed")
            return RunHandle(self, run_id, resumed=True, client=client, _cost_base=base)
        run_id = store.create_run(kind, dataset_name, dataset_hash, config)
        return RunHandle(self, run_id, client=client)

    def list_runs(self, limit: int = 50) -> pd.DataFrame:
        return self.store.list_runs(limit=limit)

    def load_result(self, run_id: str):
        from icai_core.result import load_result

        return load_result(self.store, run_id)

    def get_run(self, run_id: str) -> dict | None:
        return self.store.get_run(run_id)


def run_config_record(config: Any, llm: Any = None) -> dict:
    """What a run's config looks like in the store: the RunConfig (+ the redacted LLM settings)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if llm is not None:
        d = {**d, "endpoint": llm.redacted() if hasattr(llm, "redacted") else llm}
    return d
