"""Shared ticks: the scheduler moves each learned poll after the first to a tick of a power-of-two
grid on the absolute clock, so that many tasks' polls leave on one wake-up of the process.

``on_tick`` is checked on its own (the grid, how far it moves a poll, the clamps), then through
``_next_due`` with a ready model (the decision the policy simulation validates).
"""

from __future__ import annotations

import math
import random

import pytest

from nanobanana_async._polling._entry import TaskEntry
from nanobanana_async._polling._model import CompletionModel
from nanobanana_async._polling._policy import PollPolicy
from nanobanana_async._polling._scheduler import PollScheduler, on_tick
from nanobanana_async.models import Ticket

from .fakes import FakeClock, FakeTransport

POLICY = PollPolicy(min_interval=0.25, max_interval=10.0, jitter=0.0, target_delay=1.0)


def _step(interval: float) -> float:
    """The largest power of two at most half of ``interval``."""
    return 2.0 ** math.floor(math.log2(interval / 2))


def test_a_due_time_moves_to_the_nearest_tick_of_its_grid() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        now = rng.uniform(0.0, 1e5)
        interval = math.exp(rng.uniform(math.log(0.3), math.log(9.0)))
        due = now + interval
        tick = on_tick(due, now, now + 0.25, now + 10.0)
        step = _step(interval)
        assert tick / step == round(tick / step)  # a multiple of the step, exactly
        nearest = round(due / step) * step
        if now + 0.25 <= nearest <= now + 10.0:
            assert tick == nearest and abs(tick - due) <= step / 2 <= interval / 4
        else:  # the nearest tick breaks a clamp: the next one inside the bounds
            assert abs(tick - nearest) == step
        assert now + 0.25 <= tick <= now + 10.0


def test_tasks_with_similar_intervals_meet_on_one_tick() -> None:
    # Answered at different instants, each due about 4 s later: one instant, not two.
    a = on_tick(100.02 + 3.9, 100.02, 100.27, 110.02)  # a grid of 1 s
    b = on_tick(100.31 + 3.6, 100.31, 100.56, 110.31)
    assert a == b == 104.0
    # Grids nest: a tick of a coarser grid (2 s, 0.5 s) is a tick of every finer one, so tasks
    # with quite different intervals meet there too.
    assert on_tick(97.9 + 6.0, 97.9, 98.15, 107.9) == 104.0
    assert on_tick(102.4 + 1.7, 102.4, 102.65, 112.4) == 104.0


def test_the_interval_clamps_hold_exactly() -> None:
    # Rounding down would leave less than min_interval: the next tick up instead.
    now = 1000.01
    tick = on_tick(now + 0.25, now, now + 0.25, now + 10.0)  # a grid of 1/8 s
    assert tick == 1000.375 and tick >= now + 0.25
    # Rounding up would wait more than max_interval: the tick below instead.
    now = 1001.4
    tick = on_tick(now + 10.0, now, now + 0.25, now + 10.0)  # a grid of 4 s: 1012 is too late
    assert tick == 1008.0 and tick <= now + 10.0
    # No tick between the bounds: the due time is kept.
    assert on_tick(1000.3, 1000.0, 1000.29, 1000.31) == 1000.3
    # Nothing to move: a due time not after now, or infinite.
    assert on_tick(999.0, 1000.0, 999.0, 1001.0) == 999.0
    assert on_tick(math.inf, 1000.0, 1000.25, math.inf) == math.inf


def _ready_scheduler(median: float = 20.0) -> tuple[PollScheduler, FakeClock]:
    clock = FakeClock()
    sched = PollScheduler(FakeTransport(clock), POLICY, max_concurrent_polls=1, clock=clock)
    model = sched.model = CompletionModel(min_samples=20)
    rng = random.Random(2)
    for _ in range(200):
        model.observe(rng.lognormvariate(math.log(median), 0.5))
    assert model.ready
    return sched, clock


def _raw(sched: PollScheduler, entry: TaskEntry, now: float) -> float:
    """Where the model alone puts the next poll."""
    assert sched._k is not None
    return entry.submitted_at + sched.model.next_poll(
        now - entry.submitted_at, k=sched._k, min_interval=0.25, max_interval=10.0
    )


@pytest.mark.parametrize("age", [0.4, 3.0, 11.7, 19.3, 31.0, 60.5, 200.0])
def test_learned_polls_after_the_first_land_on_ticks_within_the_clamps(age: float) -> None:
    sched, clock = _ready_scheduler()
    entry = TaskEntry(Ticket("t"), "u", clock.now() - age)
    entry.polls = 3
    entry.last_pending_at = clock.now() - 0.013  # the poll left 13 ms ago (not on a tick)
    now = clock.now() + 0.0123
    due = sched._next_due(entry, now)
    raw = _raw(sched, entry, now)
    assert due != raw
    assert now + POLICY.min_interval <= due <= now + POLICY.max_interval
    step = _step(raw - now)
    assert due / step == round(due / step)
    assert abs(due - raw) <= step / 2


def test_a_first_poll_that_finds_few_tasks_done_lands_on_a_tick() -> None:
    sched, clock = _ready_scheduler(20.0)  # the first poll comes at ~10 s: few are done by then
    entry = TaskEntry(Ticket("f"), "u", clock.now())
    now = clock.now()
    due = sched._next_due(entry, now)
    raw = _raw(sched, entry, now)
    assert sched.model.cdf(raw - entry.submitted_at) < 0.5
    step = _step(raw - now)
    assert due != raw and due / step == round(due / step) and abs(due - raw) <= step / 2


def test_a_first_poll_that_finds_most_tasks_done_is_the_models_own() -> None:
    # Tasks of ~0.3 s, first polled when nearly all are done: their delay moves one for one with
    # that poll, so it is not rounded (a closed loop submitting on ticks would bias every one).
    sched, clock = _ready_scheduler(0.3)
    entry = TaskEntry(Ticket("f"), "u", clock.now())
    now = clock.now()
    due = sched._next_due(entry, now)
    assert sched.model.cdf(due - entry.submitted_at) > 0.9
    assert due == _raw(sched, entry, now)
