"""What each outcome costs on the wire, counted at a stand-in written from API.md.

A task polls its response route only (202 while it runs); the poll that sees the end brings the
result or the failure, so a task that fails costs exactly two requests: its create and one GET.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from nanobanana_async import (
    NanoBananaError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    SubmissionUnknownError,
    TaskCancelledError,
    TaskFailedError,
)

from ..scripted import Scripted, body, client_for
from ..standin import serve

pytestmark = pytest.mark.anyio


async def test_a_success_costs_one_create_and_one_get_per_poll() -> None:
    async with serve(Scripted(pending_polls=3)) as s, client_for(s) as c:
        result = await c.generate("ok", timeout=5)
        assert result.images
        assert (s.count("create"), s.count("response")) == (1, 4)
        assert s.count("status") == s.count("cancel") == 0
        assert c.stats.requests_sent == 5 == s.requests()
        assert c.stats.polls_sent == 4


FAILURES: list[tuple[int, dict[str, Any], type[NanoBananaError], str | None, str]] = [
    (200, {"status": "COMPLETED", "error": "boom", "error_type": "INFERENCE_FAILURE"},
     TaskFailedError, "INFERENCE_FAILURE", "boom"),
    (200, {"status": "COMPLETED", "error": {"code": "CONTENT_BLOCKED", "message": "no"}},
     TaskFailedError, "CONTENT_BLOCKED", "no"),
    (200, {"error": "late", "error_type": "REQUEST_INVALID", "outputs": [{"type": "image"}]},
     TaskFailedError, "REQUEST_INVALID", "late"),
    (400, {"status": "COMPLETED", "error": "bad size", "error_type": "REQUEST_INVALID"},
     TaskFailedError, "REQUEST_INVALID", "bad size"),
    (422, {"error": "bad", "error_type": "REQUEST_INVALID"}, TaskFailedError, "REQUEST_INVALID",
     "bad"),
    (200, {"status": "COMPLETED", "error_type": "INFERENCE_TIMEOUT"}, TaskFailedError,
     "INFERENCE_TIMEOUT", "task failed"),
    (200, {"status": "COMPLETED", "error": "x", "error_type": "SOMETHING_NEW"}, TaskFailedError,
     "SOMETHING_NEW", "x"),
    (200, {"status": "FAILED", "provider_error": {"message": "quota"}, "error": {"code": "E"}},
     TaskFailedError, "E", "quota"),
    # Cancellation, in both spellings and in the status itself.
    (200, {"status": "COMPLETED", "error": "by user", "error_type": "CANCELED"},
     TaskCancelledError, "CANCELED", "by user"),
    (200, {"status": "COMPLETED", "error": "by user", "error_type": "CANCELLED"},
     TaskCancelledError, "CANCELLED", "by user"),
    (200, {"status": "COMPLETED", "error": "by user", "error_type": "canceled"},
     TaskCancelledError, "canceled", "by user"),
    (200, {"status": "CANCELED"}, TaskCancelledError, None, "cancelled"),
    (200, {"status": "cancelled"}, TaskCancelledError, None, "cancelled"),
]  # fmt: skip


@pytest.mark.parametrize(("code", "reply", "error", "error_type", "message"), FAILURES)
async def test_a_failed_task_costs_exactly_two_requests(
    code: int,
    reply: dict[str, Any],
    error: type[NanoBananaError],
    error_type: str | None,
    message: str,
) -> None:
    standin = Scripted(pending_polls=0, result=lambda rid: (code, body(reply)))
    async with serve(standin) as s, client_for(s) as c:
        job = await c.submit("fails")
        with pytest.raises(error) as caught:
            await job.result(timeout=5)
        assert type(caught.value) is error
        assert caught.value.request_id == job.request_id  # type: ignore[attr-defined]
        assert caught.value.error_type == error_type  # type: ignore[attr-defined]
        assert caught.value.message == message  # type: ignore[attr-defined]
        await anyio.sleep(0.05)  # nothing more goes out afterwards (no cancel, no re-poll)
        assert s.log == [("create", job.request_id), ("response", job.request_id)]
        assert c.stats.requests_sent == 2


async def test_the_status_route_is_never_used_when_the_response_route_answers_202() -> None:
    async with serve(Scripted(pending_polls=5)) as s, client_for(s) as c:
        await c.generate("ok", timeout=5)
        assert s.count("status") == 0


RATE_LIMITED = {"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "slow"}}


@pytest.mark.parametrize("retry_after", ["1e12", "61"])
async def test_a_poll_told_to_wait_past_the_cap_fails_fast_with_the_rate_limit(
    retry_after: str,
) -> None:
    standin = Scripted(poll_reply=lambda rid, n: (429, RATE_LIMITED, {"Retry-After": retry_after}))
    async with serve(standin) as s, client_for(s, retry=RetryPolicy(max_retry_after=60)) as c:
        job = await c.submit("limited")
        started = time.monotonic()
        with pytest.raises(RateLimitError) as caught:
            await job.result(timeout=3)
        assert time.monotonic() - started < 2  # not the 3 s timeout: the cap ended it
        assert caught.value.retry_after == float(retry_after)
        assert s.count("response") == 1


async def test_a_poll_told_to_wait_within_the_cap_waits_that_long_then_polls_again() -> None:
    def once(rid: str, n: int) -> tuple[int, Any, dict[str, str]] | None:
        return (429, RATE_LIMITED, {"Retry-After": "0.3"}) if n == 0 else None

    async with serve(Scripted(pending_polls=0, poll_reply=once)) as s, client_for(s) as c:
        result = await c.generate("limited once", timeout=5)
        assert result.images
        assert s.count("response") == 2
        assert s.poll_times[1] - s.poll_times[0] >= 0.3


CREATE_503 = (503, {"detail": "busy"}, {"Retry-After": "0"})
CREATE_500 = (500, {"detail": "oops"}, {})


async def test_submit_retry_overrides_the_client_policy_for_a_safe_create() -> None:
    standin = Scripted(create_replies=[CREATE_503, CREATE_503])
    async with serve(standin) as s, client_for(s, retry=RetryPolicy(max_attempts=1)) as c:
        job = await c.submit("busy", retry=RetryPolicy(max_attempts=3, initial_backoff=0.01))
        assert job.request_id == "req_1"
        assert s.count("create") == 3
    standin = Scripted(create_replies=[CREATE_503, CREATE_503])
    async with serve(standin) as s, client_for(s, retry=RetryPolicy(max_attempts=5)) as c:
        with pytest.raises(ServerError):
            await c.submit("busy", retry=RetryPolicy(max_attempts=1))
        assert s.count("create") == 1


async def test_submit_retry_never_resends_an_ambiguous_create() -> None:
    standin = Scripted(create_replies=[CREATE_500])
    async with serve(standin) as s, client_for(s) as c:
        with pytest.raises(SubmissionUnknownError) as caught:
            await c.submit("maybe", retry=RetryPolicy(max_attempts=5, initial_backoff=0.01))
        assert isinstance(caught.value.__cause__, ServerError)
        assert s.count("create") == 1


async def test_submit_retry_must_be_a_policy() -> None:
    async with serve(Scripted()) as s, client_for(s) as c:
        with pytest.raises(NanoBananaError):
            await c.submit("x", retry=3)  # type: ignore[arg-type]
        assert s.requests() == 0


async def test_cancel_of_a_finished_task_is_false_after_one_request() -> None:
    async with serve(Scripted(pending_polls=0)) as s, client_for(s) as c:
        job = await c.submit("done")
        await job.result(timeout=5)
        assert await job.cancel() is False
        assert s.count("cancel", job.request_id) == 1
        assert await c.cancel(job.request_id) is False  # by id too


async def test_several_waiters_the_last_to_give_up_cancels_once() -> None:
    async with serve(Scripted(pending_polls=10_000)) as s, client_for(s) as c:
        job = await c.submit("shared")
        gave_up: list[int] = []

        async def waiter(n: int, patience: float) -> None:
            with anyio.move_on_after(patience):
                await job.result()
            gave_up.append(n)
            # Someone else still waits: nothing is cancelled on the service.
            assert s.count("cancel") == (1 if n == 3 else 0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, 1, 0.05)
            tg.start_soon(waiter, 2, 0.1)
            tg.start_soon(waiter, 3, 0.2)
        assert gave_up == [1, 2, 3]
        assert s.count("cancel", job.request_id) == 1
        polls = s.count("response")
        await anyio.sleep(0.1)
        assert s.count("response") == polls  # and it is no longer polled
        assert c.stats.in_flight == 0
