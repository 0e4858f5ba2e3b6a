"""The app's background jobs (ui/jobs.py): shared per-key jobs, and Cancel honoured within 2 s.

No Streamlit here: `BackgroundJob` and `shared_job` are plain threads, so they are tested directly.
The cancel test runs the app's own audit entry (`ui.common._offline_run`, the pipeline with the hash
the app already holds) on distinct pairs built from real shared texts.
"""

from __future__ import annotations

import threading
import time

import pytest

from icai_core.jobs import Cancelled, check
from tests.test_app_common import DATA, needs_data
from ui.jobs import BackgroundJob, shared_job


def test_shared_job_runs_once_per_key_and_restarts_after_a_failure():
    calls = []
    gate = threading.Event()

    def slow(progress, cancel):
        calls.append(1)
        gate.wait(5)
        return 41 + len(calls)

    key = ("test", time.time())
    first = shared_job(key, slow, label="x")
    second = shared_job(key, slow, label="x")  # while running: the same job, not a second thread
    assert second is first and first.running
    gate.set()
    assert first.wait(5) and first.status == "done" and first.result == 42
    assert shared_job(key, slow, label="x") is first and len(calls) == 1  # done: reused

    def boom(progress, cancel):
        raise ValueError("bad row 3")

    key2 = ("test-fail", time.time())
    failed = shared_job(key2, boom, label="y")
    assert failed.wait(5) and failed.status == "failed" and failed.error == "ValueError: bad row 3"
    again = shared_job(key2, lambda progress, cancel: "ok", label="y")
    assert again is not failed and again.wait(5) and again.result == "ok"


def test_background_job_reports_cancelled_when_the_token_is_checked():
    def loop(progress, cancel):
        for i in range(10_000):
            check(cancel)
            progress(i, 10_000, "step")
            time.sleep(0.01)
        return "finished"

    job = BackgroundJob(loop, label="loop")
    time.sleep(0.2)
    assert job.running and 0 < job.done < 10_000
    t0 = time.perf_counter()
    job.cancel()
    assert job.wait(2.0)
    assert job.status == "cancelled" and job.result is None and time.perf_counter() - t0 < 2.0


@needs_data
@pytest.mark.slow
def test_the_app_audit_honours_cancel_within_2_s_on_distinct_pairs(tmp_path, monkeypatch):
    """Cancel at several points of the app's offline audit of 6k distinct pairs: each stops (status
    'cancelled', never 'done') within 2 s of the click."""
    monkeypatch.setenv("PRINCIPIA_DATA_DIR", str(DATA))
    from bench.synth import distinct_pairs
    from icai_core.audit import AuditConfig, dataset_hash
    from ui.common import _offline_run

    pairs = distinct_pairs(6_000, seed=3)
    h = dataset_hash(pairs)
    cfg = AuditConfig(use_embeddings=False)
    t0 = time.perf_counter()
    full = _offline_run(pairs, cfg, "syn", h, progress=None, cancel=None)
    total = time.perf_counter() - t0
    assert full.dataset_hash == h and len(full.all_pairs) == 6_000
    for frac in (0.1, 0.4, 0.7, 0.9):
        job = BackgroundJob(lambda progress, cancel: _offline_run(pairs, cfg, "syn", h, progress=progress,
                                                                  cancel=cancel), label="audit")
        time.sleep(frac * total)
        if not job.running:
            continue
        t_c = time.perf_counter()
        job.cancel()
        assert job.wait(2.0), f"still running 2 s after a cancel at {frac:.0%} ({job.message})"
        waited = time.perf_counter() - t_c
        assert job.status == "cancelled", (frac, job.status, job.error)
        assert waited < 2.0


def test_cancelled_is_the_exception_the_job_maps():
    job = BackgroundJob(lambda progress, cancel: (_ for _ in ()).throw(Cancelled("x")), label="c")
    assert job.wait(2) and job.status == "cancelled"
