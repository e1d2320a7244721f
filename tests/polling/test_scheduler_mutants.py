"""PollScheduler edges a mutation run found unpinned, against the fake transport and clock.

The budget's priority order, the Retry-After cap at its boundary, error backoff drawn from the
scheduler's own random source, failure bodies without an ``error_type``, the switch to the
learned schedule, and the messages of the errors a waiter sees.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator

import anyio
import attrs
import pytest

from nanobanana_async._http._retry import RetryPolicy
from nanobanana_async._polling._entry import Phase
from nanobanana_async._polling._policy import PollPolicy
from nanobanana_async._polling._scheduler import (
    _PRIORITY_BATCH,
    PollScheduler,
    unwrap,
)
from nanobanana_async.errors import (
    ClientStateError,
    NoImageError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TaskFailedError,
)
from nanobanana_async.models import GenerationResult, Ticket

from .fakes import FakeClock, FakeTransport, pending, reply, result, running_scheduler

pytestmark = pytest.mark.anyio

BACKOFF = PollPolicy(
    initial_delay=1.0, factor=2.0, max_interval=100.0, jitter=0.0, target_delay=None, max_errors=5
)
RATE_LIMITED = {"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "slow"}}


@attrs.define
class Rig:
    clock: FakeClock
    transport: FakeTransport
    scheduler: PollScheduler


@contextlib.asynccontextmanager
async def rig(
    policy: PollPolicy = BACKOFF, *, retry: RetryPolicy | None = None, seed: int = 0
) -> AsyncIterator[Rig]:
    async with running_scheduler(policy, retry=retry, seed=seed) as parts:
        yield Rig(*parts)


# -- the poll budget's priority order ------------------------------------------------------------


def _scheduler(policy: PollPolicy) -> tuple[PollScheduler, FakeClock]:
    clock = FakeClock(start=1000.0)
    return PollScheduler(FakeTransport(clock), policy, max_concurrent_polls=4, clock=clock), clock


def test_priority_is_the_share_of_the_age_since_the_last_poll() -> None:
    scheduler, _ = _scheduler(attrs.evolve(BACKOFF, max_interval=10.0))
    entry = scheduler.watch(Ticket("a"), submitted_at=990.0)
    entry.due = 999.0
    assert scheduler._priority(entry, 1000.0) == 1.0  # never polled: all of its age is new
    entry.last_poll_at = 996.0
    assert scheduler._priority(entry, 1000.0) == pytest.approx(0.4)  # (10 - 6) / 10
    entry.last_poll_at = 1000.0
    assert scheduler._priority(entry, 1000.0) == 0.0
    entry.due = 989.0  # overdue by more than max_interval: first, whatever its odds
    assert scheduler._priority(entry, 1000.0) == 1.0
    fresh = scheduler.watch(Ticket("b"), submitted_at=1000.0)
    fresh.due = 1000.0
    assert scheduler._priority(fresh, 1000.0) == 0.0  # no age at all (and no division by 0)
    young = scheduler.watch(Ticket("c"), submitted_at=999.5)
    young.due, young.last_poll_at = 1000.0, 999.75
    assert scheduler._priority(young, 1000.0) == pytest.approx(0.5)  # ages under a second too


def test_under_a_budget_the_likeliest_done_of_the_due_go_first() -> None:
    scheduler, clock = _scheduler(attrs.evolve(BACKOFF, max_polls_per_second=1.0))
    now = clock.now()
    entries = []
    for i in range(_PRIORITY_BATCH + 8):
        entry = scheduler.watch(Ticket(f"t{i:02}"), submitted_at=now - 100.0)
        # Polled i seconds ago: the longer ago, the likelier it finished since.
        entry.last_poll_at = now - i
        scheduler._push(entry, now - 1.0)
        entries.append(entry)
    taken = scheduler._take_due(now)
    assert [e.request_id for e in taken] == [f"t{i:02}" for i in range(23, 7, -1)]
    # The others wait in the heap, still due, still queued.
    left = {e.request_id for _, _, g, e in scheduler._heap if g == e.generation}
    assert left == {f"t{i:02}" for i in range(8)}
    assert all(e.phase is Phase.QUEUED for e in entries)


def test_without_a_budget_due_tasks_are_taken_one_at_a_time_in_due_order() -> None:
    scheduler, clock = _scheduler(BACKOFF)
    now = clock.now()
    for i, due in enumerate([now - 1, now - 3, now - 2, now + 5]):
        scheduler._push(scheduler.watch(Ticket(f"t{i}")), due)
    order = []
    while batch := scheduler._take_due(now):
        assert len(batch) == 1
        order.append(batch[0].request_id)
    assert order == ["t1", "t2", "t0"]  # and t3, not due yet, stays
    assert [e.request_id for _, _, g, e in scheduler._heap if g == e.generation] == ["t3"]


# -- errors: Retry-After cap, backoff, bodies ----------------------------------------------------


async def test_a_retry_after_at_the_cap_is_waited_exactly() -> None:
    async with rig() as r:
        at_cap = reply(429, RATE_LIMITED, {"Retry-After": "60"})  # the fake's max_retry_after
        r.transport.script("a", at_cap, result())
        t0 = r.clock.now()
        entry = r.scheduler.watch(Ticket("a"))
        await r.clock.run_until(lambda: entry.done)
        assert r.transport.times("a") == [t0 + 1.0, t0 + 61.0]
        assert isinstance(entry.outcome, GenerationResult)


async def test_a_retry_after_past_the_cap_ends_the_task_with_the_rate_limit() -> None:
    async with rig() as r:
        r.transport.script("a", reply(503, {"detail": "busy"}, {"Retry-After": "60.5"}))
        entry = r.scheduler.watch(Ticket("a"))
        await r.clock.run_until(lambda: entry.done)
        assert isinstance(entry.outcome, ServerError) and entry.outcome.retry_after == 60.5
        assert len(r.transport.requests) == 1
        r.transport.script("b", reply(429, RATE_LIMITED, {"Retry-After": "61"}))
        b = r.scheduler.watch(Ticket("b"))
        await r.clock.run_until(lambda: b.done)
        assert isinstance(b.outcome, RateLimitError)


async def test_error_backoff_is_drawn_from_the_schedulers_random_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    retry = RetryPolicy(max_attempts=1, initial_backoff=100.0, max_backoff=100.0)
    async with rig(retry=retry, seed=3) as r:
        r.transport.script("a", reply(500, {"detail": "oops"}), result())
        t0 = r.clock.now()
        entry = r.scheduler.watch(Ticket("a"))
        with caplog.at_level(logging.DEBUG, logger="nanobanana_async"):
            await r.clock.run_until(lambda: entry.done)
        wait = retry.backoff(1, random.Random(3))  # jitter 0: the policy draws nothing else
        assert wait > BACKOFF.interval(1)  # so the backoff, not the interval, sets the gap
        assert r.transport.times("a") == pytest.approx([t0 + 1.0, t0 + 1.0 + wait])
        assert f"poll of a failed (HTTP 500: oops); next in {wait:.2f} s" in caplog.messages


@pytest.mark.parametrize("code", [400, 409, 422])
async def test_a_4xx_with_only_an_error_is_the_task_failing_not_a_route_problem(code: int) -> None:
    async with rig() as r:
        r.transport.script("a", reply(code, {"error": "timed out"}))
        entry = r.scheduler.watch(Ticket("a"))
        await r.clock.run_until(lambda: entry.done)
        assert isinstance(entry.outcome, TaskFailedError)
        assert entry.outcome.message == "timed out"
        assert r.transport.routes("a") == ["response"]  # no fallback to the status route
        assert not entry.fell_back


async def test_the_fallback_to_the_status_route_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with rig() as r:
        r.transport.script("a", reply(405, {"detail": "Method Not Allowed"}), result())
        r.transport.script("a", pending("COMPLETED", code=200), route="status")
        entry = r.scheduler.watch(Ticket("a"))
        with caplog.at_level(logging.DEBUG, logger="nanobanana_async"):
            await r.clock.run_until(lambda: entry.done)
        assert "response route answered 405; polling status instead" in caplog.messages
        assert r.transport.routes("a") == ["response", "status", "response"]


# -- the messages a waiter reads -----------------------------------------------------------------


async def test_what_a_waiter_is_told_when_there_is_no_result() -> None:
    async with rig() as r:
        r.transport.script("gone", reply(404, {"detail": "Request not found"}))
        gone = r.scheduler.watch(Ticket("gone"))
        await r.clock.run_until(lambda: gone.done)
        assert isinstance(gone.outcome, NotFoundError)
        assert "task gone not found (unknown id, or its result expired)" in str(gone.outcome)
        assert gone.outcome.request_id == "gone" and gone.outcome.status_code == 404

        r.transport.script("left", pending())
        left = r.scheduler.watch(Ticket("left"))
        with pytest.raises(ClientStateError, match="task left has no outcome"):
            unwrap(left)
        await r.scheduler.abandon(left)
        with pytest.raises(ClientStateError, match="task left is no longer watched"):
            await r.scheduler.outcome(left)


# -- the learned schedule ------------------------------------------------------------------------


async def test_polls_follow_the_backoff_until_the_model_is_ready_then_the_learned_schedule() -> (
    None
):
    policy = PollPolicy(
        initial_delay=1.0,
        factor=2.0,
        min_interval=0.05,
        max_interval=100.0,
        jitter=0.0,
        target_delay=0.5,
        min_samples=2,
    )
    async with rig(policy) as r:
        model = r.scheduler.model
        finished = 0
        for i in range(10):
            t0 = r.clock.now()
            rid = f"w{i}"
            r.transport.script(rid, pending(), result())
            entry = r.scheduler.watch(Ticket(rid))
            if not model.ready:
                assert entry.due == t0 + 1.0  # the backoff's first interval
            else:
                k = r.scheduler._k
                assert k is not None
                learned = model.next_poll(
                    0.0, k=k, min_interval=policy.min_interval, max_interval=policy.max_interval
                )
                assert entry.due == pytest.approx(t0 + learned)
                assert entry.due != pytest.approx(t0 + 1.0)
                break
            await r.clock.run_until(lambda e=entry: e.done)  # type: ignore[misc]
            finished += 1
        else:
            pytest.fail("the model never became ready")
        assert finished >= 2  # min_samples finished tasks came first


def _learning(target_delay: float | None) -> PollPolicy:
    return PollPolicy(
        initial_delay=1.0, factor=2.0, jitter=0.0, target_delay=target_delay, min_samples=2
    )


async def test_tasks_done_at_their_first_poll_teach_the_model_too() -> None:
    async with rig(_learning(0.5)) as r:
        for i in range(3):
            r.transport.script(f"t{i}", result())
            entry = r.scheduler.watch(Ticket(f"t{i}"))
            await r.clock.run_until(lambda e=entry: e.done)  # type: ignore[misc]
        assert r.scheduler.model.ready


async def test_without_a_target_delay_the_model_learns_nothing() -> None:
    async with rig(_learning(None)) as r:
        for i in range(3):
            r.transport.script(f"t{i}", pending(), result())
            entry = r.scheduler.watch(Ticket(f"t{i}"))
            await r.clock.run_until(lambda e=entry: e.done)  # type: ignore[misc]
        assert not r.scheduler.model.ready


async def test_a_raising_listener_is_logged_with_its_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with rig() as r:

        def boom(_: object) -> None:
            raise RuntimeError("the owner's bug")

        r.transport.script("a", result())
        entry = r.scheduler.watch(Ticket("a"))
        entry.listeners.append(boom)
        with caplog.at_level(logging.ERROR, logger="nanobanana_async"):
            await r.clock.run_until(lambda: entry.done)
        assert "a completion listener of task a failed" in caplog.messages


async def test_the_status_route_fallback_uses_the_servers_status_url_and_counts_one_poll() -> None:
    async with rig() as r:
        status_url = "http://api/server-given/a/status"
        r.transport.script("a", reply(405, {"detail": "Method Not Allowed"}), result())
        r.transport.script(
            "a", pending("IN_PROGRESS", code=200), pending("COMPLETED", code=200), route="status"
        )
        entry = r.scheduler.watch(Ticket("a", status_url=status_url))
        await r.clock.run_until(lambda: entry.done)
        assert r.transport.routes("a") == ["response", "status", "status", "response"]
        assert [q.url for q in r.transport.for_task("a") if q.action == "status"] == [
            status_url,
            status_url,
        ]
        # "COMPLETED" on the status route and the result fetched at once: one poll, not two.
        assert entry.polls == r.scheduler.polls_sent == 3


async def test_a_result_without_the_image_asked_for_keeps_every_output() -> None:
    async with rig() as r:
        text_only = {"outputs": [{"type": "text", "text": "I cannot"}], "metadata": {"x": 1}}
        r.transport.script("a", reply(200, text_only))
        entry = r.scheduler.watch(Ticket("a"), expect_image=True)
        await r.clock.run_until(lambda: entry.done)
        error = entry.outcome
        assert isinstance(error, NoImageError)
        assert [o.type for o in error.outputs] == ["text"]
        assert error.text == "I cannot" and error.metadata == {"x": 1}


async def test_a_raising_observer_is_logged_and_a_closed_scheduler_refuses_new_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with rig() as r:

        def boom(*_: object) -> None:
            raise RuntimeError("the owner's bug")

        r.transport.script("a", pending(), result())
        entry = r.scheduler.watch(Ticket("a"))
        entry.observers.append(boom)
        with caplog.at_level(logging.ERROR, logger="nanobanana_async"):
            await r.clock.run_until(lambda: entry.done)
        assert "a status observer of task a failed" in caplog.messages
        r.scheduler.close()
        with pytest.raises(ClientStateError, match="the client is closed"):
            r.scheduler.watch(Ticket("b"))


async def test_a_4xx_saying_completed_with_a_null_error_is_polled_again_at_once() -> None:
    async with rig() as r:
        r.transport.script("a", reply(400, {"status": "COMPLETED", "error": None}), result())
        entry = r.scheduler.watch(Ticket("a"))
        await r.clock.run_until(lambda: entry.done)
        assert isinstance(entry.outcome, GenerationResult)
        times = r.transport.times("a")
        assert len(times) == 2 and times[1] == times[0]  # the result is fetched at once
        assert r.transport.routes("a") == ["response", "response"]


async def test_the_next_poll_after_an_error_draws_its_jitter_from_the_schedulers_source() -> None:
    policy = attrs.evolve(BACKOFF, jitter=0.5)
    retry = RetryPolicy(max_attempts=1, initial_backoff=0.001, max_backoff=0.001)
    async with rig(policy, retry=retry, seed=5) as r:
        r.transport.script("a", reply(500, {"detail": "oops"}), result())
        t0 = r.clock.now()
        entry = r.scheduler.watch(Ticket("a"))
        await r.clock.run_until(lambda: entry.done)
        rng = random.Random(5)  # replay the scheduler's draws in order
        first = policy.interval(0, rng)
        wait = retry.backoff(1, rng)
        gap = max(wait, policy.interval(1, rng))
        assert r.transport.times("a") == pytest.approx([t0 + first, t0 + first + gap])


async def test_abandon_waits_for_a_poll_in_flight_no_longer_than_it_was_told() -> None:
    async with rig() as r:

        async def deaf(_: object) -> None:
            with anyio.CancelScope(shield=True):  # a transport that ignores cancellation
                await anyio.sleep(0.6)

        r.transport.on_request("a", deaf)
        r.transport.script("a", result())
        entry = r.scheduler.watch(Ticket("a"))
        await r.clock.advance(1.0)
        assert entry.phase is Phase.POLLING
        started = anyio.current_time()
        await r.scheduler.abandon(entry, wait=0.05)
        assert anyio.current_time() - started < 0.3
        assert entry.phase is Phase.ABANDONED


async def test_the_servers_own_response_url_is_polled() -> None:
    async with rig() as r:
        own = "http://api/server-given/a/response"
        r.transport.script("a", result())
        entry = r.scheduler.watch(Ticket("a", response_url=own))
        await r.clock.run_until(lambda: entry.done)
        assert [q.url for q in r.transport.for_task("a")] == [own]
