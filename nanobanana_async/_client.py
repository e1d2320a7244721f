"""Client: the session manager that owns the HTTP session, the poll scheduler and their tasks."""

from __future__ import annotations

import enum
import os
import random
import re
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import attrs

from ._batch._engine import BatchEvent, BatchStream, Outcome, RequestSource
from ._config import DEFAULT_LIMITS, DEFAULT_TIMEOUT, Limits, Timeout
from ._http._retry import DEFAULT_RETRY, RetryPolicy
from ._http._transport import HttpEvent, Transport
from ._http._wire import encode_request, parse_status, parse_ticket
from ._jobs import Job
from ._polling._policy import PollPolicy
from ._polling._scheduler import PollScheduler
from .errors import (
    ClientStateError,
    NanoBananaError,
    ProtocolError,
    SubmissionUnknownError,
    ValidationError,
)
from .journal import Journal
from .models import GenerationRequest, GenerationResult, TaskStatus, Ticket

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MAX_IN_FLIGHT", "DEFAULT_MODEL", "Client", "ClientStats"]

DEFAULT_BASE_URL = "https://cloud.seaart.ai/model"
DEFAULT_MODEL = "nano_banana_pro"
DEFAULT_MAX_IN_FLIGHT = 64
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


@attrs.frozen
class ClientStats:
    """Counters of one client since it was opened.

    ``submitted``: creates that returned a request id. ``in_flight``: tasks the scheduler is
    polling now. ``succeeded`` / ``failed``: outcomes of ``stream``/``map`` items.
    ``requests_sent``: HTTP requests of every kind. ``rate_limited``: 429 answers received.
    ``polls_sent``: status/result polls. ``finished``: tasks the scheduler saw end.
    ``send_rate``: the pacer's current requests/s, None while no 429 has been seen.
    """

    submitted: int
    in_flight: int
    succeeded: int
    failed: int
    requests_sent: int
    rate_limited: int
    polls_sent: int
    finished: int
    send_rate: float | None

    @property
    def polls_per_task(self) -> float | None:
        """Polls sent per task the scheduler saw finish."""
        return self.polls_sent / self.finished if self.finished else None


