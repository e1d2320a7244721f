"""The batch engine behind ``Client.stream`` and ``Client.map``.

Inputs are read lazily, one only when an in-flight slot is free (backpressure), submitted under
the submit rate and the client's bound on concurrent creates, then handed to the poll scheduler
as entries with a completion listener: no coroutine per task once it is submitted. An item's slot
is released when the consumer takes its outcome, so the outcome buffer never holds more than
``max_in_flight`` items.

Containment: the input iterable, ``on_event`` and the journal are the user's or the disk's, and
may fail. Such a failure stops the batch from *creating* anything more; every task already
created is still polled and its outcome delivered (and logged with its request id), and then the
consumer's ``async for`` raises the failure. Nothing escapes into the client's task group.
Abandoning the stream (``break``, cancellation, ``aclose``) stops reading input, lets creates
already on the wire finish (their ids must not be lost), and cancels the remote tasks still
running, per ``cancel_on_abandon``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs

from .._config import TaskRetry
from .._http._pacer import AdaptiveRateLimiter
from .._http._wire import encode_request
from .._polling._entry import TaskEntry
from ..errors import (
    AuthenticationError,
    BatchAbortedError,
    ClientStateError,
    InsufficientCreditsError,
    JournalError,
    JournalMismatchError,
    JournalStateError,
    NanoBananaError,
    PermissionDeniedError,
    RateLimitError,
    ValidationError,
)
from ..models import GenerationRequest, GenerationResult, TaskState, TaskStatus, Ticket
from ._resume import Plan, ResumeBinding
from ._types import (
    BatchEvent,
    BatchOptions,
    EventKind,
    Outcome,
    RequestLike,
    RequestSource,
    as_request,
)

if TYPE_CHECKING:
    from .._runtime import Runtime

__all__ = ["BatchEvent", "BatchStream", "EventKind", "Outcome", "RequestLike", "RequestSource"]

logger = logging.getLogger("nanobanana_async")
_CREATE = Plan(create=True)  # the plan of every item when there is no journal


@attrs.define(eq=False)
class _Item:
    index: int
    request: GenerationRequest | None = None
    request_id: str | None = None
    submitted_at: float | None = None
    entry: TaskEntry | None = None
    delivered: bool = False
    attempts: int = 1
    request_ids: list[str] = attrs.field(factory=list)
    finished_at: float | None = None


class BatchStream:
    """Async iterator over outcomes in completion order (``async with`` closes it at once).

    A thin handle over the engine that runs in the client's task group: the engine holds no
    reference back to it, so a ``break`` out of ``async for`` frees the handle, and freeing it
    abandons the batch.
    """

    def __init__(
        self,
        runtime: Runtime,
        source: RequestSource,
        options: BatchOptions,
        cancel: bool,
        task_retry: TaskRetry | None = None,
    ) -> None:
        self._engine = _Engine(runtime, source, options, cancel, task_retry)

    def __repr__(self) -> str:
        return repr(self._engine)

    def __aiter__(self) -> AsyncIterator[Outcome]:
        return self

    async def __anext__(self) -> Outcome:
        return await self._engine.next_outcome()

    def abandon(self) -> None:
        """Stop submitting and cancel the remote tasks still running (without waiting)."""
        self._engine.abandon()

    async def aclose(self) -> None:
        """Abandon the batch and wait until its cleanup (remote cancels) is done."""
        await self._engine.aclose()

    async def __aenter__(self) -> BatchStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None and engine.running:
            with contextlib.suppress(RuntimeError):  # the event loop is already gone
                engine.abandon()


class _Engine:
    """Feeds inputs, submits them, and turns scheduler completions into outcomes."""

    def __init__(
        self,
        runtime: Runtime,
        source: RequestSource,
        options: BatchOptions,
        cancel: bool,
        task_retry: TaskRetry | None = None,
    ) -> None:
        if not isinstance(source, (Iterable, AsyncIterable)) or isinstance(source, (str, bytes)):
            raise ValidationError("requests", source, "must be an iterable of requests or prompts")
        self._runtime = runtime
        self._source = source
        self._cancel_on_abandon = cancel
        self._on_event = options.on_event
        self._task_retry = options.task_retry if options.task_retry is not None else task_retry
        self._max_creates = options.max_creates
        self._creates = 0  # creates sent (or reserved) by this batch, earlier runs included
        # Slots: items read and not yet consumed. A counter and one event, not a limiter: the
        # hot path takes and gives a slot per item without a loop round-trip.
        self._free = options.max_in_flight
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._workers = max(
            1, min(options.max_in_flight, runtime.transport.limits.max_concurrent_creates)
        )
        self._reader = _InputReader(source, chunk=min(256, options.max_in_flight))
        self._read_scopes: set[anyio.CancelScope] = set()
        self._next_index = 0
        rate = options.submit_rate
        self._pacer = AdaptiveRateLimiter(max_rate=rate) if rate else None
        # Outcomes ready for the consumer (at most max_in_flight: each holds a slot) and the one
        # consumer waiting for the next; taking a ready outcome does not yield to the loop.
        self._ready: collections.deque[Outcome] = collections.deque()
        self._outcome_waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._closed = False
        self._items: dict[int, _Item] = {}
        self._scope = anyio.CancelScope()
        self._idle = anyio.Event()
        self._finished = anyio.Event()
        self._feeding = True
        self._undelivered = 0
        self._started = False
        self._abandoned = False
        self._fatal: BaseException | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._shield_class: type[anyio.CancelScope] = anyio.CancelScope
        journal = options.journal
        self._resume = (
            ResumeBinding(journal, resubmit_unknown=options.resubmit_unknown)
            if journal is not None
            else None
        )

    def __repr__(self) -> str:
        return f"<BatchStream in_flight={len(self._items)} abandoned={self._abandoned}>"

    @property
    def running(self) -> bool:
        """True between the first ``__anext__`` and the end of cleanup."""
        return self._started and not self._finished.is_set()

    async def next_outcome(self) -> Outcome:
        """The next outcome in completion order; at the end, the batch's failure or the end."""
        if not self._started:
            self._started = True
            self._runtime.spawn(self._run, on_error=self._fail, name="nanobanana-batch")
        ready = self._ready
        while not ready and not self._ended and not self._closed:
            waiter = self._outcome_waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            except BaseException:
                self.abandon()
                raise
        if not ready:
            if self._fatal is not None and not self._closed:
                raise self._fatal
            raise StopAsyncIteration
        outcome = ready.popleft()
        self._items.pop(outcome.index, None)
        self._give_slot()
        return outcome

    def abandon(self) -> None:
        """Stop submitting and cancel the remote tasks still running (without waiting)."""
        if not self._finished.is_set():
            self._abandoned = True
            self._scope.cancel()

    async def aclose(self) -> None:
        """Abandon the batch and wait until its cleanup is done."""
        self.abandon()
        if self._started:
            await self._finished.wait()
        self._closed = True
        self._ready.clear()

    # -- engine side (runs in the runtime's task group) ------------------------------------

    def _fail(self, error: BaseException) -> None:
        """A batch-wide failure: create nothing more; deliver what exists, then raise it."""
        if self._fatal is None:
            self._fatal = error
            logger.error("batch stopped: %s", error)
        for scope in self._read_scopes:  # workers blocked on a slow input stop reading now
            scope.cancel()

    async def _take_slot(self) -> None:
        if self._free > 0 and not self._slot_waiters:
            self._free -= 1
            return
        # First come, first served: a freed slot wakes one worker. The wake-ups here and in
        # ``next_outcome`` are bare loop futures (one per wait, each set at most once): an
        # anyio Event costs a backend lookup and a second object on every item's path.
        waiter = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._give_slot()  # handed a slot just as this worker was cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)
            raise

    def _give_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():  # not a worker cancelled while it waited
                waiter.set_result(None)  # the slot passes straight to the waiter
                return
        self._free += 1

    def _wake_consumer(self) -> None:
        waiter, self._outcome_waiter = self._outcome_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _run(self) -> None:
        # The running backend's own scope class: ``anyio.CancelScope(...)`` looks the backend
        # up on every call, a measurable share of each create on the hot path.
        self._shield_class = type(anyio.CancelScope())
        try:
            with self._scope:
                if self._resume is not None:
                    try:
                        await self._resume.start()
                    except (JournalError, OSError, ValueError, RuntimeError) as exc:
                        self._fail(_as_journal_error(exc, "open the journal"))
                        return
                    self._creates = self._resume.prior_creates
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    async with anyio.create_task_group() as workers:
                        for _ in range(self._workers):
                            workers.start_soon(self._worker)
                    self._feeding = False
                    if self._undelivered:
                        await self._idle.wait()
        except Exception as exc:  # a bug in the engine: the consumer hears of it, not the client
            logger.exception("batch engine failed")
            self._fail(exc)
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()
                if self._resume is not None:
                    try:
                        await self._resume.close()
                    except Exception as exc:  # noqa: BLE001 - containment: handed to the owner
                        self._fail(_as_journal_error(exc, "close the journal"))
            self._ended = True
            self._wake_consumer()
            self._finished.set()

    async def _worker(self) -> None:
        """Take a slot, read the next input, submit it; until the input ends or the batch stops.

        A few of these (as many as creates may run at once) feed the batch: no task per item.
        """
        while self._fatal is None:
            await self._take_slot()
            if self._fatal is not None:
                self._give_slot()
                return
            scope = None
            try:
                if self._reader.ready:  # in memory or already read ahead: cannot block
                    raw = await self._reader.next()
                else:
                    with anyio.CancelScope() as scope:
                        self._read_scopes.add(scope)
                        raw = await self._reader.next()
                    if scope.cancelled_caught:  # the batch stopped while this worker read
                        self._give_slot()
                        return
            except StopAsyncIteration:
                self._give_slot()
                return
            except Exception as exc:  # noqa: BLE001 - the user's input: theirs to hear, after the rest
                self._give_slot()
                logger.error(
                    "the input of the batch raised after %d items: %r", self._next_index, exc
                )
                self._fail(exc)
                return
            except BaseException:
                self._give_slot()
                raise
            finally:
                if scope is not None:
                    self._read_scopes.discard(scope)
            item = _Item(self._next_index)
            self._next_index += 1
            self._items[item.index] = item
            self._undelivered += 1
            await self._submit(item, raw)

    async def _submit(self, item: _Item, raw: Any) -> None:
        try:
            await self._submit_one(item, raw)
        except Exception as exc:  # a bug: end this item (and the batch) with it, visibly
            logger.exception("submitting item %d failed", item.index)
            self._fail(exc)
            if not item.delivered and item.entry is None:
                if item.request_id is not None:
                    self._deliver(item, error=ClientStateError(f"item lost its watch: {exc!r}"))
                else:
                    self._skip(item)

    async def _submit_one(self, item: _Item, raw: Any) -> None:
        try:
            item.request = request = as_request(raw)
        except ValidationError as exc:
            self._deliver(item, error=exc)
            return
        plan = _CREATE
        if self._resume is not None:
            try:
                plan = await self._resume.plan(item.index, encode_request(request))
            except (JournalMismatchError, JournalStateError) as exc:
                self._fail(exc)
                self._skip(item)
                return
            except Exception as exc:  # noqa: BLE001 - containment: handed to the owner
                self._fail(_as_journal_error(exc, f"record the intent of item {item.index}"))
                self._skip(item)
                return
        item.attempts = plan.attempts
        item.request_ids = list(plan.prior_ids)
        if plan.result is not None or plan.error is not None:
            item.request_id = (plan.result.request_id if plan.result else None) or getattr(
                plan.error, "request_id", None
            )
            if item.request_id:
                item.request_ids.append(item.request_id)
            self._deliver(item, result=plan.result, error=plan.error, resumed=True)
            return
        if plan.ticket is not None:
            ticket = plan.ticket  # submitted by an earlier run: re-attach, never create again
            item.request_ids.append(ticket.request_id)
        else:
            if self._pacer is not None and self._may_create():
                await self._pacer.acquire()
            sent = await self._send_create(item, request)
            if sent is None:
                return
            ticket = sent
        await self._watch(item, request, ticket)

    async def _send_create(
        self, item: _Item, request: GenerationRequest, *, retrying: NanoBananaError | None = None
    ) -> Ticket | None:
        """Create one task for the item and journal its id; None when the item is settled
        otherwise (create refused, or the batch stopped before it was sent)."""
        # Once on the wire a create is seen through even if the batch is abandoned, and its id
        # recorded: the task may be billed.
        with self._shield_class(shield=True):
            try:
                sent = await self._runtime.create(request, token=item, proceed=self._reserve_create)
            except NanoBananaError as exc:
                self._abort_if_account(exc)  # before any await: no create slips out after
                await self._journal("create_failed", item, exc)
                self._deliver(item, error=exc)
                return None
            if sent is None:  # the batch stopped while this create waited for a slot
                await self._not_sent(item, deliver=retrying)
                return None
            await self._journal("created", item, sent)
            item.request_ids.append(sent.request_id)
        return sent

    async def _watch(self, item: _Item, request: GenerationRequest, ticket: Ticket) -> None:
        """Hand the task to the scheduler (whose first poll, if due at once, runs here)."""
        item.request_id = ticket.request_id
        item.submitted_at = self._runtime.now()
        self._emit(EventKind.SUBMITTED, item)
        observer = None
        if self._on_event is not None:

            def observer(_: TaskEntry, status: TaskStatus) -> None:
                self._on_status(item, status)

        try:
            item.entry = await self._runtime.watch_and_poll(
                ticket,
                submitted_at=item.submitted_at,
                expect_image=request.wants_image,
                size_class=request.size_class,
                listener=lambda entry: self._on_done(item, entry),
                observer=observer,
            )
        except ClientStateError as exc:
            logger.error("task %s created but cannot be watched: %s", ticket.request_id, exc)
            self._deliver(item, error=exc)
        except BaseException:
            # Cancelled during the first poll: the cleanup must still find (and cancel) the task.
            item.entry = self._runtime.watched(ticket.request_id)
            raise

    async def _retry(self, item: _Item, error: NanoBananaError) -> None:
        """Create the item's task again after a failure the task-retry policy covers."""
        assert self._task_retry is not None and item.request is not None
        try:
            await anyio.sleep(self._task_retry.backoff(item.attempts, self._runtime.rng))
            if not self._may_create():
                self._deliver(item, error=error, finished_at=item.finished_at)
                return
            old_id = item.request_id
            if self._resume is not None and old_id is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._resume.retrying(item.index, old_id)
                    except Exception as exc:  # noqa: BLE001 - containment: handed to the owner
                        self._fail(_as_journal_error(exc, f"record a retry of item {item.index}"))
                        self._deliver(item, error=error, finished_at=item.finished_at)
                        return
            item.attempts += 1
            item.entry = None
            self._runtime.task_retries += 1
            logger.info(
                "item %d: task %s failed (%s); creating attempt %d",
                item.index,
                old_id,
                getattr(error, "error_type", None) or type(error).__name__,
                item.attempts,
            )
            sent = await self._send_create(item, item.request, retrying=error)
            if sent is not None:
                await self._watch(item, item.request, sent)
        except Exception as exc:
            logger.exception("retrying item %d failed", item.index)
            self._fail(exc)
            self._deliver(item, error=error, finished_at=item.finished_at)

    def _may_create(self) -> bool:
        return self._fatal is None and not self._abandoned

    def _reserve_create(self) -> bool:
        """Asked with a create slot held: may this create go out? (stopped, abandoned, cap)"""
        cap = self._max_creates
        if self._may_create() and cap is not None and self._creates >= cap:
            self._fail(BatchAbortedError(f"max_creates={cap} reached: nothing more is created"))
        if not self._may_create():
            return False
        self._creates += 1
        return True

    async def _not_sent(self, item: _Item, *, deliver: NanoBananaError | None = None) -> None:
        """An item read (its intent recorded) but never created: a rerun will create it.

        ``deliver``: the error of an earlier attempt, which is then the item's outcome."""
        if self._resume is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await self._resume.not_sent(item.index, f"batch stopped: {self._fatal}")
                except Exception as exc:  # noqa: BLE001 - containment: handed to the owner
                    self._fail(_as_journal_error(exc, f"record item {item.index} as not sent"))
        if deliver is not None:
            self._deliver(item, error=deliver, finished_at=item.finished_at)
        else:
            self._skip(item)

    def _abort_if_account(self, error: NanoBananaError) -> None:
        """Stop creating when the account cannot go on: every further create would fail too."""
        reason = None
        if isinstance(error, (AuthenticationError, PermissionDeniedError)):
            reason = "the service refused the API key"
        elif isinstance(error, InsufficientCreditsError):
            reason = "the account has no credits left"
        elif isinstance(error, RateLimitError) and (
            error.retry_after is None or error.retry_after > self._runtime.retry.max_retry_after
        ):
            reason = "the service asked to wait longer than the retry policy allows"
        if reason is not None and self._fatal is None:
            self._fail(BatchAbortedError(f"{reason} ({error})", cause=error))

    async def _journal(self, what: str, item: _Item, value: Any) -> None:
        """Record a create's answer; a journal failure stops the batch but loses no task."""
        if self._resume is None:
            return
        try:
            if what == "created":
                await self._resume.created(item.index, value)
            else:
                await self._resume.create_failed(item.index, value)
        except Exception as exc:  # noqa: BLE001 - containment: handed to the owner
            request_id = getattr(value, "request_id", None)
            logger.error(
                "journal: could not record item %d (request id %s): %r", item.index, request_id, exc
            )
            self._fail(_as_journal_error(exc, f"record item {item.index} ({request_id})"))

    def _on_status(self, item: _Item, status: TaskStatus) -> None:
        if status.state is TaskState.IN_QUEUE:
            self._emit(EventKind.QUEUED, item, queue_position=status.queue_position)
        elif status.state is TaskState.IN_PROGRESS:
            self._emit(EventKind.RUNNING, item)

    def _on_done(self, item: _Item, entry: TaskEntry) -> None:
        outcome = entry.outcome
        result = outcome if isinstance(outcome, GenerationResult) else None
        error = outcome if isinstance(outcome, NanoBananaError) else None
        item.finished_at = entry.finished_at
        retry = self._task_retry
        if (
            error is not None
            and retry is not None
            and retry.should_retry(error, item.attempts)
            and self._may_create()
            and self._tg is not None
        ):
            self._tg.start_soon(self._retry, item, error)
            return
        self._deliver(item, result=result, error=error, finished_at=entry.finished_at)
        if error is not None:
            self._abort_if_account(error)
        if self._resume is not None and self._tg is not None:
            self._tg.start_soon(self._record_finished, item.index, result, error)

    async def _record_finished(
        self, index: int, result: GenerationResult | None, error: NanoBananaError | None
    ) -> None:
        assert self._resume is not None
        with anyio.CancelScope(shield=True):
            try:
                await self._resume.finished(index, result, error)
            except Exception as exc:  # noqa: BLE001 - containment: handed to the owner
                self._fail(_as_journal_error(exc, f"record the outcome of item {index}"))

    def _deliver(
        self,
        item: _Item,
        *,
        result: GenerationResult | None = None,
        error: NanoBananaError | None = None,
        finished_at: float | None = None,
        resumed: bool = False,
    ) -> None:
        if item.delivered:
            return
        outcome = Outcome(
            item.index,
            item.request,
            item.request_id,
            result,
            error,
            item.submitted_at,
            finished_at if finished_at is not None else self._runtime.now(),
            resumed,
            attempts=item.attempts,
            request_ids=tuple(item.request_ids),
        )
        item.delivered = True
        self._undelivered -= 1
        self._runtime.count_outcome(outcome.ok)
        self._emit(EventKind.SUCCEEDED if outcome.ok else EventKind.FAILED, item, error=error)
        if self._closed:
            logger.debug("outcome of item %d dropped: the stream was closed", item.index)
        else:
            self._ready.append(outcome)  # bounded: every ready outcome holds one of the slots
            self._wake_consumer()
        self._check_idle()

    def _skip(self, item: _Item) -> None:
        """An item read but never created (the batch stopped first): no outcome, no slot."""
        if item.delivered:
            return
        item.delivered = True
        self._undelivered -= 1
        if self._items.pop(item.index, None) is not None:
            self._give_slot()
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._feeding and not self._undelivered:
            self._idle.set()

    def _emit(
        self,
        kind: EventKind,
        item: _Item,
        *,
        queue_position: int | None = None,
        error: NanoBananaError | None = None,
    ) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(BatchEvent(kind, item.index, item.request_id, queue_position, error))
        except Exception:
            logger.exception("on_event callback failed; events continue")

    async def _cleanup(self) -> None:
        """On abandonment, stop polling this batch's tasks and cancel them remotely."""
        if not self._abandoned:
            return
        live = [
            i.entry
            for i in self._items.values()
            if i.entry is not None and not i.delivered and i.entry.live
        ]
        for entry in live:
            entry.listeners.clear()
            entry.observers.clear()
        await self._runtime.release(live, cancel_remote=self._cancel_on_abandon)


