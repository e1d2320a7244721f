"""Retry policy: which failures are retried, how often, and how long to wait between tries."""

from __future__ import annotations

import random

import attrs

from ..errors import (
    APIStatusError,
    ConnectError,
    NanoBananaError,
    ProtocolError,
    RateLimitError,
    ResponseTooLargeError,
    ServerError,
    TransportError,
)

__all__ = ["DEFAULT_RETRY", "NO_RETRY", "RetryPolicy"]


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"RetryPolicy.{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Bounded retries with capped exponential backoff and full jitter, honouring Retry-After.

    The n-th retry waits ``U(0, min(max_backoff, initial_backoff * 2**(n-1)))`` seconds, or
    what the server's ``Retry-After`` asked for. A server asking for more than ``max_retry_after``
    seconds ends the retries with the error (``RateLimitError.retry_after`` says how long).
    429s are flow control, not failures: up to ``max_rate_limited`` of them are waited out
    without using up ``max_attempts`` (the client's pacer slows down meanwhile).
    A create that may have been processed is never retried, whatever this policy says.
    """

    max_attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    initial_backoff: float = attrs.field(default=0.5, validator=_positive)
    max_backoff: float = attrs.field(default=8.0, validator=_positive)
    max_retry_after: float = attrs.field(default=60.0, validator=_positive)
    max_rate_limited: int = attrs.field(default=20, validator=attrs.validators.ge(0))
    retry_statuses: frozenset[int] = attrs.field(
        default=frozenset({408, 429, 500, 502, 503, 504}), converter=frozenset
    )

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based), full jitter."""
        ceiling = min(self.max_backoff, self.initial_backoff * (2 ** max(0, retry_number - 1)))
        return (rng or random).uniform(0, ceiling)

    def is_retryable(self, error: BaseException) -> bool:
        """Whether ``error`` may be retried for an idempotent request (GET, cancel)."""
        if isinstance(error, APIStatusError):
            return error.status_code in self.retry_statuses
        if isinstance(error, ResponseTooLargeError):
            return False  # the same body would come again
        return isinstance(error, (TransportError, ProtocolError))

    def delay(
        self, error: NanoBananaError, retry_number: int, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before retrying after ``error``, or None to give up now."""
        if retry_number >= self.max_attempts:
            return None
        server_wait = getattr(error, "retry_after", None)
        if isinstance(error, (RateLimitError, ServerError)) and server_wait is not None:
            return server_wait if server_wait <= self.max_retry_after else None
        return self.backoff(retry_number, rng)


def may_retry_create(error: BaseException) -> bool:
    """Whether a failed create certainly was not processed, so that sending it again is safe."""
    if isinstance(error, ConnectError):
        return True
    if isinstance(error, RateLimitError):
        return True
    return (
        isinstance(error, ServerError)
        and error.status_code == 503
        and error.retry_after is not None
    )


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)
