"""Background jobs for the app: run a long function in a thread with progress and a CancelToken.

The thread never touches Streamlit; it only updates plain attributes that a page polls from an
`st.fragment(run_every=...)`. Nothing here imports Streamlit, so it is testable on its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from icai_core.jobs import Cancelled, CancelToken

log = logging.getLogger("principia.app")


class BackgroundJob:
    """`fn(progress=..., cancel=...)` running in a daemon thread."""

    def __init__(self, fn: Callable[..., Any], *, label: str, key: Any = None):
        self.label = label
        self.key = key
        self.token = CancelToken()
        self.done = 0
        self.total = 1
        self.message = "Starting…"
        self.status = "running"  # running | done | cancelled | failed
        self.result: Any = None
        self.error: str | None = None
        self.started = time.time()
        self.finished: float | None = None
        self._lock = threading.Lock()
        self._fn = fn
        self._thread = threading.Thread(target=self._run, name=f"principia-job-{label}", daemon=True)
        self._thread.start()

    def _progress(self, done: int, total: int, message: str = "") -> None:
        with self._lock:
            self.done, self.total = int(done), max(int(total), 1)
            if message:
                self.message = message

    def _run(self) -> None:
        try:
            result = self._fn(progress=self._progress, cancel=self.token)
        except Cancelled:
            self.status = "cancelled"
        except Exception as exc:  # shown to the user as a message, logged with its traceback
            log.exception("job %s failed", self.label)
            self.error = f"{type(exc).__name__}: {exc}"
            self.status = "failed"
        else:
            self.result = result
            self.status = "done"
        finally:
            self.finished = time.time()

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def fraction(self) -> float:
        with self._lock:
            return min(max(self.done / self.total, 0.0), 1.0)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started

    def cancel(self) -> None:
        self.token.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


# ------------------------------------------------------------------------------------ shared jobs
_SHARED: dict[Any, BackgroundJob] = {}
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 16


def shared_job(key: Any, fn: Callable[..., Any], *, label: str) -> BackgroundJob:
    """The process-wide job computing `key` (started on the first call, reused by every later call and
    session), so heavy per-dataset work (e.g. word counts of 100k pairs) never blocks a page's script
    thread and is never computed twice. A failed or cancelled job is started again on the next call;
    at most 16 are kept (oldest finished ones dropped first)."""
    with _SHARED_LOCK:
        job = _SHARED.get(key)
        if job is not None and job.status in ("running", "done"):
            return job
        job = BackgroundJob(fn, label=label, key=key)
        _SHARED[key] = job
        if len(_SHARED) > _SHARED_MAX:
            for k in [k for k, j in _SHARED.items() if not j.running][: len(_SHARED) - _SHARED_MAX]:
                _SHARED.pop(k, None)
        return job