def _as_journal_error(exc: BaseException, doing: str) -> BaseException:
    if isinstance(exc, JournalError):
        return exc
    error = JournalError(f"journal: could not {doing}: {exc!r}")
    error.__cause__ = exc
    return error


class _InputReader:
    """The batch's input, read by several workers, one item at a time.

    An in-memory collection is iterated inline. Any other sync iterable (a file, a generator)
    may block, so it is read on a worker thread, up to ``chunk`` items per trip (the read-ahead
    is bounded), and fewer when the input is slow (a trip ends ``_READ_BUDGET`` seconds after
    it began, once it has an item). An async iterable is awaited under a lock (it cannot be
    read concurrently). An error of the input is raised once the items read before it were
    handed out.
    """

    def __init__(self, source: RequestSource, *, chunk: int) -> None:
        self._inline: Iterator[Any] | None = None
        self._blocking: Iterator[Any] | None = None
        self._async: AsyncIterator[Any] | None = None
        if isinstance(source, AsyncIterable):
            self._async = aiter(source)
        elif isinstance(source, Collection):
            self._inline = iter(source)
        else:
            self._blocking = iter(source)
        self._chunk = max(1, chunk)
        self._buffer: collections.deque[Any] = collections.deque()
        self._error: BaseException | None = None
        self._done = False
        self._lock = anyio.Lock(fast_acquire=True)

    @property
    def ready(self) -> bool:
        """True when the next read cannot block (an in-memory input, or items read ahead)."""
        return self._inline is not None or bool(self._buffer)

    async def next(self) -> Any:
        """The next input (``StopAsyncIteration`` at the end; the input's own error as is)."""
        if self._buffer:
            return self._buffer.popleft()
        if self._inline is not None:
            try:
                return next(self._inline)
            except StopIteration:
                raise StopAsyncIteration from None
        async with self._lock:
            if self._buffer:
                return self._buffer.popleft()
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            if self._async is not None:
                return await self._async.__anext__()
            assert self._blocking is not None
            items, self._done, self._error = await anyio.to_thread.run_sync(
                _read_chunk, self._blocking, self._chunk, abandon_on_cancel=True
            )
            self._buffer.extend(items)
            if self._buffer:
                return self._buffer.popleft()
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration


# A trip to the reading thread returns after this long once it has an item: a fast input is
# read in chunks (one trip per ``chunk`` items), a slow one item by item, never held back.
_READ_BUDGET = 0.02


def _read_chunk(iterator: Iterator[Any], size: int) -> tuple[list[Any], bool, BaseException | None]:
    """Up to ``size`` items, fewer if the input is slow (runs on a worker thread):
    (items, exhausted, the input's error)."""
    items: list[Any] = []
    give_up = time.monotonic() + _READ_BUDGET
    try:
        for _ in range(size):
            items.append(next(iterator))
            if time.monotonic() > give_up:
                break
    except StopIteration:
        return items, True, None
    except Exception as exc:  # noqa: BLE001 - the user's input: raised to the consumer later
        return items, True, exc
    return items, False, None
