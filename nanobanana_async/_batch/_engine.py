"""The batch engine behind ``Client.stream`` and ``Client.map``.

Inputs are read lazily, one only when an in-flight slot is free (backpressure), submitted under
the submit rate and the client's bound on concurrent creates, then handed to the client's poll
scheduler as entries with a completion listener: no coroutine per task once it is submitted. An
item's slot is released when the consumer takes its outcome, so the outcome buffer never holds
more than ``max_in_flight`` items. Abandoning the stream (``break``, cancellation, ``aclose``)
stops reading input, lets creates already on the wire finish (their ids must not be lost), and
cancels the remote tasks still running, per ``cancel_on_abandon``.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import sqlite3
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import anyio.abc
import attrs

from .._http._pacer import AdaptiveRateLimiter
from .._http._wire import encode_request
from .._polling._scheduler import TaskEntry, acquire
from ..errors import NanoBananaError, ValidationError
from ..journal import Journal, JournalMismatchError, JournalStateError
from ..models import GenerationRequest, GenerationResult, TaskState, TaskStatus, Ticket
from ._resume import Plan, ResumeBinding

if TYPE_CHECKING:
    from .._client import Client

__all__ = ["BatchEvent", "BatchStream", "EventKind", "Outcome", "RequestSource"]

logger = logging.getLogger("nanobanana_async")
RequestLike: TypeAlias = "GenerationRequest | str"
RequestSource: TypeAlias = "Iterable[RequestLike] | AsyncIterable[RequestLike]"


@attrs.frozen
class Outcome:
    """How one input item ended: its result, or the error that stopped it."""

    index: int
    request: GenerationRequest | None
    request_id: str | None = None
    result: GenerationResult | None = None
    error: NanoBananaError | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    resumed: bool = False

    @property
    def ok(self) -> bool:
        """True when the item produced a result."""
        return self.result is not None

    @property
    def latency(self) -> float | None:
        """Seconds from submit to the moment the SDK saw the task finish."""
        if self.submitted_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.submitted_at

    def unwrap(self) -> GenerationResult:
        """The result, or raise the item's error."""
        if self.result is not None:
            return self.result
        assert self.error is not None
        raise self.error


class EventKind(str, enum.Enum):
    """What a ``BatchEvent`` reports."""

    SUBMITTED = "submitted"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@attrs.frozen
class BatchEvent:
    """A progress event of one item of a batch (cheap: emitted synchronously)."""

    kind: EventKind
    index: int
    request_id: str | None = None
    queue_position: int | None = None
    error: NanoBananaError | None = None


@attrs.define(eq=False)
class _Item:
    index: int
    request: GenerationRequest | None = None
    request_id: str | None = None
    submitted_at: float | None = None
    entry: TaskEntry | None = None
    delivered: bool = False


