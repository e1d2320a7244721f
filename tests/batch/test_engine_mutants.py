"""Batch engine edges a mutation run found unpinned, against the stand-in written from API.md.

When an outcome says it finished, a create refused with a short Retry-After (the item fails, the
batch goes on), the log line of a task retry, and a stream whose arguments were refused.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from nanobanana_async import (
    PollPolicy,
    RateLimitError,
    RetryPolicy,
    TaskRetry,
    ValidationError,
)
from nanobanana_async.journal import Journal

from ..scripted import Scripted, client_for
from ..standin import serve

pytestmark = pytest.mark.anyio

INFERENCE_FAILURE = {"status": "COMPLETED", "error": "oom", "error_type": "INFERENCE_FAILURE"}


async def test_an_outcome_finished_when_its_detecting_poll_left() -> None:
    async with serve(Scripted(pending_polls=2)) as s, client_for(s) as c:
        [outcome] = [o async for o in c.stream(["a"])]
        detected = s.poll_times[-1]  # when the stand-in saw the poll that brought the result
        assert outcome.finished_at is not None and outcome.submitted_at is not None
        # The poll left the client (finished_at) before the stand-in saw it; delivery is later.
        assert outcome.submitted_at < outcome.finished_at <= detected


async def test_a_create_refused_with_a_short_retry_after_fails_that_item_only() -> None:
    limited = (
        429,
        {"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "x"}},
        {"Retry-After": "0.2"},
    )
    retry = RetryPolicy(max_attempts=1, max_rate_limited=0, max_retry_after=60)
    standin = Scripted(pending_polls=0, create_replies=[limited])
    async with serve(standin) as s, client_for(s, retry=retry) as c:
        outcomes = sorted(
            [o async for o in c.stream(["a", "b", "c"], max_in_flight=1)], key=lambda o: o.index
        )
        assert isinstance(outcomes[0].error, RateLimitError)
        assert outcomes[0].error.retry_after == 0.2
        assert [o.ok for o in outcomes] == [False, True, True]  # no BatchAbortedError
        assert s.count("create") == 3


async def test_a_task_retry_is_logged_with_the_item_the_task_and_the_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail_first(rid: str, n: int) -> tuple[int, Any, dict[str, str]] | None:
        return (200, INFERENCE_FAILURE, {}) if rid == "req_1" else None

    standin = Scripted(pending_polls=0, poll_reply=fail_first)
    retry = TaskRetry(max_attempts=2, initial_backoff=0.0, max_backoff=0.0)
    async with serve(standin) as s, client_for(s, task_retry=retry) as c:
        with caplog.at_level(logging.INFO, logger="nanobanana_async"):
            [outcome] = [o async for o in c.stream(["a"])]
        assert outcome.ok and outcome.attempts == 2
        assert outcome.request_ids == ("req_1", "req_2")
        assert "item 0: task req_1 failed (INFERENCE_FAILURE); creating attempt 2" in (
            caplog.messages
        )
        assert s.count("create") == 2


async def test_a_refused_stream_leaves_nothing_behind() -> None:
    async with serve(Scripted()) as s, client_for(s, poll=PollPolicy()) as c:
        with pytest.raises(ValidationError):
            c.stream(5)  # type: ignore[arg-type]
        gc.collect()  # the half-built stream is freed here: its __del__ must not raise
        assert s.requests() == 0
        outcomes = [o async for o in c.stream([], max_in_flight=1)]
        assert outcomes == []


async def test_with_a_journal_a_refused_create_is_recorded_and_a_rerun_replays_ids(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "batch.sqlite"
    refused = (422, {"detail": "bad body"}, {})
    standin = Scripted(pending_polls=0, create_replies=[refused])
    async with serve(standin) as s, client_for(s) as c:
        first = sorted(
            [o async for o in c.stream(["a", "b"], journal=journal, max_in_flight=1)],
            key=lambda o: o.index,
        )
        assert first[0].error is not None and first[0].request_id is None
        assert first[1].ok and first[1].request_id == "req_1"
        report = Journal.report_sync(journal)
        assert report.counts["rejected"] == 1 and report.counts["succeeded"] == 1

        requests = s.requests()
        again = {o.index: o async for o in c.stream(["a", "b"], journal=journal)}
        # The finished item is replayed from the journal with its id; the refused one is new.
        assert again[1].resumed and again[1].request_id == "req_1" and again[1].ok
        assert again[1].request_ids == ("req_1",)
        assert not again[0].resumed and again[0].ok
        assert s.requests() == requests + 2  # one create and one poll, for item 0 only


@pytest.mark.parametrize("max_in_flight", [1, 3])
async def test_a_blocking_input_is_read_no_further_than_the_free_slots(max_in_flight: int) -> None:
    pulled = 0

    def prompts() -> Iterator[str]:
        nonlocal pulled
        for i in range(1000):
            pulled += 1
            yield f"lazy {i}"

    async with serve(Scripted(pending_polls=10_000)) as s, client_for(s) as c:
        stream = c.stream(prompts(), max_in_flight=max_in_flight)
        with anyio.move_on_after(0.2):
            async for _ in stream:
                pass  # pragma: no cover - nothing finishes
        await stream.aclose()
        assert pulled == max_in_flight
        assert s.count("create") == max_in_flight
