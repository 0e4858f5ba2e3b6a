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
