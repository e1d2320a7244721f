"""The runtime: the one seam between the public verbs and the machinery.

It owns the transport, the poll scheduler, the create limiter, the counters and the task group
that background work runs in. ``Client``, ``Job``, the batch engine and the downloader call only
its methods. Work spawned here is *contained*: an exception that escapes it goes to the owner's
``on_error`` and never cancels the task group, so one user's failing input, hook or journal cannot
take the shared client down.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, overload

import aiohttp
import anyio
import anyio.abc

from ._http._retry import RetryPolicy
from ._http._transport import Transport
from ._http._wire import encode_request, parse_status, parse_ticket
from ._polling._entry import Listener, Observer, TaskEntry
from ._polling._policy import PollPolicy
from ._polling._scheduler import Clock, PollScheduler, acquire, unwrap
from .errors import (
    ClientStateError,
    NanoBananaError,
    ProtocolError,
    SubmissionUnknownError,
    TaskCancelledError,
)
from .errors import TimeoutError as SDKTimeoutError
from .models import GenerationRequest, GenerationResult, TaskState, TaskStatus, Ticket

__all__ = ["Runtime", "TaskUpdates"]

logger = logging.getLogger("nanobanana_async")
# The cancel route's answers: 202 accepted; 400 already finished (nothing to cancel).
_CANCEL_OK = frozenset({400})


class Runtime:
    """Transport + scheduler + limits + counters + task group, behind a few methods."""

    def __init__(
        self,
        transport: Transport,
        policy: PollPolicy,
        *,
        rng: random.Random,
        clock: Clock | None = None,
    ) -> None:
        self.transport = transport
        self.policy = policy
        self._rng = rng
        self._clock = clock
        self._create_limiter = anyio.CapacityLimiter(transport.limits.max_concurrent_creates)
        self._scheduler: PollScheduler | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False
        self.submitted = 0
        self.succeeded = 0
        self.failed = 0
        self.task_retries = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the transport and run the scheduler until cancelled; close the transport after."""
        await self.transport.open()
        try:
            async with anyio.create_task_group() as tg:
                self._scheduler = PollScheduler(
                    self.transport,
                    self.policy,
                    max_concurrent_polls=self.transport.limits.max_concurrent_polls,
                    clock=self._clock,
                    rng=self._rng,
                    on_end=self.transport.task_end_hook(),
                )
                await tg.start(self._scheduler.run)
                self._tg = tg
                task_status.started()
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True):
                await self.transport.close()

    @property
    def scheduler(self) -> PollScheduler:
        """The poll scheduler (raises ``ClientStateError`` when the runtime is not running)."""
        if self._scheduler is None or self._tg is None or self._closing:
            raise ClientStateError("the Client is closed")
        return self._scheduler

    def _require_running(self) -> None:
        """``ClientStateError`` unless the runtime is running and not closing."""
        self.scheduler  # noqa: B018 - the property raises when closed

    def now(self) -> float:
        """The scheduler's clock (readable while closing, unlike the verbs)."""
        if self._scheduler is None:
            return anyio.current_time()
        return self._scheduler.clock.now()

    async def shutdown(self, *, cancel_remote: bool) -> None:
        """Cancel the waited-on tasks remotely (bounded), fail the rest, stop background work."""
        scheduler, tg = self._scheduler, self._tg
        if scheduler is None or tg is None or self._closing:
            return
        self._closing = True
        wanted = [e for e in scheduler.entries() if e.wanted]
        if cancel_remote and wanted:
            await self.cancel_many(wanted)
        scheduler.close()
        tg.cancel_scope.cancel()

    def spawn(
        self,
        func: Callable[[], Awaitable[None]],
        *,
        on_error: Callable[[Exception], None],
        name: str | None = None,
    ) -> None:
        """Run ``func`` in the background; an exception it raises goes to ``on_error``, not up."""
        if self._tg is None or self._closing:
            raise ClientStateError("the Client is closed")

        async def contained() -> None:
            try:
                await func()
            except Exception as exc:  # noqa: BLE001 - containment: handed to the owner
                try:
                    on_error(exc)
                except Exception:
                    logger.exception("the error handler of background work failed")

        self._tg.start_soon(contained, name=name)

    # -- counters ---------------------------------------------------------------------------

    def count_outcome(self, ok: bool) -> None:
        """Count a delivered ``stream``/``map`` outcome."""
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1

    # -- verbs ------------------------------------------------------------------------------

    @overload
    async def create(
        self,
        request: GenerationRequest,
        *,
        retry: RetryPolicy | None = ...,
        token: object = ...,
        proceed: None = ...,
    ) -> Ticket: ...

    @overload
    async def create(
        self,
        request: GenerationRequest,
        *,
        retry: RetryPolicy | None = ...,
        token: object = ...,
        proceed: Callable[[], bool],
    ) -> Ticket | None: ...

    async def create(
        self,
        request: GenerationRequest,
        *,
        retry: RetryPolicy | None = None,
        token: object = None,
        proceed: Callable[[], bool] | None = None,
    ) -> Ticket | None:
        """POST one task under the create limiter; never re-sent ambiguously.

        ``proceed`` is asked once a create slot is held, just before sending: False sends
        nothing and returns None (a batch that stopped while this create waited for a slot).
        """
        self._require_running()  # before anything is sent
        body = encode_request(request)
        owner = token if token is not None else object()
        await acquire(self._create_limiter, owner)
        try:
            if proceed is not None and not proceed():
                return None
            transport = self.transport
            resp = await transport.request(
                "POST", transport.create_url, kind="create", json_body=body, retry=retry
            )
        finally:
            self._create_limiter.release_on_behalf_of(owner)
        try:
            ticket = parse_ticket(resp.json())
        except ProtocolError as exc:
            raise SubmissionUnknownError(
                f"create answered {resp.status} with an unreadable body", request_body=body
            ) from exc
        self.submitted += 1
        return ticket

    async def fetch_status(self, ticket: Ticket) -> TaskStatus:
        """GET the task's status once."""
        self._require_running()
        url = self.transport.task_url(ticket.request_id, "status", ticket.status_url)
        resp = await self.transport.request("GET", url, kind="status")
        return parse_status(resp.json())

    def watch(
        self,
        ticket: Ticket,
        *,
        submitted_at: float | None = None,
        expect_image: bool | None,
        size_class: str | None = None,
    ) -> TaskEntry:
        """Have the scheduler poll a task (shared with anyone already watching it)."""
        return self.scheduler.watch(
            ticket, submitted_at=submitted_at, expect_image=expect_image, size_class=size_class
        )

    def watch_and_poll(
        self,
        ticket: Ticket,
        *,
        submitted_at: float,
        expect_image: bool | None,
        size_class: str | None,
        listener: Listener,
        observer: Observer | None = None,
    ) -> Awaitable[TaskEntry]:
        """``watch`` with a completion listener (and a status observer); a first poll due at
        once is sent from the caller's task, so the listener may have run when this returns.
        (The scheduler's coroutine itself: no frame of its own on the hot path.)"""
        return self.scheduler.watch_and_poll(
            ticket,
            submitted_at=submitted_at,
            expect_image=expect_image,
            size_class=size_class,
            listener=listener,
            observer=observer,
        )

    def watched(self, request_id: str) -> TaskEntry | None:
        """The live entry of a task the scheduler polls, if any."""
        return self._scheduler.entry(request_id) if self._scheduler is not None else None

    async def wait(
        self,
        ticket: Ticket,
        *,
        timeout: float | None,
        cancel_on_abandon: bool,
        expect_image: bool | None = None,
        on_update: Callable[[TaskStatus], None] | None = None,
        known: TaskEntry | None = None,
        size_class: str | None = None,
    ) -> GenerationResult:
        """Wait for a task's outcome; the last waiter to give up stops it (and cancels it).

        ``on_update`` is called with each status change the scheduler's polls see (no extra
        requests). ``known``: an entry of this task that may have finished already.
        """
        scheduler = self.scheduler
        if known is not None and known.done:
            return unwrap(known)
        entry = scheduler.watch(ticket, expect_image=expect_image, size_class=size_class)
        entry.waiters += 1
        observer = None
        if on_update is not None:
            callback = on_update

            def observer(_: TaskEntry, status: TaskStatus) -> None:
                callback(status)

            entry.observers.append(observer)
        try:
            with anyio.fail_after(timeout):
                await scheduler.outcome(entry)
        except BaseException as exc:
            entry.waiters -= 1
            if observer is not None and observer in entry.observers:
                entry.observers.remove(observer)
            if entry.live and not entry.wanted:
                await self.release([entry], cancel_remote=cancel_on_abandon)
            if type(exc) is TimeoutError:  # anyio's deadline, not one of ours
                raise SDKTimeoutError(
                    f"task {entry.request_id} not finished after {timeout:g} s"
                    + (" (cancelled remotely)" if cancel_on_abandon else "")
                ) from None
            raise
        entry.waiters -= 1
        return unwrap(entry)

    def updates(
        self, ticket: Ticket, *, expect_image: bool | None, size_class: str | None = None
    ) -> TaskUpdates:
        """Follow a task's status changes, fed by the scheduler's polls."""
        entry = self.scheduler.watch(ticket, expect_image=expect_image, size_class=size_class)
        return TaskUpdates(self.scheduler, entry)

    async def release(self, entries: Iterable[TaskEntry], *, cancel_remote: bool) -> None:
        """Stop polling tasks nobody wants any more; cancel them on the service if asked."""
        scheduler = self._scheduler
        dropped = []
        for entry in entries:
            if entry.live and not entry.wanted:
                dropped.append(entry)
                if scheduler is not None:
                    await scheduler.abandon(entry)
        if cancel_remote and dropped:
            await self.cancel_many(dropped)

    async def cancel(self, ticket: Ticket) -> bool:
        """Ask the service to cancel a task: True if accepted, False if it had finished."""
        self._require_running()
        return await self._send_cancel(ticket)

    async def _send_cancel(self, ticket: Ticket) -> bool:
        url = self.transport.task_url(ticket.request_id, "cancel", ticket.cancel_url)
        resp = await self.transport.request("PUT", url, kind="cancel", ok_statuses=_CANCEL_OK)
        logger.debug("cancel %s -> %d", ticket.request_id, resp.status)
        return resp.status < 300

    async def cancel_many(self, entries: Iterable[TaskEntry]) -> int:
        """Cancel tasks remotely, concurrently, within ``Timeout.close`` overall; returns how
        many the service confirmed. Shielded (a cancelled caller still cleans up), but bounded.
        """
        tickets = [e.ticket for e in entries]
        if not tickets:
            return 0
        deadline = self.transport.timeout.close
        width = max(1, self.transport.limits.max_connections)
        confirmed = 0
        pending = iter(tickets)

        async def worker() -> None:
            nonlocal confirmed
            for ticket in pending:
                with anyio.move_on_after(self.transport.timeout.cancel):
                    try:
                        if await self._send_cancel(ticket):
                            confirmed += 1
                        continue
                    except NanoBananaError as exc:
                        logger.warning("could not cancel task %s: %s", ticket.request_id, exc)
                        continue
                logger.warning("cancelling task %s timed out", ticket.request_id)

        with anyio.move_on_after(deadline, shield=True) as scope:
            async with anyio.create_task_group() as tg:
                for _ in range(min(width, len(tickets))):
                    tg.start_soon(worker)
        if scope.cancelled_caught:
            logger.warning(
                "stopped cancelling after %g s: %d of %d tasks not confirmed cancelled",
                deadline,
                len(tickets) - confirmed,
                len(tickets),
            )
        return confirmed

    def download_session(self) -> aiohttp.ClientSession:
        """The open aiohttp session, for downloads (which send no key)."""
        self._require_running()
        return self.transport.session

    @property
    def rng(self) -> random.Random:
        """The client's random source (jitter; seeded in tests)."""
        return self._rng

    @property
    def retry(self) -> RetryPolicy:
        """The client's retry policy."""
        return self.transport.retry

    def stats_counts(self) -> dict[str, Any]:
        """The raw counters behind ``Client.stats``."""
        s = self._scheduler
        t = self.transport
        return {
            "submitted": self.submitted,
            "in_flight": s.watching if s else 0,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "send_rate": t.pacer.rate,
            "requests_sent": t.requests_sent,
            "rate_limited": t.rate_limited,
            "polls_sent": s.polls_sent if s else 0,
            "finished": s.finished if s else 0,
            "task_retries": self.task_retries,
        }


