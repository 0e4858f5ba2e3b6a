"""Background jobs for the app: run a long function in a thread with progress and a CancelToken.

The thread never touches Streamlit; it only updates plain attributes that a page polls from an
`st.fragment(run_every=...)`. Nothing here imports Streamlit, so it is testable on its own.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from icai_core.jobs import Cancelled, CancelToken

log = logging.getLogger("principia.app")

# After this long without a progress report, `BackgroundJob.message` says how long the current step has
# run. Why: the time left ("about 12 s left") is computed by the pipeline when it reports progress, and
# one step can run for a long time without a report (measured: 25 s in the app on 24k pairs, the
# cross-validation's prompt-grouped split before `crossval.prompt_folds` replaced it); the page kept
# showing the estimate of 25 s before as if it were current. 10 s: longer than the page's 2 s poll and than the gap between reports of a normal step.
STALL_NOTE_S = 10.0
_TIME_LEFT = re.compile(r"\s+—\s+about [^—]* left\s*$")
_LEFT_S = re.compile(r"about (\d+(?:\.\d+)?) (s|min|h) left\s*$")
_UNIT_S = {"s": 1.0, "min": 60.0, "h": 3600.0}


class BackgroundJob:
    """`fn(progress=..., cancel=...)` running in a daemon thread."""

    def __init__(self, fn: Callable[..., Any], *, label: str, key: Any = None):
        self.label = label
        self.key = key
        self.token = CancelToken()
        self.done = 0
        self.total = 1
        self._message = "Starting…"
        self._moved = time.time()  # when the work last reported a new position or step
        self.status = "running"  # running | done | cancelled | failed
        self.result: Any = None
        self.error: str | None = None
        self.started = time.time()
        self.finished: float | None = None  # when the outcome was settled (a cancel: the click)
        self.stopped_at: float | None = None  # when the thread itself ended
        self.note_shown = False  # the page showed its cancelled / failed note (ui.common.job_panel)
        self._lock = threading.Lock()
        self._fn = fn
        self._thread = threading.Thread(target=self._run, name=f"principia-job-{label}", daemon=True)
        self._thread.start()

    def _progress(self, done: int, total: int, message: str = "") -> None:
        with self._lock:
            moved = (int(done), max(int(total), 1)) != (self.done, self.total) or (
                bool(message) and _step(message) != _step(self._message))
            self.done, self.total = int(done), max(int(total), 1)
            if message:
                self._message = message
            if moved:
                self._moved = time.time()

    @property
    def message(self) -> str:
        """The work's last progress message (with the pipeline's "about X left" when it gave one). When a
        running job has reported nothing new for `STALL_NOTE_S`, it adds how long the current step has
        run, so an estimate made at the last report is not read as current; once that time is past the
        estimate, the estimate is withdrawn (it is known to be wrong) and the text says so."""
        with self._lock:
            msg, since = self._message, time.time() - self._moved
        if not (self.running and since >= STALL_NOTE_S):
            return msg
        m = _LEFT_S.search(msg)
        if m is not None and since > float(m.group(1)) * _UNIT_S[m.group(2)]:
            step = _step(msg)
            return (f"{step + ' — ' if step != msg else ''}time left unknown: this step has run {since:.0f} s, "
                    f"past the estimate of about {m.group(1)} {m.group(2)} made when it started")
        return f"{msg} · this step has run {since:.0f} s so far"

    @message.setter
    def message(self, value: str) -> None:
        with self._lock:
            self._message = value
            self._moved = time.time()

    @property
    def stalled_s(self) -> float:
        """Seconds since the work last reported a new position or step."""
        with self._lock:
            return time.time() - self._moved

    def _run(self) -> None:
        try:
            result = self._fn(progress=self._progress, cancel=self.token)
        except Cancelled:
            self._settle("cancelled")
        except Exception as exc:  # shown to the user as a message, logged with its traceback
            if self.token.cancelled:  # a failure after the user's cancel is still a cancel
                self._settle("cancelled")
            else:
                log.exception("job %s failed", self.label)
                self.error = f"{type(exc).__name__}: {exc}"
                self._settle("failed")
        else:
            self._settle("done", result)
        finally:
            self.stopped_at = time.time()

    def _settle(self, status: str, result: Any = None) -> None:
        """The first outcome wins: a job cancelled by the user stays cancelled (and its result is
        discarded) even if its thread reaches the end before its next CancelToken check."""
        with self._lock:
            if self.status != "running":
                return
            self.status, self.result, self.finished = status, result, time.time()

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
        """Cancel now: the token is set (the work raises `Cancelled` at its next check, when its partial
        results are cached and the run is recorded as cancelled) and the job counts as cancelled at
        once, so the page shows it and can start another job without waiting for that checkpoint.
        `stopping` says whether the thread is still finishing its current step."""
        self.token.cancel()
        self._settle("cancelled")

    @property
    def stopping(self) -> bool:
        """Cancelled, but the thread has not reached its next CancelToken check yet."""
        return self.status == "cancelled" and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the thread itself to end (after a cancel: until the work reached its checkpoint)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _step(message: str) -> str:
    """A progress message without its time-left suffix: what step the work is in."""
    return _TIME_LEFT.sub("", message or "")


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
