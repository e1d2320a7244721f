"""HTTP transport: one aiohttp session, auth pinned to one origin, timeouts, retries, logging."""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import aiohttp
import anyio
import attrs

from .._config import Limits, Timeout
from .._version import __version__
from ..errors import (
    APIStatusError,
    ConnectError,
    NanoBananaError,
    ProtocolError,
    RateLimitError,
    RequestTimeoutError,
    ResponseTooLargeError,
    SubmissionUnknownError,
    TransportError,
    ValidationError,
    error_from_response,
    parse_retry_after,
)
from ._pacer import AdaptiveRateLimiter
from ._retry import RetryPolicy, may_retry_create

__all__ = ["HttpEvent", "Response", "Transport"]

logger = logging.getLogger("nanobanana_async")
USER_AGENT = f"nanobanana-async/{__version__}"
Kind = Literal["create", "status", "result", "cancel"]
# Every timeout, on every Python: asyncio.TimeoutError is builtins.TimeoutError only from 3.11.
_TIMEOUTS = (asyncio.TimeoutError, builtins.TimeoutError)


@attrs.frozen
class HttpEvent:
    """One HTTP exchange, as passed to event hooks (never carries the key)."""

    method: str
    path: str
    attempt: int
    status: int | None
    elapsed: float
    error: str | None = None


@attrs.frozen
class Response:
    """A completed HTTP response with its body read (bounded)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON, or ``ProtocolError``."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            raise ProtocolError("response is not valid JSON", body=self.body) from None


def origin_of(url: str) -> tuple[str, str, int | None]:
    """The (scheme, host, port) triple of a URL, default ports made explicit."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # "http://[::1", "http://h:99999", NFKC tricks: on no origin at all
        return "", "", None
    return scheme, (parts.hostname or "").lower(), port