class BatchStream:
    """Async iterator over outcomes in completion order (``async with`` closes it at once).

    A thin handle over the engine that runs in the client's task group: the engine holds no
    reference back to it, so a ``break`` out of ``async for`` frees the handle, and freeing it
    abandons the batch.
    """

    def __init__(self, client: Client, source: RequestSource, **options: Any) -> None:
        self._engine = _Engine(client, source, **options)

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
        client: Client,
        source: RequestSource,
        *,
        max_in_flight: int,
        submit_rate: float | None,
        cancel_on_abandon: bool,
        on_event: Callable[[BatchEvent], None] | None,
        journal: Journal | str | os.PathLike[str] | None = None,
        resubmit_unknown: bool = False,
    ) -> None:
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValidationError("max_in_flight", max_in_flight, "must be an integer >= 1")
        if submit_rate is not None and not submit_rate > 0:
            raise ValidationError("submit_rate", submit_rate, "must be > 0 creates/s or None")
        if not isinstance(source, (Iterable, AsyncIterable)) or isinstance(source, (str, bytes)):
            raise ValidationError("requests", source, "must be an iterable of requests or prompts")
        self._client = client
        self._source = source
        self._cancel_on_abandon = cancel_on_abandon
        self._on_event = on_event
        self._slots = anyio.CapacityLimiter(max_in_flight)
        self._pacer = AdaptiveRateLimiter(max_rate=submit_rate) if submit_rate else None
        self._send, self._receive = anyio.create_memory_object_stream[Outcome](max_in_flight)
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
        self._resume = (
            ResumeBinding(journal, resubmit_unknown=resubmit_unknown)
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
        """The next outcome in completion order; ``StopAsyncIteration`` at the end."""
        if not self._started:
            self._started = True
            self._client._spawn(self._run)
        try:
            outcome = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._fatal is not None:
                raise self._fatal from None
            raise StopAsyncIteration from None
        except BaseException:
            self.abandon()
            raise
        item = self._items.pop(outcome.index)
        self._slots.release_on_behalf_of(item)
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
        self._receive.close()

    # -- engine side (runs in the client's task group) -------------------------------------

    def _fail(self, error: BaseException) -> None:
        """A batch-wide failure (e.g. a journal of other input): stop, then raise it."""
        if self._fatal is None:
            self._fatal = error
        self.abandon()

    async def _run(self) -> None:
        try:
            with self._scope:
                if self._resume is not None:
                    try:
                        await self._resume.start()
                    except (OSError, ValueError, RuntimeError) as exc:
                        self._fail(exc)
                        return
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    await self._feed(tg)
                    self._feeding = False
                    if self._undelivered:
                        await self._idle.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()
                if self._resume is not None:
                    await self._resume.close()
            self._send.close()
            self._finished.set()

    async def _feed(self, tg: anyio.abc.TaskGroup) -> None:
        source = self._source
        iterator = aiter(source) if isinstance(source, AsyncIterable) else _aiter_sync(source)
        index = 0
        while True:
            item = _Item(index)
            await acquire(self._slots, item)
            try:
                raw = await iterator.__anext__()
            except StopAsyncIteration:
                self._slots.release_on_behalf_of(item)
                return
            self._items[index] = item
            self._undelivered += 1
            tg.start_soon(self._submit, item, raw)
            index += 1

    async def _submit(self, item: _Item, raw: Any) -> None:
        client = self._client
        try:
            item.request = request = client._coerce(raw)
        except ValidationError as exc:
            self._deliver(item, error=exc)
            return
        plan = Plan(create=True)
        if self._resume is not None:
            try:
                plan = await self._resume.plan(item.index, encode_request(request))
            except (JournalMismatchError, JournalStateError, OSError, sqlite3.Error) as exc:
                self._fail(exc)
                return
        if plan.result is not None or plan.error is not None:
            item.request_id = (plan.result.request_id if plan.result else None) or getattr(
                plan.error, "request_id", None
            )
            self._deliver(item, result=plan.result, error=plan.error, resumed=True)
            return
        if plan.ticket is not None:
            ticket = plan.ticket  # submitted by an earlier run: re-attach, never create again
        else:
            if self._pacer is not None:
                await self._pacer.acquire()
            await acquire(client._create_limiter, item)
            try:
                # Once on the wire a create is seen through even if the batch is abandoned,
                # and its id recorded: the task may be billed.
                with anyio.CancelScope(shield=True):
                    ticket = await self._create(item.index, request)
            except NanoBananaError as exc:
                self._deliver(item, error=exc)
                return
            finally:
                client._create_limiter.release_on_behalf_of(item)
        item.request_id = ticket.request_id
        item.submitted_at = anyio.current_time()
        self._emit(EventKind.SUBMITTED, item)
        scheduler = client._require_open()
        entry = scheduler.watch(ticket, submitted_at=item.submitted_at)
        item.entry = entry
        entry.listeners.append(lambda e: self._on_done(item, e))
        if self._on_event is not None:
            entry.observers.append(lambda e, s: self._on_status(item, s))

    async def _create(self, index: int, request: GenerationRequest) -> Ticket:
        try:
            ticket = await self._client._create(request)
        except NanoBananaError as exc:
            if self._resume is not None:
                await self._resume.create_failed(index, exc)
            raise
        if self._resume is not None:
            await self._resume.created(index, ticket)
        return ticket

    def _on_status(self, item: _Item, status: TaskStatus) -> None:
        if status.state is TaskState.IN_QUEUE:
            self._emit(EventKind.QUEUED, item, queue_position=status.queue_position)
        elif status.state is TaskState.IN_PROGRESS:
            self._emit(EventKind.RUNNING, item)

    def _on_done(self, item: _Item, entry: TaskEntry) -> None:
        outcome = entry.outcome
        result = outcome if isinstance(outcome, GenerationResult) else None
        error = outcome if isinstance(outcome, NanoBananaError) else None
        self._deliver(item, result=result, error=error, finished_at=entry.finished_at)
        if self._resume is not None and self._tg is not None:
            self._tg.start_soon(self._record_finished, item.index, result, error)

    async def _record_finished(
        self, index: int, result: GenerationResult | None, error: NanoBananaError | None
    ) -> None:
        assert self._resume is not None
        with anyio.CancelScope(shield=True):
            try:
                await self._resume.finished(index, result, error)
            except (OSError, ValueError, RuntimeError, sqlite3.Error) as exc:
                logger.error("could not record the outcome of item %d: %s", index, exc)

    def _deliver(
        self,
        item: _Item,
        *,
        result: GenerationResult | None = None,
        error: NanoBananaError | None = None,
        finished_at: float | None = None,
        resumed: bool = False,
    ) -> None:
        outcome = Outcome(
            item.index,
            item.request,
            item.request_id,
            result,
            error,
            item.submitted_at,
            finished_at if finished_at is not None else anyio.current_time(),
            resumed,
        )
        item.delivered = True
        self._undelivered -= 1
        self._client._count_outcome(outcome)
        self._emit(
            EventKind.SUCCEEDED if result is not None else EventKind.FAILED, item, error=error
        )
        try:
            self._send.send_nowait(outcome)  # never blocks: the buffer holds max_in_flight
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            logger.debug("outcome of item %d dropped: the stream was closed", item.index)
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
        scheduler = self._client._scheduler
        live = [
            i.entry
            for i in self._items.values()
            if i.entry is not None and not i.delivered and not i.entry.done
        ]
        if scheduler is None or not live:
            return
        for entry in live:
            entry.listeners.clear()
            entry.observers.clear()
        for entry in live:
            if entry.waiters == 0:
                await scheduler.abandon(entry)
        if not self._cancel_on_abandon:
            return
        limiter = anyio.CapacityLimiter(16)

        async def cancel(entry: TaskEntry) -> None:
            async with limiter:
                await scheduler.cancel_remote(entry)

        async with anyio.create_task_group() as tg:
            for entry in live:
                tg.start_soon(cancel, entry)


async def _aiter_sync(source: Iterable[Any]) -> AsyncIterator[Any]:
    for value in source:
        yield value
