"""The completion model: censored fit, drift, size classes, and the sqrt-hazard poll schedule."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterator

import attrs
import pytest

from nanobanana_async._polling._model import _STABLE_GROWTH, CompletionModel

MEDIAN, SIGMA = 20.0, 0.5


@attrs.define
class Running:
    """A task still running, as the model reads it from the scheduler's entries."""

    submitted_at: float
    last_pending_at: float | None
    size_class: str | None = None


def lognormals(seed: int, median: float = MEDIAN, sigma: float = SIGMA) -> Iterator[float]:
    rng = random.Random(seed)
    while True:
        yield rng.lognormvariate(math.log(median), sigma)


def trained(n: int = 500, seed: int = 1) -> CompletionModel:
    model = CompletionModel()
    for d in itertools.islice(lognormals(seed), n):
        model.observe(d)
    return model


@pytest.fixture(scope="module")
def model() -> CompletionModel:
    return trained()


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
    return list(itertools.islice(lognormals(7), 2000))


def poll_task(model: CompletionModel, submitted: float, duration: float, gap: float) -> float:
    """Poll one task every ``gap`` s from submit, telling the model each outcome; returns when
    the poll that saw it done left."""
    age = gap
    while age < duration:
        model.observe_pending(age - gap, age, now=submitted + age)
        age += gap
    model.observe_interval(age - gap, age, now=submitted + age)
    return submitted + age


def poll_many(
    model: CompletionModel,
    durations: Iterator[float],
    *,
    tasks: int,
    in_flight: int,
    gap: float,
    start: float = 0.0,
) -> float:
    """``tasks`` tasks, ``in_flight`` at a time, each polled every ``gap`` s; returns the end."""
    heap: list[tuple[float, int, float, float]] = []  # (next poll, seq, submitted, duration)
    seq = itertools.count()
    for _ in range(in_flight):
        heapq.heappush(heap, (start + gap, next(seq), start, next(durations)))
    done = 0
    now = start
    while heap:
        now, _, submitted, duration = heapq.heappop(heap)
        age = now - submitted
        if age < duration:
            model.observe_pending(age - gap, age, now=now)
            heapq.heappush(heap, (now + gap, next(seq), submitted, duration))
            continue
        model.observe_interval(age - gap, age, now=now)
        done += 1
        if done + len(heap) < tasks:
            heapq.heappush(heap, (now + gap, next(seq), now, next(durations)))
    return now


# -- the censored fit ---------------------------------------------------------------------------


def test_exact_durations_recover_median_and_sigma() -> None:
    model = trained(1000)
    assert model.ready
    assert model.samples == 1000
    assert model.median == pytest.approx(MEDIAN, rel=0.05)
    assert model.sigma == pytest.approx(SIGMA, rel=0.08)
    assert model.cdf(MEDIAN) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("gap", [2.0, 10.0, 25.0])
def test_interval_censored_polls_recover_the_distribution(gap: float) -> None:
    # 1,000 tasks polled every `gap` s: each is known only to have finished between two polls.
    # Up to 25 s apart (more than the median): median within 5%, sigma within 12%.
    model = CompletionModel(window=2000, half_life=1e9)
    for d in itertools.islice(lognormals(3), 1000):
        age = gap * math.ceil(d / gap)
        model.observe_interval(age - gap, age)
    model.refit()
    assert model.median == pytest.approx(MEDIAN, rel=0.05)
    assert model.sigma == pytest.approx(SIGMA, rel=0.12)


def test_running_tasks_remove_the_survivor_bias_of_a_young_batch() -> None:
    # 800 tasks submitted at once, looked at 22 s later (polled every 2 s): the ~57% done are the
    # fast ones. Alone they say "median ~15 s"; with the running ones right-censored at their
    # last pending poll (20 s) the fit is unbiased (within 6% / 15% here).
    rng = random.Random(11)
    batch = [rng.lognormvariate(math.log(MEDIAN), SIGMA) for _ in range(800)]
    running = [Running(0.0, 22.0) for d in batch if d > 22.0]
    finished_only = CompletionModel(window=2000)
    model = CompletionModel(window=2000, running=lambda: running)
    for m in (finished_only, model):
        for d in batch:
            if d <= 22.0:
                age = 2.0 * math.ceil(d / 2.0)
                m.observe_interval(age - 2.0, age, now=age)
        m.refit()
    assert finished_only.median < 0.85 * MEDIAN
    assert model.median == pytest.approx(MEDIAN, rel=0.06)
    assert model.sigma == pytest.approx(SIGMA, rel=0.15)


