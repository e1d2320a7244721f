"""Task retries: opt-in, honest about cost, never for what another attempt cannot fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanobanana_async import (
    BatchOptions,
    GenerationRequest,
    Journal,
    NoImageError,
    TaskFailedError,
    TaskRetry,
    ValidationError,
)
from nanobanana_async.emulator import Emulator, EmulatorConfig, ServiceTime, TaskFaults

from ..helpers import client_for

pytestmark = pytest.mark.anyio
FAST = ServiceTime.fixed(0.02)
QUICK = TaskRetry(max_attempts=3, initial_backoff=0.0, max_backoff=0.0)


def test_task_retry_refuses_what_another_attempt_cannot_fix() -> None:
    for never in ("REQUEST_INVALID", "content_blocked", "CANCELED"):
        with pytest.raises(ValidationError, match="never retried"):
            TaskRetry(on={never})
    with pytest.raises(ValidationError, match="max_attempts"):
        TaskRetry(max_attempts=0)
    retry = TaskRetry()
    failed = TaskFailedError("x", request_id="r", error_type="INFERENCE_FAILURE")
    blocked = TaskFailedError("x", request_id="r", error_type="CONTENT_BLOCKED")
    no_image = NoImageError(request_id="r", text="I can't")
    assert retry.should_retry(failed, 1) and retry.should_retry(no_image, 1)
    assert not retry.should_retry(failed, 2)  # max_attempts=2 counts the first
    assert not retry.should_retry(blocked, 1)


async def test_no_image_without_retry_is_a_failure_with_the_models_text() -> None:
    async with Emulator(EmulatorConfig(service_time=FAST)) as emu, client_for(emu) as c:
        with pytest.raises(NoImageError) as info:
            await c.generate("a banana [no-image]", timeout=10)
        assert info.value.text and "can't" in info.value.text
        assert info.value.metadata.get("finish_reason") == "SAFETY"
        outcomes = [o async for o in c.stream(["fine", "x [no-image]"])]
        by_index = {o.index: o for o in outcomes}
        assert by_index[0].ok and not by_index[1].ok
        assert isinstance(by_index[1].error, NoImageError)
        # a text-only request is unaffected
        text = await c.generate(GenerationRequest("x [no-image]", response_modalities=["Text"]))
        assert text.text
        assert c.stats.task_retries == 0


async def test_stream_retries_transient_failures_and_reports_every_attempt(tmp_path: Path) -> None:
    faults = TaskFaults(inference_failure=0.5)
    config = EmulatorConfig(service_time=FAST, task_faults=faults, seed=7)
    journal = tmp_path / "j.db"
    async with Emulator(config) as emu, client_for(emu) as c:
        outcomes = [
            o
            async for o in c.stream([f"p{i}" for i in range(40)], journal=journal, task_retry=QUICK)
        ]
        retried = [o for o in outcomes if o.attempts > 1]
        assert retried, "with a 50% failure rate some items must have been retried"
        for o in outcomes:
            assert len(o.request_ids) == o.attempts and o.request_ids[-1] == o.request_id
            assert len(set(o.request_ids)) == o.attempts
        assert c.stats.task_retries == sum(o.attempts - 1 for o in outcomes)
        # every attempt was a paid create, and the service saw exactly that many
        assert len(emu.stats.tasks) == sum(o.attempts for o in outcomes)
        # nothing is retried past the budget
        assert max(o.attempts for o in outcomes) <= 3
        failed = [o for o in outcomes if not o.ok]
        assert all(o.attempts == 3 for o in failed)
        async with await Journal.open(journal) as j:
            report = await j.report()
            items = await j.load()
        assert set(report.request_ids) == set(emu.stats.tasks)  # the record of spend is complete
        assert {i: it.attempts for i, it in items.items()} == {
            o.index: o.attempts for o in outcomes
        }
    # a rerun replays: nothing is created again
    async with Emulator(config) as emu2, client_for(emu2) as c:
        again = [
            o
            async for o in c.stream([f"p{i}" for i in range(40)], journal=journal, task_retry=QUICK)
        ]
        assert all(o.resumed for o in again) and len(emu2.stats.tasks) == 0
        assert {o.index: o.attempts for o in again} == {o.index: o.attempts for o in outcomes}


async def test_content_blocked_is_never_retried_and_generate_retries_no_image() -> None:
    config = EmulatorConfig(service_time=FAST, task_faults=TaskFaults(content_blocked=1.0))
    async with Emulator(config) as emu, client_for(emu, task_retry=QUICK) as c:
        results = await c.map(["a", "b"], return_exceptions=True)
        assert all(isinstance(r, TaskFailedError) for r in results)
        assert len(emu.stats.tasks) == 2 and c.stats.task_retries == 0
    config = EmulatorConfig(service_time=FAST, task_faults=TaskFaults(no_image=1.0))
    async with Emulator(config) as emu, client_for(emu) as c:
        with pytest.raises(NoImageError):
            await c.generate("always refused", task_retry=QUICK, timeout=10)
        assert len(emu.stats.tasks) == 3 and c.stats.task_retries == 2


async def test_max_creates_counts_task_retries() -> None:
    from nanobanana_async import BatchAbortedError

    config = EmulatorConfig(service_time=FAST, task_faults=TaskFaults(no_image=1.0))
    async with Emulator(config) as emu, client_for(emu) as c:
        with pytest.raises(BatchAbortedError, match="max_creates=5"):
            await c.map(
                [f"p{i}" for i in range(10)],
                BatchOptions(task_retry=QUICK, max_creates=5),
                return_exceptions=True,
            )
        assert len(emu.stats.tasks) == 5
