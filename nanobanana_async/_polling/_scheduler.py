"""PollScheduler: one loop that polls every task the client waits on.

Tasks sit in a heap ordered by their next due time; there is no coroutine per task. When a poll is
due the loop borrows a slot from a ``CapacityLimiter`` (the bound on concurrent polls), rechecks
that the task is still wanted, and hands the poll to an idle poll worker in the scheduler's task
group (starting one only when none is idle). Each poll GETs the task's *response* URL, which
answers 202 with the status while the task runs, so the poll that sees completion also brings the
result. Every phase change goes through ``TaskEntry.move``
(``_entry.py``): a task that is finished or abandoned can never be polled or re-queued.

Time comes from an injected ``Clock`` (``now``, ``sleep`` and ``wait``), so the loop is unit-tested
with a fake clock and a fake transport, without sockets or real sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import anyio
import anyio.abc
import attrs

from .._http._pacer import AdaptiveRateLimiter
from .._http._retry import NO_RETRY, RetryPolicy
from .._http._wire import parse_response, parse_status
from ..errors import (
    AuthenticationError,
    ClientStateError,
    InsufficientCreditsError,
    NanoBananaError,
    NoImageError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ResponseTooLargeError,
    ServerError,
    TaskCancelledError,
    TaskFailedError,
    error_from_response,
)
from ..models import GenerationResult, TaskState, TaskStatus, Ticket
from ._entry import Listener, Observer, Phase, TaskEntry
from ._model import CompletionModel
from ._policy import PollPolicy

__all__ = [
    "Clock",
    "LoopClock",
    "PollScheduler",
    "PollTransport",
    "acquire",
    "on_tick",
    "unwrap",
]

logger = logging.getLogger("nanobanana_async")
# Under a poll budget, rank this many due tasks at a time and poll the best few of them.
_PRIORITY_WINDOW = 256
_PRIORITY_BATCH = 16
_COALESCE = 0.02  # seconds
# A learned poll moves by at most this fraction of its interval, to the coarsest shared tick
# in that reach (see ``on_tick``).
_TICK_REACH = 0.3
# ... and so does the first poll, unless the model expects it to find more than this share done.
_FIRST_SEEN = 0.5
# Polls handle every status themselves (202 pending, failure bodies, 429 and 5xx backoff).
_EVERY_ERROR_STATUS = frozenset(range(300, 600))
# Statuses about the account or the id, not the task: their error bodies are not task failures.
_ACCOUNT_STATUSES = frozenset({401, 402, 403, 404, 429})
# Errors that another poll cannot cure: the task ends with them at once.
_FINAL_ERRORS: tuple[type[NanoBananaError], ...] = (
    AuthenticationError,
    PermissionDeniedError,
    NotFoundError,
    InsufficientCreditsError,
    ResponseTooLargeError,  # the same body on every fetch: fetching again cannot help
)


class Clock(Protocol):
    """Where the scheduler reads time and sleeps (a fake one in unit tests)."""

    def now(self) -> float:
        """The current time in seconds (monotonic)."""

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (``math.inf``: until cancelled)."""

    async def wait(self, seconds: float, wake: asyncio.Future[None]) -> None:
        """Return after ``seconds`` (``math.inf``: never) or once ``wake`` is done."""


class LoopClock:
    """The running event loop's clock (what anyio reads, without a backend lookup per call)."""

    def __init__(self) -> None:
        self._time = asyncio.get_running_loop().time

    def now(self) -> float:
        """The loop's monotonic time in seconds."""
        return self._time()

    async def sleep(self, seconds: float) -> None:
        """``anyio.sleep``, or sleep until cancelled for an infinite delay."""
        if math.isinf(seconds):
            await anyio.sleep_forever()
        else:
            await anyio.sleep(seconds)

    async def wait(self, seconds: float, wake: asyncio.Future[None]) -> None:
        """One timer and one future: what the loop's every idle stretch costs."""
        timer = None
        if not math.isinf(seconds):
            timer = asyncio.get_running_loop().call_later(seconds, _wake, wake)
        try:
            await wake
        finally:
            if timer is not None:
                timer.cancel()


def _wake(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)


class _Response(Protocol):
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any: ...