def test_many_running_tasks_are_sampled() -> None:
    # 5,000 running tasks: the model looks at a sample of them, weighted up to the whole.
    rng = random.Random(2)
    batch = [rng.lognormvariate(math.log(MEDIAN), SIGMA) for _ in range(4000)]
    running: list[Running] = []
    model = CompletionModel(window=4000, running=lambda: running)
    for d in batch:
        if d <= 16.0:
            age = 2.0 * math.ceil(d / 2.0)
            model.observe_interval(age - 2.0, age, now=age)
    running += [Running(0.0, 16.0) for d in batch if d > 16.0]
    assert len(running) > 2500
    model.refit()
    assert model.median == pytest.approx(MEDIAN, rel=0.08)


def test_not_ready_before_min_samples_and_ignores_garbage() -> None:
    model = CompletionModel(min_samples=5)
    for bad in (math.nan, math.inf, -1.0):
        model.observe(bad)
    model.observe_interval(math.nan, 3.0)
    model.observe_interval(1.0, math.inf)
    assert model.samples == 0
    for _ in range(4):
        model.observe(3.0)
    assert not model.ready
    model.observe(3.0)
    assert model.ready
    with pytest.raises(ValueError):
        CompletionModel(half_life=0)
    with pytest.raises(ValueError):
        CompletionModel(class_min_samples=0)


def test_every_refit_bumps_fits() -> None:
    model = CompletionModel(min_samples=5, window=20)
    fits = []
    for _ in range(60):
        model.observe(5.0)
        fits.append(model.fits)
    assert fits[4] == 1  # the first fit at min_samples
    assert fits[-1] > 10  # then every few samples (the window is small)
    assert all(b >= a for a, b in itertools.pairwise(fits))


def test_the_window_keeps_the_last_tasks() -> None:
    # No change caught (exact durations feed no poll outcomes): the window grows to
    # _STABLE_GROWTH x window while stable, then keeps the last ones.
    model = CompletionModel(min_samples=10, window=100)
    for _ in range(100):
        model.observe(5.0)
    for _ in range(2000):
        model.observe(50.0)
    assert model.samples == _STABLE_GROWTH * 100
    assert model.median == pytest.approx(50.0, rel=0.01)


def test_instant_tasks_are_learned_as_instant() -> None:
    # Every task done at the first backoff poll (~1 s): the data allow any fit with all its mass
    # before 1 s, and the first fit takes the fastest, so the schedule polls at min_interval.
    model = CompletionModel()
    rng = random.Random(4)
    for i in range(40):
        model.observe_interval(0.0, rng.uniform(0.9, 1.1), now=float(i))
    assert model.median < 0.01
    k = model.k_for_target_delay(1.0, min_interval=0.25, max_interval=10.0)
    assert model.next_poll(0.0, k=k, min_interval=0.25, max_interval=10.0) == pytest.approx(0.25)


# -- drift --------------------------------------------------------------------------------------


def test_a_sudden_3x_slowdown_is_caught_and_the_schedule_follows() -> None:
    # 64 tasks in flight, polled every 2 s; 700 tasks, then every new one 3x slower.
    model = CompletionModel()
    now = poll_many(model, lognormals(5), tasks=200, in_flight=64, gap=2.0)
    early = model.changes  # the first fits, from the first few (fast) tasks, may be corrected
    now = poll_many(model, lognormals(15), tasks=500, in_flight=64, gap=2.0, start=now)
    assert model.median == pytest.approx(MEDIAN, rel=0.1)
    assert model.changes == early  # no false alarm in a steady stream
    k = model.k_for_target_delay(1.0, min_interval=0.25, max_interval=60.0)
    first_before = model.next_poll(0.0, k=k, min_interval=0.25, max_interval=60.0)

    # One slow task at a time after the shift: the model is caught up within 30 completions,
    # and the change detector (polls finding tasks running past the fit) raised the alarm.
    slow = lognormals(6, median=3 * MEDIAN)
    completions = 0
    while model.median < 0.8 * 3 * MEDIAN:
        now = poll_task(model, now, next(slow), 2.0)
        completions += 1
        assert completions < 30, model.median
    assert model.changes >= 1
    k = model.k_for_target_delay(1.0, min_interval=0.25, max_interval=60.0)
    first_after = model.next_poll(0.0, k=k, min_interval=0.25, max_interval=60.0)
    assert first_after > 1.5 * first_before


