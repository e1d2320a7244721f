"""Refit-to-refit stability: the window grows while no change is caught, each refit carries the
previous fit in proportion to its standard errors, and K's search returns a K it evaluated.

Why it matters: when nearly every task is done at its first poll, only the rare straggler speaks
of the tail, and a fit that wanders from refit to refit moves the first poll with it; the fixed
interval's delay is convex in its polls, so a wandering mix of schedules, each at par, costs more
delay than one steady schedule at the same polls (P6 (a) in ``benchmarks/polling.py``).
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import pytest

from nanobanana_async._polling import _model
from nanobanana_async._polling._model import CompletionModel
from nanobanana_async._polling._policy import PollPolicy

from .streams import observe, steady


def _poll_one_at_a_time(
    model: CompletionModel, durations: list[float], now: float, gap: float = 1.0
) -> float:
    """Each task polled every ``gap`` s from submit, one after the other; returns the clock."""
    for d in durations:
        last = 0.0
        t = gap
        while t < d:
            model.observe_pending(last, t, now=now + t)
            last, t = t, t + gap
        model.observe_interval(last, t, now=now + t)
        now += t
    return now


def test_the_window_grows_while_stable_and_a_caught_change_cuts_it_back() -> None:
    rng = random.Random(3)
    model = CompletionModel(min_samples=10, window=100, half_life=1e9)
    stable = [rng.lognormvariate(math.log(5.0), 0.5) for _ in range(2500)]
    now = _poll_one_at_a_time(model, stable, 0.0)
    assert model.changes == 0
    assert model.samples == _model._STABLE_GROWTH * 100  # more than ``window``, and bounded
    assert model.median == pytest.approx(5.0, rel=0.05)

    slow = iter([rng.lognormvariate(math.log(15.0), 0.5) for _ in range(200)])
    completions = 0
    while model.changes == 0:
        now = _poll_one_at_a_time(model, [next(slow)], now)
        completions += 1
    # Cut back to ``window`` at the alarm; the grown history does not slow the fit down.
    assert model.samples <= 100 + 1
    now = _poll_one_at_a_time(model, [next(slow) for _ in range(30)], now)
    assert model.median == pytest.approx(15.0, rel=0.2)
    assert completions < 30


def test_the_previous_fit_pulls_only_where_the_data_pinned_it() -> None:
    # Exact durations pin (mu, sigma) tightly: the next refit, on new exact durations, follows
    # them (the previous fit's information is a fraction of the data's, not a fixed count of
    # pseudo-tasks that would outweigh a window of censored ones).
    model = CompletionModel(min_samples=20, window=200, half_life=1e9)
    rng = random.Random(5)
    for _ in range(200):
        model.observe(rng.lognormvariate(math.log(4.0), 0.3))
    pooled = model._pooled
    info = pooled.info
    assert info.ee > 0 and info.tt > 0 and info.ee * info.tt > info.et**2
    # A fraction of the previous fit's information: the refit lands near the data-only fit of
    # the same window, not at the previous fit.
    for _ in range(400):
        model.observe(rng.lognormvariate(math.log(8.0), 0.3))
    anchored = model.median
    model.refit()  # from the data alone
    alone = model.median
    assert alone > 6.0
    assert abs(math.log(anchored / alone)) < 0.1 * math.log(alone / 4.0)


def test_k_search_returns_the_best_k_it_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    # Out of steps before the tolerance is met: the K returned is one whose delay was computed,
    # the nearest to the target of those (not the next secant step, never evaluated).
    evaluated: list[tuple[float, float]] = []
    original = _model._Fit.evaluate

    def spy(self: Any, k: float, plan: Any, min_interval: float) -> tuple[float, float]:
        out = original(self, k, plan, min_interval)
        evaluated.append((k, out[1]))
        return out

    rng = random.Random(2)
    model = CompletionModel()
    for _ in range(500):
        model.observe(rng.lognormvariate(math.log(20.0), 0.5))
    monkeypatch.setattr(_model, "_CALIBRATION_STEPS", 1)
    monkeypatch.setattr(_model._Fit, "evaluate", spy)
    target = 0.37
    k = model.k_for_target_delay(target, min_interval=0.25, max_interval=10.0)
    # The calibration's own evaluations: those with the same K repeated by the plan search too.
    delays = {kk: d for kk, d in evaluated}
    assert k in delays
    calibrated = [kk for kk in delays if any(kk == e for e, _ in evaluated)]
    nearest = min(calibrated, key=lambda kk: abs(math.log(delays[kk] / target)))
    assert abs(math.log(delays[k] / target)) <= abs(math.log(delays[nearest] / target)) + 1e-12


def test_the_first_poll_is_steady_across_refits_on_a_steady_stream() -> None:
    # (a)'s workload, 64 in flight: after the warm-up, the first poll of the schedule a task is
    # given moves little from refit to refit (before: std about 2% of it). Each schedule counts
    # once (a refit that keeps the fit adds no sample), hence the longer stream (24000 tasks: 5
    # schedules, std 0.2%, with plan searches warm-started from the last plan's shape; on the
    # coarser tick grid of half an interval, 10 schedules, std 0.53%).
    from benchmarks import poll_policy_sim as sim

    firsts: dict[int, float] = {}

    def on_done(record: Any, sched: Any) -> None:
        model, policy = sched.model, sched.policy
        if record.index < 2000 or not model.ready or model.fits in firsts:
            return
        k = model.k_for_target_delay(
            policy.target_delay, min_interval=policy.min_interval, max_interval=policy.max_interval
        )
        firsts[model.fits] = model.next_poll(
            0.0, k=k, min_interval=policy.min_interval, max_interval=policy.max_interval
        )

    sim.simulate(
        PollPolicy(), sim.lognormal(0.3, 0.5), tasks=24000, in_flight=64, seed=11, on_done=on_done
    )
    values = list(firsts.values())
    assert len(values) >= 5
    assert statistics.pstdev(values) < 0.01 * statistics.fmean(values)


def _count_refits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = CompletionModel._refit

    def counting(self: CompletionModel, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(CompletionModel, "_refit", counting)
    return calls


def test_a_refit_that_barely_moves_keeps_the_fit_k_and_plans_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A steady stream: ordinary refits move the fit by less than _FIT_HOLD, so the fit the polls
    # follow stays the very same object (its grid and plans), ``fits`` does not move (the
    # scheduler keeps its K), and K is the very same float: no refit-to-refit jitter.
    model, rng = steady(2000)
    k1 = model.k_for_target_delay(1.0, min_interval=0.25, max_interval=10.0)
    fit, fits = model._pooled.fit, model.fits
    refits = _count_refits(monkeypatch)
    observe(model, rng, 300, median=20.0)
    assert len(refits) >= 2  # refits ran ...
    assert model._pooled.fit is fit and model.fits == fits  # ... and kept the fit
    assert model.k_for_target_delay(1.0, min_interval=0.25, max_interval=10.0) == k1


def test_a_refit_that_moves_the_fit_replaces_it_and_recalibrates_k() -> None:
    model, rng = steady(2000)
    k1 = model.k_for_target_delay(1.0, min_interval=0.25, max_interval=10.0)
    fits, mu = model.fits, model._pooled.fit.mu
    observe(model, rng, 400, median=26.0)  # a third slower
    assert model.fits > fits and model._pooled.fit.mu > mu + _model._FIT_HOLD
    k2 = model.k_for_target_delay(1.0, min_interval=0.25, max_interval=10.0)
    assert k2 != k1
    fit = model._pooled.fit
    delay = fit.evaluate(k2, fit.plan(k2, 0.25, 10.0), 0.25)[1]
    assert abs(math.log(delay)) < 0.02  # calibrated afresh to the target


@pytest.mark.parametrize(("median", "wait", "warm"), [(20.0, 5.0, 3000), (300.0, 30.0, 10000)])
def test_ordinary_refits_wait_five_seconds_or_a_tenth_of_the_median(
    monkeypatch: pytest.MonkeyPatch, median: float, wait: float, warm: int
) -> None:
    # A completion every 0.02 s: 5% of the window is new long before the wait is over (and a
    # quarter only after it), yet an ordinary refit waits max(5 s, 0.1 x median).
    rng = random.Random(6)
    model = CompletionModel(min_samples=20)
    now = 0.0
    for _ in range(warm):
        now += 0.02
        model.observe(rng.lognormvariate(math.log(median), 0.1), now=now)
    model.refit()
    start = model._pooled.fitted_at
    refits = _count_refits(monkeypatch)
    while not refits:
        now += 0.02
        model.observe(rng.lognormvariate(math.log(median), 0.1), now=now)
    assert now - start == pytest.approx(wait, rel=0.01)  # the fitted median, not the true one
