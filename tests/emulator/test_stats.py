"""Counters the SDK's tests rely on."""

from __future__ import annotations

import pytest

from nanobanana_async.emulator import ServiceTime

from .conftest import Api, ApiFactory, Factory

pytestmark = pytest.mark.anyio


async def test_counters(nanobanana_emulator_factory: Factory, api_factory: ApiFactory) -> None:
    async with nanobanana_emulator_factory(
        service_time=ServiceTime.fixed(10), time_scale=1.0
    ) as emu:
        await _count(api_factory(emu))


async def _count(api: Api) -> None:
    stats = api.emu.stats
    a = await api.create_id({"prompt": "same", "image_size": "1K"})
    b = await api.create_id({"image_size": "1K", "prompt": "same"})  # same body, other key order
    await api.create_id({"prompt": "different"})
    await api.create({})  # rejected: not counted as a create
    await api.status(a)
    await api.status(a)
    await api.status(b)
    await api.result(a)
    await api.cancel(b)
    assert stats.requests == 9
    assert stats.creates == 3
    assert sorted(stats.creates_by_body.values()) == [1, 2]
    assert stats.duplicate_creates == 1
    assert stats.status_polls == {a: 2, b: 1}
    assert stats.result_polls == {a: 1}
    assert stats.cancels == 1
    assert set(stats.tasks) >= {a, b}
    assert stats.tasks[b].state == "COMPLETED" and stats.tasks[b].error_type == "CANCELED"

    stats.reset()
    assert stats.requests == stats.creates == stats.cancels == 0
    assert stats.duplicate_creates == 0 and not stats.status_polls and not stats.tasks


async def test_max_unfinished(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(
        workers=2, service_time=ServiceTime.fixed(0.3), time_scale=1.0
    ) as emu:
        api = api_factory(emu)
        rids = [await api.create_id({"prompt": str(i)}) for i in range(5)]
        assert emu.stats.max_unfinished == 5 == emu.stats.unfinished
        await api.cancel(rids[4])
        assert emu.stats.unfinished == 4
        for rid in rids[:4]:
            await api.wait_done(rid)
        assert emu.stats.unfinished == 0 and emu.stats.max_unfinished == 5
        # Two workers: the first two ran together, then the next two (the fifth never ran).
        t = [emu.stats.tasks[r] for r in rids]
        first_end = min(t[0].completed_at, t[1].completed_at)  # type: ignore[type-var]
        assert max(t[0].started_at, t[1].started_at) < first_end  # type: ignore[type-var,operator]
        assert min(t[2].started_at, t[3].started_at) >= first_end  # type: ignore[type-var,operator]
        assert t[4].started_at is None
        emu.stats.reset()
        assert emu.stats.max_unfinished == 0
        rid = await api.create_id({"prompt": "again"})
        assert emu.stats.max_unfinished == 1
        tasks = [emu.stats.tasks.get(r) for r in rids]
        assert all(t is None for t in tasks)  # reset forgot them
        await api.wait_done(rid)


async def test_worker_slots_are_respected(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(
        workers=2, service_time=ServiceTime.fixed(0.05), time_scale=1.0
    ) as emu:
        api = api_factory(emu)
        rids = [await api.create_id({"prompt": str(i)}) for i in range(6)]
        for rid in rids:
            await api.wait_done(rid)
        records = [emu.stats.tasks[r] for r in rids]
        spans = [(t.started_at, t.completed_at) for t in records]
        for start, end in spans:
            assert start is not None and end is not None
            running = sum(1 for s, e in spans if s <= start < e)  # type: ignore[operator]
            assert running <= 2
        starts = [t.started_at for t in records]
        assert starts == sorted(starts)  # FIFO
        assert records[2].started_at >= records[0].completed_at  # type: ignore[operator]


async def test_more_workers_start_queued_tasks(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(
        workers=1, service_time=ServiceTime.fixed(10), time_scale=1.0
    ) as emu:
        api = api_factory(emu)
        _, second = await api.create_id(), await api.create_id({"prompt": "2"})
        assert (await api.status(second)).json["status"] == "IN_QUEUE"
        emu.reconfigure(workers=2)  # starts queued work synchronously
        assert (await api.status(second)).json["status"] == "IN_PROGRESS"
