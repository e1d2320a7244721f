"""Containment: what the user plugs in (input, hooks, on_event, the journal) may fail; the error
reaches the stream's consumer after the outcomes in hand, no created task is lost, and the shared
client lives on. Run against a stand-in written from API.md, not the emulator."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from nanobanana_async import (
    BatchOptions,
    Client,
    HttpEvent,
    JournalError,
    Outcome,
    PollPolicy,
    RetryPolicy,
    Timeout,
    ValidationError,
)
from nanobanana_async._batch._resume import ResumeBinding

from ..standin import StandIn, serve

pytestmark = pytest.mark.anyio
POLL = PollPolicy(initial_delay=0.01, factor=1.0, max_interval=0.02, jitter=0.0)


def client(standin: StandIn, **kwargs: object) -> Client:
    kwargs.setdefault("poll", POLL)
    kwargs.setdefault("retry", RetryPolicy(max_attempts=2, initial_backoff=0.01))
    kwargs.setdefault("timeout", Timeout(connect=2, read=2, deadline=5, cancel=1, close=2))
    return Client("k", base_url=standin.base_url, **kwargs)  # type: ignore[arg-type]


class InputBroke(Exception):
    pass


def breaking_after(n: int) -> Iterator[str]:
    for i in range(n):
        yield f"prompt {i}"
    raise InputBroke(f"input broke after {n}")


async def async_breaking_after(n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield f"prompt {i}"
    raise InputBroke(f"input broke after {n}")


@pytest.mark.parametrize("source", [breaking_after, async_breaking_after])
async def test_input_that_raises_delivers_every_created_task_then_raises(source: object) -> None:
    async with serve(StandIn(pending_polls=2)) as standin, client(standin) as c:
        seen: list[Outcome] = []
        with pytest.raises(InputBroke):
            async for outcome in c.stream(source(5), max_in_flight=3):  # type: ignore[operator]
                seen.append(outcome)
        # every task the service created is reported, with its id and true outcome
        assert standin.count("create") == 5
        assert sorted(o.index for o in seen) == [0, 1, 2, 3, 4]
        assert {o.request_id for o in seen} == {f"req_{i}" for i in range(1, 6)}
        assert all(o.ok for o in seen)
        assert c.stats.in_flight == 0
        # and the client still works for everyone else
        result = await c.generate("after the failure", timeout=5)
        assert result.outputs[0].url == "https://cdn.example/x.png"


async def test_input_that_raises_at_once_raises_without_creating() -> None:
    async with serve(StandIn()) as standin, client(standin) as c:
        with pytest.raises(InputBroke):
            await c.map(breaking_after(0))
        assert standin.count("create") == 0
        assert len(await c.map(["still usable"])) == 1


async def test_a_raising_hook_never_loses_a_created_task(caplog: pytest.LogCaptureFixture) -> None:
    def hook(event: HttpEvent) -> None:
        raise RuntimeError("hook bug")

    async with serve(StandIn()) as standin, client(standin, hooks=[hook]) as c:
        with caplog.at_level(logging.ERROR, logger="nanobanana_async"):
            result = await c.generate("one", timeout=5)
        assert result.request_id == "req_1"
        assert "HTTP event hook failed" in caplog.text
        outcomes = [o async for o in c.stream(["a", "b", "c"])]
        assert sorted(o.request_id or "" for o in outcomes) == ["req_2", "req_3", "req_4"]
        assert all(o.ok for o in outcomes)


async def test_a_raising_on_event_is_logged_and_the_batch_goes_on() -> None:
    calls = 0

    def on_event(event: object) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("callback bug")

    async with serve(StandIn()) as standin, client(standin) as c:
        results = await c.map(["a", "b"], on_event=on_event)
        assert len(results) == 2 and calls >= 4  # submitted + succeeded per item at least
        assert standin.count("create") == 2


async def test_journal_failure_after_create_loses_no_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_created = ResumeBinding.created
    calls = 0

    async def failing_created(self: ResumeBinding, index: int, ticket: object) -> None:
        nonlocal calls
        calls += 1
        if calls >= 2:
            raise sqlite3.OperationalError("database or disk is full")
        await real_created(self, index, ticket)  # type: ignore[arg-type]

    monkeypatch.setattr(ResumeBinding, "created", failing_created)
    async with serve(StandIn(pending_polls=1)) as standin, client(standin) as c:
        seen: list[Outcome] = []
        with (
            caplog.at_level(logging.ERROR, logger="nanobanana_async"),
            pytest.raises(JournalError) as info,
        ):
            async for o in c.stream(
                [f"p{i}" for i in range(10)], journal=tmp_path / "j.db", max_in_flight=2
            ):
                seen.append(o)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        created = standin.count("create")
        assert created >= 2
        # every created task is delivered with its id, and named in the log
        assert {o.request_id for o in seen} == {f"req_{i}" for i in range(1, created + 1)}
        assert "req_2" in caplog.text
        # nothing more was created after the journal failed (at most the creates in the air)
        assert created <= 3
        assert c.stats.in_flight == 0
        assert (await c.generate("client lives", timeout=5)).request_id


async def consume_until(stream: object, standin: StandIn, polls: int) -> None:
    """Iterate the stream in a task until the stand-in saw ``polls`` polls, then cancel it."""

    async def consume() -> None:
        async for _ in stream:  # type: ignore[attr-defined]
            pass  # pragma: no cover - nothing finishes

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        while standin.count("response") < polls:
            await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


async def test_break_stops_every_poll_and_in_flight_counts_truly() -> None:
    async with serve(StandIn(pending_polls=10_000)) as standin, client(standin) as c:
        stream = c.stream([f"p{i}" for i in range(4)], max_in_flight=4)
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume_until, stream, standin, 8)
            while standin.count("response") < 4:
                await anyio.sleep(0.005)
            assert c.stats.in_flight == 4
        await stream.aclose()
        polls = standin.count("response")
        await anyio.sleep(0.2)
        assert standin.count("response") == polls  # not one stray poll
        assert c.stats.in_flight == 0
        assert standin.count("cancel") == 4


@pytest.mark.parametrize("budget", [None, 5.0])
async def test_break_without_remote_cancel_stops_polling(budget: float | None) -> None:
    poll = PollPolicy(
        initial_delay=0.01, factor=1.0, max_interval=0.02, jitter=0.0, max_polls_per_second=budget
    )
    async with serve(StandIn(pending_polls=10_000)) as standin, client(standin, poll=poll) as c:
        stream = c.stream([f"p{i}" for i in range(6)], cancel_on_abandon=False)
        await consume_until(stream, standin, 6)
        await stream.aclose()
        polls = standin.count("response")
        await anyio.sleep(0.3)
        assert standin.count("response") == polls
        assert c.stats.in_flight == 0
        assert standin.count("cancel") == 0


async def test_options_object_and_keywords_validate_before_any_request() -> None:
    async with serve(StandIn()) as standin, client(standin) as c:
        with pytest.raises(ValidationError, match="max_in_flight"):
            c.stream(["a"], max_in_flight=0)
        with pytest.raises(ValidationError, match=r"max_in_fligth.*allowed: max_in_flight"):
            c.stream(["a"], max_in_fligth=3)
        with pytest.raises(ValidationError, match="submit_rate"):
            BatchOptions(submit_rate=-1)
        results = await c.map(["a", "b", "c"], BatchOptions(max_in_flight=1))
        assert len(results) == 3
        assert standin.count("create") == 3


async def test_a_slow_sync_input_is_not_held_back_to_fill_a_chunk() -> None:
    import time

    def trickle() -> Iterator[str]:
        for i in range(6):
            yield f"line {i}"
            time.sleep(0.3)  # a pipe that brings a line now and then

    async with serve(StandIn(pending_polls=0)) as standin, client(standin) as c:
        started = time.monotonic()
        stream = c.stream(trickle(), max_in_flight=8)
        first = await stream.__anext__()
        waited = time.monotonic() - started
        rest = [o async for o in stream]
        assert first.ok and len(rest) == 5
        # The first line was sent on arrival, not once 8 lines (2.4 s) were read ahead.
        assert waited < 1.0, f"first outcome after {waited:.2f} s"


async def test_blocking_sync_input_does_not_stall_the_loop() -> None:
    import time

    def slow_lines() -> Iterator[str]:
        for i in range(3):
            time.sleep(0.2)  # a slow file or pipe, read in a worker thread
            yield f"line {i}"

    async with serve(StandIn()) as standin, client(standin) as c:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await anyio.sleep(0.01)
                ticks += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            results = await c.map(slow_lines())
            tg.cancel_scope.cancel()
        assert len(results) == 3
        assert ticks > 30  # the loop kept turning during the 0.6 s of blocking reads
