"""The error tree of nanobanana_async.

::

    NanoBananaError
    ├── ValidationError                 bad input, raised before any request is sent
    │                                   (also ValueError)
    ├── ClientStateError                the client used outside ``async with`` or after close
    │                                   (also RuntimeError)
    ├── ProtocolError                   a response body that is not the JSON we expect
    │   └── ResponseTooLargeError       a body over ``Limits.max_response_bytes`` (never retried)
    ├── TransportError                  the request failed below HTTP
    │   ├── ConnectError                could not connect (nothing was sent)
    │   └── RequestTimeoutError         a connect timeout, a read stall or the call's deadline
    │                                   (also builtins.TimeoutError; ``TimeoutError`` is a
    │                                   deprecated alias)
    ├── SubmissionUnknownError          a create may have been processed; the task may exist
    ├── APIStatusError                  the service answered with an error status
    │   ├── BadRequestError             400
    │   ├── AuthenticationError         401
    │   ├── InsufficientCreditsError    402 (error codes 40201-40208)
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404
    │   ├── UnprocessableEntityError    422
    │   ├── RateLimitError              429 (``retry_after`` in seconds)
    │   └── ServerError                 5xx
    ├── TaskError                       the task ran and did not produce a result
    │   ├── TaskFailedError             COMPLETED with an ``error``/``error_type``
    │   │   └── NoImageError            finished without the image that was asked for
    │   └── TaskCancelledError          COMPLETED with ``error_type`` CANCELED
    ├── BatchAbortedError               a batch stopped: the account cannot go on, or its cap
    ├── JournalError                    the journal refused an operation (``journal.py``)
    │   ├── JournalMismatchError        the journal belongs to another input (also ValueError)
    │   └── JournalStateError           a transition its recorded state forbids (also RuntimeError)
    └── DownloadError                   an output could not be saved (``download.py``)
        └── DownloadTimeoutError        the download timed out (also RequestTimeoutError)

Every timeout a call raises is a ``RequestTimeoutError`` (``SubmissionUnknownError`` for a create
that may have reached the service), on every supported Python: on 3.10 ``asyncio.TimeoutError``
is not ``builtins.TimeoutError``, and the SDK maps both.

No error message, ``str`` or ``repr`` contains the API key: the key never reaches this module.
"""

from __future__ import annotations

import builtins
import contextlib
import email.utils
import json
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "ClientStateError",
    "BatchAbortedError",
    "ConnectError",
    "DownloadError",
    "DownloadTimeoutError",
    "InsufficientCreditsError",
    "JournalError",
    "JournalMismatchError",
    "JournalStateError",
    "NanoBananaError",
    "NoImageError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "ServerError",
    "SubmissionUnknownError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TimeoutError",
    "TransportError",
    "UnprocessableEntityError",
    "ValidationError",
    "error_from_response",
    "parse_retry_after",
]

EXCERPT_CHARS = 200


def excerpt(data: bytes | str | None, limit: int = EXCERPT_CHARS) -> str:
    """Return a short printable excerpt of a body, for error messages."""
    if data is None:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text if len(text) <= limit else text[:limit] + "…"


class NanoBananaError(Exception):
    """Root of every error this SDK raises."""


class ValidationError(NanoBananaError, ValueError):
    """Input rejected on the client before any request was sent."""

    def __init__(self, field: str, value: object, reason: str, allowed: str | None = None) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.allowed = allowed
        shown = excerpt(repr(value), 60)
        message = f"{field}: {reason} (got {shown})"
        if allowed:
            message += f"; allowed: {allowed}"
        super().__init__(message)


class ClientStateError(NanoBananaError, RuntimeError):
    """The client was used outside ``async with`` or after it was closed."""


class ProtocolError(NanoBananaError):
    """A response that does not follow the wire format (not JSON, or the wrong shape)."""

    def __init__(self, message: str, *, body: bytes | str | None = None) -> None:
        self.body_excerpt = excerpt(body)
        super().__init__(f"{message}: {self.body_excerpt!r}" if body is not None else message)