class PollTransport(Protocol):
    """What the scheduler needs from the HTTP layer."""

    retry: RetryPolicy

    def task_url(self, request_id: str, action: str, server_url: str | None = None) -> str:
        """The URL of a task route."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        kind: Any,
        retry: RetryPolicy | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> Any:
        """Send one request; return the response (every status in ``ok_statuses`` included)."""


class PollScheduler:
    """Polls every watched task from one loop, bounded by a limiter on concurrent polls."""

    def __init__(
        self,
        transport: PollTransport,
        policy: PollPolicy,
        *,
        max_concurrent_polls: int,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_end: Callable[[TaskEntry], None] | None = None,
    ) -> None:
        self._transport = transport
        self._on_end = on_end  # told once when a task leaves the live phases (e.g. tracing)
        self.policy = policy
        self._clock: Clock = clock or LoopClock()
        self._rng = rng or random.Random()
        self._limiter = anyio.CapacityLimiter(max_concurrent_polls)
        # The model reads the live entries at refit time (running tasks are right-censored).
        self.model = CompletionModel(
            min_samples=policy.min_samples, running=lambda: self._entries.values()
        )
        self._k: float | None = None
        self._k_fit = -1  # the model fit K was computed for
        self._budget = (
            AdaptiveRateLimiter(
                max_rate=policy.max_polls_per_second,
                clock=self._clock.now,
                sleep=self._clock.sleep,
            )
            if policy.max_polls_per_second
            else None
        )
        self._heap: list[tuple[float, int, int, TaskEntry]] = []
        self._seq = itertools.count()
        self._entries: dict[str, TaskEntry] = {}
        self._wake: asyncio.Future[None] | None = None  # set while the loop waits
        self._scope_class: type[anyio.CancelScope] = anyio.CancelScope
        # How early a poll may leave to share a wake-up with one due now (never more than a
        # tenth of the shortest interval the policy allows).
        self._coalesce = min(_COALESCE, 0.1 * min(policy.min_interval, policy.max_interval))
        # Poll workers waiting for their next entry (LIFO: the most recently busy first).
        self._idle_pollers: list[asyncio.Future[TaskEntry | None]] = []
        self._closed = False
        self.polls_sent = 0
        self.polls_in_flight = 0
        self.finished = 0
        # How late due polls leave (seconds): the scheduler's own latency, for benchmarks.
        self.lateness_total = 0.0
        self.lateness_max = 0.0

    def __repr__(self) -> str:
        return f"<PollScheduler watching={len(self._entries)} due_heap={len(self._heap)}>"

    @property
    def clock(self) -> Clock:
        """The clock the scheduler reads."""
        return self._clock

    @property
    def watching(self) -> int:
        """Number of tasks being polled (QUEUED or POLLING)."""
        return len(self._entries)

    def entry(self, request_id: str) -> TaskEntry | None:
        """The live entry of a task, if it is watched."""
        return self._entries.get(request_id)

    def entries(self) -> list[TaskEntry]:
        """A snapshot of the live entries."""
        return list(self._entries.values())

    # -- registration -----------------------------------------------------------------------

    def watch(
        self,
        ticket: Ticket,
        *,
        submitted_at: float | None = None,
        expect_image: bool | None = None,
        size_class: str | None = None,
        listener: Listener | None = None,
        observer: Observer | None = None,
    ) -> TaskEntry:
        """Start polling a task (or return the live entry already polling it).

        ``expect_image``: the request asked for images, so a result without one is a
        ``NoImageError`` (None: not known, e.g. a task watched by id only). ``size_class``
        (e.g. the image size, ``"4K"``): tasks of one class get their own completion model.
        ``listener``: called once with the entry when the task finishes; ``observer`` with
        each status change its polls see.
        """
        entry, new = self._register(
            ticket, submitted_at, expect_image, size_class, listener, observer
        )
        if new:
            self._push(entry, self._next_due(entry, entry.submitted_at))
        return entry

    async def watch_and_poll(
        self,
        ticket: Ticket,
        *,
        submitted_at: float | None = None,
        expect_image: bool | None = None,
        size_class: str | None = None,
        listener: Listener | None = None,
        observer: Observer | None = None,
    ) -> TaskEntry:
        """``watch``, and when the task's first poll is due at once, send it from the caller's
        task (no hand-off to the loop and no task spawned: the hot path of instant tasks).

        Otherwise (not due yet, no free poll slot, a poll budget, a task already watched) the
        loop polls it as usual. ``listener`` is attached before any poll can finish the task.
        """
        entry, new = self._register(
            ticket, submitted_at, expect_image, size_class, listener, observer
        )
        if not new:
            return entry
        due = self._next_due(entry, entry.submitted_at)
        if due <= self._clock.now() and self._budget is None:
            try:
                self._limiter.acquire_on_behalf_of_nowait(entry)
            except anyio.WouldBlock:
                pass  # every poll slot is busy: the loop sends it when one frees up
            else:
                entry.due = due
                entry.move(Phase.POLLING)
                self.polls_in_flight += 1
                await self._poll(entry, None)
                return entry
        self._push(entry, due)
        return entry

    def _register(
        self,
        ticket: Ticket,
        submitted_at: float | None,
        expect_image: bool | None,
        size_class: str | None,
        listener: Listener | None,
        observer: Observer | None,
    ) -> tuple[TaskEntry, bool]:
        """The live entry of the task (created, not yet scheduled, when new) and whether new."""
        if self._closed:
            raise ClientStateError("the client is closed")
        entry = self._entries.get(ticket.request_id)
        new = entry is None
        if entry is None:
            url = self._transport.task_url(ticket.request_id, "response", ticket.response_url)
            now = self._clock.now()
            entry = TaskEntry(ticket, url, now if submitted_at is None else submitted_at)
            entry.queue_position = ticket.queue_position
            self._entries[ticket.request_id] = entry
        if entry.expect_image is None:
            entry.expect_image = expect_image
        if entry.size_class is None:
            entry.size_class = size_class
        if listener is not None:
            entry.listeners.append(listener)
        if observer is not None:
            entry.observers.append(observer)
        return entry, new

    def _push(self, entry: TaskEntry, due: float) -> None:
        """Put a QUEUED entry in the heap at ``due`` (any older heap item of it goes stale)."""
        entry.generation += 1
        entry.due = due
        heapq.heappush(self._heap, (due, next(self._seq), entry.generation, entry))
        if self._heap[0][3] is entry and self._wake is not None:
            _wake(self._wake)  # the loop waits for a later time: wake it

    def _requeue(self, entry: TaskEntry, due: float) -> None:
        """After a poll: back in the heap, unless the task was finished or abandoned meanwhile."""
        if entry.move(Phase.QUEUED):
            self._push(entry, due)

    def _next_due(self, entry: TaskEntry, now: float) -> float:
        """When to poll next: the learned √hazard schedule once ready, else the backoff."""
        policy = self.policy
        model = self.model
        if policy.target_delay is None:
            return now + policy.interval(entry.polls, self._rng)
        fits = model.fits
        if entry.last_pending_at is not None:
            # A poll found the task running: its outcome feeds the model's change detector.
            age = entry.last_pending_at - entry.submitted_at
            if age > entry.scored_until:
                model.observe_pending(entry.scored_until, age, size_class=entry.size_class, now=now)
                entry.scored_until = age
        if model.ready:
            # K follows the fit, but not in the call whose poll outcome refitted the model (the
            # change detector): one refit and one K calibration per call at most, so that no
            # call holds the event loop for both. This poll keeps the K it had.
            if self._k is None or (self._k_fit != model.fits and model.fits == fits):
                self._k = model.k_for_target_delay(
                    policy.target_delay,
                    min_interval=policy.min_interval,
                    max_interval=policy.max_interval,
                )
                self._k_fit = model.fits
            offset = model.next_poll(
                now - entry.submitted_at,
                k=self._k,
                min_interval=policy.min_interval,
                max_interval=policy.max_interval,
                size_class=entry.size_class,
            )
            due = entry.submitted_at + offset
            if entry.polls == 0 and model.cdf(offset, size_class=entry.size_class) > _FIRST_SEEN:
                # A first poll that sees most tasks done stays where the model puts it: their
                # delay moves one for one with it, and a closed loop submits on ticks, so
                # rounding it would shift every such task's delay the same way.
                return due
            return on_tick(due, now, now + policy.min_interval, now + policy.max_interval)
        return now + policy.interval(entry.polls, self._rng)

    def _learn(self, entry: TaskEntry) -> None:
        """Tell the model a task finished between its last pending poll and the one that saw it."""
        if entry.finished_at is None or self.policy.target_delay is None:
            return
        last_pending = (
            entry.last_pending_at if entry.last_pending_at is not None else entry.submitted_at
        )
        self.model.observe_interval(
            last_pending - entry.submitted_at,
            entry.finished_at - entry.submitted_at,
            size_class=entry.size_class,
            now=entry.finished_at,
        )

    # -- endings ----------------------------------------------------------------------------

    def finish(self, entry: TaskEntry, outcome: GenerationResult | NanoBananaError) -> bool:
        """Record a live task's outcome and wake whoever waits; False if it was not live."""
        if not entry.move(Phase.FINISHED):
            return False
        self._forget(entry)
        entry.outcome = outcome
        entry.finished_at = (
            entry.last_poll_at if entry.last_poll_at is not None else self._clock.now()
        )
        self.finished += 1
        if entry.event is not None:
            entry.event.set()
        listeners, entry.listeners = entry.listeners, []
        entry.observers = []
        for listener in listeners:
            try:
                listener(entry)
            except Exception:  # a listener's failure is its owner's; the other tasks go on
                logger.exception("a completion listener of task %s failed", entry.request_id)
        self._ended(entry)
        return True

    def _ended(self, entry: TaskEntry) -> None:
        if self._on_end is not None:
            try:
                self._on_end(entry)
            except Exception:
                logger.exception("the task-end hook failed for %s", entry.request_id)

    def _forget(self, entry: TaskEntry) -> None:
        if self._entries.get(entry.request_id) is entry:
            del self._entries[entry.request_id]
            if not self._entries:  # nothing left to poll: idle poll workers end
                idle, self._idle_pollers = self._idle_pollers, []
                for poller in idle:
                    if not poller.done():
                        poller.set_result(None)

    def drop(self, entry: TaskEntry) -> bool:
        """Stop polling a task nobody wants and cancel its poll in flight (without waiting)."""
        if not entry.move(Phase.ABANDONED):
            return False
        self._forget(entry)
        entry.listeners = []
        entry.observers = []
        if entry.poll_scope is not None:
            entry.poll_scope.cancel()
        self._ended(entry)
        return True

    async def abandon(self, entry: TaskEntry, *, wait: float = 5.0) -> None:
        """Stop polling a task nobody wants; cancel its poll in flight and see it end."""
        if not self.drop(entry):
            return
        if entry.poll_scope is not None:
            entry.poll_done = done = entry.poll_done or anyio.Event()
            with anyio.move_on_after(wait, shield=True):
                await done.wait()

    def close(self, reason: str = "the client was closed") -> None:
        """Fail every live task with ``ClientStateError`` (their waiters wake up)."""
        self._closed = True
        for entry in list(self._entries.values()):
            self.finish(entry, ClientStateError(f"{reason} before task {entry.request_id} ended"))
        self._heap.clear()

    # -- waiting ----------------------------------------------------------------------------

    async def outcome(self, entry: TaskEntry) -> None:
        """Wait until the entry has an outcome (the caller counts itself in ``waiters``)."""
        if entry.phase is Phase.FINISHED:
            return
        if entry.phase is Phase.ABANDONED:
            raise ClientStateError(f"task {entry.request_id} is no longer watched")
        if entry.event is None:
            entry.event = anyio.Event()
        await entry.event.wait()

    # -- the loop ---------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The scheduler loop; runs until cancelled (by the runtime's task group)."""
        # The backend's own scope class: ``anyio.CancelScope()`` looks the backend up per call.
        self._scope_class = type(anyio.CancelScope())
        async with anyio.create_task_group() as tg:
            task_status.started()
            clock = self._clock
            loop = asyncio.get_running_loop()
            while True:
                # Polls due within the next few ms leave with the one due now: one wake-up of
                # the loop (and of the event loop) for several polls instead of one each.
                horizon = clock.now() + self._coalesce
                while self._heap and self._heap[0][0] <= horizon:
                    for entry in self._take_due(horizon):
                        await self._launch(tg, entry)
                    horizon = clock.now() + self._coalesce
                now = clock.now()
                delay = self._heap[0][0] - now if self._heap else math.inf
                self._wake = wake = loop.create_future()
                try:
                    await clock.wait(delay, wake)
                finally:
                    self._wake = None

    async def _launch(self, tg: anyio.abc.TaskGroup, entry: TaskEntry) -> None:
        """Wait for budget and a poll slot, recheck the entry, then start its poll."""
        generation = entry.generation
        if self._budget is not None:
            await self._budget.acquire()
        await acquire(self._limiter, entry)
        # The wait above may have been long: the task may have been abandoned or finished.
        if entry.generation != generation or not entry.move(Phase.POLLING):
            self._limiter.release_on_behalf_of(entry)
            return
        self.polls_in_flight += 1
        while self._idle_pollers:
            poller = self._idle_pollers.pop()
            if not poller.done():  # not one cancelled while idle (the client closing)
                poller.set_result(entry)
                return
        tg.start_soon(self._poller, entry)

    async def _poller(self, entry: TaskEntry) -> None:
        """A poll worker: polls its entry, then waits to be handed the next one.

        The loop hands a due poll to an idle worker (one future set) rather than spawning a task
        per poll; workers are started only when none is idle, so there are never more than the
        concurrent-poll limit. They end when nothing is watched any more (or the loop ends).

        A worker's polls share one cancel scope, which ``drop`` cancels to stop the poll in
        flight. After a poll in a cancelled scope the worker leaves it before anything else
        awaits (so the cancellation reaches no other task's poll) and opens a fresh one. A scope
        per poll cost about 3 µs, a sixth of the SDK's own work per poll of a running task
        (``python -m benchmarks profile --offline --pending 8``).
        """
        next_entry: TaskEntry | None = entry
        while next_entry is not None:
            scope = self._scope_class()
            with scope:
                while next_entry is not None:
                    await self._poll(next_entry, scope)
                    if scope.cancel_called:
                        break  # spent: leave it now, before the next await
                    next_entry = await self._handed()
            if next_entry is not None:  # left the scope after a cancelled poll of next_entry
                next_entry = await self._handed()

    async def _handed(self) -> TaskEntry | None:
        """Wait idle for the loop to hand over a due poll; None once nothing is watched."""
        if not self._entries:
            return None  # nothing watched: end now (a later poll starts a worker again)
        waiter: asyncio.Future[TaskEntry | None] = asyncio.get_running_loop().create_future()
        self._idle_pollers.append(waiter)
        return await waiter  # None: nothing is watched any more

    def _take_due(self, now: float) -> list[TaskEntry]:
        """The next due entries to poll: the earliest, or under a budget the likeliest done."""
        due: list[TaskEntry] = []
        limit = 1 if self._budget is None else _PRIORITY_WINDOW
        while self._heap and self._heap[0][0] <= now and len(due) < limit:
            _, _, generation, entry = heapq.heappop(self._heap)
            if generation == entry.generation and entry.phase is Phase.QUEUED:
                due.append(entry)
        if len(due) <= _PRIORITY_BATCH:
            return due
        due.sort(key=lambda e: self._priority(e, now), reverse=True)
        for entry in due[_PRIORITY_BATCH:]:
            heapq.heappush(self._heap, (entry.due, next(self._seq), entry.generation, entry))
        return due[:_PRIORITY_BATCH]

    def _priority(self, entry: TaskEntry, now: float) -> float:
        """P(finished since the last poll); overdue tasks rise so none starves."""
        last_poll = entry.last_poll_at if entry.last_poll_at is not None else entry.submitted_at
        last = last_poll - entry.submitted_at
        elapsed = now - entry.submitted_at
        if now - entry.due > self.policy.max_interval:
            return 1.0
        if self.model.ready:
            return self.model.completion_probability(last, elapsed, size_class=entry.size_class)
        return min(1.0, (elapsed - last) / max(elapsed, 1e-9))

    async def _poll(self, entry: TaskEntry, scope: anyio.CancelScope | None) -> None:
        """One poll of a POLLING entry, its slot released and its phase settled at the end.

        A worker's poll runs inside the worker's cancel ``scope``, which ``drop`` cancels. An
        inline poll (``scope`` None) runs in the caller's task, which the caller's own
        cancellation stops; dropped meanwhile, its answer is discarded (no longer live).
        """
        entry.poll_scope = scope
        try:
            # Abandoned between the launch and this task's first step: send nothing.
            if entry.phase is Phase.POLLING:
                await self._poll_once(entry)
        except NanoBananaError as exc:
            self._on_error(entry, exc)
        except Exception as exc:
            # A bug in parsing one hostile response must end that task, not every task of the
            # client (an exception here would take down the scheduler's task group).
            logger.exception("unexpected error polling %s", entry.request_id)
            self.finish(entry, ProtocolError(f"unexpected error while polling: {exc!r}"[:300]))
        finally:
            self.polls_in_flight -= 1
            self._limiter.release_on_behalf_of(entry)
            entry.poll_scope = None
            if entry.poll_done is not None:  # created only when someone waits (abandon)
                entry.poll_done.set()
                entry.poll_done = None
            if entry.phase is Phase.POLLING:  # a path that decided nothing: poll again later
                self._requeue(
                    entry, self._clock.now() + self.policy.interval(entry.polls, self._rng)
                )

    async def _poll_once(self, entry: TaskEntry) -> None:
        entry.polls += 1
        self.polls_sent += 1
        # The time the request left: what a detection delay is measured from.
        entry.last_poll_at = self._clock.now()
        late = max(0.0, entry.last_poll_at - entry.due)  # early (coalesced) counts as on time
        self.lateness_total += late
        self.lateness_max = max(self.lateness_max, late)
        if entry.use_status_route:
            url = self._transport.task_url(entry.request_id, "status", entry.ticket.status_url)
            resp = await self._get(url, "status")
            if resp.status >= 300:
                self._on_error_response(entry, resp)
                return
            status = parse_status(resp.json())
            if status.state is TaskState.SUCCEEDED:
                entry.use_status_route = False  # the next GET fetches the result at once
                entry.polls -= 1
                self.polls_sent -= 1
                await self._poll_once(entry)
                return
            self._on_status(entry, status)
            return
        resp = await self._get(entry.poll_url, "result")
        if resp.status >= 300:
            self._on_error_response(entry, resp)
            return
        parsed = parse_response(resp.status, resp.json())
        if isinstance(parsed, GenerationResult):
            if not parsed.request_id:
                parsed = attrs.evolve(parsed, request_id=entry.request_id)
            entry.state = TaskState.SUCCEEDED
            outcome: GenerationResult | NanoBananaError = parsed
            if entry.expect_image and not parsed.images:
                outcome = NoImageError(
                    request_id=entry.request_id,
                    text=parsed.text,
                    outputs=parsed.outputs,
                    metadata=parsed.metadata,
                )
            if self.finish(entry, outcome):
                self._learn(entry)
        elif parsed.state is TaskState.SUCCEEDED:
            # The result route itself says "done" but brings no result: polling it again at
            # once would loop; let the error backoff and ``max_errors`` decide.
            raise ProtocolError("the task completed but its result route carries no result")
        else:
            self._on_status(entry, parsed)

    def _get(self, url: str, kind: str) -> Awaitable[Any]:
        # The transport's coroutine itself (not awaited in a frame of its own here): one frame
        # less to pass through each time the poll resumes.
        return self._transport.request(
            "GET", url, kind=kind, retry=NO_RETRY, ok_statuses=_EVERY_ERROR_STATUS
        )

    def _on_error_response(self, entry: TaskEntry, resp: Any) -> None:
        try:
            body = resp.json()
        except NanoBananaError:
            body = None
        failure_body = isinstance(body, dict) and ("error" in body or "error_type" in body)
        if failure_body and resp.status not in _ACCOUNT_STATUSES and resp.status < 500:
            self._on_status(entry, parse_status(body))
            return
        error = error_from_response(resp.status, resp.headers, resp.body)
        if resp.status in (400, 405, 409) and not entry.fell_back:
            # A server that does not answer 202 on the response route while running: fall
            # back to polling the status route for this task (once: never ping-pong).
            logger.debug("response route answered %d; polling status instead", resp.status)
            entry.use_status_route = entry.fell_back = True
            self._requeue(entry, self._clock.now())
            return
        raise error

    def _on_status(self, entry: TaskEntry, status: TaskStatus) -> None:
        entry.errors = 0
        now = self._clock.now()
        if status.state is TaskState.IN_PROGRESS and entry.started_at is None:
            entry.started_at = now
        changed = (
            status.state is not entry.state
            or status.queue_position != entry.queue_position
            or status.progress != entry.progress
            or len(status.logs) != entry.logs_seen
        )
        entry.state = status.state
        entry.queue_position = status.queue_position
        entry.progress = status.progress
        entry.logs_seen = len(status.logs)
        if changed or entry.polls == 1:
            for observer in entry.observers:
                try:
                    observer(entry, status)
                except Exception:
                    logger.exception("a status observer of task %s failed", entry.request_id)
        if status.state is TaskState.FAILED:
            self.finish(entry, _task_error(TaskFailedError, entry, status))
        elif status.state is TaskState.CANCELLED:
            self.finish(entry, _task_error(TaskCancelledError, entry, status))
        elif status.state is TaskState.SUCCEEDED:
            entry.use_status_route = False
            self._requeue(entry, now)
        else:
            entry.last_pending_at = entry.last_poll_at
            self._requeue(entry, self._next_due(entry, now))

    def _on_error(self, entry: TaskEntry, error: NanoBananaError) -> None:
        if isinstance(error, _FINAL_ERRORS):
            if isinstance(error, NotFoundError):
                error = NotFoundError(
                    f"task {entry.request_id} not found (unknown id, or its result expired)",
                    status_code=404,
                    request_id=entry.request_id,
                )
            self.finish(entry, error)
            return
        entry.errors += 1
        if entry.errors >= self.policy.max_errors:
            self.finish(entry, error)
            return
        retry = self._transport.retry
        wait = getattr(error, "retry_after", None)
        if not isinstance(error, (RateLimitError, ServerError)) or wait is None:
            wait = retry.backoff(entry.errors, self._rng)
        elif wait > retry.max_retry_after:
            # As for any other request: a server asking for longer than the policy allows ends
            # the wait with its error, rather than parking the task for, say, 1e12 s.
            self.finish(entry, error)
            return
        logger.debug("poll of %s failed (%s); next in %.2f s", entry.request_id, error, wait)
        self._requeue(
            entry, self._clock.now() + max(wait, self.policy.interval(entry.polls, self._rng))
        )


