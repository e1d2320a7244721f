"""A web backend's health probe while 200 requests burst in (issue 14's responsiveness figure).

The scenario of ``tests/reliability/test_web_backend.py::test_200_concurrent_requests_with_disconnects``,
as a program with figures instead of a pass/fail: an aiohttp app shares one ``Client`` (the
test's fast ``PollPolicy``) and answers ``/generate`` with ``client.generate(prompt)``; a
standalone emulator (fixed 1.5 s tasks, 1,000 workers) serves it. 200 users in another process
call ``/generate`` at once, the first 50 giving up after 0.5 s (their disconnects cancel the
tasks remotely), while this process probes ``/health`` every 20 ms. Each repeat builds a fresh app
and client against the same emulator.

Figures per repeat: the health probe's latency p50, p95 and worst (ms) during the burst, and the
app process's CPU per API request (CPU seconds of this process from the burst's start to its
last answer ÷ the requests the SDK sent: creates, polls, cancels, from the emulator's counters).
That CPU includes the web server's own work and the prober's, the same for any client: compare
it between versions of the SDK, not with zero. The summary is the median of the repeats.

    python -m benchmarks.web_backend [--quick] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
from aiohttp import web
from aiohttp.test_utils import TestServer

from nanobanana_async import Client, PollPolicy

from ._harness import StandaloneEmulator, cpu_seconds, median_spread, percentile, save, table
from .peers import sdk_commit

TOTAL, DROPPED = 200, 50
PROBE_EVERY = 0.02  # seconds between health probes
CLIENT = web.AppKey("client", Client)

# 200 users at once; the first `dropped` give up after 0.5 s (their connection closes).
LOAD = """
import asyncio, json, sys
import aiohttp

async def main(base, total, dropped):
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0)) as s:
        async def call(i):
            timeout = aiohttp.ClientTimeout(total=0.5 if i < dropped else 30)
            try:
                async with s.get("/generate", params={"prompt": f"web {i}"}, timeout=timeout) as r:
                    await r.read()
                    return r.status
            except asyncio.TimeoutError:
                return -1
        print(json.dumps(await asyncio.gather(*(call(i) for i in range(total)))))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def make_app(base_url: str, api_key: str) -> web.Application:
    """The app (shared with the reliability test): one client, ``/generate`` and ``/health``."""

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        poll = PollPolicy(initial_delay=0.2, max_interval=0.3, min_interval=0.05, target_delay=0.1)
        async with Client(api_key, base_url=base_url, poll=poll) as client:
            app[CLIENT] = client
            yield

    async def generate(request: web.Request) -> web.Response:
        result = await request.app[CLIENT].generate(request.query["prompt"], timeout=30)
        return web.json_response({"request_id": result.request_id})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_get("/generate", generate)
    app.router.add_get("/health", health)
    return app


async def one_burst(emu: StandaloneEmulator, total: int, dropped: int) -> dict[str, Any]:
    """One repeat: a fresh app, the burst, the probe's latencies and the CPU per request."""
    before = await anyio.to_thread.run_sync(emu.stats)
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
                    await anyio.sleep(PROBE_EVERY)

            async with prober.get("/health") as resp:  # open the probe's connection first
                assert resp.status == 200
            async with anyio.create_task_group() as tg:
                tg.start_soon(probe_health)
                wall, cpu = time.monotonic(), cpu_seconds()
                load = await anyio.run_process(
                    [sys.executable, "-c", LOAD, base, str(total), str(dropped)], check=True
                )
                cpu, wall = cpu_seconds() - cpu, time.monotonic() - wall
                done.set()
        statuses = json.loads(load.stdout)
        # Let the service see the cancels of the dropped users before reading its counters.
        with anyio.move_on_after(10):
            while (await anyio.to_thread.run_sync(emu.stats))["cancels"] - before[
                "cancels"
            ] < dropped:
                await anyio.sleep(0.1)
    finally:
        await server.close()
    after = await anyio.to_thread.run_sync(emu.stats)
    requests = after["requests"] - before["requests"]
    latencies.sort()
    return {
        "probes": len(latencies),
        "health_p50_ms": 1000 * statistics.median(latencies),
        "health_p95_ms": 1000 * percentile(latencies, 0.95),
        "health_worst_ms": 1000 * latencies[-1],
        "burst_wall_s": wall,
        "app_cpu_s": cpu,
        "api_requests": requests,
        "cpu_ms_per_request": 1000 * cpu / max(1, requests),
        "ok": statuses.count(200),
        "dropped": statuses.count(-1),
        "cancels": after["cancels"] - before["cancels"],
    }


FIGURES = (
    "health_p50_ms",
    "health_p95_ms",
    "health_worst_ms",
    "cpu_ms_per_request",
    "api_requests",
    "burst_wall_s",
)


async def run(repeats: int, total: int, dropped: int) -> dict[str, Any]:
    """``repeats`` bursts against one emulator; the median (and range) of each figure."""
    args = ["--service-time", "fixed:1.5", "--workers", "1000"]
    runs = []
    with StandaloneEmulator(args) as emu:
        for _ in range(repeats):
            runs.append(await one_burst(emu, total, dropped))
    return {
        "sdk_commit": sdk_commit(),
        "total": total,
        "dropped": dropped,
        "repeats": repeats,
        "summary": {key: median_spread([r[key] for r in runs]) for key in FIGURES},
        "runs": runs,
    }


def report(data: dict[str, Any]) -> str:
    """Each repeat's figures, then the medians."""
    header = ["repeat", "probes", "p50 ms", "p95 ms", "worst ms", "CPU ms/req", "requests", "ok"]
    rows: list[list[Any]] = [
        [
            i + 1,
            r["probes"],
            r["health_p50_ms"],
            r["health_p95_ms"],
            r["health_worst_ms"],
            r["cpu_ms_per_request"],
            r["api_requests"],
            f"{r['ok']}+{r['dropped']} dropped",
        ]
        for i, r in enumerate(data["runs"])
    ]
    s = data["summary"]
    rows.append(
        [
            "median",
            "",
            s["health_p50_ms"]["median"],
            s["health_p95_ms"]["median"],
            s["health_worst_ms"]["median"],
            s["cpu_ms_per_request"]["median"],
            s["api_requests"]["median"],
            "",
        ]
    )
    return table(rows, header)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the bursts, print the table, save ``results/web_backend.json`` (quick: results/quick)."""
    parser = argparse.ArgumentParser(prog="benchmarks web_backend")
    parser.add_argument("--quick", action="store_true", help="2 repeats (a few seconds)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    data = anyio.run(run, repeats, TOTAL, DROPPED)
    print(
        f"Web backend: health probe every {PROBE_EVERY * 1000:.0f} ms while {TOTAL} requests "
        f"burst in ({DROPPED} disconnect after 0.5 s), {repeats} repeat(s)"
    )
    print(report(data))
    save("web_backend", data, quick=args.quick)
    return data


if __name__ == "__main__":
    main()
