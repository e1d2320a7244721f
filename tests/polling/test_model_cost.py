"""What the model computes on the event loop: every call runs on the user's loop (a web backend
serving requests), so a refit, a plan search or a K calibration must stay short.

The scenario behind these bounds: a web backend, fixed ~1.5 s tasks, 200 in flight, the fast
policy below. Before: about one refit per two completions (the change detector firing again and
again, the pooled fit refitted beside the only size class's), a K calibration of 46 schedule
evaluations, and one call doing a refit and a calibration back to back (20 ms seen).
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from nanobanana_async._polling import _model
from nanobanana_async._polling._model import CompletionModel
from nanobanana_async._polling._policy import PollPolicy
from nanobanana_async._polling._scheduler import PollScheduler

from .streams import observe, steady

FAST = PollPolicy(initial_delay=0.2, max_interval=0.3, min_interval=0.05, target_delay=0.1)


def _count(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(owner, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


def test_a_plan_search_starts_from_the_previous_fits_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    # A refit that moved the fit a little: its plan search starts from the last plan's shape
    # (about 14 evaluations instead of about 40) and finds a plan as good as the full search's.
    before = _model._Fit(0.4, 0.15)
    k = 2.5
    before.plan(k, FAST.min_interval, FAST.max_interval)
    after = _model._Fit(0.42, 0.16, before.hints)
    fresh = _model._Fit(0.42, 0.16)
    evaluations = _count(monkeypatch, _model._Fit, "evaluate")
    warm = after.plan(k * 1.05, FAST.min_interval, FAST.max_interval)
    assert len(evaluations) <= 16
    full = fresh.plan(k * 1.05, FAST.min_interval, FAST.max_interval)
    assert len(evaluations) >= 30  # the full search, for comparison

    def cost(fit: _model._Fit, plan: _model._Plan) -> float:
        polls, delay = fit.evaluate(k * 1.05, plan, FAST.min_interval)
        return polls + 2.0 * (k * 1.05) ** 2 * delay

    assert cost(after, warm) <= cost(fresh, full) * 1.002


def test_a_calibration_after_a_refit_evaluates_few_schedules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = CompletionModel(min_samples=20)
    rng = random.Random(3)
    now = 0.0
    for _ in range(200):
        now += 0.01
        d = 1.5 * rng.uniform(0.95, 1.05)
        model.observe_interval(d - 0.1, d + 0.1, size_class="1K", now=now)
    model.k_for_target_delay(0.1, min_interval=0.05, max_interval=0.3)
    fits = model.fits
    for _ in range(100):
        now += 1.0
        d = 1.6 * rng.uniform(0.95, 1.05)
        model.observe_interval(d - 0.1, d + 0.1, size_class="1K", now=now)
        if model.fits != fits:
            break
    assert model.fits != fits
    evaluations = _count(monkeypatch, _model._Fit, "evaluate")
    k = model.k_for_target_delay(0.1, min_interval=0.05, max_interval=0.3)
    # Started from Keller's estimate, three secant steps here: 69 evaluations with a full plan
    # search each, then 39 with plan searches started from the last shape. Started from the
    # last calibration's correction to Keller's estimate, one: 13.
    assert 0 < len(evaluations) <= 16
    # ... and the K it settles on still gives the target delay (within the search's 2%).
    fit = model._pooled.fit
    delay = fit.evaluate(k, fit.plan(k, 0.05, 0.3), 0.05)[1]
    assert abs(math.log(delay / 0.1)) < 0.02


def test_the_warm_start_corrections_are_bounded() -> None:
    # One correction per (target, bounds) key, at most _MAX_CALIBRATIONS of them: the scheduler
    # asks for one key, but a caller asking for many must not grow the model without bound.
    model = CompletionModel(min_samples=20)
    rng = random.Random(4)
    for i in range(100):
        d = rng.lognormvariate(0.0, 0.4)
        model.observe_interval(0.9 * d, d, now=float(i))
    for i in range(_model._MAX_CALIBRATIONS + 20):
        model.k_for_target_delay(0.05 + 0.01 * i, min_interval=0.05, max_interval=3.0)
    assert len(model._k_ratio) == _model._MAX_CALIBRATIONS
    assert all(_model._MIN_K_RATIO <= r <= _model._MAX_K_RATIO for r in model._k_ratio.values())


def test_the_only_size_class_is_fitted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every task of one class: the pooled data are that class's, and the pooled fit is a copy.
    newton = _count(monkeypatch, _model, "_newton")
    model = CompletionModel(min_samples=20)
    rng = random.Random(5)
    for i in range(300):
        d = rng.lognormvariate(0.0, 0.4)
        model.observe_interval(0.8 * d, d, size_class="1K", now=float(i))
    own = model._classes["1K"]
    assert model._pooled.fit is own.fit
    assert model.summary().median == model.summary("1K").median
    refits = _count(monkeypatch, CompletionModel, "_refit")
    model.refit()
    assert len(refits) == 2 and len(newton) > 0
    newton.clear()
    model.refit()
    assert len(newton) == 1  # the class's; the pooled one copies it
    assert model._pooled.fit is own.fit


def test_a_second_class_ends_the_copy() -> None:
    model = CompletionModel(min_samples=5)
    rng = random.Random(6)
    for i in range(40):
        d = rng.uniform(0.9, 1.1)
        model.observe_interval(0.8 * d, d, size_class="1K", now=float(i))
    assert model._pooled.fit is model._classes["1K"].fit
    for i in range(40, 80):
        d = rng.uniform(9.0, 11.0)
        model.observe_interval(0.8 * d, d, size_class="4K", now=float(i))
    assert model._pooled.fit is not model._classes["1K"].fit
    assert model._pooled.fit is not model._classes["4K"].fit
    assert 1.0 < model.median < 11.0


def test_the_detector_rests_after_a_change_until_the_new_cohort_has_spoken() -> None:
    pop = _model._Population(100, _model._Fit(0.0, 0.3), rest=20)
    pop.fitted = True
    pop.forget_before(0.0)
    for i in range(19):
        pop.add(_model._Obs(0.0, 0.0, float(i)))
        # Every poll says "slower" (still running at 1.5x the median): ignored while resting.
        assert not pop.score(1.0, 1.5, False, 100.0 + i)
    pop.add(_model._Obs(0.0, 0.0, 19.0))
    assert any(pop.score(1.0, 1.5, False, 200.0) for _ in range(30))


def test_near_fixed_durations_do_not_refit_per_completion(monkeypatch: pytest.MonkeyPatch) -> None:
    # 800 tasks of 1.5 s (± 2%), 200 in flight, the fast policy: before, 170 Newton fits (25
    # changes caught, and the pooled fit refitted beside the only class's); then 97 (23 changes);
    # on the coarser tick grid (half an interval) 85 (26 changes: polls of same-age tasks meet at
    # the same ages more often, which the detector reads as correlated evidence).
    from benchmarks import poll_policy_sim as sim

    newton = _count(monkeypatch, _model, "_newton")
    models: list[CompletionModel] = []

    def on_done(record: Any, sched: PollScheduler) -> None:
        if not models:
            models.append(sched.model)

    sim.simulate(
        FAST,
        lambda rng, now, i: (1.5 * rng.uniform(0.98, 1.02), "1K"),
        tasks=800,
        in_flight=200,
        seed=1,
        on_done=on_done,
    )
    assert len(newton) <= 110
    assert models[0].changes <= 28


def test_no_call_both_refits_and_calibrates_k(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 3x slowdown: the change detector refits from inside _next_due (a poll outcome); K is then
    # recalibrated on the next call, not in the same one.
    from benchmarks import poll_policy_sim as sim

    state = {"refits": 0, "calibrations": 0}
    both: list[int] = []
    refitted: list[int] = []
    original_next = PollScheduler._next_due
    original_refit = CompletionModel._refit
    original_k = CompletionModel.k_for_target_delay

    def next_due(self: PollScheduler, *args: Any) -> float:
        state["refits"] = state["calibrations"] = 0
        out = original_next(self, *args)
        if state["refits"]:
            refitted.append(1)
            if state["calibrations"]:
                both.append(1)
        return out

    def refit(self: CompletionModel, *args: Any, **kwargs: Any) -> None:
        state["refits"] += 1
        original_refit(self, *args, **kwargs)

    def calibrate(self: CompletionModel, *args: Any, **kwargs: Any) -> float:
        state["calibrations"] += 1
        return original_k(self, *args, **kwargs)

    monkeypatch.setattr(PollScheduler, "_next_due", next_due)
    monkeypatch.setattr(CompletionModel, "_refit", refit)
    monkeypatch.setattr(CompletionModel, "k_for_target_delay", calibrate)
    sim.simulate(
        PollPolicy(),
        sim.step_change(sim.lognormal(20.0, 0.5), at_task=150, factor=3.0),
        tasks=300,
        in_flight=50,
        seed=2,
    )
    assert refitted
    assert not both


def test_a_refit_that_keeps_the_fit_evaluates_the_likelihood_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A steady stream: each refit's first Newton step from the kept fit stays well inside the
    # hold box, so the fit is kept after one likelihood evaluation instead of a full solve
    # (about four); a stream that moved still gets the full solve and a new fit.
    model, rng = steady(2000)
    fit, fits = model._pooled.fit, model.fits
    newtons = _count(monkeypatch, _model, "_newton")
    logliks = _count(monkeypatch, _model, "_loglik")
    observe(model, rng, 300, median=20.0)
    assert len(newtons) >= 2 and len(logliks) == len(newtons)
    assert model._pooled.fit is fit and model.fits == fits
    newtons.clear()
    logliks.clear()
    observe(model, rng, 400, median=26.0)  # a third slower
    assert model.fits > fits and len(logliks) >= 3 * len(newtons) > 0


def test_the_one_step_answer_agrees_with_the_full_solve() -> None:
    # Started near the maximum, from inside the hold box and from just outside it: wherever the
    # first step says "within the box", the full solve lands within the hold too; elsewhere the
    # answer is the full solve's.
    rng = random.Random(7)
    hold = _model._FIT_HOLD
    early = 0
    for trial in range(300):
        mu, sigma = rng.uniform(-1.0, 4.0), rng.uniform(0.2, 1.2)
        finished = []
        for _ in range(rng.randint(30, 400)):
            x = rng.gauss(mu, sigma)
            finished.append((x - 0.05, x + 0.05, 1.0))
        best_mu, best_sigma, _ = _model._newton(finished, [], mu, sigma)
        start_mu = best_mu + rng.uniform(-1.5, 1.5) * hold
        start_sigma = best_sigma * (1.0 + rng.uniform(-1.5, 1.5) * hold)
        quick = _model._newton(finished, [], start_mu, start_sigma, hold=hold)
        full = _model._newton(finished, [], start_mu, start_sigma)
        if quick[:2] == (start_mu, start_sigma):
            early += 1
            assert abs(full[0] - start_mu) <= hold, trial
            assert abs(full[1] - start_sigma) <= hold * start_sigma, trial
        else:
            assert quick[:2] == full[:2]
    assert 50 < early < 250  # both branches ran
