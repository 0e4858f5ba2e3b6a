"""The run's time-left estimate (`pipeline.WorkProgress`) on a fake clock: exact expected messages."""

from __future__ import annotations

import pytest

from icai_core import pipeline


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(pipeline.time, "perf_counter", c)
    return c


def _run(weights):
    seen: list[tuple[int, str]] = []
    work = pipeline.WorkProgress(lambda d, t, m: seen.append((d, m)), weights)
    return work, seen


def test_time_left_extrapolates_from_the_work_done(clock):
    work, seen = _run({"votes": 1.0, "evidence": 1.0})
    votes = work.stage("votes")
    clock.t += 10
    votes(1, 2, "half the votes")  # a quarter of the run in 10 s: 30 s left
    assert seen[-1] == (250, "half the votes — about 30 s left")


def test_a_stage_done_as_it_began_does_not_count_as_work_at_the_measured_rate(clock):
    # Votes read from the cache: their half of the run took 0.1 s. Half the evidence then takes 10 s,
    # so the other half takes about 10 s more (extrapolating from the start would say 3 s).
    work, seen = _run({"votes": 1.0, "evidence": 1.0})
    votes = work.stage("votes")
    clock.t += 0.1
    votes(1, 1, "Votes loaded from cache")
    assert seen[-1] == (500, "Votes loaded from cache")  # nothing measured yet: no estimate
    evidence = work.stage("evidence")
    clock.t += 10
    evidence(1, 2, "evidence")
    assert seen[-1] == (750, "evidence — about 10 s left")


def test_a_single_unit_stage_that_took_its_time_is_work_done(clock):
    # A stage that reports once, at its end, after real work is no cache hit: its time counts.
    work, seen = _run({"votes": 1.0, "evidence": 1.0})
    votes = work.stage("votes")
    clock.t += 20
    votes(1, 1, "votes done")
    assert seen[-1] == (500, "votes done — about 20 s left")
