"""The batch engine against the emulator: limits, laziness, outcomes, abandonment, 429 storms."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from nanobanana_async import (
    BatchEvent,
    EventKind,
    GenerationRequest,
    GenerationResult,
    TaskFailedError,
    ValidationError,
)
from nanobanana_async.emulator import Emulator, EmulatorConfig, ServiceTime

from ..helpers import client_for, sdk_tasks

pytestmark = pytest.mark.anyio


async def _settle(condition: object, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.01)


async def test_two_thousand_tasks_within_in_flight_limit() -> None:
    config = EmulatorConfig(
        service_time=ServiceTime.uniform(0.5, 1.5), time_scale=0.05, workers=100
    )
    events: Counter[EventKind] = Counter()
    async with Emulator(config) as emu, client_for(emu) as client:
        prompts = (f"[blocked] item {i}" if i % 100 == 7 else f"item {i}" for i in range(2000))
        outcomes = [
            o
            async for o in client.stream(
                prompts, max_in_flight=64, on_event=lambda e: events.update([e.kind])
            )
        ]
        stats = client.stats
    assert sorted(o.index for o in outcomes) == list(range(2000))
    assert emu.stats.max_unfinished <= 64
    assert emu.stats.max_unfinished >= 32  # the limit is used, not just respected
    failed = [o for o in outcomes if not o.ok]
    assert sorted(o.index for o in failed) == [i for i in range(2000) if i % 100 == 7]
    assert all(isinstance(o.error, TaskFailedError) for o in failed)
    assert all(
        o.result is not None and o.result.request_id == o.request_id for o in outcomes if o.ok
    )
    assert emu.stats.creates == 2000 and emu.stats.duplicate_creates == 0
    assert events[EventKind.SUBMITTED] == 2000
    assert events[EventKind.SUCCEEDED] == 1980 and events[EventKind.FAILED] == 20
    assert stats.submitted == 2000 and stats.succeeded == 1980 and stats.failed == 20
    assert stats.in_flight == 0


async def test_map_keeps_input_order(nanobanana_emulator: Emulator) -> None:
    emu = nanobanana_emulator
    emu.reconfigure(service_time=ServiceTime.uniform(0.1, 3.0))  # finish out of order
    prompts = [f"ordered {i}" for i in range(40)]
    async with client_for(emu) as client:
        results = await client.map(prompts, max_in_flight=40)
        mixed = await client.map(["ok 1", "[blocked] no", "ok 2"], return_exceptions=True)
        with pytest.raises(TaskFailedError):
            await client.map(["fine", "[blocked] raises"])
    assert [r.metadata["prompt"] for r in results if isinstance(r, GenerationResult)] == prompts
    assert isinstance(mixed[0], GenerationResult) and isinstance(mixed[2], GenerationResult)
    assert isinstance(mixed[1], TaskFailedError)


@pytest.mark.nanobanana_emulator(service_time=ServiceTime.fixed(30.0), time_scale=1.0)
async def test_lazy_input_is_not_read_ahead(nanobanana_emulator: Emulator) -> None:
    pulled = 0

    def prompts() -> Iterator[str]:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield f"lazy {i}"

    async with client_for(nanobanana_emulator) as client:
        stream = client.stream(prompts(), max_in_flight=8)
        with anyio.move_on_after(0.5):
            async for _ in stream:
                pass
        await stream.aclose()
    assert pulled == 8  # exactly the free slots, not one more
    assert nanobanana_emulator.stats.creates == 8
    assert nanobanana_emulator.stats.cancels == 8  # abandoned by the timeout: cancelled remotely


async def test_async_iterable_input_and_bad_items(nanobanana_emulator: Emulator) -> None:
    async def source() -> AsyncIterator[GenerationRequest | str]:
        yield "plain prompt"
        yield GenerationRequest("typed", aspect_ratio="9:16")
        yield "x" * 3000  # too long: this item fails, the rest go on
        yield 42  # type: ignore[misc]

    async with client_for(nanobanana_emulator) as client:
        outcomes = {o.index: o async for o in client.stream(source())}
    assert outcomes[0].ok and outcomes[1].ok
    assert outcomes[1].result is not None and outcomes[1].result.images[0].height == 1024
    assert isinstance(outcomes[2].error, ValidationError) and outcomes[2].error.field == "prompt"
    assert isinstance(outcomes[3].error, ValidationError) and outcomes[3].request is None
    assert nanobanana_emulator.stats.creates == 2


@pytest.mark.nanobanana_emulator(service_time=ServiceTime.uniform(0.0, 40.0), time_scale=1.0)
async def test_break_cancels_remote_tasks_and_leaves_nothing_running(
    nanobanana_emulator: Emulator,
) -> None:
    emu = nanobanana_emulator
    async with client_for(emu) as client:
        before = sdk_tasks()
        assert before, "the scheduler loop should be among the SDK tasks"
        async with client.stream((f"t{i}" for i in range(100)), max_in_flight=10) as stream:
            async for outcome in stream:
                assert outcome.ok
                break
        live = [t for t in emu.stats.tasks.values() if t.state != "COMPLETED"]
        assert emu.stats.creates <= 11
        assert live == []  # every unfinished task was cancelled on the service
        assert emu.stats.cancels >= 1
        assert client.stats.in_flight == 0
        assert sdk_tasks() <= before

        # A plain ``break`` without ``async with`` frees the stream, which abandons it too.
        creates = emu.stats.creates
        async for _ in client.stream((f"u{i}" for i in range(100)), max_in_flight=10):
            break
        await _settle(lambda: all(t.state == "COMPLETED" for t in emu.stats.tasks.values()))
        assert emu.stats.creates - creates <= 11
        await _settle(lambda: sdk_tasks() <= before)


@pytest.mark.nanobanana_emulator(service_time=ServiceTime.fixed(30.0), time_scale=1.0)
async def test_cancelled_consumer_cancels_remote_tasks(nanobanana_emulator: Emulator) -> None:
    async with client_for(nanobanana_emulator) as client:

        async def consume() -> None:
            async for _ in client.stream((f"c{i}" for i in range(50)), max_in_flight=5):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await _settle(lambda: nanobanana_emulator.stats.creates == 5)
            tg.cancel_scope.cancel()
        await _settle(lambda: nanobanana_emulator.stats.cancels == 5)
    assert nanobanana_emulator.stats.creates == 5


async def test_429_storm_every_item_finishes() -> None:
    config = EmulatorConfig(
        service_time=ServiceTime.fixed(0.5),
        time_scale=0.1,
        rate_limit=150.0,
        rate_burst=10,
        workers=50,
    )
    async with Emulator(config) as emu, client_for(emu) as client:
        outcomes = [
            o async for o in client.stream((f"s{i}" for i in range(300)), max_in_flight=100)
        ]
        stats = client.stats
    assert len(outcomes) == 300 and all(o.ok for o in outcomes)
    assert emu.stats.rate_limited > 0  # the storm happened
    assert stats.rate_limited == emu.stats.rate_limited
    assert stats.send_rate is not None  # the client learned a rate from the 429s
    assert emu.stats.duplicate_creates == 0


async def test_bad_stream_arguments_fail_before_any_request(nanobanana_emulator: Emulator) -> None:
    async with client_for(nanobanana_emulator) as client:
        with pytest.raises(ValidationError) as info:
            client.stream(["a"], max_in_flight=0)
        assert info.value.field == "max_in_flight"
        with pytest.raises(ValidationError) as info:
            client.stream(["a"], submit_rate=-1)
        assert info.value.field == "submit_rate"
        with pytest.raises(ValidationError) as info:
            client.stream("a single string is not a list of prompts")
        assert info.value.field == "requests"
    assert nanobanana_emulator.stats.requests == 0


async def test_submit_rate_paces_creates(nanobanana_emulator: Emulator) -> None:
    async with client_for(nanobanana_emulator) as client:
        started = anyio.current_time()
        outcomes = [o async for o in client.stream((f"r{i}" for i in range(21)), submit_rate=40)]
        elapsed = anyio.current_time() - started
    assert len(outcomes) == 21
    assert elapsed >= 0.45  # 20 intervals at 40/s


def test_event_is_typed() -> None:
    event = BatchEvent(EventKind.QUEUED, 3, "rid", queue_position=2)
    assert event.kind == "queued" and event.queue_position == 2
