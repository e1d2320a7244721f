"""Tests for the online completion-time model and the sqrt-hazard poll schedule."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from nanobanana_async._polling._model import CompletionModel

MEDIAN, SIGMA = 20.0, 0.5


def trained(n: int = 500, seed: int = 1) -> CompletionModel:
    rng = random.Random(seed)
    model = CompletionModel()
    for _ in range(n):
        model.observe(rng.lognormvariate(math.log(MEDIAN), SIGMA))
    return model


def run_schedule(model: CompletionModel, k: float, durations: list[float]) -> tuple[float, float]:
    polls = delay = 0.0
    for d in durations:
        t = 0.0
        while t < d:
            t = model.next_poll(t, k=k, min_interval=0.05, max_interval=30.0)
            polls += 1
        delay += t - d
    return polls / len(durations), delay / len(durations)


def run_fixed(interval: float, durations: list[float]) -> tuple[float, float]:
    polls = [math.ceil(d / interval) for d in durations]
    delays = [n * interval - d for n, d in zip(polls, durations, strict=True)]
    return sum(polls) / len(polls), sum(delays) / len(delays)


@pytest.fixture(scope="module")
def durations() -> list[float]:
    rng = random.Random(7)
    return [rng.lognormvariate(math.log(MEDIAN), SIGMA) for _ in range(2000)]


def test_fit_recovers_median_and_sigma() -> None:
    model = trained(2000)
    assert model.ready
    assert model.samples == 2000
    assert model.median == pytest.approx(MEDIAN, rel=0.05)
    assert model.sigma == pytest.approx(SIGMA, rel=0.08)
    assert model.cdf(MEDIAN) == pytest.approx(0.5, abs=0.03)


def test_not_ready_before_min_samples_and_ignores_garbage() -> None:
    model = CompletionModel(min_samples=5)
    for bad in (math.nan, math.inf, -1.0):
        model.observe(bad)
    assert model.samples == 0
    for _ in range(4):
        model.observe(3.0)
    assert not model.ready
    model.observe(3.0)
    assert model.ready


def test_window_slides() -> None:
    model = CompletionModel(min_samples=10, window=100)
    for _ in range(100):
        model.observe(5.0)
    for _ in range(300):
        model.observe(50.0)
    assert model.samples == 100
    assert model.median == pytest.approx(50.0, rel=0.01)


def test_equal_samples_do_not_divide_by_zero() -> None:
    model = CompletionModel(min_samples=3)
    for _ in range(50):
        model.observe(10.0)
    t = model.next_poll(0.0, k=2.0, min_interval=0.1, max_interval=30.0)
    assert 5.0 < t < 10.5
    assert math.isfinite(model.hazard(10.0))
    assert model.k_for_target_delay(1.0) > 0


def test_next_poll_monotone_and_clamped() -> None:
    model = trained()
    t, times = 0.0, []
    for _ in range(200):
        nxt = model.next_poll(t, k=2.0, min_interval=0.25, max_interval=5.0)
        assert 0.25 - 1e-9 <= nxt - t <= 5.0 + 1e-9
        times.append(nxt)
        t = nxt
    assert all(b > a for a, b in itertools.pairwise(times))
    # The first poll waits for the lower tail (clamped here); later gaps stay in bounds.
    assert times[0] == pytest.approx(5.0)
    assert model.next_poll(0.0, k=2.0, min_interval=0.25, max_interval=30.0) > 7.0
    # Far past the fitted tail the gap stays bounded: the cap binds.
    assert model.next_poll(1e6, k=2.0, min_interval=0.25, max_interval=1.0) == pytest.approx(
        1e6 + 1
    )
    assert model.next_poll(-3.0, k=2.0, min_interval=0.25, max_interval=5.0) == times[0]


def test_edge_values() -> None:
    model = trained()
    assert model.cdf(0.0) == 0.0
    assert model.cdf(-1.0) == 0.0
    assert model.hazard(0.0) == 0.0
    assert model.cdf(1e9) == pytest.approx(1.0)
    assert math.isfinite(model.hazard(1e9)) and model.hazard(1e9) > 0


def test_schedule_hits_target_delay_and_reference_polls(durations: list[float]) -> None:
    model = trained()
    k = model.k_for_target_delay(1.0)
    assert k == pytest.approx(2.0, rel=0.15)
    polls, delay = run_schedule(model, k, durations)
    assert delay == pytest.approx(1.0, rel=0.15)
    # Reference sqrt-hazard curve: K=2 -> 8.5 polls at 0.99 s; polls scale ~1/delay.
    reference_polls = 8.5 * 0.99 / delay
    assert polls == pytest.approx(reference_polls, rel=0.10)


@pytest.mark.parametrize("interval", [1.0, 3.0])
def test_schedule_pareto_beats_fixed_interval(durations: list[float], interval: float) -> None:
    model = trained()
    fixed_polls, fixed_delay = run_fixed(interval, durations)
    polls, delay = run_schedule(model, model.k_for_target_delay(0.9 * interval / 2), durations)
    assert delay < fixed_delay
    assert polls < fixed_polls


def test_completion_probability() -> None:
    model = trained()
    last = 15.0
    ps = [model.completion_probability(last, last + d) for d in (0.0, 1.0, 5.0, 20.0, 200.0)]
    assert ps[0] == 0.0
    assert all(0.0 <= p <= 1.0 for p in ps)
    assert all(b > a for a, b in itertools.pairwise(ps))
    assert ps[-1] == pytest.approx(1.0, abs=1e-4)
    # Deep in the tail the lognormal hazard decays, so the probability is small but well defined.
    assert 0.0 <= model.completion_probability(1e6, 1e6 + 1) < 0.01
