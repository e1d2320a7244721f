"""A fake clock and a scripted fake transport for unit tests of the poll scheduler.

Like httpx's ``MockTransport``: no sockets and no real sleeping. Time moves only when a test calls
``FakeClock.advance``; every request is answered from a script kept per task and route, and is
recorded with the fake time at which it left.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import math
import random
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel
import attrs

from nanobanana_async._http._retry import RetryPolicy
from nanobanana_async._http._transport import Response
from nanobanana_async._polling._policy import PollPolicy
from nanobanana_async._polling._scheduler import PollScheduler

__all__ = [
    "FakeClock",
    "FakeRequest",
    "FakeTransport",
    "pending",
    "reply",
    "result",
    "running_scheduler",
]


_MAX_SPINS = 200


def _all_other_tasks_blocked() -> bool:
    """Whether every other asyncio task waits on an unfinished future (as anyio checks it)."""
    try:
        this = asyncio.current_task()
    except RuntimeError:  # not on asyncio: let anyio look
        return False
    for task in asyncio.all_tasks():
        if task is this:
            continue
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is None or waiter.done():
            return False
    return True


class FakeClock:
    """A clock that moves only when told to: ``now()`` is a float the test controls.

    ``sleep`` parks until ``advance`` moves time to (or past) its deadline; ``sleep(math.inf)``
    parks until cancelled. ``advance`` wakes sleepers one deadline at a time, in order, setting
    ``now()`` to each deadline before waking it, so a loop that sleeps until ``t`` runs at ``t``
    exactly; after each wake-up it lets the event loop settle (``anyio.wait_all_tasks_blocked``).
    """

    def __init__(self, start: float = 1000.0) -> None:
        # Not 0: a clock at 0.0 is falsy, and real monotonic clocks never read 0.
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        deadline = self._now + seconds  # inf stays inf: never woken by advance
        item = (deadline, next(self._seq), anyio.Event())
        heapq.heappush(self._sleepers, item)
        try:
            await item[2].wait()
        finally:
            if item in self._sleepers:  # cancelled before its deadline
                self._sleepers.remove(item)
                heapq.heapify(self._sleepers)

    async def wait(self, seconds: float, wake: asyncio.Future[None]) -> None:
        """Park until ``advance`` reaches ``now + seconds`` or ``wake`` is done."""
        if wake.done():
            return
        event = anyio.Event()
        item = (self._now + seconds, next(self._seq), event)
        heapq.heappush(self._sleepers, item)
        wake.add_done_callback(lambda _: event.set())
        try:
            await event.wait()
        finally:
            if item in self._sleepers:  # woken (or cancelled) before its deadline
                self._sleepers.remove(item)
                heapq.heapify(self._sleepers)

    @property
    def next_deadline(self) -> float | None:
        """The earliest finite deadline of a parked sleeper, or None."""
        deadlines = [d for d, _, _ in self._sleepers if math.isfinite(d)]
        return min(deadlines) if deadlines else None

    async def settle(self) -> None:
        """Let every task run until all are blocked (time does not move).

        ``anyio.wait_all_tasks_blocked`` sleeps 0.1 s of real time whenever it finds a runnable
        task; zero-length checkpoints first let the loop drain, so that it returns at its first
        look and a test with many steps stays fast.
        """
        for _ in range(_MAX_SPINS):
            await anyio.lowlevel.checkpoint()
            if _all_other_tasks_blocked():
                break
        await anyio.wait_all_tasks_blocked()

    async def advance(self, seconds: float = 0.0) -> None:
        """Move time forward by ``seconds``, waking each sleeper at its own deadline."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        target = self._now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, event = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            event.set()
            await self.settle()
        self._now = target
        await self.settle()

    async def advance_to_next(self) -> bool:
        """Jump to the next sleeper's deadline and wake it; False if nobody sleeps finitely."""
        await self.settle()
        deadline = self.next_deadline
        if deadline is None:
            return False
        await self.advance(deadline - self._now)
        return True

    async def run_until(self, condition: Callable[[], bool], *, max_steps: int = 200) -> None:
        """Advance from deadline to deadline until ``condition()`` holds."""
        await self.settle()
        for _ in range(max_steps):
            if condition():
                return
            if not await self.advance_to_next():
                break
        assert condition(), "condition not reached: nothing left to wake"


@attrs.define
class FakeRequest:
    """One request the fake transport received."""

    method: str
    url: str
    kind: Any
    at: float | None  # fake clock time at which it left
    real_at: float  # anyio.current_time() (for limiters that read the real clock)
    request_id: str
    action: str
    outcome: str = "pending"  # "responded" | "raised" | "cancelled" | "pending"
    status: int | None = None


Step = Response | BaseException | Callable[[FakeRequest], Response]