class ResponseTooLargeError(ProtocolError):
    """A response body larger than ``Limits.max_response_bytes``; retrying cannot help.

    ``limit`` is the cap in bytes; ``size`` the declared ``Content-Length``, or None when the
    body was cut off while streaming.
    """

    def __init__(self, message: str, *, limit: int, size: int | None = None) -> None:
        self.limit = limit
        self.size = size
        super().__init__(message)


class TransportError(NanoBananaError):
    """The request failed below HTTP: connection error, reset or timeout."""


class ConnectError(TransportError):
    """Could not connect to the service; the request was not sent."""


class RequestTimeoutError(TransportError, builtins.TimeoutError):
    """A connect timeout, a stalled read, or the overall deadline of a call expired.

    Also a ``builtins.TimeoutError``. A create that times out is reported as
    ``SubmissionUnknownError`` instead (it may have reached the service).
    """


TimeoutError = RequestTimeoutError
"""Deprecated alias of ``RequestTimeoutError`` (it shadows the built-in name when imported)."""


class SubmissionUnknownError(NanoBananaError):
    """A create request may have reached the service: the task may exist and may be billed.

    The SDK never resubmits such a create by itself. Check your records (or the journal) and
    resubmit only if you accept paying twice.
    """

    def __init__(self, message: str, *, request_body: Mapping[str, Any] | None = None) -> None:
        self.request_body = dict(request_body) if request_body is not None else None
        super().__init__(
            f"{message}. The task may have been created (and billed); it was not resubmitted."
        )


class APIStatusError(NanoBananaError):
    """The service answered with an error HTTP status."""

    status_code: int = 0

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        body: bytes | str | None = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        self.request_id = request_id
        self.body_excerpt = excerpt(body)
        text = f"HTTP {status_code}"
        if code:
            text += f" {code}"
        text += f": {message}"
        if request_id:
            text += f" (request_id={request_id})"
        super().__init__(text)


class BadRequestError(APIStatusError):
    """HTTP 400: the request was malformed (or, on cancel, the task had already completed)."""


class AuthenticationError(APIStatusError):
    """HTTP 401: the API key is missing or wrong."""


class InsufficientCreditsError(APIStatusError):
    """HTTP 402: the account has no credits left (error codes 40201-40208); not retryable."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403: the key may not use this model."""


class NotFoundError(APIStatusError):
    """HTTP 404: no such request id (or its result has expired)."""


class UnprocessableEntityError(APIStatusError):
    """HTTP 422: the service rejected the request body."""


class RateLimitError(APIStatusError):
    """HTTP 429: too many requests; ``retry_after`` says how long to wait, when the service said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ServerError(APIStatusError):
    """HTTP 5xx: a transient failure of the service."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class TaskError(NanoBananaError):
    """The task ran on the service and ended without a result."""

    def __init__(
        self,
        message: str,
        *,
        request_id: str,
        error_type: str | None,
        provider_error: Mapping[str, Any] | None = None,
    ) -> None:
        self.request_id = request_id
        self.error_type = error_type
        self.message = message
        self.provider_error = provider_error
        super().__init__(f"task {request_id} {error_type or 'failed'}: {message}")


class TaskFailedError(TaskError):
    """The task completed with an error (``error_type`` such as CONTENT_BLOCKED)."""