def test_the_fit_follows_the_recent_past_by_time() -> None:
    # A slow drift (no alarm): with a 5-minute half-life, the tasks of half an hour ago
    # (median 10 s) count for little against the last ten minutes' (median 13 s).
    model = CompletionModel(half_life=300.0, window=5000)
    now = poll_many(model, lognormals(8, median=10.0), tasks=800, in_flight=16, gap=1.0)
    poll_many(model, lognormals(9, median=13.0), tasks=500, in_flight=16, gap=1.0, start=now)
    model.refit()
    assert model.median == pytest.approx(13.0, rel=0.1)


# -- size classes ------------------------------------------------------------------------------


def test_a_class_uses_the_pooled_fit_until_it_has_enough_samples() -> None:
    model = CompletionModel(min_samples=10, class_min_samples=15)
    fast, slow = lognormals(1, median=15.0, sigma=0.3), lognormals(2, median=45.0, sigma=0.3)
    for _ in range(40):
        model.observe(next(fast), size_class="1K")
    for _ in range(14):
        model.observe(next(slow), size_class="4K")
    pooled = model.summary()
    assert pooled.pooled and pooled.samples == 54
    assert model.summary("1K").pooled is False
    assert model.summary("1K").median == pytest.approx(15.0, rel=0.1)
    for cls in ("4K", "2K", None):  # too few samples; never seen; no class
        assert model.summary(cls) == pooled
        assert model.next_poll(3.0, k=1.0, min_interval=0.1, max_interval=9.0, size_class=cls) == (
            model.next_poll(3.0, k=1.0, min_interval=0.1, max_interval=9.0)
        )
    model.observe(next(slow), size_class="4K")
    own = model.summary("4K")
    assert not own.pooled and own.samples == 15
    assert own.median == pytest.approx(45.0, rel=0.2)
    assert model.cdf(30.0, size_class="1K") > 0.95 > 0.1 > model.cdf(30.0, size_class="4K")


def test_classes_share_one_k_that_meets_the_target_over_the_mix() -> None:
    model = CompletionModel()
    fast, slow = lognormals(1, median=15.0, sigma=0.3), lognormals(2, median=45.0, sigma=0.3)
    rng = random.Random(3)
    mix = []
    for _ in range(600):
        cls = "1K" if rng.random() < 0.7 else "4K"
        d = next(fast) if cls == "1K" else next(slow)
        mix.append((d, cls))
        model.observe(d, size_class=cls)
    k = model.k_for_target_delay(1.0)
    polls = delay = 0.0
    for d, cls in mix:
        t = 0.0
        while t < d:
            t = model.next_poll(t, k=k, min_interval=0.0, max_interval=math.inf, size_class=cls)
            polls += 1
        delay += t - d
    assert delay / len(mix) == pytest.approx(1.0, rel=0.1)
    pooled_polls, _ = run_schedule(model, k, [d for d, _ in mix])  # the pooled fit, same K
    assert polls / len(mix) < 0.8 * pooled_polls


# -- the schedule -------------------------------------------------------------------------------


def test_equal_samples_do_not_divide_by_zero() -> None:
    model = CompletionModel(min_samples=3)
    for _ in range(50):
        model.observe(10.0)
    t = model.next_poll(0.0, k=2.0, min_interval=0.1, max_interval=30.0)
    assert 5.0 < t < 10.5
    assert math.isfinite(model.hazard(10.0))
    assert model.k_for_target_delay(1.0) > 0


