"""Injected faults (per request and per task) and the determinism of seeded runs."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import aiohttp
import pytest

from nanobanana_async.emulator import Faults, ServiceTime, TaskFaults

from .conftest import ApiFactory, Factory

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("code", [500, 502, 503, 504])
async def test_error_faults(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory, code: int
) -> None:
    faults = Faults(**{f"error_{code}": 1.0}, retry_after_seconds=2.5)  # type: ignore[arg-type]
    async with nanobanana_emulator_factory(faults=faults) as emu:
        api = api_factory(emu)
        reply = await api.create()
        assert reply.status == code
        assert isinstance(reply.json["detail"], str)
        assert ("Retry-After" in reply.headers) == (code == 503)
        if code == 503:
            assert reply.headers["Retry-After"] == "3"
        assert emu.stats.creates == 0  # the task was certainly not created
        assert (await api.status("x")).status == code
        assert emu.stats.faults == {f"error_{code}": 2}


async def test_random_429(nanobanana_emulator_factory: Factory, api_factory: ApiFactory) -> None:
    faults = Faults(rate_limited_429=1.0, retry_after_seconds=4)
    async with nanobanana_emulator_factory(faults=faults) as emu:
        api = api_factory(emu)
        reply = await api.create()
        assert reply.status == 429
        assert reply.headers["Retry-After"] == "4"
        assert reply.json["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert emu.stats.rate_limited == 1
        assert emu.stats.faults["rate_limited_429"] == 1
        assert emu.stats.creates == 0


async def test_reset_drops_the_connection(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(faults=Faults(reset=1.0, routes={"status"})) as emu:
        api = api_factory(emu)
        rid = await api.create_id()
        with pytest.raises(aiohttp.ClientError):  # ServerDisconnectedError or a reset
            await api.status(rid)
        # aiohttp silently retries an idempotent request once on a reused connection.
        assert set(emu.stats.faults) == {"reset"} and emu.stats.faults["reset"] >= 1
        emu.reconfigure(faults=Faults())
        assert (await api.status(rid)).status == 200


async def test_stall_delays_then_answers(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    faults = Faults(stall=1.0, stall_seconds=0.2, routes={"result"})
    async with nanobanana_emulator_factory(faults=faults) as emu:
        api = api_factory(emu)
        rid = await api.create_id()
        start = time.monotonic()
        reply = await api.result(rid)
        assert time.monotonic() - start >= 0.2
        assert reply.status in (200, 202)
        with pytest.raises(asyncio.TimeoutError):  # not the builtin on Python 3.10
            await api.result(rid, timeout=aiohttp.ClientTimeout(total=0.05))
        assert emu.stats.faults["stall"] == 2


async def test_malformed_json(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(faults=Faults(malformed_json=1.0)) as emu:
        api = api_factory(emu)
        reply = await api.create()
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.raw.startswith(b"{")
        with pytest.raises(json.JSONDecodeError):
            json.loads(reply.raw)
        assert emu.stats.creates == 1  # the server did accept it
        rid = next(iter(emu.stats.tasks))
        assert (await api.status(rid)).status == 200
        emu.reconfigure(faults=Faults())
        assert json.loads((await api.status(rid)).raw)["request_id"] == rid


async def test_lost_create_response_still_queues(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(faults=Faults(lost_create_response=1.0)) as emu:
        api = api_factory(emu)
        with pytest.raises(aiohttp.ClientError):
            await api.create({"prompt": "lost"})
        assert emu.stats.creates == 1
        (rid,) = emu.stats.lost_create_ids
        assert emu.stats.faults == {"lost_create_response": 1}
        # Status is not the create route: the fault does not apply there.
        done = await api.wait_done(rid)
        assert done.json["request_id"] == rid


async def test_fault_routes_restrict_where_faults_fire(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(faults=Faults(error_500=1.0, routes={"cancel"})) as emu:
        api = api_factory(emu)
        rid = await api.create_id()
        assert (await api.status(rid)).status == 200
        assert (await api.result(rid)).status in (200, 202)
        assert (await api.cancel(rid)).status == 500
        with pytest.raises(ValueError, match="unknown fault routes"):
            Faults(routes={"download"})


async def test_partial_fault_rate(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(faults=Faults(error_502=0.3)) as emu:
        api = api_factory(emu)
        codes = [(await api.status("x")).status for _ in range(200)]
        assert 30 <= codes.count(502) <= 90
        assert codes.count(502) + codes.count(404) == 200


@pytest.mark.parametrize(
    ("field", "error_type"),
    [
        ("inference_failure", "INFERENCE_FAILURE"),
        ("inference_timeout", "INFERENCE_TIMEOUT"),
        ("content_blocked", "CONTENT_BLOCKED"),
        ("request_invalid", "REQUEST_INVALID"),
    ],
)
async def test_task_faults(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory, field: str, error_type: str
) -> None:
    async with nanobanana_emulator_factory(task_faults=TaskFaults(**{field: 1.0})) as emu:  # type: ignore[arg-type]
        api = api_factory(emu)
        rid = await api.create_id()
        body = (await api.wait_done(rid)).json
        assert body["status"] == "COMPLETED"
        assert body["error_type"] == error_type
        assert isinstance(body["error"], str) and body["error"]
        reply = await api.result(rid)
        assert reply.status == 400
        assert reply.json["error_type"] == error_type
        assert emu.stats.tasks[rid].error_type == error_type


async def test_blocked_prompt_always_blocked(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory() as emu:
        api = api_factory(emu)
        rid = await api.create_id({"prompt": "draw [blocked] things"})
        ok = await api.create_id({"prompt": "draw things"})
        assert (await api.wait_done(rid)).json["error_type"] == "CONTENT_BLOCKED"
        assert "error_type" not in (await api.wait_done(ok)).json


async def _run(factory: Factory, api_factory: ApiFactory, **config: Any) -> dict[str, Any]:
    async with factory(
        service_time=ServiceTime.lognormal(20, 0.5),
        task_faults=TaskFaults(inference_failure=0.3),
        deterministic_ids=True,  # ids are unique across restarts unless asked otherwise
        **config,
    ) as emu:
        api = api_factory(emu)
        codes = [(await api.create({"prompt": f"p{i}"})).status for i in range(30)]
        tasks = list(emu.stats.tasks.values())
        return {
            "ids": [t.request_id for t in tasks],
            "service": [t.service_time for t in tasks],  # type: ignore[attr-defined]
            "planned": [t.planned_error for t in tasks],  # type: ignore[attr-defined]
            "codes": codes,
        }


async def test_same_seed_same_run(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    faults = Faults(error_503=0.3)
    a = await _run(nanobanana_emulator_factory, api_factory, seed=7, faults=faults)
    b = await _run(nanobanana_emulator_factory, api_factory, seed=7, faults=faults)
    c = await _run(nanobanana_emulator_factory, api_factory, seed=8, faults=faults)
    assert a == b
    assert a["ids"] != c["ids"] and a["codes"] != c["codes"]
    assert 503 in a["codes"] and 200 in a["codes"]
    assert len(set(a["service"])) == len(a["service"])
    # Request faults use their own stream: switching them off leaves service times alone.
    quiet = await _run(nanobanana_emulator_factory, api_factory, seed=7)
    assert quiet["service"][: len(a["service"])] == a["service"]


async def _ids(
    factory: Factory, api_factory: ApiFactory, n: int = 3, seed: int = 5, **config: Any
) -> list[str]:
    async with factory(seed=seed, **config) as emu:
        api = api_factory(emu)
        return [await api.create_id({"prompt": f"p{i}"}) for i in range(n)]


async def test_ids_unique_across_restarts(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    first = await _ids(nanobanana_emulator_factory, api_factory)
    second = await _ids(nanobanana_emulator_factory, api_factory)
    assert not set(first) & set(second)
    for rid in first + second:
        assert re.fullmatch(r"mmsu_[0-9a-z]{26}", rid)


async def test_deterministic_ids_on_request(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    first = await _ids(nanobanana_emulator_factory, api_factory, deterministic_ids=True)
    second = await _ids(nanobanana_emulator_factory, api_factory, deterministic_ids=True)
    assert first == second
    other = await _ids(
        nanobanana_emulator_factory, api_factory, n=1, seed=6, deterministic_ids=True
    )
    assert other != first[:1]
    async with nanobanana_emulator_factory() as emu:
        with pytest.raises(ValueError, match="deterministic_ids"):
            emu.reconfigure(deterministic_ids=True)
