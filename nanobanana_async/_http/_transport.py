"""HTTP transport: aiohttp sessions, auth pinned to one origin, timeouts, retries, logging.

Network settings (proxy, environment proxies, TLS, extra headers, a user connector) are checked
here when the ``Client`` is built and turned into sessions once, in ``open()``: a request costs
the same whether or not any of them is set.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import logging
import random
import re
import ssl as _ssl
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, Literal, NoReturn
from urllib.parse import quote, urlsplit

import aiohttp
import anyio
import attrs
from yarl import URL

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
from ._shared import Pacer

__all__ = ["HttpEvent", "Response", "Transport", "transport_class"]

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


class Response:
    """A completed HTTP response with its body read (bounded).

    A plain slotted class, not attrs: two are built per task on the hot path, and attrs'
    frozen ``__init__`` costs three times as much. Treat it as read-only.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Response(status={self.status!r}, body={self.body[:60]!r})"

    def json(self) -> Any:
        """The body parsed as JSON, or ``ProtocolError``."""
        try:
            try:
                text = self.body.decode()  # JSON on the wire is UTF-8 (RFC 8259)
            except UnicodeDecodeError:
                return json.loads(self.body)  # json's own detection (UTF-16/32) decides
            return json.loads(text)
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


_RequestFunc = Callable[..., AbstractAsyncContextManager[aiohttp.ClientResponse]]


def _not_open(*_: Any, **__: Any) -> NoReturn:
    raise RuntimeError("transport is not open")


