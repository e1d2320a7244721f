"""A web backend with one shared client under load: disconnects cancel remotely, the loop stays responsive."""

from __future__ import annotations

import gc
import json
import sys
import time

import aiohttp
import anyio
import pytest
from aiohttp.test_utils import TestServer

from benchmarks._harness import StandaloneEmulator
from benchmarks.web_backend import LOAD, make_app

pytestmark = pytest.mark.anyio

# The app (one shared client, /generate and /health) and the users' process: one scenario,
# shared with `python -m benchmarks web_backend`, which measures what this test bounds.


@pytest.mark.timeout(120)
async def test_200_concurrent_requests_with_disconnects() -> None:
    total, dropped = 200, 50
    args = ["--service-time", "fixed:1.5", "--workers", "1000"]
    # The app runs inside the test process, whose heap holds everything the suite built before
    # (~107,000 objects after 440 tests: a full collection takes 63 ms on 3.10; one during the
    # burst read 160 ms at worst in CI). What this test bounds is the SDK's hold on the loop, so
    # the suite's objects are frozen out of collections, as docs/guides/web.md advises an app.
    gc.collect()
    gc.freeze()
    try:
        await _burst(total, dropped, args)
    finally:
        gc.unfreeze()


async def _burst(total: int, dropped: int, args: list[str]) -> None:
    with StandaloneEmulator(args) as emu:
        server = TestServer(make_app(emu.base_url, emu.api_key))
        await server.start_server()
        latencies: list[float] = []
        try:
            base = str(server.make_url("/"))
            async with aiohttp.ClientSession(base) as prober:
                done = anyio.Event()

                async def probe_health() -> None:
                    while not done.is_set():
                        started = time.monotonic()
                        async with prober.get("/health") as resp:
                            assert resp.status == 200
                        latencies.append(time.monotonic() - started)
                        await anyio.sleep(0.02)

                async with prober.get("/health") as resp:  # open the probe's connection first
                    assert resp.status == 200
                async with anyio.create_task_group() as tg:
                    tg.start_soon(probe_health)
                    # The users run in their own process: this loop hosts only the app.
                    load = await anyio.run_process(
                        [sys.executable, "-c", LOAD, base, str(total), str(dropped)], check=True
                    )
                    done.set()
            statuses = json.loads(load.stdout)
            # Let the server finish the cancellations triggered by the disconnects.
            with anyio.fail_after(10):
                while emu.stats()["cancels"] < dropped:
                    await anyio.sleep(0.1)
        finally:
            await server.close()
        stats = emu.stats()
    assert statuses.count(-1) == dropped
    assert statuses.count(200) == total - dropped
    assert stats["creates"] == total and stats["duplicate_creates"] == 0
    assert stats["cancels"] == dropped  # every abandoned request was cancelled on the service
    assert stats["task_states"].get("COMPLETED", 0) == total
    assert len(latencies) > 20
    # The arrival of 200 requests in one burst is one long event-loop round on 2 cores (every
    # handler parses its request and starts its create): the worst probe can land in it. The
    # target is 50 ms throughout; we hold the 95th percentile to it and the worst to 3x.
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    assert p95 < 0.05, f"health p95 {p95 * 1000:.0f} ms"
    assert latencies[-1] < 0.15, f"health answered in {latencies[-1] * 1000:.0f} ms at worst"
