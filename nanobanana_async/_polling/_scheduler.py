"""PollScheduler: one loop that polls every task the client waits on.

Tasks sit in a heap ordered by their next due time; there is no coroutine per task. When a poll is
due the loop borrows a token from a ``CapacityLimiter`` (the bound on concurrent polls) and runs the
poll in the scheduler's task group. Each poll GETs the task's *response* URL, which answers 202 with
the status while the task runs, so the poll that sees completion also brings the result. A poll's
outcome either finishes the task (waking its waiters and listeners) or puts it back in the heap at
the time the ``PollPolicy`` says.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import attrs

from .._http._pacer import AdaptiveRateLimiter
from .._http._retry import NO_RETRY
from .._http._transport import Response, Transport
from .._http._wire import parse_response, parse_status
from ..errors import (
    AuthenticationError,
    ClientStateError,
    InsufficientCreditsError,
    NanoBananaError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ServerError,
    TaskCancelledError,
    TaskFailedError,
    error_from_response,
)
from ..errors import TimeoutError as SDKTimeoutError
from ..models import GenerationResult, TaskState, TaskStatus, Ticket
from ._model import CompletionModel
from ._policy import PollPolicy

__all__ = ["PollPolicy", "PollScheduler", "TaskEntry", "acquire"]

logger = logging.getLogger("nanobanana_async")
Clock = Callable[[], float]
Listener = Callable[["TaskEntry"], None]
Observer = Callable[["TaskEntry", TaskStatus], None]
# Under a poll budget, rank this many due tasks at a time and poll the best few of them.
_PRIORITY_WINDOW = 256
# Polls handle every status themselves (202 pending, failure bodies, 429 and 5xx backoff).
_EVERY_ERROR_STATUS = frozenset(range(300, 600))
_PRIORITY_BATCH = 16
_FINAL_ERRORS = (
    AuthenticationError,
    PermissionDeniedError,
    NotFoundError,
    InsufficientCreditsError,
)


@attrs.define(eq=False)
class TaskEntry:
    """The scheduler's record of one task being waited on (small: no coroutine, no history)."""

    ticket: Ticket
    poll_url: str
    submitted_at: float
    due: float = 0.0
    generation: int = 0
    polls: int = 0
    errors: int = 0
    state: TaskState = TaskState.IN_QUEUE
    queue_position: int | None = None
    started_at: float | None = None
    last_poll_at: float | None = None
    last_pending_at: float | None = None
    finished_at: float | None = None
    outcome: GenerationResult | NanoBananaError | None = None
    waiters: int = 0
    event: anyio.Event | None = None
    listeners: list[Listener] = attrs.field(factory=list)
    observers: list[Observer] = attrs.field(factory=list)
    use_status_route: bool = False
    poll_scope: anyio.CancelScope | None = None
    poll_done: anyio.Event | None = None

    @property
    def request_id(self) -> str:
        """The task's request id."""
        return self.ticket.request_id

    @property
    def done(self) -> bool:
        """True once the task has an outcome."""
        return self.outcome is not None