def test_next_poll_monotone_and_clamped(model: CompletionModel) -> None:
    t, times = 0.0, []
    for _ in range(200):
        nxt = model.next_poll(t, k=2.0, min_interval=0.25, max_interval=5.0)
        assert 0.25 - 1e-9 <= nxt - t <= 5.0 + 1e-9
        times.append(nxt)
        t = nxt
    assert all(b > a for a, b in itertools.pairwise(times))
    # The first poll waits for the lower tail (up to the cap); later gaps stay in bounds.
    assert times[0] == pytest.approx(5.0, abs=0.2)
    assert model.next_poll(0.0, k=2.0, min_interval=0.25, max_interval=30.0) > 7.0
    # Far past the fitted tail the gap stays bounded: the cap binds.
    assert model.next_poll(1e6, k=2.0, min_interval=0.25, max_interval=1.0) == pytest.approx(
        1e6 + 1
    )
    assert model.next_poll(-3.0, k=2.0, min_interval=0.25, max_interval=5.0) == times[0]
    # No gap longer than the task's age: one running far past the fit is polled by doubling.
    assert model.next_poll(0.5, k=2.0, min_interval=0.25, max_interval=30.0) <= 1.0 + 1e-9


def test_edge_values(model: CompletionModel) -> None:
    assert model.cdf(0.0) == 0.0
    assert model.cdf(-1.0) == 0.0
    assert model.hazard(0.0) == 0.0
    assert model.cdf(1e9) == pytest.approx(1.0)
    assert math.isfinite(model.hazard(1e9)) and model.hazard(1e9) > 0
    with pytest.raises(ValueError):
        model.k_for_target_delay(0.0)
    assert model.next_poll(3.0, k=0.0, min_interval=0.1, max_interval=7.0) == 10.0


def test_schedule_hits_target_delay_and_reference_polls(
    model: CompletionModel, durations: list[float]
) -> None:
    k = model.k_for_target_delay(1.0, min_interval=0.05, max_interval=30.0)
    assert k == pytest.approx(2.0, rel=0.15)
    polls, delay = run_schedule(model, k, durations)
    assert delay == pytest.approx(1.0, rel=0.1)
    # Reference sqrt-hazard curve: K=2 -> 8.5 polls at 0.99 s; polls scale ~1/delay.
    reference_polls = 8.5 * 0.99 / delay
    assert polls == pytest.approx(reference_polls, rel=0.10)


@pytest.mark.parametrize("interval", [1.0, 3.0])
def test_schedule_pareto_beats_fixed_interval(
    model: CompletionModel, durations: list[float], interval: float
) -> None:
    fixed_polls, fixed_delay = run_fixed(interval, durations)
    k = model.k_for_target_delay(0.9 * interval / 2, min_interval=0.05, max_interval=30.0)
    polls, delay = run_schedule(model, k, durations)
    assert delay < fixed_delay
    assert polls < fixed_polls


def test_tasks_done_long_before_the_target_are_polled_like_a_fixed_interval() -> None:
    # Median 0.3 s, target 1 s: nearly every task is done at the first poll, where Keller's
    # continuous K would put it ~9 s out. The schedule meets the target with ~1 poll a task.
    model = CompletionModel(window=2000)
    for d in itertools.islice(lognormals(3, median=0.3), 2000):
        model.observe(d)
    k = model.k_for_target_delay(1.0, min_interval=0.25, max_interval=10.0)
    first = model.next_poll(0.0, k=k, min_interval=0.25, max_interval=10.0)
    assert 1.1 < first < 1.6
    durations = list(itertools.islice(lognormals(4, median=0.3), 4000))
    polls = delay = 0.0
    for d in durations:
        t = 0.0
        while t < d:
            t = model.next_poll(t, k=k, min_interval=0.25, max_interval=10.0)
            polls += 1
        delay += t - d
    assert polls / len(durations) < 1.01
    assert delay / len(durations) == pytest.approx(1.0, rel=0.1)


def test_completion_probability(model: CompletionModel) -> None:
    last = 15.0
    ps = [model.completion_probability(last, last + d) for d in (0.0, 1.0, 5.0, 20.0, 200.0)]
    assert ps[0] == 0.0
    assert all(0.0 <= p <= 1.0 for p in ps)
    assert all(b > a for a, b in itertools.pairwise(ps))
    assert ps[-1] == pytest.approx(1.0, abs=1e-4)
    # Deep in the tail the lognormal hazard decays, so the probability is small but well defined.
    assert 0.0 <= model.completion_probability(1e6, 1e6 + 1) < 0.01