class Transport:
    """Owns the aiohttp session; sends API requests with auth, retries and a per-call deadline."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        model: str,
        retry: RetryPolicy,
        timeout: Timeout,
        limits: Limits,
        hooks: Sequence[Callable[[HttpEvent], None]] = (),
        rng: random.Random | None = None,
        max_rate: float | None = None,
    ) -> None:
        self._auth = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.retry = retry
        self.timeout = timeout
        self.limits = limits
        self._hooks = tuple(hooks)
        self._rng = rng or random.Random()
        self._origin = origin_of(self.base_url)
        self._api_prefix = self.base_url + "/"
        self._api_headers = {"Accept": "application/json", "Authorization": self._auth}
        self._queue_url = f"{self.base_url}/v1/queue/{quote(model, safe='')}"
        self._warned_foreign = False
        self._session: aiohttp.ClientSession | None = None
        self.requests_sent = 0
        self.rate_limited = 0
        # One pacer for every request of the client: creates and polls share the account's limit.
        self.pacer = AdaptiveRateLimiter(max_rate=max_rate)

    def __repr__(self) -> str:
        return f"<Transport {self.base_url!r} model={self.model!r}>"

    async def open(self) -> None:
        """Create the aiohttp session (call from inside the event loop)."""
        self.pacer.use_clock(asyncio.get_running_loop().time)  # no backend lookup per request
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections,
            keepalive_timeout=self.limits.keepalive_timeout,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(
                total=self.timeout.deadline,
                connect=self.timeout.connect,
                sock_read=self.timeout.read,
            ),
        )

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session (for downloads); raises if the transport is closed."""
        if self._session is None:
            raise RuntimeError("transport is not open")
        return self._session

    # -- URLs -------------------------------------------------------------------------------

    @property
    def create_url(self) -> str:
        """The create endpoint for the configured model."""
        return self._queue_url

    def task_url(self, request_id: str, action: str, server_url: str | None = None) -> str:
        """The URL of a task route, the server's own when it is on the API origin."""
        if server_url and self.is_api_origin(server_url):
            return server_url
        if server_url and not self._warned_foreign:
            self._warned_foreign = True
            logger.warning(
                "ignoring a task URL on another origin (%s); building URLs from the request id",
                origin_of(server_url)[1],
            )
        suffix = f"/{action}" if action else ""
        try:
            quoted = quote(request_id, safe="")
        except UnicodeEncodeError:  # a lone surrogate: no URL can name this task
            raise ValidationError("request_id", request_id, "is not valid Unicode") from None
        return f"{self._queue_url}/requests/{quoted}{suffix}"

    def is_api_origin(self, url: str) -> bool:
        """Whether ``url`` is on the configured API origin (the only one that gets the key)."""
        if url.startswith(self._api_prefix):
            return True  # the URLs this SDK builds itself: skip parsing on the hot path
        origin = origin_of(url)
        return bool(origin[1]) and origin == self._origin

    # -- requests ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        kind: Kind,
        json_body: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> Response:
        """Send one API call with retries; return a 2xx (or ``ok_statuses``) response.

        Error statuses raise the matching ``APIStatusError``. A create is retried only where it
        certainly was not processed; otherwise ``SubmissionUnknownError``.
        """
        policy = retry or self.retry
        if policy.max_attempts == 1 and len(ok_statuses) >= _ALL_ERRORS and kind != "create":
            # Hot path of the poll scheduler: one attempt, every status handled by the caller;
            # the session's total timeout bounds it, so no deadline scope is needed.
            return await self._send(method, url, kind, json_body, 1)
        try:
            with anyio.fail_after(self.timeout.deadline):
                return await self._with_retries(method, url, kind, json_body, policy, ok_statuses)
        except _TIMEOUTS as exc:
            if isinstance(exc, NanoBananaError):
                raise
            if kind == "create":
                raise SubmissionUnknownError(
                    f"create exceeded its {self.timeout.deadline:g} s deadline",
                    request_body=json_body,
                ) from None
            raise RequestTimeoutError(
                f"{method} {kind} exceeded {self.timeout.deadline:g} s"
            ) from None

    async def _with_retries(
        self,
        method: str,
        url: str,
        kind: Kind,
        json_body: Mapping[str, Any] | None,
        policy: RetryPolicy,
        ok_statuses: frozenset[int],
    ) -> Response:
        attempt = limited = 0
        while True:
            attempt += 1
            try:
                response = await self._send(method, url, kind, json_body, attempt + limited)
                if response.status < 300 or response.status in ok_statuses:
                    return response
                raise error_from_response(response.status, response.headers, response.body)
            except NanoBananaError as exc:
                error: NanoBananaError = exc
            if kind == "create":
                if not may_retry_create(error):
                    raise _as_create_error(error, json_body)
            elif isinstance(error, ResponseTooLargeError) or not policy.is_retryable(error):
                raise error  # the same body would come back just as large
            wait: float | None
            if isinstance(error, RateLimitError) and limited < policy.max_rate_limited:
                # Flow control, not failure: wait it out without using up an attempt.
                attempt -= 1
                limited += 1
                wait = (
                    error.retry_after
                    if error.retry_after is not None
                    else policy.backoff(limited, self._rng)
                )
                if wait > policy.max_retry_after:
                    raise error
            else:
                wait = policy.delay(error, attempt, self._rng)
            if wait is None:
                raise _as_create_error(error, json_body) if kind == "create" else error
            logger.debug("retrying %s %s in %.2f s after %s", method, kind, wait, error)
            await anyio.sleep(wait)

    async def _send(
        self,
        method: str,
        url: str,
        kind: Kind,
        json_body: Mapping[str, Any] | None,
        attempt: int,
    ) -> Response:
        api = self.is_api_origin(url)
        headers = self._api_headers if api else _PLAIN_HEADERS
        if api:
            await self.pacer.acquire()
        started = time.monotonic()
        status: int | None = None
        error_text: str | None = None
        self.requests_sent += 1
        try:
            async with self.session.request(
                method, url, json=json_body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                if api:
                    if status == 429:
                        self.rate_limited += 1
                        # Hold every sender only as long as a retry would wait: a server
                        # asking for 1e12 s must not freeze the whole client.
                        hold = parse_retry_after(resp.headers)
                        if hold is not None:
                            hold = min(hold, self.retry.max_retry_after)
                        self.pacer.on_throttle(hold)
                    else:
                        self.pacer.on_success()
                body = await _read_capped(resp, self.limits.max_response_bytes)
                return Response(status, resp.headers, body)
        except NanoBananaError as exc:
            error_text = type(exc).__name__
            raise
        except _TIMEOUTS as exc:
            # Before ClientError: aiohttp's connect/read timeouts are both, and on Python 3.10
            # asyncio.TimeoutError (also the session's total timeout) is not the builtin.
            error_text = type(exc).__name__
            path = urlsplit(url).path
            raise RequestTimeoutError(f"{method} {path}: timed out ({error_text})") from None
        except aiohttp.ClientConnectorError as exc:
            error_text = type(exc).__name__
            raise ConnectError(
                f"cannot connect to {urlsplit(url).netloc}: {exc.os_error}"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            error_text = type(exc).__name__
            path = urlsplit(url).path
            raise TransportError(f"{method} {path}: {type(exc).__name__}") from None
        finally:
            if self._hooks or logger.isEnabledFor(logging.DEBUG):
                self._report(method, url, attempt, status, time.monotonic() - started, error_text)

    def _report(
        self,
        method: str,
        url: str,
        attempt: int,
        status: int | None,
        elapsed: float,
        error_text: str | None,
    ) -> None:
        path = urlsplit(url).path
        logger.debug(
            "%s %s -> %s (attempt %d, %.3f s)%s",
            method,
            path,
            status if status is not None else "-",
            attempt,
            elapsed,
            f" {error_text}" if error_text else "",
        )
        event = HttpEvent(method, path, attempt, status, elapsed, error_text)
        for hook in self._hooks:
            try:
                hook(event)
            except Exception:  # the user's hook: logged, never raised into the request path
                logger.exception("an HTTP event hook failed; the request goes on")


_PLAIN_HEADERS = {"Accept": "application/json"}
_ALL_ERRORS = 300  # an ok_statuses set this large covers every non-2xx status


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    length = resp.content_length
    if length is not None and length > cap:
        raise ResponseTooLargeError(
            f"response body of {length} bytes exceeds the {cap}-byte cap", limit=cap, size=length
        )
    if length is not None and not resp.headers.get("Content-Encoding"):
        return await resp.read()  # declared and small enough: read it whole
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > cap:
            raise ResponseTooLargeError(f"response body exceeds the {cap}-byte cap", limit=cap)
        chunks.append(chunk)
    return b"".join(chunks)


def _as_create_error(error: NanoBananaError, body: Mapping[str, Any] | None) -> NanoBananaError:
    """A create failure that may have been processed becomes ``SubmissionUnknownError``."""
    if may_retry_create(error):
        return error  # certainly not processed: safe to report as is
    if isinstance(error, APIStatusError) and error.status_code < 500 and error.status_code != 408:
        return error  # the service answered and refused: nothing was created
    unknown = SubmissionUnknownError(f"create failed ambiguously ({error})", request_body=body)
    unknown.__cause__ = error
    return unknown