class PollScheduler:
    """Polls every watched task from one loop, bounded by a limiter on concurrent polls."""

    def __init__(
        self,
        transport: Transport,
        policy: PollPolicy,
        *,
        max_concurrent_polls: int,
        clock: Clock = anyio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        self._transport = transport
        self.policy = policy
        self._clock = clock
        self._rng = rng or random.Random()
        self._limiter = anyio.CapacityLimiter(max_concurrent_polls)
        self.model = CompletionModel(min_samples=policy.min_samples)
        self._k: float | None = None
        self._budget = (
            AdaptiveRateLimiter(max_rate=policy.max_polls_per_second)
            if policy.max_polls_per_second
            else None
        )
        self._heap: list[tuple[float, int, int, TaskEntry]] = []
        self._seq = itertools.count()
        self._entries: dict[str, TaskEntry] = {}
        self._wakeup = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False
        self.polls_sent = 0
        self.finished = 0
        # How late due polls leave (seconds): the scheduler's own latency, for benchmarks.
        self.lateness_total = 0.0
        self.lateness_max = 0.0

    def __repr__(self) -> str:
        return f"<PollScheduler watching={len(self._entries)} due_heap={len(self._heap)}>"

    @property
    def watching(self) -> int:
        """Number of tasks currently being polled."""
        return len(self._entries)

    def entries(self) -> list[TaskEntry]:
        """A snapshot of the tasks being polled."""
        return list(self._entries.values())

    # -- registration -----------------------------------------------------------------------

    def watch(self, ticket: Ticket, *, submitted_at: float | None = None) -> TaskEntry:
        """Start polling a task (or return the entry already polling it)."""
        if self._closed:
            raise ClientStateError("the client is closed")
        entry = self._entries.get(ticket.request_id)
        if entry is not None:
            return entry
        now = self._clock()
        url = self._transport.task_url(ticket.request_id, "response", ticket.response_url)
        entry = TaskEntry(ticket, url, now if submitted_at is None else submitted_at)
        entry.queue_position = ticket.queue_position
        self._entries[ticket.request_id] = entry
        self._schedule(entry, self._next_due(entry, entry.submitted_at))
        return entry

    def _next_due(self, entry: TaskEntry, now: float) -> float:
        """When to poll next: the learned √hazard schedule once ready, else the backoff."""
        policy = self.policy
        if policy.target_delay is not None and self.model.ready:
            if self._k is None:
                self._k = self.model.k_for_target_delay(policy.target_delay)
            elapsed = now - entry.submitted_at
            offset = self.model.next_poll(
                elapsed,
                k=self._k,
                min_interval=policy.min_interval,
                max_interval=policy.max_interval,
            )
            return entry.submitted_at + offset
        return now + policy.interval(entry.polls, self._rng)

    def _learn(self, entry: TaskEntry) -> None:
        """Feed a finished task's completion time (midpoint of its last two polls) to the model."""
        if entry.finished_at is None or self.policy.target_delay is None:
            return
        last_pending = (
            entry.last_pending_at if entry.last_pending_at is not None else entry.submitted_at
        )
        completed = (last_pending + entry.finished_at) / 2
        before = self.model.samples
        self.model.observe(completed - entry.submitted_at)
        if self.model.samples != before and self.model.samples % 20 == 0:
            self._k = None  # refit: recompute K for the target delay

    def _schedule(self, entry: TaskEntry, due: float) -> None:
        entry.generation += 1
        entry.due = due
        heapq.heappush(self._heap, (due, next(self._seq), entry.generation, entry))
        if self._heap[0][3] is entry:
            self._wakeup.set()

    def drop(self, entry: TaskEntry) -> None:
        """Stop polling a task without finishing it (its stale heap item is skipped)."""
        entry.generation += 1
        if self._entries.get(entry.request_id) is entry:
            del self._entries[entry.request_id]

    async def abandon(self, entry: TaskEntry) -> None:
        """Stop polling a task and wait (briefly) until no poll of it is in flight."""
        self.drop(entry)
        if entry.poll_scope is not None:  # a poll is in flight: cancel it and see it end
            entry.poll_scope.cancel()
            entry.poll_done = done = entry.poll_done or anyio.Event()
            with anyio.move_on_after(5, shield=True):
                await done.wait()

    def finish(self, entry: TaskEntry, outcome: GenerationResult | NanoBananaError) -> None:
        """Record a task's outcome and wake whoever waits for it."""
        if entry.outcome is not None:
            return
        self.drop(entry)
        entry.outcome = outcome
        entry.finished_at = entry.last_poll_at or self._clock()
        self.finished += 1
        if entry.event is not None:
            entry.event.set()
        for listener in entry.listeners:
            listener(entry)
        entry.listeners.clear()
        entry.observers.clear()

    # -- waiting ----------------------------------------------------------------------------

    async def wait(
        self, entry: TaskEntry, *, timeout: float | None, cancel_on_abandon: bool
    ) -> GenerationResult:
        """Wait for a task's outcome; if abandoned (cancelled or timed out), cancel it remotely."""
        if entry.outcome is None:
            entry.waiters += 1
            if entry.event is None:
                entry.event = anyio.Event()
            try:
                with anyio.fail_after(timeout):
                    await entry.event.wait()
            except BaseException as exc:
                entry.waiters -= 1
                if entry.outcome is None and entry.waiters == 0 and not entry.listeners:
                    await self.abandon(entry)
                    if cancel_on_abandon:
                        await self.cancel_remote(entry)
                if type(exc) is TimeoutError:  # anyio's deadline, not one of ours
                    raise SDKTimeoutError(
                        f"task {entry.request_id} not finished after {timeout:g} s"
                        + (" (cancelled remotely)" if cancel_on_abandon else "")
                    ) from None
                raise
            entry.waiters -= 1
        return unwrap(entry)

    async def cancel_remote(self, entry: TaskEntry) -> bool:
        """Ask the service to cancel the task, shielded and within the cancel timeout."""
        url = self._transport.task_url(entry.request_id, "cancel", entry.ticket.cancel_url)
        with anyio.move_on_after(self._transport.timeout.cancel, shield=True):
            try:
                resp = await self._transport.request(
                    "PUT", url, kind="cancel", ok_statuses=frozenset({400, 404})
                )
            except NanoBananaError as exc:
                logger.warning("could not cancel task %s: %s", entry.request_id, exc)
                return False
            logger.debug("cancel %s -> %d", entry.request_id, resp.status)
            return resp.status == 202 or resp.status < 300
        logger.warning("cancelling task %s timed out", entry.request_id)
        return False

    # -- the loop ---------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The scheduler loop; runs until cancelled (by the client's task group)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            while True:
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    for entry in self._take_due(now):
                        if self._budget is not None:
                            await self._budget.acquire()
                        await acquire(self._limiter, entry)
                        tg.start_soon(self._poll, entry)
                    now = self._clock()
                delay = self._heap[0][0] - now if self._heap else math.inf
                self._wakeup = anyio.Event()
                with anyio.move_on_after(delay):
                    await self._wakeup.wait()

    def _take_due(self, now: float) -> list[TaskEntry]:
        """The next due entries to poll: the earliest, or under a budget the likeliest done."""
        due: list[TaskEntry] = []
        limit = 1 if self._budget is None else _PRIORITY_WINDOW
        while self._heap and self._heap[0][0] <= now and len(due) < limit:
            _, _, generation, entry = heapq.heappop(self._heap)
            if generation == entry.generation and entry.outcome is None:
                due.append(entry)
        if len(due) <= _PRIORITY_BATCH:
            return due
        due.sort(key=lambda e: self._priority(e, now), reverse=True)
        for entry in due[_PRIORITY_BATCH:]:
            heapq.heappush(self._heap, (entry.due, next(self._seq), entry.generation, entry))
        return due[:_PRIORITY_BATCH]

    def _priority(self, entry: TaskEntry, now: float) -> float:
        """P(finished since the last poll); overdue tasks rise so none starves."""
        last = (entry.last_poll_at or entry.submitted_at) - entry.submitted_at
        elapsed = now - entry.submitted_at
        if now - entry.due > self.policy.max_interval:
            return 1.0
        if self.model.ready:
            return self.model.completion_probability(last, elapsed)
        return min(1.0, (elapsed - last) / max(elapsed, 1e-9))

    def close(self, reason: str = "the client was closed") -> None:
        """Fail every pending task with ``ClientStateError`` (their waiters wake up)."""
        self._closed = True
        for entry in list(self._entries.values()):
            self.finish(entry, ClientStateError(f"{reason} before task {entry.request_id} ended"))
        self._heap.clear()

    async def _poll(self, entry: TaskEntry) -> None:
        entry.poll_scope = scope = anyio.CancelScope()
        try:
            with scope:
                await self._poll_once(entry)
        except NanoBananaError as exc:
            self._on_error(entry, exc)
        except Exception as exc:
            # A bug in parsing one hostile response must end that task, not every task of the
            # client (an exception here would take down the scheduler's task group).
            logger.exception("unexpected error polling %s", entry.request_id)
            self.finish(entry, ProtocolError(f"unexpected error while polling: {exc!r}"[:300]))
        finally:
            self._limiter.release_on_behalf_of(entry)
            entry.poll_scope = None
            if entry.poll_done is not None:  # created only when someone waits (abandon)
                entry.poll_done.set()
                entry.poll_done = None

    async def _poll_once(self, entry: TaskEntry) -> None:
        entry.polls += 1
        self.polls_sent += 1
        # The time the request left: what a detection delay is measured from.
        entry.last_poll_at = self._clock()
        late = entry.last_poll_at - entry.due
        self.lateness_total += late
        self.lateness_max = max(self.lateness_max, late)
        if entry.use_status_route:
            url = self._transport.task_url(entry.request_id, "status", entry.ticket.status_url)
            status = parse_status((await self._get(url, "status")).json())
            if status.state is TaskState.SUCCEEDED:
                entry.use_status_route = False  # the next GET fetches the result at once
                entry.polls -= 1
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
            self.finish(entry, parsed)
            self._learn(entry)
        else:
            self._on_status(entry, parsed)

    async def _get(self, url: str, kind: Any) -> Response:
        return await self._transport.request(
            "GET", url, kind=kind, retry=NO_RETRY, ok_statuses=_EVERY_ERROR_STATUS
        )

    def _on_error_response(self, entry: TaskEntry, resp: Response) -> None:
        try:
            body = resp.json()
        except NanoBananaError:
            body = None
        failure_body = isinstance(body, dict) and ("error" in body or "error_type" in body)
        if failure_body and resp.status not in (401, 403, 429) and resp.status < 500:
            self._on_status(entry, parse_status(body))
            return
        error = error_from_response(resp.status, resp.headers, resp.body)
        if resp.status in (400, 405, 409) and not entry.use_status_route:
            # A server that does not answer 202 on the response route while running:
            # fall back to polling the status route for this task.
            logger.debug("response route answered %d; polling status instead", resp.status)
            entry.use_status_route = True
            self._schedule(entry, self._clock())
            return
        raise error

    def _on_status(self, entry: TaskEntry, status: TaskStatus) -> None:
        entry.errors = 0
        now = self._clock()
        if status.state is TaskState.IN_PROGRESS and entry.started_at is None:
            entry.started_at = now
        changed = status.state is not entry.state or status.queue_position != entry.queue_position
        entry.state = status.state
        entry.queue_position = status.queue_position
        if changed or entry.polls == 1:
            for observer in entry.observers:
                observer(entry, status)
        if status.state is TaskState.FAILED:
            self.finish(entry, _task_error(TaskFailedError, entry, status))
        elif status.state is TaskState.CANCELLED:
            self.finish(entry, _task_error(TaskCancelledError, entry, status))
        elif status.state is TaskState.SUCCEEDED:
            entry.use_status_route = False
            self._schedule(entry, now)
        else:
            entry.last_pending_at = entry.last_poll_at
            self._schedule(entry, self._next_due(entry, now))

    def _on_error(self, entry: TaskEntry, error: NanoBananaError) -> None:
        if isinstance(error, _FINAL_ERRORS) or entry.outcome is not None:
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
        wait = getattr(error, "retry_after", None)
        if not isinstance(error, (RateLimitError, ServerError)) or wait is None:
            wait = self._transport.retry.backoff(entry.errors, self._rng)
        elif wait > self._transport.retry.max_retry_after:
            # As for any other request: a server asking for longer than the policy allows ends
            # the wait with its error, rather than parking the task for, say, 1e12 s.
            self.finish(entry, error)
            return
        logger.debug("poll of %s failed (%s); next in %.2f s", entry.request_id, error, wait)
        self._schedule(
            entry, self._clock() + max(wait, self.policy.interval(entry.polls, self._rng))
        )


def _task_error(
    cls: type[TaskFailedError | TaskCancelledError], entry: TaskEntry, status: TaskStatus
) -> NanoBananaError:
    message = status.error_message or ("cancelled" if cls is TaskCancelledError else "task failed")
    return cls(message, request_id=entry.request_id, error_type=status.error_type)


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
    raise RuntimeError(f"task {entry.request_id} has no outcome yet")