def reply(status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> Response:
    """A response with a JSON body (``bytes`` are sent as they are)."""
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    return Response(status, dict(headers or {}), raw)


def pending(
    state: str = "IN_QUEUE", queue_position: int | None = None, code: int = 202
) -> Response:
    """The response route's answer while a task runs (a status-shaped body)."""
    body: dict[str, Any] = {"status": state}
    if queue_position is not None:
        body["queue_position"] = queue_position
    return reply(code, body)


def result(url: str = "https://cdn.example/out.png", request_id: str | None = None) -> Response:
    """A finished task's result."""
    body: dict[str, Any] = {"outputs": [{"type": "image", "url": url}], "metadata": {}}
    if request_id is not None:
        body["request_id"] = request_id
    return reply(200, body)


class FakeTransport:
    """Answers the scheduler's requests from per-(request id, route) scripts and records them.

    ``script(rid, *steps)`` queues the answers of the response route (``route="status"`` for the
    status route). A step is a ``Response``, an exception to raise, or a function of the
    ``FakeRequest``; the last step repeats forever. A request with no script fails the test's
    expectations loudly (an ``AssertionError`` is recorded in ``unscripted``) and hangs.
    ``hold(rid)`` makes that task's requests hang until ``release(rid)``. ``max_requests`` bounds a
    runaway scheduler: requests past it hang instead of being answered.
    """

    def __init__(
        self,
        clock: FakeClock | None = None,
        *,
        retry: RetryPolicy | None = None,
        max_requests: int = 500,
    ) -> None:
        self.clock = clock
        self.retry = retry or RetryPolicy(
            max_attempts=1, initial_backoff=1.0, max_backoff=8.0, max_retry_after=60.0
        )
        self.requests: list[FakeRequest] = []
        self.unscripted: list[FakeRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.max_requests = max_requests
        self._scripts: dict[tuple[str, str], list[Step]] = {}
        self._gates: dict[str, anyio.Event] = {}
        self._hooks: dict[str, Callable[[FakeRequest], Any]] = {}

    # -- scripting --------------------------------------------------------------------------

    def script(self, request_id: str, *steps: Step, route: str = "response") -> None:
        """Append answers for the task's route (``"response"`` or ``"status"``)."""
        self._scripts.setdefault((request_id, route), []).extend(steps)

    def hold(self, request_id: str) -> anyio.Event:
        """Make the task's next requests hang until ``release`` (a poll in flight)."""
        gate = self._gates.get(request_id)
        if gate is None:
            gate = self._gates[request_id] = anyio.Event()
        return gate

    def release(self, request_id: str) -> None:
        """Let the task's held requests (and later ones) through."""
        gate = self._gates.pop(request_id, None)
        if gate is not None:
            gate.set()

    def on_request(self, request_id: str, hook: Callable[[FakeRequest], Any]) -> None:
        """Call ``await hook(request)`` when a request for the task arrives (before answering)."""
        self._hooks[request_id] = hook

    # -- what the scheduler calls -----------------------------------------------------------

    def task_url(self, request_id: str, action: str, server_url: str | None = None) -> str:
        return server_url or f"http://api/q/requests/{request_id}/{action}"

    async def request(
        self,
        method: str,
        url: str,
        *,
        kind: Any,
        retry: RetryPolicy | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> Response:
        parts = url.rsplit("/", 2)
        rid, action = parts[-2], parts[-1]
        req = FakeRequest(
            method,
            url,
            kind,
            self.clock.now() if self.clock is not None else None,
            anyio.current_time(),
            rid,
            action,
        )
        self.requests.append(req)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if len(self.requests) > self.max_requests:
                await anyio.sleep_forever()  # a runaway loop: stop answering
            hook = self._hooks.get(rid)
            if hook is not None:
                await hook(req)
            gate = self._gates.get(rid)
            if gate is not None:
                await gate.wait()
            else:
                await anyio.lowlevel.checkpoint()
            steps = self._scripts.get((rid, action), [])
            if not steps:
                self.unscripted.append(req)
                await anyio.sleep_forever()
            step = steps.pop(0) if len(steps) > 1 else steps[0]
            if isinstance(step, BaseException):
                req.outcome = "raised"
                raise step
            response = step if isinstance(step, Response) else step(req)
            req.outcome = "responded"
            req.status = response.status
            if response.status not in ok_statuses and response.status >= 300:
                raise AssertionError(f"the scheduler must accept every status, got {response}")
            return response
        except anyio.get_cancelled_exc_class():
            req.outcome = "cancelled"
            raise
        finally:
            self.in_flight -= 1

    # -- reading the record -----------------------------------------------------------------

    def for_task(self, request_id: str) -> list[FakeRequest]:
        """The requests sent for one task, in order."""
        return [r for r in self.requests if r.request_id == request_id]

    def times(self, request_id: str) -> list[float]:
        """Fake times of the task's requests."""
        times = [r.at for r in self.for_task(request_id)]
        assert None not in times, "the transport has no clock"
        return [t for t in times if t is not None]

    def routes(self, request_id: str) -> list[str]:
        """Routes (``response`` / ``status``) of the task's requests."""
        return [r.action for r in self.for_task(request_id)]


@contextlib.asynccontextmanager
async def running_scheduler(
    policy: PollPolicy,
    *,
    max_concurrent_polls: int = 4,
    retry: RetryPolicy | None = None,
    seed: int = 0,
    max_requests: int = 500,
) -> AsyncIterator[tuple[FakeClock, FakeTransport, PollScheduler]]:
    """A scheduler's loop running on a fake clock and transport, for one test.

    On exit it checks that no request went unscripted and stops the loop; a test that hangs
    fails after 10 real seconds instead of waiting for pytest's timeout.
    """
    clock = FakeClock()
    transport = FakeTransport(clock, retry=retry, max_requests=max_requests)
    scheduler = PollScheduler(
        transport,
        policy,
        max_concurrent_polls=max_concurrent_polls,
        clock=clock,
        rng=random.Random(seed),
    )
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            yield clock, transport, scheduler
            assert transport.unscripted == [], "a request nobody scripted"
            tg.cancel_scope.cancel()
