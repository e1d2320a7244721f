"""Client: the session manager that owns the HTTP session, the poll scheduler and their tasks."""

from __future__ import annotations

import enum
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from ssl import SSLContext
from types import TracebackType
from typing import Any

import aiohttp
import anyio
import attrs

from ._batch._engine import BatchStream
from ._batch._types import DEFAULT_MAX_IN_FLIGHT, BatchOptions, RequestSource, as_request
from ._config import DEFAULT_LIMITS, DEFAULT_TIMEOUT, Limits, TaskRetry, Timeout
from ._http._retry import DEFAULT_RETRY, RetryPolicy
from ._http._shared import RateLimit, make_pacer
from ._http._transport import HttpEvent, transport_class
from ._jobs import Job, check_timeout
from ._polling._policy import PollPolicy
from ._runtime import Runtime
from .errors import ClientStateError, NanoBananaError, TaskFailedError, ValidationError
from .models import GenerationRequest, GenerationResult, TaskStatus, Ticket

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MAX_IN_FLIGHT", "DEFAULT_MODEL", "Client", "ClientStats"]

DEFAULT_BASE_URL = "https://cloud.seaart.ai/model"
DEFAULT_MODEL = "nano_banana_pro"
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
    ``task_retries``: tasks created again by a ``TaskRetry`` (each one paid).
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
    task_retries: int = 0

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
    streams), within ``Timeout.close`` seconds overall, unless ``aclose(detach=True)``; a stream
    abandoned earlier cancels its own tasks unless it was opened with
    ``cancel_on_abandon=False``. ``hooks`` are called with an ``HttpEvent`` after every HTTP
    exchange (for your logging; never carries the key; a hook that raises is logged and
    ignored). ``seed`` makes the jitter reproducible (tests).

    Network settings, named as in ``aiohttp.ClientSession``, apply to API calls and downloads
    alike unless noted. ``proxy``: an ``http(s)://[user:pass@]host:port`` proxy; refused
    with an ``http://`` base_url, since only an https API is tunnelled (CONNECT) so that the
    proxy never sees the key. ``trust_env``: take proxies from ``HTTPS_PROXY``/``HTTP_PROXY``/
    ``NO_PROXY`` (the API's is resolved once when the client opens; downloads follow aiohttp's
    per-URL rules). ``ssl``: an ``ssl.SSLContext`` (CA bundle, client certificate), or False to
    skip verification (logged as a warning). ``headers``: extra headers for the API origin
    only, never the CDN (not Authorization, Host, Content-Length, Content-Type,
    Transfer-Encoding, Connection or Proxy-Authorization; no CR/LF). ``connector``: your own
    ``aiohttp.BaseConnector``, used as is and never closed by the client; then
    ``limits.max_connections``/``keepalive_timeout`` and ``ssl`` are your connector's
    business. ``tracing``: OpenTelemetry spans and metrics (needs the ``otel`` extra; see the
    deploying guide); the key and prompts are never recorded.

    ``rate_limit``: the rate budget every request (creates and polls) draws from. None (the
    default) learns the account's limit from 429s in this client alone. A Redis URL
    (``"redis://host:6379/0"``, needs the ``redis`` extra) or a ``RedisRateLimit`` shares one
    budget, its learned rate and its Retry-After holds with every client of the same key and
    base URL, in any process on any machine; if Redis fails the client paces alone and logs one
    warning (see the scaling guide).
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
        task_retry: TaskRetry | None = None,
        hooks: Sequence[Callable[[HttpEvent], None]] = (),
        seed: int | None = None,
        proxy: str | None = None,
        trust_env: bool = False,
        ssl: SSLContext | bool = True,
        headers: Mapping[str, str] | None = None,
        connector: aiohttp.BaseConnector | None = None,
        tracing: bool = False,
        rate_limit: RateLimit | str | None = None,
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
        if poll is not None and not isinstance(poll, PollPolicy):
            raise ValidationError("poll", poll, "must be a PollPolicy or None")
        if task_retry is not None and not isinstance(task_retry, TaskRetry):
            raise ValidationError("task_retry", task_retry, "must be a TaskRetry or None")
        if not isinstance(cancel_on_abandon, bool):
            raise ValidationError("cancel_on_abandon", cancel_on_abandon, "must be True or False")
        hooks = tuple(hooks)
        for hook in hooks:
            if not callable(hook):
                raise ValidationError("hooks", hook, "must be callables taking an HttpEvent")
        rng = random.Random(seed)
        key, url = _resolve_key(api_key, api_key_file), _check_base_url(base_url)
        transport = transport_class(tracing)(
            api_key=key,
            base_url=url,
            model=model,
            retry=retry,
            timeout=timeout,
            limits=limits,
            hooks=hooks,
            rng=rng,
            proxy=proxy,
            trust_env=trust_env,
            ssl=ssl,
            headers=headers,
            connector=connector,
            pacer=make_pacer(rate_limit, base_url=url, api_key=key),
        )
        self.poll_policy = poll or PollPolicy()
        self.cancel_on_abandon = cancel_on_abandon
        self.task_retry = task_retry
        self._runtime = Runtime(transport, self.poll_policy, rng=rng)
        self._state = _State.UNOPENED
        self._stack: AsyncExitStack | None = None

    def __repr__(self) -> str:
        t = self._runtime.transport
        return f"<Client {t.base_url!r} model={t.model!r} {self._state.value}>"

    @property
    def base_url(self) -> str:
        """The API base URL in use."""
        return self._runtime.transport.base_url

    @property
    def model(self) -> str:
        """The model id tasks are submitted to."""
        return self._runtime.transport.model

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        if self._state is not _State.UNOPENED:
            raise ClientStateError(
                "a Client can be opened only once; create a new Client"
                if self._state is _State.CLOSED
                else "the Client is already open"
            )
        stack = AsyncExitStack()
        try:
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(self._runtime.run)
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

        Idempotent. The remote cancels go out concurrently and take at most ``Timeout.close``
        seconds together. Call it from the task and scope that opened the client, as
        ``async with`` and lifespan hooks (FastAPI ``lifespan``, aiohttp ``cleanup_ctx``) do.
        """
        if self._state is not _State.OPEN:
            self._state = _State.CLOSED
            return
        self._state = _State.CLOSED
        stack = self._stack
        assert stack is not None
        try:
            await self._runtime.shutdown(cancel_remote=not detach and self.cancel_on_abandon)
        finally:
            await stack.aclose()

    def _require_open(self) -> Runtime:
        if self._state is _State.OPEN:
            return self._runtime
        if self._state is _State.UNOPENED:
            raise ClientStateError("use the Client inside 'async with Client(...) as client:'")
        raise ClientStateError("the Client is closed")

    @property
    def stats(self) -> ClientStats:
        """Counters: requests sent, 429s received, polls, tasks watched and finished."""
        return ClientStats(**self._runtime.stats_counts())

    # -- single tasks -----------------------------------------------------------------------

    async def submit(
        self, request: GenerationRequest | str, *, retry: RetryPolicy | None = None
    ) -> Job:
        """Create a task and return its ``Job`` (the create is never retried ambiguously)."""
        request = as_request(request)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ValidationError("retry", retry, "must be a RetryPolicy or None")
        runtime = self._require_open()
        ticket = await runtime.create(request, retry=retry)
        return Job(runtime, ticket, self.cancel_on_abandon, request.wants_image, request.size_class)

    async def generate(
        self,
        request: GenerationRequest | str,
        *,
        timeout: float | None = None,
        cancel_on_abandon: bool | None = None,
        task_retry: TaskRetry | None = None,
        on_update: Callable[[TaskStatus], None] | None = None,
    ) -> GenerationResult:
        """Submit a task and wait for its result (cancelled remotely if abandoned).

        ``timeout`` bounds each attempt's wait. With ``task_retry`` (or the client's), a task
        that failed in a way it covers is created again (each attempt is a new paid task).
        ``on_update`` is called with each status change (queue position, progress, logs) that
        the scheduler's polls see: no extra requests.
        """
        check_timeout(timeout)
        if task_retry is not None and not isinstance(task_retry, TaskRetry):
            raise ValidationError("task_retry", task_retry, "must be a TaskRetry or None")
        retry = task_retry or self.task_retry
        attempt = 1
        while True:
            job = await self.submit(request)
            try:
                return await job.result(
                    timeout=timeout, cancel_on_abandon=cancel_on_abandon, on_update=on_update
                )
            except TaskFailedError as exc:
                if retry is None or not retry.should_retry(exc, attempt):
                    raise
                self._runtime.task_retries += 1
                await anyio.sleep(retry.backoff(attempt, self._runtime.rng))
                attempt += 1

    def job(self, request_id: str) -> Job:
        """A handle on an existing task, by id (e.g. one submitted by another process)."""
        if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 256:
            raise ValidationError("request_id", request_id, "must be a non-empty string")
        return Job(self._runtime, Ticket(request_id), self.cancel_on_abandon)

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
        self, requests: RequestSource, options: BatchOptions | None = None, **overrides: Any
    ) -> BatchStream:
        """Submit many tasks and yield each ``Outcome`` as its task finishes.

        ``requests`` is any iterable or async iterable of ``GenerationRequest`` or prompt
        strings, read lazily: the next input is read only when fewer than ``max_in_flight``
        tasks are submitted and not yet consumed (a sync iterable that is not an in-memory
        collection, such as a file, is read in a worker thread). ``options`` is a
        ``BatchOptions``; any of its fields may also be given as a keyword
        (``max_in_flight=8``, ``submit_rate``, ``cancel_on_abandon``, ``on_event``,
        ``journal``, ``resubmit_unknown``). One item's failure is that item's outcome; the
        others go on. If the input iterable or the journal fails, nothing more is created,
        the tasks already created are still delivered, and then the loop raises that error.
        Leaving the loop early (``break``, cancellation) stops submitting and cancels the tasks
        still running (unless ``cancel_on_abandon=False``); ``async with client.stream(...)
        as s`` makes that cleanup deterministic. With ``journal`` every intent, id and outcome
        is recorded durably, and a rerun with the same input resumes: finished items are
        replayed, submitted ones re-attached, ambiguous ones reported (created again only with
        ``resubmit_unknown=True``).
        """
        if options is not None and not isinstance(options, BatchOptions):
            raise ValidationError("options", options, "must be a BatchOptions or None")
        opts = (options or _DEFAULT_BATCH).with_overrides(overrides)
        runtime = self._require_open()
        cancel = (
            self.cancel_on_abandon if opts.cancel_on_abandon is None else opts.cancel_on_abandon
        )
        return BatchStream(runtime, requests, opts, cancel, self.task_retry)

    async def map(
        self,
        requests: RequestSource,
        options: BatchOptions | None = None,
        *,
        return_exceptions: bool = False,
        **overrides: Any,
    ) -> list[GenerationResult | NanoBananaError]:
        """Run every request and return the results in input order.

        With ``return_exceptions=False`` the first failure is raised, and the tasks still
        running are cancelled; with ``True`` each failed item's error takes its place. The
        options are those of ``stream``.
        """
        found: dict[int, GenerationResult | NanoBananaError] = {}
        async with self.stream(requests, options, **overrides) as outcomes:
            async for outcome in outcomes:
                if outcome.error is not None:
                    if not return_exceptions:
                        raise outcome.error
                    found[outcome.index] = outcome.error
                elif outcome.result is not None:
                    found[outcome.index] = outcome.result
        return [found[i] for i in sorted(found)]


_DEFAULT_BATCH = BatchOptions()