class TaskUpdates:
    """A task's status changes as the scheduler's polls see them, ending with its final status.

    ``async with job.updates() as updates: async for status in updates: ...``. No extra request
    is sent: the same polls that wait for the result feed it. While open it counts as someone
    waiting for the task (it is polled); closing it early cancels nothing on the service. A
    slow reader sees the latest changes (the buffer keeps the last 64).
    """

    def __init__(self, scheduler: PollScheduler, entry: TaskEntry) -> None:
        self._scheduler = scheduler
        self._entry = entry
        self._queue: collections.deque[TaskStatus] = collections.deque(maxlen=64)
        self._waiter: anyio.Event | None = None
        self._ended = False
        self._closed = False
        entry.waiters += 1
        entry.observers.append(self._on_status)
        entry.listeners.append(self._on_done)
        self._queue.append(
            TaskStatus(entry.state, entry.request_id, queue_position=entry.queue_position)
        )

    @property
    def entry(self) -> TaskEntry:
        """The scheduler's entry of the task (its outcome once the updates ended)."""
        return self._entry

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None

    def _on_status(self, entry: TaskEntry, status: TaskStatus) -> None:
        if not status.state.done:  # the final status comes from the outcome, once
            self._queue.append(status)
            self._wake()

    def _on_done(self, entry: TaskEntry) -> None:
        self._queue.append(final_status(entry))
        self._ended = True
        self._wake()

    def __aiter__(self) -> TaskUpdates:
        return self

    async def __anext__(self) -> TaskStatus:
        while not self._queue and not self._ended and not self._closed:
            if not self._entry.live and not self._entry.done:  # dropped under us (closed)
                break
            self._waiter = anyio.Event()
            await self._waiter.wait()
        if self._queue and not self._closed:
            return self._queue.popleft()
        self.close()
        raise StopAsyncIteration

    def close(self) -> None:
        """Stop following (the task is no longer polled for this reader; nothing is cancelled)."""
        if self._closed:
            return
        self._closed = True
        entry = self._entry
        entry.waiters -= 1
        if self._on_status in entry.observers:
            entry.observers.remove(self._on_status)
        if self._on_done in entry.listeners:
            entry.listeners.remove(self._on_done)
        if entry.live and not entry.wanted:
            self._scheduler.drop(entry)
        self._wake()

    async def aclose(self) -> None:
        """Same as ``close``, for ``async with`` and ``contextlib.aclosing``."""
        self.close()

    async def __aenter__(self) -> TaskUpdates:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()


def final_status(entry: TaskEntry) -> TaskStatus:
    """The status a finished entry ended in, built from its outcome."""
    outcome = entry.outcome
    if isinstance(outcome, GenerationResult):
        return TaskStatus(TaskState.SUCCEEDED, entry.request_id)
    state = TaskState.CANCELLED if isinstance(outcome, TaskCancelledError) else TaskState.FAILED
    error_type = getattr(outcome, "error_type", None) or type(outcome).__name__
    return TaskStatus(state, entry.request_id, error_type=error_type, error_message=str(outcome))