class Transport:
    """Owns the aiohttp sessions; sends API requests with auth, retries and a per-call deadline.

    Two sessions share one connector (one pool, one TLS setting): the API session, which sends
    the key and the user's ``headers`` to the API origin only, and the download session
    (``session``), which sends neither.
    """

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
        proxy: str | URL | None = None,
        trust_env: bool = False,
        ssl: _ssl.SSLContext | bool = True,
        headers: Mapping[str, str] | None = None,
        connector: aiohttp.BaseConnector | None = None,
        pacer: Pacer | None = None,
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
        if not isinstance(trust_env, bool):
            raise ValidationError("trust_env", trust_env, "must be True or False")
        self.trust_env = trust_env
        self.proxy, self._proxy_credentials = _check_proxy(proxy, self._origin[0])
        self.ssl = _check_ssl(ssl, connector)
        self._connector = _check_connector(connector)
        extra = _check_headers(headers)
        given = {name.lower() for name in extra}
        defaults = {k: v for k, v in _PLAIN_HEADERS.items() if k.lower() not in given}
        # The user's headers go to the API origin only, with the key: never to a CDN. They go
        # with each request, not as session headers: aiohttp copies a session's headers into
        # the proxy's headers, where the key would reach the proxy.
        self._api_headers = {**defaults, **extra, "Authorization": self._auth}
        # Headers sent with each API request, without and with a JSON body (set in ``open``).
        self._per_request: tuple[dict[str, str] | None, dict[str, str]] = ({}, {})
        self._queue_url = f"{self.base_url}/v1/queue/{quote(model, safe='')}"
        self._warned_foreign = False
        self._session: aiohttp.ClientSession | None = None
        self._download_session: aiohttp.ClientSession | None = None
        self._http: _RequestFunc = _not_open
        self._now: Callable[[], float] = time.monotonic  # the loop's clock once open
        self.requests_sent = 0
        self.rate_limited = 0
        # One pacer for every request of the client: creates and polls share the account's limit
        # (and with a shared pacer, that of every client of the account).
        self.pacer: Pacer = pacer if pacer is not None else AdaptiveRateLimiter(max_rate=max_rate)

    def __repr__(self) -> str:
        return f"<Transport {self.base_url!r} model={self.model!r}>"

    def _unpaced(self) -> bool:
        """True when the pacer lets the next request go without waiting (no 429 seen yet)."""
        pacer = self.pacer
        if not isinstance(pacer, AdaptiveRateLimiter):
            return False  # a shared budget may wait (and asks Redis): keep the deadline scope
        return pacer.core.unpaced(self._now())

    async def open(self) -> None:
        """Create the sessions (call from inside the event loop).

        Everything about the network is decided here, once: which proxy the API goes through
        (``proxy``, or with ``trust_env`` the environment's, resolved now), the connector, TLS.
        Raises ``ValidationError`` before any request if the environment would send the key
        in clear through a proxy.
        """
        self._now = asyncio.get_running_loop().time
        self.pacer.use_clock(self._now)  # no backend lookup per request
        proxy = self.proxy
        proxy_headers = _basic(self._proxy_credentials)
        if proxy is None and self.trust_env:
            proxy, proxy_headers = await anyio.to_thread.run_sync(_env_proxy, self.base_url)
            if proxy is not None and self._origin[0] != "https":
                raise ValidationError(
                    "trust_env",
                    True,
                    f"the environment sends the {self._origin[0]}:// API through a proxy "
                    f"({_redact_userinfo(str(proxy))}), which would see the API key in clear",
                    "an https:// base_url, or the API host in NO_PROXY",
                )
        if self.ssl is False:
            logger.warning(
                "TLS certificate verification is off (ssl=False): anyone on the network path "
                "can impersonate the API and read the API key"
            )
        owned = self._connector is None
        connector = self._connector or aiohttp.TCPConnector(
            limit=self.limits.max_connections,
            keepalive_timeout=self.limits.keepalive_timeout,
            ssl=self.ssl,
        )
        # API requests: ``read`` bounds each attempt as a whole (documented on ``Timeout``),
        # enforced by aiohttp's total timeout at min(read, deadline): one timer per attempt.
        # aiohttp's sock_read adds a timer armed when the request is sent and re-armed on each
        # chunk received, three per request instead of one (~15 µs per task in P1). The
        # deadline's own bound holds as before: a first attempt ends within it, retries run in
        # a deadline scope.
        api_timeout = aiohttp.ClientTimeout(
            total=min(self.timeout.read, self.timeout.deadline), connect=self.timeout.connect
        )
        # Downloads: large bodies streamed to disk, so ``read`` bounds the wait for each chunk.
        timeout = aiohttp.ClientTimeout(
            total=self.timeout.deadline,
            connect=self.timeout.connect,
            sock_read=self.timeout.read,
        )
        # The API session never reads the environment: its proxy was resolved above, and
        # aiohttp's trust_env would look up ~/.netrc and the proxy variables on every request.
        # Only URLs on the API origin go through it. Without a proxy the key and the user's
        # headers are its own headers (no merge per request); through a proxy they go with each
        # request instead, because aiohttp copies a session's headers into the proxy's (the
        # CONNECT), where the key would reach the proxy.
        session_headers = {"User-Agent": USER_AGENT}
        json_type = {"Content-Type": "application/json"}
        if proxy is None:
            if any(name.lower() == "user-agent" for name in self._api_headers):
                session_headers = {}  # the user's User-Agent replaces ours (never both)
            session_headers.update(self._api_headers)
            self._per_request = (None, json_type)
        else:
            self._per_request = (self._api_headers, {**self._api_headers, **json_type})
        self._session = api = aiohttp.ClientSession(
            connector=connector,
            connector_owner=owned,
            headers=session_headers,
            timeout=api_timeout,
        )
        # Downloads (other origins, no key) follow aiohttp's own trust_env rules per URL.
        self._download_session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=False,
            headers={"User-Agent": USER_AGENT},
            timeout=timeout,
            trust_env=self.trust_env,
        )
        self._http = (
            api.request
            if proxy is None
            else partial(api.request, proxy=proxy, proxy_headers=proxy_headers)
        )

    async def close(self) -> None:
        """Close the pacer's connections (a shared pacer's Redis), the sessions, and the
        connector unless it is the user's."""
        self._http = _not_open
        pacer_close = getattr(self.pacer, "aclose", None)
        if pacer_close is not None:
            await pacer_close()
        downloads, self._download_session = self._download_session, None
        if downloads is not None:
            await downloads.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open download session (no key, no user headers); raises if the transport is
        closed. Pass ``download_proxy(url)`` with each request: an explicit ``proxy`` applies
        to downloads too.
        """
        if self._download_session is None:
            raise RuntimeError("transport is not open")
        return self._download_session

    def download_proxy(self, url: str) -> dict[str, Any]:
        """Keyword arguments for one download request: the explicit ``proxy``, if one is set."""
        if self.proxy is None:
            return {}
        if self._proxy_credentials is None:
            return {"proxy": self.proxy}
        if url[:6].lower() == "https:":
            # The proxy authenticates the CONNECT, which is where aiohttp sends proxy_headers.
            return {"proxy": self.proxy, "proxy_headers": _basic(self._proxy_credentials)}
        # A plain-http request must carry the credentials itself; aiohttp does that only for
        # proxy_auth (deprecated in 3.14, yet proxy_headers still go on CONNECTs alone).
        return {"proxy": self.proxy, "proxy_auth": aiohttp.BasicAuth(*self._proxy_credentials)}

    def task_end_hook(self) -> Callable[[Any], None] | None:
        """What the poll scheduler calls with a ``TaskEntry`` when it leaves the live phases
        (finished or abandoned); None when nothing listens (tracing off)."""
        return None

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
        deadline = self.timeout.deadline
        first: NanoBananaError | None = None
        try:
            if self._unpaced():
                # The first attempt cannot wait before it is sent, and the session's total
                # timeout (the deadline) bounds the exchange: a deadline scope (a timer and
                # a cancel scope per call) is needed only once a retry is due.
                started = self._now()
                answer = await self._attempt(method, url, kind, json_body, 1, ok_statuses)
                if isinstance(answer, Response):
                    return answer
                first = answer
                deadline = max(0.0, deadline - (self._now() - started))
            with anyio.fail_after(deadline):
                return await self._with_retries(
                    method, url, kind, json_body, policy, ok_statuses, first
                )
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
        first: NanoBananaError | None = None,
    ) -> Response:
        """Attempts until success or a final error; ``first``: the failed first attempt's error
        (already sent by the caller)."""
        attempt = limited = 0
        while True:
            attempt += 1
            if first is not None:
                error: NanoBananaError = first
                first = None
            else:
                answer = await self._attempt(
                    method, url, kind, json_body, attempt + limited, ok_statuses
                )
                if isinstance(answer, Response):
                    return answer
                error = answer
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

    async def _attempt(
        self,
        method: str,
        url: str,
        kind: Kind,
        json_body: Mapping[str, Any] | None,
        attempt: int,
        ok_statuses: frozenset[int],
    ) -> Response | NanoBananaError:
        """One send: its response if 2xx (or in ``ok_statuses``), else the error it ends in."""
        try:
            response = await self._send(method, url, kind, json_body, attempt)
        except NanoBananaError as exc:
            return exc
        if response.status < 300 or response.status in ok_statuses:
            return response
        return error_from_response(response.status, response.headers, response.body)

    async def _send(
        self,
        method: str,
        url: str,
        kind: Kind,
        json_body: Mapping[str, Any] | None,
        attempt: int,
    ) -> Response:
        api = self.is_api_origin(url)
        # The body is serialised here (bytes), not by aiohttp's JSON payload machinery.
        body = None if json_body is None else _COMPACT_JSON.encode(json_body).encode()
        if api:
            await self.pacer.acquire()
            exchange = self._http(
                method,
                url,
                data=body,
                headers=self._per_request[body is not None],
                allow_redirects=False,
            )
        else:  # never through the API session, which carries the key
            exchange = self.session.request(
                method,
                url,
                data=body,
                headers=_PLAIN_HEADERS if body is None else _PLAIN_JSON_HEADERS,
                allow_redirects=False,
                **self.download_proxy(url),
            )
        started = time.monotonic()
        status: int | None = None
        error_text: str | None = None
        self.requests_sent += 1
        try:
            async with exchange as resp:
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


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder, not one per body
_PLAIN_HEADERS = {"Accept": "application/json"}
_PLAIN_JSON_HEADERS = {**_PLAIN_HEADERS, "Content-Type": "application/json"}
# Headers the SDK sets itself (or that belong to the proxy): never taken from ``headers=``.
_RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PROXY_ALLOWED = "None, or an http:// or https:// proxy URL such as http://proxy.internal:3128"


def transport_class(tracing: object) -> type[Transport]:
    """``Transport``, or with ``tracing=True`` its OpenTelemetry subclass (the ``otel`` extra)."""
    if tracing is False:
        return Transport
    if tracing is not True:
        raise ValidationError("tracing", tracing, "must be True or False")
    try:
        from ._otel import TracedTransport
    except ImportError:
        raise ValidationError(
            "tracing",
            True,
            "needs OpenTelemetry, which is not installed",
            "pip install 'nanobanana-async[otel]'",
        ) from None
    return TracedTransport


def _redact_userinfo(url: str) -> str:
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^@/?#]*@", r"\1***@", url)


def _check_proxy(proxy: object, api_scheme: str) -> tuple[URL | None, tuple[str, str] | None]:
    """The proxy URL without its credentials, and those credentials."""
    if proxy is None:
        return None, None
    if isinstance(proxy, URL):
        proxy = str(proxy)
    if not isinstance(proxy, str):
        raise ValidationError("proxy", proxy, "is not a URL", _PROXY_ALLOWED)
    shown = _redact_userinfo(proxy)
    try:
        url = URL(proxy)
        port = url.port
    except (ValueError, TypeError):
        raise ValidationError("proxy", shown, "is not a valid URL", _PROXY_ALLOWED) from None
    if url.scheme not in ("http", "https") or not url.host or port is None:
        raise ValidationError("proxy", shown, "is not an http(s) proxy URL", _PROXY_ALLOWED)
    if url.path not in ("", "/") or url.query_string or url.fragment or re.search(r"\s", proxy):
        raise ValidationError("proxy", shown, "must name only a host and port", _PROXY_ALLOWED)
    if api_scheme != "https":
        # A proxy sees a plain-http request whole, Authorization header included; only a
        # CONNECT tunnel to an https API keeps the key from it.
        raise ValidationError(
            "proxy",
            shown,
            "would see the API key in clear: the API base_url is not https://",
            "an https:// base_url (the proxy then sees only an encrypted CONNECT tunnel)",
        )
    return url.with_user(None), ((url.user, url.password or "") if url.user else None)


def _check_ssl(value: object, connector: object) -> _ssl.SSLContext | bool:
    if not (isinstance(value, _ssl.SSLContext) or value is True or value is False):
        raise ValidationError(
            "ssl",
            value,
            "is not a TLS setting",
            "an ssl.SSLContext, True (verify with the default CAs) or False (no verification)",
        )
    if connector is not None and value is not True:
        raise ValidationError(
            "ssl",
            value,
            "cannot be combined with connector=: set it on your connector",
            "aiohttp.TCPConnector(ssl=...)",
        )
    return value


def _check_connector(connector: object) -> aiohttp.BaseConnector | None:
    if connector is None:
        return None
    if not isinstance(connector, aiohttp.BaseConnector):
        raise ValidationError(
            "connector", connector, "is not an aiohttp connector", "an aiohttp.BaseConnector"
        )
    if connector.closed:
        raise ValidationError("connector", connector, "is closed", "an open aiohttp.BaseConnector")
    return connector


def _check_headers(headers: object) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ValidationError("headers", headers, "must be a mapping of names to values")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        # Values are never shown in errors: a header may carry a gateway secret.
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValidationError("headers", name, "is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValidationError(
                "headers",
                name,
                "is set by the SDK (or belongs to the proxy) and cannot be given",
                "any other header, e.g. X-Request-Source or traceparent",
            )
        if not isinstance(value, str) or any(ch in value for ch in "\r\n\0"):
            raise ValidationError(
                "headers", name, "must have a str value without CR, LF or NUL characters"
            )
        checked[name] = value
    return checked


def _basic(credentials: tuple[str, str] | None) -> dict[str, str] | None:
    """``Proxy-Authorization`` for the proxy's own credentials (never the API key)."""
    if credentials is None:
        return None
    token = base64.b64encode(":".join(credentials).encode()).decode("ascii")
    return {"Proxy-Authorization": f"Basic {token}"}


def _env_proxy(url: str) -> tuple[URL | None, dict[str, str] | None]:
    """The proxy the environment gives ``url`` (aiohttp's rules: *_PROXY, NO_PROXY, .netrc)."""
    from aiohttp.helpers import get_env_proxy_for_url

    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None
    return proxy, (_basic((auth.login, auth.password)) if auth is not None else None)


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
