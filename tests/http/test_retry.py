import random

import pytest

from nanobanana_async import (
    AuthenticationError,
    ConnectError,
    PollPolicy,
    ProtocolError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
)
from nanobanana_async._http._retry import may_retry_create


def test_backoff_is_capped_full_jitter() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=4.0)
    rng = random.Random(1)
    for n, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0)]:
        draws = [policy.backoff(n, rng) for _ in range(200)]
        assert min(draws) >= 0 and max(draws) <= ceiling
        assert max(draws) > 0.8 * ceiling  # full jitter spans the whole range


def test_delay_honours_retry_after_and_cap() -> None:
    policy = RetryPolicy(max_attempts=3, max_retry_after=10)
    limited = RateLimitError("slow", retry_after=3.0, status_code=429)
    assert policy.delay(limited, 1) == 3.0
    assert policy.delay(limited, 3) is None  # attempts exhausted
    too_long = RateLimitError("slow", retry_after=11.0, status_code=429)
    assert policy.delay(too_long, 1) is None
    unavailable = ServerError("down", retry_after=2.0, status_code=503)
    assert policy.delay(unavailable, 2) == 2.0


def test_retryable_set() -> None:
    policy = RetryPolicy()
    assert policy.is_retryable(ServerError("x", status_code=502))
    assert policy.is_retryable(RateLimitError("x", status_code=429))
    assert policy.is_retryable(TransportError("reset"))
    assert policy.is_retryable(ProtocolError("garbled"))
    assert not policy.is_retryable(AuthenticationError("x", status_code=401))
    assert not RetryPolicy(retry_statuses={429}).is_retryable(ServerError("x", status_code=500))


def test_create_retry_only_when_certainly_not_processed() -> None:
    assert may_retry_create(ConnectError("refused"))
    assert may_retry_create(RateLimitError("x", status_code=429))
    assert may_retry_create(ServerError("x", status_code=503, retry_after=0.0))
    assert not may_retry_create(ServerError("x", status_code=503))
    assert not may_retry_create(ServerError("x", status_code=500, retry_after=1.0))
    assert not may_retry_create(TransportError("reset after send"))
    assert not may_retry_create(ProtocolError("garbled"))


def test_policies_validate() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="initial_backoff"):
        RetryPolicy(initial_backoff=-1)
    with pytest.raises(ValueError, match="factor"):
        PollPolicy(factor=0.5)


def test_poll_policy_intervals() -> None:
    policy = PollPolicy(initial_delay=1.0, factor=2.0, max_interval=5.0, jitter=0.0)
    assert [policy.interval(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = PollPolicy(initial_delay=1.0, jitter=0.2)
    rng = random.Random(3)
    draws = [jittered.interval(0, rng) for _ in range(100)]
    assert min(draws) >= 0.8 and max(draws) <= 1.2 and len(set(draws)) > 50
