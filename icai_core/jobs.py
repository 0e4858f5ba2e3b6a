"""Progress and cancellation for long jobs, shared by the CLI, the app and the benchmarks.

A job receives `progress(done, total, message)` and a `CancelToken`; it checks `token.cancelled`
between chunks and raises `Cancelled`. Nothing here knows about Streamlit or terminals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

Progress = Callable[[int, int, str], None]


class Cancelled(Exception):
    """Raised inside a job when its CancelToken was cancelled; partial results stay cached."""


@dataclass
class CancelToken:
    _event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def noop_progress(done: int, total: int, message: str = "") -> None:
    """A progress callback that does nothing."""


def check(cancel: CancelToken | None) -> None:
    """Raise Cancelled if `cancel` is set; a None token never cancels."""
    if cancel is not None and cancel.cancelled:
        raise Cancelled("cancelled by the user")
