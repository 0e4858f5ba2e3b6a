"""ui.jobs.BackgroundJob's progress text: a step that reports nothing for a while says how long it has
run, so a time-left estimate made at its last report is not shown as if it were current."""

from __future__ import annotations

import threading
import time

from ui import jobs as J


def _wait(cond, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while not cond() and time.time() < deadline:
        time.sleep(0.02)
    assert cond()


def test_a_silent_step_says_how_long_it_has_run(monkeypatch):
    monkeypatch.setattr(J, "STALL_NOTE_S", 0.4)
    go = [threading.Event() for _ in range(4)]

    def work(progress, cancel):
        progress(100, 1000, "Step A — about 12 s left")
        go[0].wait(5)
        progress(100, 1000, "Step A — about 13 s left")  # same position and step: not progress
        go[1].wait(5)
        progress(400, 1000, "Step B — about 5 s left")
        go[2].wait(5)
        return "ok"

    job = J.BackgroundJob(work, label="t")
    _wait(lambda: job.message.startswith("Step A"))
    assert job.message == "Step A — about 12 s left"  # fresh: no note
    time.sleep(0.6)
    msg = job.message
    assert msg.startswith("Step A — about 12 s left · this step has run ") and msg.endswith(" s so far"), msg
    ran = float(msg.split("has run ")[1].split(" s")[0])
    assert 0 <= ran <= 2
    go[0].set()
    _wait(lambda: "13 s left" in job._message)
    assert "this step has run" in job.message  # a new estimate alone is not a move
    assert job.stalled_s >= 0.4
    go[1].set()
    _wait(lambda: job.message.startswith("Step B"))
    assert job.message == "Step B — about 5 s left" and job.stalled_s < 0.4
    # a step that runs past its estimate: the estimate is withdrawn, not shown as current
    job._moved -= 6.0  # as if Step B had been running for 6 s (> its 5 s estimate)
    monkeypatch.setattr(J, "STALL_NOTE_S", 0.4)
    msg = job.message
    assert msg.startswith("Step B — time left unknown: this step has run 6 s"), msg
    assert "past the estimate of about 5 s" in msg and "about 5 s left" not in msg
    go[2].set()
    assert job.wait(5) and job.status == "done"
    time.sleep(0.5)
    assert "this step has run" not in job.message  # a finished job shows no note