def _resolve_key(api_key: str | None, api_key_file: str | os.PathLike[str] | None) -> str:
    hint = "pass api_key=..., api_key_file=..., or set NANOBANANA_API_KEY"
    if api_key is not None and api_key_file is not None:
        raise ValidationError("api_key", "<redacted>", "give api_key or api_key_file, not both")
    if api_key_file is not None:
        try:
            api_key = Path(api_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValidationError(
                "api_key_file", str(api_key_file), f"cannot be read ({exc.strerror})"
            ) from None
    if api_key is None:
        api_key = os.environ.get("NANOBANANA_API_KEY")
    if not api_key or not api_key.strip():
        raise ValidationError("api_key", None, "no API key given", hint)
    if any(ch.isspace() or ord(ch) < 32 for ch in api_key.strip()):
        raise ValidationError("api_key", "<redacted>", "contains whitespace or control characters")
    return api_key.strip()


def _check_base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get("NANOBANANA_BASE_URL") or DEFAULT_BASE_URL
    if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", url, re.I):
        raise ValidationError(
            "base_url", url, "is not an absolute http(s) URL", "http(s)://host/path"
        )
    return url.rstrip("/")


class Client:
    """An open connection to the queue API: ``async with Client() as client: ...``.

    One client owns one aiohttp session and one poll scheduler; share it across your
    application. ``api_key`` falls back to ``NANOBANANA_API_KEY`` (or is read once from
    ``api_key_file``) and ``base_url`` to ``NANOBANANA_BASE_URL`` (default
    ``https://cloud.seaart.ai/model``). Leaving the block (or ``aclose()``) cancels on the
    service the tasks still being waited on (``job.result()``/``generate`` callers and open
    streams), unless ``aclose(detach=True)``; a stream abandoned earlier cancels its own tasks
    unless it was opened with ``cancel_on_abandon=False``. ``hooks`` are called with an
    ``HttpEvent`` after every HTTP exchange (for your logging; never carries the key).
    ``seed`` makes the jitter reproducible (tests).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        api_key_file: str | os.PathLike[str] | None = None,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        retry: RetryPolicy = DEFAULT_RETRY,
        poll: PollPolicy | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        limits: Limits = DEFAULT_LIMITS,
        cancel_on_abandon: bool = True,
        hooks: Sequence[Callable[[HttpEvent], None]] = (),
        seed: int | None = None,
    ) -> None:
        if not isinstance(model, str) or not _MODEL_ID.match(model):
            raise ValidationError("model", model, "is not a model id", "e.g. nano_banana_pro")
        for name, value, cls in (
            ("retry", retry, RetryPolicy),
            ("timeout", timeout, Timeout),
            ("limits", limits, Limits),
        ):
            if not isinstance(value, cls):
                raise ValidationError(name, value, f"must be a {cls.__name__}")
        self._rng = random.Random(seed)
        self._transport = Transport(
            api_key=_resolve_key(api_key, api_key_file),
            base_url=_check_base_url(base_url),
            model=model,
            retry=retry,
            timeout=timeout,
            limits=limits,
            hooks=hooks,
            rng=self._rng,
        )
        self.poll_policy = poll or PollPolicy()
        self.cancel_on_abandon = cancel_on_abandon
        self._state = _State.UNOPENED
        self._stack: AsyncExitStack | None = None
        self._scheduler: PollScheduler | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._counters = {"submitted": 0, "succeeded": 0, "failed": 0}
        self._create_limiter = anyio.CapacityLimiter(limits.max_concurrent_creates)

    def __repr__(self) -> str:
        t = self._transport
        return f"<Client {t.base_url!r} model={t.model!r} {self._state.value}>"

    @property
    def base_url(self) -> str:
        """The API base URL in use."""
        return self._transport.base_url

    @property
    def model(self) -> str:
        """The model id tasks are submitted to."""
        return self._transport.model

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        if self._state is not _State.UNOPENED:
            raise ClientStateError(
                "a Client can be opened only once; create a new Client"
                if self._state is _State.CLOSED
                else "the Client is already open"
            )
        stack = AsyncExitStack()
        await self._transport.open()
        stack.push_async_callback(self._close_transport)
        try:
            tg = await stack.enter_async_context(anyio.create_task_group())
            self._scheduler = PollScheduler(
                self._transport,
                self.poll_policy,
                max_concurrent_polls=self._transport.limits.max_concurrent_polls,
                rng=self._rng,
            )
            await tg.start(self._scheduler.run)
            stack.callback(tg.cancel_scope.cancel)
            self._tg = tg
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self, *, detach: bool = False) -> None:
        """Close the client: cancel waited-on tasks remotely (unless ``detach``), stop polling.

        Idempotent. Call it from the task and scope that opened the client, as ``async with``
        and lifespan hooks (FastAPI ``lifespan``, aiohttp ``cleanup_ctx``) do.
        """
        if self._state is not _State.OPEN:
            self._state = _State.CLOSED
            return
        self._state = _State.CLOSED
        scheduler, stack = self._scheduler, self._stack
        assert scheduler is not None and stack is not None
        try:
            if not detach and self.cancel_on_abandon:
                pending = [e for e in scheduler.entries() if e.waiters or e.listeners]
                limiter = anyio.CapacityLimiter(16)

                async def cancel(entry: Any) -> None:
                    async with limiter:
                        await scheduler.cancel_remote(entry)

                with anyio.CancelScope(shield=True):
                    async with anyio.create_task_group() as tg:
                        for entry in pending:
                            tg.start_soon(cancel, entry)
            scheduler.close()
        finally:
            await stack.aclose()

    async def _close_transport(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._transport.close()

    def _require_open(self) -> PollScheduler:
        if self._state is _State.OPEN and self._scheduler is not None:
            return self._scheduler
        if self._state is _State.UNOPENED:
            raise ClientStateError("use the Client inside 'async with Client(...) as client:'")
        raise ClientStateError("the Client is closed")

    @property
    def stats(self) -> ClientStats:
        """Counters: requests sent, 429s received, polls, tasks watched and finished."""
        s = self._scheduler
        c = self._counters
        return ClientStats(
            submitted=c["submitted"],
            in_flight=s.watching if s else 0,
            succeeded=c["succeeded"],
            failed=c["failed"],
            send_rate=self._transport.pacer.rate,
            requests_sent=self._transport.requests_sent,
            rate_limited=self._transport.rate_limited,
            polls_sent=s.polls_sent if s else 0,
            finished=s.finished if s else 0,
        )

    # -- single tasks -----------------------------------------------------------------------

    async def submit(
        self, request: GenerationRequest | str, *, retry: RetryPolicy | None = None
    ) -> Job:
        """Create a task and return its ``Job`` (the create is never retried ambiguously)."""
        request = _as_request(request)
        self._require_open()
        async with self._create_limiter:
            ticket = await self._create(request, retry)
        return Job(self, ticket)

    async def generate(
        self,
        request: GenerationRequest | str,
        *,
        timeout: float | None = None,
        cancel_on_abandon: bool | None = None,
    ) -> GenerationResult:
        """Submit a task and wait for its result (cancelled remotely if abandoned)."""
        _check_timeout(timeout)
        job = await self.submit(request)
        return await job.result(timeout=timeout, cancel_on_abandon=cancel_on_abandon)

    def job(self, request_id: str) -> Job:
        """A handle on an existing task, by id (e.g. one submitted by another process)."""
        if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 256:
            raise ValidationError("request_id", request_id, "must be a non-empty string")
        return Job(self, Ticket(request_id))

    async def status(self, request_id: str) -> TaskStatus:
        """The current status of a task, by id."""
        return await self.job(request_id).status()

    async def result(
        self,
        request_id: str,
        *,
        timeout: float | None = None,
        cancel_on_abandon: bool | None = None,
    ) -> GenerationResult:
        """Wait for a task, by id, and return its result (see ``Job.result``)."""
        return await self.job(request_id).result(
            timeout=timeout, cancel_on_abandon=cancel_on_abandon
        )

    async def cancel(self, request_id: str) -> bool:
        """Ask the service to cancel a task, by id; False if it had already finished."""
        return await self.job(request_id).cancel()

    # -- many tasks -------------------------------------------------------------------------

    def stream(
        self,
        requests: RequestSource,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        submit_rate: float | None = None,
        cancel_on_abandon: bool | None = None,
        on_event: Callable[[BatchEvent], None] | None = None,
        journal: Journal | str | os.PathLike[str] | None = None,
        resubmit_unknown: bool = False,
    ) -> BatchStream:
        """Submit many tasks and yield each ``Outcome`` as its task finishes.

        ``requests`` is any iterable or async iterable of ``GenerationRequest`` or prompt
        strings, read lazily: the next input is read only when fewer than ``max_in_flight``
        tasks are submitted and not yet consumed. ``submit_rate`` caps creates per second.
        One item's failure is that item's outcome; the others go on. Leaving the loop early
        (``break``, cancellation) stops submitting and cancels the tasks still running
        (unless ``cancel_on_abandon=False``); ``async with client.stream(...) as s`` makes
        that cleanup deterministic. With ``journal`` (a path or an open ``Journal``) every
        intent, id and outcome is recorded durably, and a rerun with the same input resumes:
        finished items are replayed, submitted ones re-attached, ambiguous ones reported
        (created again only with ``resubmit_unknown=True``).
        """
        self._require_open()
        return BatchStream(
            self,
            requests,
            max_in_flight=max_in_flight,
            submit_rate=submit_rate,
            cancel_on_abandon=self.cancel_on_abandon
            if cancel_on_abandon is None
            else cancel_on_abandon,
            on_event=on_event,
            journal=journal,
            resubmit_unknown=resubmit_unknown,
        )

    async def map(
        self,
        requests: RequestSource,
        *,
        return_exceptions: bool = False,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        submit_rate: float | None = None,
        cancel_on_abandon: bool | None = None,
        on_event: Callable[[BatchEvent], None] | None = None,
        journal: Journal | str | os.PathLike[str] | None = None,
        resubmit_unknown: bool = False,
    ) -> list[GenerationResult | NanoBananaError]:
        """Run every request and return the results in input order.

        With ``return_exceptions=False`` the first failure is raised, and the tasks still
        running are cancelled; with ``True`` each failed item's error takes its place. The
        other options are those of ``stream``.
        """
        found: dict[int, GenerationResult | NanoBananaError] = {}
        async with self.stream(
            requests,
            max_in_flight=max_in_flight,
            submit_rate=submit_rate,
            cancel_on_abandon=cancel_on_abandon,
            on_event=on_event,
            journal=journal,
            resubmit_unknown=resubmit_unknown,
        ) as outcomes:
            async for outcome in outcomes:
                if outcome.error is not None and not return_exceptions:
                    raise outcome.error
                found[outcome.index] = outcome.result or outcome.error  # type: ignore[assignment]
        return [found[i] for i in range(len(found))]

    # -- used by Job and the batch engine ----------------------------------------------------

    def _spawn(self, func: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._tg is None or self._state is not _State.OPEN:
            raise ClientStateError("the Client is closed")
        self._tg.start_soon(func)

    def _coerce(self, request: object) -> GenerationRequest:
        return _as_request(request)

    async def _create(self, request: GenerationRequest, retry: RetryPolicy | None = None) -> Ticket:
        body = encode_request(request)
        resp = await self._transport.request(
            "POST", self._transport.create_url, kind="create", json_body=body, retry=retry
        )
        try:
            ticket = parse_ticket(resp.json())
        except ProtocolError as exc:
            raise SubmissionUnknownError(
                f"create answered {resp.status} with an unreadable body", request_body=body
            ) from exc
        self._counters["submitted"] += 1
        return ticket

    def _count_outcome(self, outcome: Outcome) -> None:
        self._counters["succeeded" if outcome.ok else "failed"] += 1

    async def _fetch_status(self, ticket: Ticket) -> TaskStatus:
        self._require_open()
        url = self._transport.task_url(ticket.request_id, "status", ticket.status_url)
        resp = await self._transport.request("GET", url, kind="status")
        return parse_status(resp.json())

    async def _wait(
        self, ticket: Ticket, *, timeout: float | None, cancel_on_abandon: bool | None
    ) -> GenerationResult:
        _check_timeout(timeout)
        scheduler = self._require_open()
        entry = scheduler.watch(ticket)
        abandon = self.cancel_on_abandon if cancel_on_abandon is None else cancel_on_abandon
        return await scheduler.wait(entry, timeout=timeout, cancel_on_abandon=abandon)

    async def _cancel(self, ticket: Ticket) -> bool:
        self._require_open()
        url = self._transport.task_url(ticket.request_id, "cancel", ticket.cancel_url)
        resp = await self._transport.request(
            "PUT", url, kind="cancel", ok_statuses=frozenset({400})
        )
        return resp.status < 300


def _as_request(request: object) -> GenerationRequest:
    if isinstance(request, GenerationRequest):
        return request
    if isinstance(request, str):
        return GenerationRequest(request)
    raise ValidationError("request", request, "must be a GenerationRequest or a prompt string")


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout > 0:
        raise ValidationError("timeout", timeout, "must be > 0 seconds or None")
