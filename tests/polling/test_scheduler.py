"""PollScheduler against a fake transport and a fake clock: no sockets, no real sleeping.

Every test drives the real loop (``scheduler.run`` in a task group) and moves time with
``FakeClock.advance``; the fake transport answers from per-task scripts and records each request
with the fake time at which it left, so schedules are checked exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import attrs
import pytest

from nanobanana_async._polling._entry import Phase, TaskEntry
from nanobanana_async._polling._model import CompletionModel
from nanobanana_async._polling._policy import PollPolicy
from nanobanana_async._polling._scheduler import PollScheduler, on_tick, unwrap
from nanobanana_async.errors import (
    AuthenticationError,
    ClientStateError,
    InsufficientCreditsError,
    NanoBananaError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ResponseTooLargeError,
    ServerError,
    TaskCancelledError,
    TaskFailedError,
)
from nanobanana_async.models import GenerationResult, TaskState, Ticket

from .fakes import (
    FakeClock,
    FakeRequest,
    FakeTransport,
    pending,
    reply,
    result,
    running_scheduler,
)

pytestmark = pytest.mark.anyio

# Backoff without jitter: polls at +1, +3 (1 + 2), +7 (+ 4), ... capped at max_interval.
BACKOFF = PollPolicy(
    initial_delay=1.0, factor=2.0, max_interval=100.0, jitter=0.0, target_delay=None, max_errors=3
)
GATEWAY_429 = {"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "slow down"}, "request_id": "g"}


@attrs.define
class Rig:
    clock: FakeClock
    transport: FakeTransport
    scheduler: PollScheduler

    def watch(self, request_id: str, **kwargs: Any) -> TaskEntry:
        return self.scheduler.watch(Ticket(request_id), **kwargs)

    def assert_watching(self, *entries: TaskEntry) -> None:
        """``watching`` counts exactly the QUEUED and POLLING entries."""
        live = [e for e in entries if e.phase in (Phase.QUEUED, Phase.POLLING)]
        assert all(e.live for e in live)
        assert self.scheduler.watching == len(live)
        assert {id(e) for e in self.scheduler.entries()} == {id(e) for e in live}

    def live_heap_items(self, entry: TaskEntry) -> int:
        """Heap items of ``entry`` that the loop would still act on."""
        return sum(
            1
            for _, _, generation, e in self.scheduler._heap
            if e is entry and generation == e.generation and e.phase is Phase.QUEUED
        )


@contextlib.asynccontextmanager
async def rig(
    policy: PollPolicy = BACKOFF, *, max_concurrent_polls: int = 4, max_requests: int = 500
) -> AsyncIterator[Rig]:
    async with running_scheduler(
        policy, max_concurrent_polls=max_concurrent_polls, max_requests=max_requests
    ) as parts:
        yield Rig(*parts)


def offsets(times: list[float], start: float) -> list[float]:
    return [round(t - start, 9) for t in times]


# -- the happy path and the backoff -------------------------------------------------------------


async def test_pending_then_result_polls_on_the_backoff_schedule_exactly() -> None:
    policy = attrs.evolve(BACKOFF, max_interval=3.0)
    async with rig(policy) as r:
        seen: list[tuple[TaskState, int | None]] = []
        r.transport.script(
            "a",
            pending("IN_QUEUE", queue_position=3),
            pending("IN_QUEUE", queue_position=1),
            pending("IN_PROGRESS"),
            pending("IN_PROGRESS"),  # unchanged: observers are not called again
            result(),  # no request_id in the body: the entry's is filled in
        )
        t0 = r.clock.now()
        entry = r.watch("a")
        assert r.watch("a") is entry  # watching twice polls once
        entry.observers.append(lambda e, st: seen.append((st.state, st.queue_position)))
        assert entry.due == t0 + 1.0

        await r.clock.advance(0.999)
        assert r.transport.requests == []
        await r.clock.run_until(lambda: entry.done)

        # initial_delay, then initial_delay * factor**n capped at max_interval, no jitter.
        expected = [1.0, 3.0, 6.0, 9.0, 12.0]
        assert offsets(r.transport.times("a"), t0) == expected
        backoff = [policy.interval(n) for n in range(5)]
        assert [round(sum(backoff[: n + 1]), 9) for n in range(5)] == expected
        assert r.transport.routes("a") == ["response"] * 5
        assert {(q.method, q.kind) for q in r.transport.requests} == {("GET", "result")}

        outcome = entry.outcome
        assert isinstance(outcome, GenerationResult)
        assert outcome.request_id == "a"
        assert outcome.outputs[0].url == "https://cdn.example/out.png"
        assert unwrap(entry) is outcome
        await r.scheduler.outcome(entry)  # finished: returns at once
        assert entry.phase is Phase.FINISHED
        assert entry.started_at == t0 + 6.0
        assert seen == [
            (TaskState.IN_QUEUE, 3),
            (TaskState.IN_QUEUE, 1),
            (TaskState.IN_PROGRESS, None),
        ]
        assert (r.scheduler.polls_sent, r.scheduler.finished, r.scheduler.watching) == (5, 1, 0)
        assert r.scheduler.lateness_max == 0.0

        await r.clock.advance(100)
        assert len(r.transport.requests) == 5  # never polled again


async def test_an_earlier_task_wakes_the_sleeping_loop() -> None:
    async with rig() as r:
        t0 = r.clock.now()
        r.transport.script("late", result())
        r.transport.script("early", result())
        late = r.watch("late", submitted_at=t0 + 9.0)  # due at +10: the loop sleeps until then
        await r.clock.advance(0.5)
        early = r.watch("early")  # due at +1.5, before the loop's wake-up time
        await r.clock.run_until(lambda: late.done)
        assert r.transport.times("early") == [t0 + 1.5]
        assert r.transport.times("late") == [t0 + 10.0]
        assert early.done


# -- failure bodies -------------------------------------------------------------------------------

FAILURES = [
    (200, {"status": "COMPLETED", "error": "boom", "error_type": "INFERENCE_FAILURE"},
     TaskFailedError, "INFERENCE_FAILURE"),
    (200, {"status": "completed", "error": {"code": "CONTENT_BLOCKED", "message": "no"}},
     TaskFailedError, "CONTENT_BLOCKED"),
    (400, {"status": "COMPLETED", "error": "bad size", "error_type": "REQUEST_INVALID"},
     TaskFailedError, "REQUEST_INVALID"),
    (409, {"error": "timed out", "error_type": "INFERENCE_TIMEOUT"},
     TaskFailedError, "INFERENCE_TIMEOUT"),
    (422, {"error": "bad", "error_type": "REQUEST_INVALID"}, TaskFailedError, "REQUEST_INVALID"),
    (200, {"status": "COMPLETED", "error": "by user", "error_type": "CANCELED"},
     TaskCancelledError, "CANCELED"),
    (200, {"status": "COMPLETED", "error": "by user", "error_type": "CANCELLED"},
     TaskCancelledError, "CANCELLED"),
    (400, {"status": "COMPLETED", "error": "by user", "error_type": "CANCELED"},
     TaskCancelledError, "CANCELED"),
    (202, {"status": "CANCELED"}, TaskCancelledError, None),
    (200, {"status": "CANCELLED"}, TaskCancelledError, None),
]  # fmt: skip


@pytest.mark.parametrize(("code", "body", "error", "error_type"), FAILURES)
async def test_a_failure_body_ends_the_task_without_the_status_route(
    code: int, body: dict[str, Any], error: type[NanoBananaError], error_type: str | None
) -> None:
    async with rig() as r:
        r.transport.script("a", pending(), reply(code, body), result())
        entry = r.watch("a")
        await r.clock.run_until(lambda: entry.done)
        await r.clock.advance(100)
        assert type(entry.outcome) is error
        assert isinstance(entry.outcome, (TaskFailedError, TaskCancelledError))
        assert entry.outcome.error_type == error_type
        assert entry.outcome.request_id == "a"
        assert r.transport.routes("a") == ["response", "response"]  # no status-route fallback
        assert not entry.use_status_route
        with pytest.raises(error):
            unwrap(entry)


# -- the status-route fallback ----------------------------------------------------------------


@pytest.mark.parametrize("code", [400, 405, 409])
async def test_a_rejected_response_route_falls_back_to_the_status_route(code: int) -> None:
    async with rig() as r:
        r.transport.script("a", pending(), reply(code, {"detail": "Method Not Allowed"}), result())
        r.transport.script(
            "a", pending("IN_PROGRESS", code=200), pending("COMPLETED", code=200), route="status"
        )
        r.transport.script("b", pending(), pending(), pending(), result())
        a, b = r.watch("a"), r.watch("b")
        await r.clock.run_until(lambda: a.done and b.done)

        assert r.transport.routes("a") == ["response", "response", "status", "status", "response"]
        assert {q.kind for q in r.transport.for_task("a") if q.action == "status"} == {"status"}
        t = r.transport.times("a")
        assert t[2] == t[1]  # the status route is asked at once
        assert t[3] > t[2]  # then on the schedule
        assert t[4] == t[3]  # SUCCEEDED on the status route: the result is fetched at once
        assert isinstance(a.outcome, GenerationResult)
        assert not a.use_status_route
        # The fallback is per task: b stays on the response route.
        assert r.transport.routes("b") == ["response"] * 4
        assert isinstance(b.outcome, GenerationResult)


# -- errors that end a task at once -----------------------------------------------------------


async def test_404_ends_the_task_at_once_with_not_found() -> None:
    async with rig() as r:
        r.transport.script("a", reply(404, {"detail": "Request not found"}), result())
        entry = r.watch("a")
        await r.clock.run_until(lambda: entry.done)
        await r.clock.advance(1000)
        assert len(r.transport.requests) == 1
        assert isinstance(entry.outcome, NotFoundError)
        assert entry.outcome.status_code == 404
        assert entry.outcome.request_id == "a"


@pytest.mark.parametrize(
    ("code", "body", "error"),
    [
        (401, {"error": {"code": "UNAUTHORIZED", "message": "bad key"}}, AuthenticationError),
        (403, {"detail": "Model not allowed for this user"}, PermissionDeniedError),
        (
            402,
            {"status": {"code": 402, "message": "Insufficient credits", "error_code": 40201}},
            InsufficientCreditsError,
        ),
    ],
)
async def test_auth_permission_and_credit_errors_are_final(
    code: int, body: dict[str, Any], error: type[NanoBananaError]
) -> None:
    async with rig() as r:
        r.transport.script("a", reply(code, body), result())
        entry = r.watch("a")
        await r.clock.run_until(lambda: entry.done)
        await r.clock.advance(1000)
        assert len(r.transport.requests) == 1
        assert type(entry.outcome) is error


async def test_a_response_too_large_is_final_after_one_request() -> None:
    async with rig() as r:
        too_large = ResponseTooLargeError("result body too large", limit=10, size=11)
        r.transport.script("a", too_large, result())
        # Contrast: an ordinary ProtocolError (a garbled body) is retried.
        r.transport.script("b", ProtocolError("response is not valid JSON"), result())
        a, b = r.watch("a"), r.watch("b")
        await r.clock.run_until(lambda: a.done and b.done)
        await r.clock.advance(1000)
        assert a.outcome is too_large
        assert len(r.transport.for_task("a")) == 1
        assert isinstance(b.outcome, GenerationResult)
        assert len(r.transport.for_task("b")) == 2


# -- 429 and 5xx ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "body"), [(429, GATEWAY_429), (503, {"detail": "busy"})], ids=["429", "503"]
)
async def test_retry_after_delays_the_next_poll(code: int, body: dict[str, Any]) -> None:
    async with rig() as r:
        r.transport.script("a", pending(), reply(code, body, {"Retry-After": "7"}), result())
        t0 = r.clock.now()
        entry = r.watch("a")
        await r.clock.advance(3.0)  # polls at +1 (202) and +3 (the 429/503)
        assert offsets(r.transport.times("a"), t0) == [1.0, 3.0]
        await r.clock.advance(6.999)
        assert len(r.transport.requests) == 2  # not before Retry-After (the backoff says +4)
        await r.clock.run_until(lambda: entry.done)
        gap = r.transport.times("a")[2] - r.transport.times("a")[1]
        assert 7.0 <= gap <= 7.0 + BACKOFF.interval(2)
        # A gateway 429 body has "error" in it: still a rate limit, not the task's failure.
        assert isinstance(entry.outcome, GenerationResult)


async def test_a_retry_after_beyond_the_cap_fails_at_once() -> None:
    async with rig() as r:
        assert r.transport.retry.max_retry_after < 1e12
        r.transport.script("a", reply(429, GATEWAY_429, {"Retry-After": "1e12"}), result())
        entry = r.watch("a")
        await r.clock.advance(1.0)
        assert entry.done  # not parked for 1e12 s
        assert isinstance(entry.outcome, RateLimitError)
        assert entry.outcome.retry_after == 1e12
        assert r.live_heap_items(entry) == 0
        await r.clock.advance(10_000)
        assert len(r.transport.requests) == 1


async def test_5xx_fails_after_max_errors_polls_with_the_last_error() -> None:
    async with rig() as r:
        r.transport.script(
            "a",
            reply(500, {"detail": "one"}),
            reply(502, {"detail": "two"}),
            reply(503, {"detail": "three"}),
            result(),  # what a fourth poll would get
        )
        entry = r.watch("a")
        await r.clock.run_until(lambda: entry.done)
        await r.clock.advance(1000)
        assert len(r.transport.requests) == BACKOFF.max_errors == 3
        assert isinstance(entry.outcome, ServerError)
        assert entry.outcome.status_code == 503
        assert "three" in str(entry.outcome)
        t = r.transport.times("a")
        # Between failed polls: at least the poll backoff (and the retry backoff, jittered).
        assert t[1] - t[0] >= BACKOFF.interval(1)
        assert t[2] - t[1] >= BACKOFF.interval(2)


async def test_only_consecutive_errors_count_towards_max_errors() -> None:
    async with rig() as r:
        busy = reply(503, {"detail": "busy"})
        r.transport.script("a", busy, busy, pending(), busy, busy, result())
        entry = r.watch("a")
        await r.clock.run_until(lambda: entry.done)
        assert isinstance(entry.outcome, GenerationResult)
        assert len(r.transport.requests) == 6


# -- concurrency and the poll budget ----------------------------------------------------------


async def test_never_more_than_max_concurrent_polls_in_flight() -> None:
    async with rig(max_concurrent_polls=2) as r:
        ids = [f"t{i}" for i in range(10)]
        for rid in ids:
            r.transport.script(rid, result())
            r.transport.hold(rid)
        entries = [r.watch(rid) for rid in ids]
        await r.clock.advance(1.0)  # all ten are due
        for released in range(10):
            assert r.transport.in_flight == min(2, 10 - released)
            assert r.scheduler.polls_in_flight == r.transport.in_flight
            assert len(r.transport.requests) == min(10, released + 2)
            first_in_flight = next(q for q in r.transport.requests if q.outcome == "pending")
            r.transport.release(first_in_flight.request_id)
            await r.clock.settle()
        assert all(e.done for e in entries)
        assert r.transport.max_in_flight == 2
        assert r.scheduler._limiter.borrowed_tokens == 0


async def test_the_poll_budget_follows_the_injected_clock() -> None:
    async with rig(attrs.evolve(BACKOFF, max_polls_per_second=1.0)) as r:
        for i in range(5):
            r.transport.script(f"t{i}", result())
            r.watch(f"t{i}")
        t0 = r.clock.now()
        await r.clock.advance(1.0)
        for _ in range(10):
            await r.clock.advance(1.0)
        # One poll per fake second from +1: +1, +2, +3, +4, +5.
        assert sorted(offsets([q.at or 0.0 for q in r.transport.requests], t0)) == [1, 2, 3, 4, 5]


# -- abandon races ----------------------------------------------------------------------------


async def test_abandon_while_queued_is_never_polled_again() -> None:
    async with rig() as r:
        r.transport.script("a", pending(), result())
        r.transport.script("b", pending(), result())
        a, b = r.watch("a"), r.watch("b")
        r.assert_watching(a, b)
        a.listeners.append(lambda e: pytest.fail("an abandoned task's listener ran"))
        await r.clock.run_until(lambda: len(r.transport.requests) == 2)  # one poll each
        assert a.phase is Phase.QUEUED

        await r.scheduler.abandon(a)
        assert a.phase is Phase.ABANDONED
        assert a.listeners == []
        r.assert_watching(a, b)
        assert r.scheduler.watching == 1
        assert any(e is a for *_, e in r.scheduler._heap)  # its heap item is still there...
        assert r.live_heap_items(a) == 0  # ...but stale

        await r.clock.run_until(lambda: b.done)
        await r.clock.advance(100)
        assert len(r.transport.for_task("a")) == 1
        assert all(e is not a for *_, e in r.scheduler._heap)  # popped and skipped
        assert a.outcome is None
        r.assert_watching(a, b)
        with pytest.raises(ClientStateError):
            await r.scheduler.outcome(a)


async def test_abandon_while_its_poll_is_in_flight_cancels_it_and_never_requeues() -> None:
    async with rig(max_concurrent_polls=1) as r:
        r.transport.script("a", result())
        r.transport.script("b", result())
        r.transport.hold("a")
        t0 = r.clock.now()
        a = r.watch("a")
        b = r.watch("b", submitted_at=t0 + 4.0)  # due at +5, after a's poll began
        await r.clock.advance(1.0)
        assert a.phase is Phase.POLLING
        assert r.transport.in_flight == 1
        r.assert_watching(a, b)

        await r.scheduler.abandon(a)  # returns once the poll has ended
        assert a.phase is Phase.ABANDONED
        assert r.transport.for_task("a")[0].outcome == "cancelled"
        assert (r.transport.in_flight, r.scheduler.polls_in_flight) == (0, 0)
        assert r.scheduler._limiter.borrowed_tokens == 0
        assert a.poll_scope is None
        r.assert_watching(a, b)

        r.transport.release("a")
        await r.clock.run_until(lambda: b.done)  # the only slot was given back
        await r.clock.advance(100)
        assert len(r.transport.for_task("a")) == 1
        assert a.phase is Phase.ABANDONED
        assert a.outcome is None
        assert r.live_heap_items(a) == 0
        r.assert_watching(a, b)


async def test_a_drop_during_its_own_poll_reaches_no_later_poll_of_the_worker() -> None:
    # A worker's polls share a cancel scope until a drop cancels it. Here a's own status observer
    # drops a while its poll is still running (so the cancellation has no await of a's poll left
    # to land in); the worker's next poll, b's, must not inherit it: b is answered, once.
    async with rig(max_concurrent_polls=1) as r:
        r.transport.script("a", pending())
        r.transport.script("b", pending(), result())
        t0 = r.clock.now()
        a = r.watch("a", observer=lambda entry, _: r.scheduler.drop(entry))
        b = r.watch("b", submitted_at=t0 + 0.5)  # due at +1.5, after a's poll
        await r.clock.run_until(lambda: b.done)
        assert a.phase is Phase.ABANDONED and len(r.transport.for_task("a")) == 1
        assert [q.outcome for q in r.transport.for_task("b")] == ["responded", "responded"]
        assert unwrap(b).images
        assert r.scheduler.polls_in_flight == 0


async def test_abandon_while_waiting_for_a_poll_slot_is_never_polled() -> None:
    async with rig(max_concurrent_polls=2) as r:
        for rid in ("b", "c", "a", "d"):
            r.transport.script(rid, result())
        r.transport.hold("b")
        r.transport.hold("c")
        b, c, a = r.watch("b"), r.watch("c"), r.watch("a")  # all due at +1, in this order
        await r.clock.advance(1.0)
        # b and c hold both slots; the loop has popped a and waits for a slot for it.
        assert r.transport.in_flight == 2
        assert r.scheduler._limiter.statistics().tasks_waiting == 1
        assert a.phase is Phase.QUEUED
        r.assert_watching(a, b, c)

        await r.scheduler.abandon(a)
        r.assert_watching(a, b, c)
        r.transport.release("b")
        r.transport.release("c")
        await r.clock.settle()
        # The slot went to a's launch, which rechecked and gave it back without polling.
        assert r.transport.for_task("a") == []
        assert b.done and c.done
        assert r.scheduler._limiter.borrowed_tokens == 0
        assert a.phase is Phase.ABANDONED
        r.assert_watching(a, b, c)

        d = r.watch("d")  # the loop lives on
        await r.clock.run_until(lambda: d.done)
        assert r.transport.for_task("a") == []


async def test_abandon_just_after_launch_is_never_polled() -> None:
    async with rig() as r:
        r.transport.script("a", result())
        r.transport.script("b", result())
        a, b = r.watch("a"), r.watch("b")  # due together: both launched before either runs
        phase_at_abandon: list[Phase] = []

        async def abandon_b(_: FakeRequest) -> None:
            phase_at_abandon.append(b.phase)
            await r.scheduler.abandon(b)

        r.transport.on_request("a", abandon_b)
        await r.clock.advance(1.0)
        assert phase_at_abandon == [Phase.POLLING]  # launched, its poll not started yet
        assert a.done
        assert b.phase is Phase.ABANDONED
        assert r.transport.for_task("b") == []


async def test_finish_and_abandon_after_an_ending_are_no_ops() -> None:
    async with rig() as r:
        r.transport.script("b", result())
        called: list[str] = []
        a = r.watch("a", submitted_at=r.clock.now() + 50)
        a.listeners.append(lambda e: called.append("a"))
        b = r.watch("b")
        await r.scheduler.abandon(a)
        generation = a.generation

        assert r.scheduler.finish(a, ClientStateError("late")) is False
        assert a.phase is Phase.ABANDONED
        assert a.outcome is None
        assert a.generation == generation
        assert called == []
        assert r.scheduler.finished == 0
        await r.scheduler.abandon(a)  # twice: nothing
        r.assert_watching(a, b)

        await r.clock.run_until(lambda: b.done)
        outcome = b.outcome
        await r.scheduler.abandon(b)  # a finished task stays finished
        assert b.phase is Phase.FINISHED
        assert b.outcome is outcome
        assert r.scheduler.finish(b, ClientStateError("again")) is False
        assert b.outcome is outcome
        assert r.scheduler.finished == 1
        r.assert_watching(a, b)


# -- close ------------------------------------------------------------------------------------


async def test_close_fails_every_live_task_and_wakes_waiters() -> None:
    async with rig() as r:
        r.transport.script("polling", pending(), result())
        r.transport.hold("polling")
        polling = r.watch("polling")
        queued = r.watch("queued", submitted_at=r.clock.now() + 50)
        await r.clock.advance(1.0)
        assert (polling.phase, queued.phase) == (Phase.POLLING, Phase.QUEUED)

        woken: list[str] = []

        async def wait(entry: TaskEntry) -> None:
            await r.scheduler.outcome(entry)
            woken.append(entry.request_id)

        async with anyio.create_task_group() as waiters:
            waiters.start_soon(wait, polling)
            waiters.start_soon(wait, queued)
            await r.clock.settle()
            assert woken == []
            r.scheduler.close()
        assert sorted(woken) == ["polling", "queued"]
        for entry in (polling, queued):
            assert entry.phase is Phase.FINISHED
            assert isinstance(entry.outcome, ClientStateError)
            assert entry.request_id in str(entry.outcome)
        r.assert_watching(polling, queued)
        assert r.scheduler.watching == 0
        assert r.scheduler._heap == []
        with pytest.raises(ClientStateError):
            r.watch("new")

        # The poll in flight answers "pending": a finished task is not put back in the heap.
        r.transport.release("polling")
        await r.clock.advance(100)
        assert polling.phase is Phase.FINISHED
        assert isinstance(polling.outcome, ClientStateError)
        assert r.scheduler._heap == []
        assert len(r.transport.requests) == 1


# -- the learned schedule ---------------------------------------------------------------------

LEARNED = PollPolicy(
    initial_delay=1.0,
    factor=2.0,
    min_interval=0.05,
    max_interval=100.0,
    jitter=0.0,
    target_delay=0.5,
    min_samples=3,
)


def learned_times(model: CompletionModel, k: float, submitted: float, n: int) -> list[float]:
    """The model's schedule, each poll moved to its shared tick (but a first poll that the
    model expects to find most tasks done)."""
    times, elapsed, now = [], 0.0, submitted
    for _ in range(n):
        elapsed = model.next_poll(
            elapsed, k=k, min_interval=LEARNED.min_interval, max_interval=LEARNED.max_interval
        )
        due = submitted + elapsed
        if times or model.cdf(elapsed) <= 0.5:
            due = on_tick(due, now, now + LEARNED.min_interval, now + LEARNED.max_interval)
            elapsed = due - submitted
        times.append(due)
        now = due
    return times


async def test_after_min_samples_polls_follow_the_learned_schedule() -> None:
    async with rig(LEARNED) as r:
        # Three tasks end after 1, 2 and 3 pending polls: completion times 2, 5 and 11 s
        # (midpoints of the last pending poll and the poll that saw the result).
        training = []
        for i in (1, 2, 3):
            r.transport.script(f"w{i}", *([pending()] * i), result())
            training.append(r.watch(f"w{i}"))
        await r.clock.run_until(lambda: all(e.done for e in training))
        model = r.scheduler.model
        assert model.ready and model.samples == 3

        submitted = r.clock.now()
        r.transport.script("n", pending(), pending(), pending(), result())
        entry = r.watch("n")
        k = model.k_for_target_delay(0.5)  # LEARNED.target_delay
        expected = learned_times(model, k, submitted, 4)
        backoff = [submitted + sum(LEARNED.interval(j) for j in range(n + 1)) for n in range(4)]
        assert [round(t, 6) for t in expected] != [round(t, 6) for t in backoff]
        assert entry.due == pytest.approx(expected[0])

        await r.clock.run_until(lambda: entry.done)
        times = r.transport.times("n")
        assert times == pytest.approx(expected)
        assert r.scheduler._k == pytest.approx(k)
        # Each poll sits on a shared tick (a multiple of a power of two near a quarter of its
        # interval), not where the model put it.
        for before, at in itertools.pairwise([submitted, *times]):
            step = 2.0 ** math.floor(math.log2((at - before) / 16))
            assert at / step == round(at / step)


async def test_k_is_refitted_when_the_model_refits_with_a_full_window() -> None:
    async with rig(LEARNED) as r:
        # A small window, full from the start.
        model = r.scheduler.model = CompletionModel(min_samples=2, window=4)
        for d in (8.0, 10.0, 12.0, 10.0):
            model.observe(d)
        assert model.ready and model.samples == 4

        first = r.watch("x")
        k1 = r.scheduler._k
        assert k1 is not None
        assert k1 == pytest.approx(model.k_for_target_delay(0.5))
        fits = model.fits

        for d in (80.0, 100.0, 120.0, 100.0):  # the service got 10x slower
            model.observe(d)
        assert model.fits > fits  # K is keyed on the fit, whatever the sample count did

        submitted = r.clock.now()
        second = r.watch("y")
        k2 = model.k_for_target_delay(0.5)
        assert k2 != pytest.approx(k1)
        assert r.scheduler._k == pytest.approx(k2)
        assert second.due == pytest.approx(learned_times(model, k2, submitted, 1)[0])
        assert second.due != pytest.approx(learned_times(model, k1, submitted, 1)[0])
        await r.scheduler.abandon(first)
        await r.scheduler.abandon(second)


# -- failures that must stay with one task ----------------------------------------------------


async def test_a_raising_listener_or_observer_does_not_stop_the_scheduler() -> None:
    async with rig() as r:

        def boom(*_: object) -> None:
            raise RuntimeError("user callback")

        finished: list[str] = []
        r.transport.script("a", pending(), result())
        r.transport.script("b", pending(), pending(), result())
        a, b = r.watch("a"), r.watch("b")
        a.listeners.append(boom)
        a.listeners.append(lambda e: finished.append(e.request_id))  # after the failing one
        a.observers.append(boom)
        b.observers.append(boom)
        b.listeners.append(lambda e: finished.append(e.request_id))
        await r.clock.run_until(lambda: a.done and b.done)
        assert isinstance(a.outcome, GenerationResult)
        assert isinstance(b.outcome, GenerationResult)
        assert finished == ["a", "b"]
        r.transport.script("c", result())
        c = r.watch("c")  # the loop is still alive
        await r.clock.run_until(lambda: c.done)

        # Listeners run from close() too: one that raises must not stop close.
        d, e = r.watch("d", submitted_at=r.clock.now() + 50), r.watch("e")
        d.listeners.append(boom)
        e.listeners.append(lambda e: finished.append(e.request_id))
        r.scheduler.close()
        assert d.done and e.done
        assert finished == ["a", "b", "e"]


async def test_an_unexpected_transport_exception_ends_only_that_task() -> None:
    async with rig() as r:
        r.transport.script("a", ValueError("a bug in parsing"), result())
        r.transport.script("b", pending(), pending(), result())
        a, b = r.watch("a"), r.watch("b")
        await r.clock.run_until(lambda: a.done)
        assert isinstance(a.outcome, ProtocolError)
        assert "a bug in parsing" in str(a.outcome)
        await r.clock.run_until(lambda: b.done)
        assert isinstance(b.outcome, GenerationResult)
        await r.clock.advance(100)
        assert len(r.transport.for_task("a")) == 1
        assert r.scheduler.watching == 0

        r.transport.script("c", result())
        c = r.watch("c")
        await r.clock.run_until(lambda: c.done)


# -- bugs found while writing these tests, fixed since ---------------------------------------


def _finished_with(cls: type) -> Callable[[TaskEntry, FakeTransport], bool]:
    return lambda e, t: isinstance(e.outcome, cls)


@pytest.mark.parametrize(
    ("status_route", "expect"),
    [
        (
            [reply(404, {"detail": "Request not found"})],
            lambda e, t: isinstance(e.outcome, NotFoundError) and len(t.requests) == 2,
        ),
        (
            [reply(429, GATEWAY_429, {"Retry-After": "2"}), pending("COMPLETED", code=200)],
            _finished_with(GenerationResult),
        ),
        (
            [reply(503, {"error": "overloaded"}), pending("COMPLETED", code=200)],
            _finished_with(GenerationResult),
        ),
    ],
    ids=["404", "429-gateway", "503-error-body"],
)
async def test_the_status_route_honours_http_errors(
    status_route: list[Any], expect: Callable[[TaskEntry, FakeTransport], bool]
) -> None:
    async with rig() as r:
        r.transport.script("a", reply(405, {"detail": "Method Not Allowed"}), result())
        r.transport.script("a", *status_route, route="status")
        entry = r.watch("a")
        await r.clock.run_until(lambda: entry.done)
        assert expect(entry, r.transport), repr(entry.outcome)


async def test_a_status_route_fallback_does_not_ping_pong() -> None:
    async with rig(max_requests=60) as r:
        r.transport.script("a", reply(405, {"detail": "Method Not Allowed"}))
        r.transport.script("a", pending("COMPLETED", code=200), route="status")
        r.watch("a")
        await r.clock.advance(1.0)
        at_once = r.transport.times("a").count(r.clock.now())
        assert at_once <= 4, f"{at_once} requests at one instant"


async def test_completed_without_a_result_does_not_poll_in_a_loop() -> None:
    async with rig(max_requests=60) as r:
        r.transport.script("a", reply(200, {"status": "COMPLETED", "request_id": "a"}))
        r.watch("a")
        await r.clock.advance(1.0)
        at_once = r.transport.times("a").count(r.clock.now())
        assert at_once <= 2, f"{at_once} requests at one instant"


# -- the first poll sent from the caller's task (watch_and_poll) ----------------------------------

INSTANT = attrs.evolve(BACKOFF, initial_delay=0.0)


async def test_a_first_poll_due_at_once_runs_in_the_callers_task() -> None:
    async with rig(INSTANT) as r:
        r.transport.script("a", result())
        ended: list[TaskEntry] = []
        seen_from: list[object] = []

        def listener(entry: TaskEntry) -> None:
            ended.append(entry)
            seen_from.append(anyio.get_current_task().id)

        polls_before = r.scheduler.polls_sent
        entry = await r.scheduler.watch_and_poll(Ticket("a"), listener=listener)
        # Done when the call returns: the GET was sent and answered in this task, before any
        # hand-off to the loop, and the listener (attached first) was called here too.
        assert entry.done and ended == [entry]
        assert seen_from == [anyio.get_current_task().id]
        assert r.scheduler.polls_sent == polls_before + 1
        assert r.transport.times("a") == [r.clock.now()]
        assert r.scheduler._limiter.borrowed_tokens == 0
        assert r.live_heap_items(entry) == 0 and r.scheduler._heap == []
        r.assert_watching(entry)


async def test_a_first_poll_not_due_yet_is_left_to_the_loop() -> None:
    async with rig() as r:  # initial_delay 1 s
        r.transport.script("a", result())
        t0 = r.clock.now()
        entry = await r.scheduler.watch_and_poll(Ticket("a"))
        assert r.transport.requests == [] and entry.phase is Phase.QUEUED
        assert r.live_heap_items(entry) == 1
        await r.clock.run_until(lambda: entry.done)
        assert r.transport.times("a") == [t0 + 1.0]


async def test_no_free_poll_slot_leaves_the_first_poll_to_the_loop() -> None:
    async with rig(INSTANT, max_concurrent_polls=1) as r:
        r.transport.script("a", result())
        r.transport.script("b", result())
        r.transport.hold("a")
        a = r.watch("a")
        await r.clock.advance(0.0)
        assert a.phase is Phase.POLLING  # a holds the only slot
        b = await r.scheduler.watch_and_poll(Ticket("b"))
        assert b.phase is Phase.QUEUED and r.transport.for_task("b") == []
        r.transport.release("a")
        await r.clock.run_until(lambda: b.done)
        assert r.transport.max_in_flight == 1


async def test_under_a_poll_budget_the_loop_keeps_the_first_poll() -> None:
    async with rig(attrs.evolve(INSTANT, max_polls_per_second=5.0)) as r:
        r.transport.script("a", result())
        entry = await r.scheduler.watch_and_poll(Ticket("a"))
        assert entry.phase is Phase.QUEUED and r.transport.requests == []
        await r.clock.run_until(lambda: entry.done)


async def test_a_pending_first_poll_is_requeued_for_the_loop() -> None:
    async with rig(INSTANT) as r:
        r.transport.script("a", pending("IN_PROGRESS"), result())
        t0 = r.clock.now()
        entry = await r.scheduler.watch_and_poll(Ticket("a"))
        assert entry.phase is Phase.QUEUED and entry.polls == 1
        assert r.live_heap_items(entry) == 1
        await r.clock.run_until(lambda: entry.done)
        # then the backoff (which, from an initial delay of 0, stays at 0)
        assert offsets(r.transport.times("a"), t0) == [0.0, INSTANT.interval(1)]


async def test_cancelling_the_caller_during_an_inline_poll_requeues_the_task() -> None:
    async with rig(INSTANT) as r:
        r.transport.script("a", result())
        r.transport.hold("a")
        with anyio.move_on_after(0.05):  # real seconds: the held GET never answers
            await r.scheduler.watch_and_poll(Ticket("a"))
        entry = r.scheduler.entry("a")
        assert entry is not None and entry.phase is Phase.QUEUED
        assert r.transport.for_task("a")[0].outcome == "cancelled"
        assert r.scheduler._limiter.borrowed_tokens == 0
        assert r.scheduler.polls_in_flight == 0
        r.transport.release("a")
        await r.clock.run_until(lambda: entry.done)  # the loop polls it again
        assert isinstance(entry.outcome, GenerationResult)


async def test_an_inline_poll_dropped_meanwhile_discards_its_answer() -> None:
    async with rig(INSTANT) as r:
        r.transport.script("a", result())
        ended: list[TaskEntry] = []

        async def drop_it(_: FakeRequest) -> None:
            entry = r.scheduler.entry("a")
            assert entry is not None and entry.phase is Phase.POLLING
            assert r.scheduler.drop(entry)

        r.transport.on_request("a", drop_it)
        entry = await r.scheduler.watch_and_poll(Ticket("a"), listener=ended.append)
        assert entry.phase is Phase.ABANDONED and entry.outcome is None
        assert ended == []  # dropped: nobody is told of an outcome
        assert r.scheduler._limiter.borrowed_tokens == 0
        await r.clock.advance(100)
        assert len(r.transport.for_task("a")) == 1
        assert r.live_heap_items(entry) == 0


# -- poll workers: reused, bounded, gone when nothing is watched ---------------------------------


async def test_polls_are_handed_to_an_idle_worker_not_a_new_task() -> None:
    async with rig(max_concurrent_polls=4) as r:
        sent_from: list[int] = []

        async def note_task(_: FakeRequest) -> None:
            sent_from.append(anyio.get_current_task().id)

        for rid in ("a", "b", "c"):
            r.transport.script(rid, pending(), result())
            r.transport.on_request(rid, note_task)
        t0 = r.clock.now()
        a = r.watch("a")
        b = r.watch("b", submitted_at=t0 + 0.5)  # due at +1.5: a's poll has ended by then
        c = r.watch("c", submitted_at=t0 + 1.0)
        await r.clock.run_until(lambda: a.done and b.done and c.done)
        assert len(sent_from) == 6
        assert len(set(sent_from)) == 1  # one worker, one poll after another
        # Nothing is watched any more: the idle worker was told to end.
        assert r.scheduler._idle_pollers == []


async def test_concurrent_polls_start_workers_up_to_the_limit_only() -> None:
    async with rig(max_concurrent_polls=2) as r:
        sent_from: set[int] = set()

        async def note_task(_: FakeRequest) -> None:
            sent_from.add(anyio.get_current_task().id)

        rids = [f"t{i}" for i in range(6)]
        for rid in rids:
            r.transport.script(rid, pending(), pending(), result())
            r.transport.on_request(rid, note_task)
        entries = [r.watch(rid) for rid in rids]  # all due together
        await r.clock.run_until(lambda: all(e.done for e in entries))
        assert len(sent_from) == 2 and r.transport.max_in_flight == 2


async def test_polls_due_within_a_few_ms_share_one_wake_up() -> None:
    async with rig(max_concurrent_polls=4) as r:
        for rid in ("a", "b", "c"):
            r.transport.script(rid, result())
        t0 = r.clock.now()
        a = r.watch("a")  # due at +1
        b = r.watch("b", submitted_at=t0 + 0.015)  # due at +1.015: leaves with a
        c = r.watch("c", submitted_at=t0 + 0.5)  # due at +1.5: too far to wait for
        await r.clock.run_until(lambda: a.done and b.done and c.done)
        assert r.transport.times("a") == r.transport.times("b") == [t0 + 1.0]
        assert r.transport.times("c") == [t0 + 1.5]
        assert r.scheduler.lateness_max == 0.0