class NoImageError(TaskFailedError):
    """The task finished without an image although images were asked for.

    Safety filters and overloaded models do this. ``text`` holds the model's text outputs (often
    a refusal), ``outputs`` every output, ``metadata`` the result's metadata (a finish reason).
    """

    def __init__(
        self,
        *,
        request_id: str,
        text: str | None,
        outputs: tuple[Any, ...] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.text = text
        self.outputs = outputs
        self.metadata = dict(metadata or {})
        reason = self.metadata.get("finish_reason") or self.metadata.get("finishReason")
        detail = f" ({reason})" if reason else ""
        said = f"; the model said: {excerpt(text, 160)}" if text else ""
        super().__init__(
            f"finished without an image{detail}{said}",
            request_id=request_id,
            error_type="NO_IMAGE",
        )


class BatchAbortedError(NanoBananaError):
    """A batch stopped creating tasks: the key was refused (401/403), the credits ran out (402),
    the service asked to wait longer than the policy allows, or ``max_creates`` was reached.

    Raised by the stream's ``async for`` (and ``map``) after every outcome in hand was
    delivered; ``cause`` is the error that stopped it (also ``__cause__``). Rerunning with the
    same journal resumes where it stopped.
    """

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        self.cause = cause
        super().__init__(message)
        if cause is not None:
            self.__cause__ = cause


class TaskCancelledError(TaskError):
    """The task was cancelled (``error_type`` CANCELED)."""


class JournalError(NanoBananaError):
    """The journal refused an operation (``journal.py``); SQLite and file errors pass as is."""


class JournalMismatchError(JournalError, ValueError):
    """The journal belongs to a different input: an index was recorded with another request."""

    def __init__(self, index: int) -> None:
        super().__init__(
            f"journal item {index} was recorded for a different request body; "
            "this journal belongs to another input"
        )
        self.index = index


class JournalStateError(JournalError, RuntimeError):
    """The requested transition is not allowed from the item's recorded state."""


def _redact_url(url: str) -> str:
    """The scheme, host, port and path of ``url``: no user info, query string or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<invalid URL>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class DownloadError(NanoBananaError):
    """An output could not be saved (status, size cap, content type, I/O, timeout)."""

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.url = _redact_url(url)
        self.reason = reason
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(f"cannot download {self.url}: {reason}")


class DownloadTimeoutError(DownloadError, RequestTimeoutError):
    """A download timed out (retried as transient); both a ``DownloadError`` and a timeout."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``Retry-After`` (seconds or HTTP date), or None.

    Negative, non-finite or unparsable values count as absent.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    candidates: list[float] = []
    if (ms := lowered.get("retry-after-ms")) is not None:
        with contextlib.suppress(ValueError):
            candidates.append(float(ms) / 1000.0)
    if not candidates and (value := lowered.get("retry-after")) is not None:
        try:
            candidates.append(float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None and when.tzinfo is not None:
                current = time.time() if now is None else now
                candidates.append(when.timestamp() - current)
    for seconds in candidates:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def _describe_body(payload: Any) -> tuple[str | None, str | None, str | None]:
    """Return (code, message, request_id) from any of the three documented error shapes."""
    if not isinstance(payload, dict):
        return None, None, None
    request_id = payload.get("request_id")
    request_id = request_id if isinstance(request_id, str) else None
    error = payload.get("error")
    if isinstance(error, dict):  # gateway: {"error": {"code", "message"}, "request_id"}
        code, message = error.get("code"), error.get("message")
        return _str_or_none(code), _str_or_none(message), request_id
    if isinstance(error, str):
        return _str_or_none(payload.get("error_type")), error, request_id
    status = payload.get("status")
    if isinstance(status, dict):  # balance: {"status": {"code", "message", "error_code"}}
        code = status.get("error_code", status.get("code"))
        return _str_or_none(code), _str_or_none(status.get("message")), request_id
    if isinstance(status, str):  # cancel: {"status": "ALREADY_COMPLETED"}
        return status, status.replace("_", " ").lower(), request_id
    detail = payload.get("detail")  # application: {"detail": str | [{"loc", "msg"}]}
    if isinstance(detail, str):
        return None, detail, request_id
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
        return None, "; ".join(parts) or None, request_id
    return None, None, request_id


def _str_or_none(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> APIStatusError:
    """Map an error response (status, headers, raw body) to the matching ``APIStatusError``."""
    try:
        payload = json.loads(body) if body else None
    except (ValueError, RecursionError):
        payload = None
    code, message, request_id = _describe_body(payload)
    if request_id is None:
        request_id = next((v for k, v in headers.items() if k.lower() == "x-request-id"), None)
    message = message or (excerpt(body, 120) if body else f"HTTP {status}")
    common: dict[str, Any] = {
        "status_code": status,
        "code": code,
        "request_id": request_id,
        "body": body,
    }
    if status == 429:
        return RateLimitError(message, retry_after=parse_retry_after(headers), **common)
    if status >= 500:
        return ServerError(message, retry_after=parse_retry_after(headers), **common)
    cls = _STATUS_CLASSES.get(status, APIStatusError)
    if code is not None and code.isdigit() and 40201 <= int(code) <= 40208:
        cls = InsufficientCreditsError  # a balance code wins over whatever status a proxy set
    return cls(message, **common)
