"""A batch that stops when the account cannot go on, and a spending cap; then resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanobanana_async import (
    AuthenticationError,
    BatchAbortedError,
    InsufficientCreditsError,
    Journal,
    Outcome,
)
from nanobanana_async.emulator import Emulator, EmulatorConfig, ServiceTime

from ..helpers import client_for
from ..standin import StandIn, serve

pytestmark = pytest.mark.anyio
FAST = ServiceTime.fixed(0.02)


def prompts(n: int) -> list[str]:
    return [f"a banana, take {i}" for i in range(n)]


async def test_credits_run_out_then_top_up_resumes_with_no_duplicate(tmp_path: Path) -> None:
    journal = tmp_path / "batch.db"
    async with Emulator(EmulatorConfig(credits=300, service_time=FAST, workers=64)) as emu:
        async with client_for(emu) as client:
            seen: list[Outcome] = []
            with pytest.raises(BatchAbortedError) as info:
                async for outcome in client.stream(prompts(1000), journal=journal):
                    seen.append(outcome)
            assert isinstance(info.value.cause, InsufficientCreditsError)
            assert isinstance(info.value.__cause__, InsufficientCreditsError)
            paid = len(emu.stats.tasks)
            assert paid == 300
            assert sum(o.ok for o in seen) == 300  # every paid task delivered
            refused = [o for o in seen if isinstance(o.error, InsufficientCreditsError)]
            # creates sent after the first 402: only those already in the air
            limit = client._runtime.transport.limits.max_concurrent_creates
            assert 1 <= len(refused) <= limit
            assert len(seen) == 300 + len(refused) < 1000  # the rest was never sent

        emu.add_credits(1000)
        async with client_for(emu) as client:
            again = [o async for o in client.stream(prompts(1000), journal=journal)]
        assert len(again) == 1000 and all(o.ok for o in again)
        assert sum(o.resumed for o in again) == 300
        assert len(emu.stats.tasks) == 1000  # 700 new creates: nothing paid twice
        assert max(emu.stats.creates_by_body.values()) == 1
        async with await Journal.open(journal) as j:
            report = await j.report()
        assert report.counts.get("succeeded") == 1000


async def test_a_key_revoked_mid_run_stops_the_batch_after_delivering_what_exists() -> None:
    config = EmulatorConfig(service_time=ServiceTime.fixed(0.3))
    async with Emulator(config) as emu, client_for(emu) as client:
        seen: list[Outcome] = []
        with pytest.raises(BatchAbortedError) as info:
            async for outcome in client.stream(prompts(200), max_in_flight=10):
                seen.append(outcome)
                if len(seen) == 5:
                    emu.revoke_key()
        assert isinstance(info.value.cause, AuthenticationError)
        created = len(emu.stats.tasks)
        assert created < 200
        # every created task got an outcome (success before the revoke, 401 after)
        assert {o.request_id for o in seen if o.request_id} == set(emu.stats.tasks)


async def test_max_creates_caps_spending_across_reruns(tmp_path: Path) -> None:
    journal = tmp_path / "capped.db"
    async with Emulator(EmulatorConfig(service_time=FAST)) as emu, client_for(emu) as client:
        with pytest.raises(BatchAbortedError, match="max_creates=25"):
            async for _ in client.stream(prompts(100), journal=journal, max_creates=25):
                pass
        assert len(emu.stats.tasks) == 25
        # the same batch rerun with the same cap creates nothing more
        with pytest.raises(BatchAbortedError, match="max_creates=25"):
            got = [o async for o in client.stream(prompts(100), journal=journal, max_creates=25)]
        assert len(emu.stats.tasks) == 25
        # a higher cap goes on exactly where it stopped
        got = [o async for o in client.stream(prompts(100), journal=journal, max_creates=100)]
        assert len(got) == 100 and all(o.ok for o in got)
        assert len(emu.stats.tasks) == 100


async def test_402_on_create_against_a_stand_in_stops_the_batch() -> None:
    standin = StandIn()
    accepted = calls = 0
    real_create = standin.create

    async def create(request: object) -> object:
        nonlocal accepted, calls
        calls += 1
        if accepted >= 3:
            from aiohttp import web

            body = {
                "status": {"code": 402, "message": "Insufficient credits", "error_code": 40201},
                "data": None,
            }
            return web.json_response(body, status=402)
        accepted += 1
        return await real_create(request)  # type: ignore[arg-type]

    standin.create = create  # type: ignore[method-assign]
    async with serve(standin):
        from nanobanana_async import Client, PollPolicy

        poll = PollPolicy(initial_delay=0.01, factor=1.0, max_interval=0.02, jitter=0.0)
        async with Client("k", base_url=standin.base_url, poll=poll) as client:
            with pytest.raises(BatchAbortedError):
                await client.map(prompts(50), return_exceptions=True, max_in_flight=1)
            assert standin.count("create") == 3
            assert calls == 4  # sequential creates: the 402 was the last one sent
