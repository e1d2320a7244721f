"""Documented batch behaviours, checked against a stand-in written from API.md.

``on_event`` QUEUED/RUNNING events and a raising callback; ``map()`` cancelling the rest at the
first failure; ``Outcome.unwrap()`` and ``.latency``; ``Limits(max_concurrent_creates=...)``.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from nanobanana_async import (
    BatchEvent,
    EventKind,
    GenerationRequest,
    GenerationResult,
    Limits,
    Outcome,
    TaskFailedError,
)

from ..scripted import Scripted, body, client_for
from ..standin import IMAGE, serve

pytestmark = pytest.mark.anyio

QUEUED_THEN_RUNNING = [
    {"status": "IN_QUEUE", "queue_position": 2},
    {"status": "IN_QUEUE", "queue_position": 1},
    {"status": "IN_PROGRESS"},
]


async def test_on_event_reports_submitted_queued_running_and_the_end_in_order() -> None:
    events: list[BatchEvent] = []
    standin = Scripted(pending_polls=3, pending=QUEUED_THEN_RUNNING)
    async with serve(standin) as s, client_for(s) as c:
        outcomes = [o async for o in c.stream(["a"], on_event=events.append)]
    assert [o.ok for o in outcomes] == [True]
    rid = outcomes[0].request_id
    assert [(e.kind, e.index, e.request_id, e.queue_position) for e in events] == [
        (EventKind.SUBMITTED, 0, rid, None),
        (EventKind.QUEUED, 0, rid, 2),
        (EventKind.QUEUED, 0, rid, 1),
        (EventKind.RUNNING, 0, rid, None),
        (EventKind.SUCCEEDED, 0, rid, None),
    ]
    assert all(e.error is None for e in events)


async def test_a_failed_item_reports_failed_with_its_error() -> None:
    events: list[BatchEvent] = []
    failure = {"status": "COMPLETED", "error": "no", "error_type": "CONTENT_BLOCKED"}
    standin = Scripted(pending_polls=0, result=lambda rid: (200, body(failure)))
    async with serve(standin) as s, client_for(s) as c:
        outcomes = [o async for o in c.stream(["a"], on_event=events.append)]
    assert [e.kind for e in events] == [EventKind.SUBMITTED, EventKind.FAILED]
    assert events[-1].error is outcomes[0].error
    assert isinstance(events[-1].error, TaskFailedError)


async def test_a_raising_on_event_sees_every_event_and_the_batch_finishes() -> None:
    seen: list[EventKind] = []

    def hostile(event: BatchEvent) -> None:
        seen.append(event.kind)
        raise RuntimeError("the user's callback")

    standin = Scripted(pending_polls=3, pending=QUEUED_THEN_RUNNING)
    async with serve(standin) as s, client_for(s) as c:
        outcomes = [o async for o in c.stream(["a", "b", "c"], on_event=hostile)]
        assert sorted(o.index for o in outcomes) == [0, 1, 2]
        assert all(o.ok for o in outcomes)
        assert seen.count(EventKind.SUBMITTED) == 3
        assert seen.count(EventKind.QUEUED) == 6
        assert seen.count(EventKind.RUNNING) == 3
        assert seen.count(EventKind.SUCCEEDED) == 3
        assert (await c.generate("after", timeout=5)).images  # the client lives on


async def test_map_raises_the_first_failure_and_cancels_the_rest() -> None:
    failure = {"status": "COMPLETED", "error": "no", "error_type": "CONTENT_BLOCKED"}

    def fail_first(rid: str, n: int) -> tuple[int, Any, dict[str, str]] | None:
        return (200, failure, {}) if rid == "req_1" and n >= 1 else None

    standin = Scripted(pending_polls=10_000, poll_reply=fail_first)
    async with serve(standin) as s, client_for(s) as c:
        prompts = [f"p{i}" for i in range(5)]
        with anyio.fail_after(5), pytest.raises(TaskFailedError) as caught:
            await c.map(prompts, max_in_flight=5)
        assert caught.value.request_id == "req_1"
        created = {rid for route, rid in s.log if route == "create"}
        assert len(created) == 5
        # Every other task created was cancelled on the service, exactly once.
        assert s.cancelled == created - {"req_1"}
        assert all(s.count("cancel", rid) == 1 for rid in s.cancelled)
        assert s.count("cancel", "req_1") == 0
        polls = s.count("response")
        await anyio.sleep(0.1)
        assert s.count("response") == polls  # and nothing is polled any more
        assert c.stats.in_flight == 0


async def test_map_with_return_exceptions_keeps_going_in_input_order() -> None:
    failure = {"status": "COMPLETED", "error": "no", "error_type": "CONTENT_BLOCKED"}

    def fail_second(rid: str, n: int) -> tuple[int, Any, dict[str, str]] | None:
        return (200, failure, {}) if rid == "req_2" else None

    standin = Scripted(pending_polls=1, poll_reply=fail_second)
    async with serve(standin) as s, client_for(s) as c:
        found = await c.map(["a", "b", "c"], max_in_flight=1, return_exceptions=True)
        assert [type(v) for v in found] == [GenerationResult, TaskFailedError, GenerationResult]
        assert s.count("cancel") == 0


async def test_outcome_unwrap_and_latency() -> None:
    failure = {"status": "COMPLETED", "error": "no", "error_type": "CONTENT_BLOCKED"}

    def fail_second(rid: str, n: int) -> tuple[int, Any, dict[str, str]] | None:
        return (200, failure, {}) if rid == "req_2" else None

    standin = Scripted(pending_polls=2, poll_reply=fail_second)
    async with serve(standin) as s, client_for(s) as c:
        outcomes = sorted(
            [o async for o in c.stream(["a", "b"], max_in_flight=1)], key=lambda o: o.index
        )
    good, bad = outcomes
    assert good.unwrap() is good.result
    assert good.result is not None and good.result.images[0].url == IMAGE["url"]
    with pytest.raises(TaskFailedError) as caught:
        bad.unwrap()
    assert caught.value is bad.error
    for o in outcomes:
        assert o.submitted_at is not None and o.finished_at is not None
        assert o.latency == o.finished_at - o.submitted_at
        assert 0 < o.latency < 5
    assert good.latency is not None and good.latency >= 0.01  # two pending polls at least


def test_outcome_latency_is_none_without_both_times() -> None:
    request = GenerationRequest("x")
    assert Outcome(0, request, submitted_at=None, finished_at=5.0).latency is None
    assert Outcome(0, request, submitted_at=5.0, finished_at=None).latency is None
    assert Outcome(0, request, submitted_at=2.0, finished_at=5.5).latency == 3.5
    error = TaskFailedError("no", request_id="r", error_type="X")
    with pytest.raises(TaskFailedError):
        Outcome(0, request, "r", None, error).unwrap()
    assert not Outcome(0, request, "r", None, error).ok


@pytest.mark.parametrize("limit", [1, 3])
async def test_max_concurrent_creates_bounds_creates_at_the_service(limit: int) -> None:
    standin = Scripted(pending_polls=0, create_delay=0.05)
    limits = Limits(max_concurrent_creates=limit)
    async with serve(standin) as s, client_for(s, limits=limits) as c:
        outcomes = [o async for o in c.stream([f"p{i}" for i in range(8)], max_in_flight=8)]
        assert len(outcomes) == 8 and all(o.ok for o in outcomes)
        assert s.max_creates_at_once == limit
        # Single submits share the same bound.
        s.max_creates_at_once = 0
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(c.submit, f"s{i}")
        assert s.max_creates_at_once == limit
