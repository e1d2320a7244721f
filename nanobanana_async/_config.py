"""Small value objects that configure a client: timeouts, resource limits, task retries."""

from __future__ import annotations

import random
from typing import Any

import attrs

from .errors import NoImageError, TaskCancelledError, TaskFailedError, ValidationError

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUT", "Limits", "TaskRetry", "Timeout"]


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Timeout:
    """Timeouts in seconds: ``connect`` and ``read`` per attempt, ``deadline`` per call.

    ``connect`` bounds getting a connection for an attempt: a new one (DNS, TCP, TLS) or the
    wait for a free one when the pool is full. ``read`` bounds each API attempt as a whole:
    from the moment it leaves the client's rate limiter (getting its connection included)
    its whole response must be read within ``read`` seconds, or the attempt ends in
    ``RequestTimeoutError`` (retried per the retry policy; a create's is never re-sent). One
    timer per attempt, not a gap between packets: a body that keeps trickling in is cut off
    too. The deadline bounds a whole API call, retries and their waits included. ``cancel`` bounds
    each cancel request sent when a wait is abandoned or the client closes; ``close`` bounds all
    of that cleanup together (cancels go out concurrently; what is not confirmed by then is
    logged and left to finish on the service), so closing never hangs on a stalled service.
    """

    connect: float = attrs.field(default=10.0, validator=_positive)
    read: float = attrs.field(default=30.0, validator=_positive)
    deadline: float = attrs.field(default=120.0, validator=_positive)
    cancel: float = attrs.field(default=5.0, validator=_positive)
    close: float = attrs.field(default=10.0, validator=_positive)


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds on what one client does at once.

    ``max_connections``: the aiohttp connection pool. ``max_concurrent_polls`` and
    ``max_concurrent_creates``: requests of each kind in the air. ``max_response_bytes``: a
    larger API response body is a ``ProtocolError`` (downloads have their own cap).
    ``keepalive_timeout``: seconds an idle pooled connection is kept.
    """

    max_connections: int = attrs.field(default=64, validator=_positive)
    max_concurrent_polls: int = attrs.field(default=32, validator=_positive)
    max_concurrent_creates: int = attrs.field(default=16, validator=_positive)
    max_response_bytes: int = attrs.field(default=8 * 1024 * 1024, validator=_positive)
    keepalive_timeout: float = attrs.field(default=30.0, validator=_positive)


DEFAULT_TIMEOUT = Timeout()
DEFAULT_LIMITS = Limits()


# Failures another attempt cannot fix (or that the user asked for): never re-created.
NEVER_RETRIED = frozenset({"REQUEST_INVALID", "CONTENT_BLOCKED", "CANCELED", "CANCELLED"})
DEFAULT_RETRIED = frozenset({"INFERENCE_FAILURE", "INFERENCE_TIMEOUT", "NO_IMAGE"})


def _error_types(value: Any) -> frozenset[str]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValidationError("on", value, "must be a set of error types", "e.g. {'NO_IMAGE'}")
    types = frozenset(str(v).strip().upper() for v in value)
    refused = types & NEVER_RETRIED
    if refused:
        raise ValidationError(
            "on",
            sorted(refused),
            "are never retried (another attempt cannot fix them, or you cancelled)",
            ", ".join(sorted(DEFAULT_RETRIED)) + " or any other error_type",
        )
    return types


def _attempts(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("max_attempts", value, "must be an integer >= 1")


def _seconds(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValidationError(attribute.name, value, "must be a number of seconds >= 0")


@attrs.frozen(kw_only=True)
class TaskRetry:
    """Create a task again when it failed in a way another attempt may fix. Off unless given.

    Each attempt is a new paid task: with a journal it is recorded before it is sent (a resume
    never creates one attempt twice), counted in ``ClientStats.task_retries`` and shown on the
    ``Outcome`` (``attempts``, ``request_ids``). ``on`` lists the ``error_type`` values retried
    (``NO_IMAGE`` is ``NoImageError``); REQUEST_INVALID, CONTENT_BLOCKED and cancellation never
    are. ``max_attempts`` counts the first one; waits between attempts follow full-jitter backoff.
    """

    max_attempts: int = attrs.field(default=2, validator=_attempts)
    on: frozenset[str] = attrs.field(default=DEFAULT_RETRIED, converter=_error_types)
    initial_backoff: float = attrs.field(default=1.0, validator=_seconds)
    max_backoff: float = attrs.field(default=30.0, validator=_seconds)

    def should_retry(self, error: BaseException | None, attempt: int) -> bool:
        """Whether a task that ended with ``error`` on attempt ``attempt`` is created again."""
        if attempt >= self.max_attempts or not isinstance(error, TaskFailedError):
            return False
        if isinstance(error, TaskCancelledError):
            return False
        kind = "NO_IMAGE" if isinstance(error, NoImageError) else (error.error_type or "")
        kind = kind.strip().upper()
        return kind in self.on and kind not in NEVER_RETRIED

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (full jitter)."""
        cap = min(self.max_backoff, self.initial_backoff * 2 ** max(0, attempt - 1))
        return (rng or random).uniform(0, cap)