def on_tick(due: float, now: float, lo: float, hi: float) -> float:
    """``due`` moved to the coarsest shared tick within reach, staying within ``[lo, hi]``.

    Ticks are the multiples, on the absolute clock, of powers of two. A poll may move by at most
    ``_TICK_REACH`` of its interval ``due - now``, early or late; of the instants in that reach
    it takes the one on the coarsest grid (there is exactly one). Grids nest, so polls of tasks
    with quite different intervals converge on the same few instants and leave on one wake-up
    of the process, as a hand-written loop polling every task on one fixed phase does. A wake-up
    of an idle process costs it about 0.2 ms of CPU, more than a request, and the requests after
    it run on cold caches; moving a poll around Keller's optimum costs only second-order polls
    and delay. In the policy simulation (lognormal(20 s, 0.5), 50 in flight) the process wakes
    0.83 times a second instead of 12.8 without ticks (2.0 on the nearest tick of a grid of half
    the interval, the rule before), for 3.2% of efficiency (1.2% more than that grid); at real
    time the client's CPU per request fell by about a sixth against that grid. Deterministic;
    ``due`` itself when no instant in reach fits the bounds.
    """
    interval = due - now
    if not (interval > 0 and math.isfinite(due)):
        return due
    reach = _TICK_REACH * interval
    first = max(due - reach, lo)
    last = min(due + reach, hi)
    if not 0 < first < last:
        return due
    # The finest grid with a tick in [first, last] for sure, then coarser while one still fits.
    step = math.ldexp(1.0, math.frexp(last - first)[1] - 1)
    while math.ceil(first / (2 * step)) * 2 * step <= last:
        step *= 2
    return math.ceil(first / step) * step


def _task_error(
    cls: type[TaskFailedError | TaskCancelledError], entry: TaskEntry, status: TaskStatus
) -> NanoBananaError:
    message = status.error_message or ("cancelled" if cls is TaskCancelledError else "task failed")
    return cls(
        message,
        request_id=entry.request_id,
        error_type=status.error_type,
        provider_error=status.provider_error,
    )


async def acquire(limiter: anyio.CapacityLimiter, token: object) -> None:
    """Borrow a token for ``token``, skipping the yield to the event loop when one is free.

    ``acquire_on_behalf_of`` always checkpoints (a scope and a loop round-trip); on the hot
    paths — one borrow per create and per poll — that costs more than the HTTP request itself.
    """
    try:
        limiter.acquire_on_behalf_of_nowait(token)
    except anyio.WouldBlock:
        await limiter.acquire_on_behalf_of(token)


def unwrap(entry: TaskEntry) -> GenerationResult:
    """The entry's result, or raise its error."""
    outcome = entry.outcome
    if isinstance(outcome, GenerationResult):
        return outcome
    if isinstance(outcome, BaseException):
        raise outcome
    raise ClientStateError(f"task {entry.request_id} has no outcome")
