"""A web backend's health probe while 200 requests burst in (issue 14's responsiveness figure).

The scenario of ``tests/reliability/test_web_backend.py::test_200_concurrent_requests_with_disconnects``,
as a program with figures instead of a pass/fail: an aiohttp app shares one ``Client`` (the
test's fast ``PollPolicy``) and answers ``/generate`` with ``client.generate(prompt)``; a
standalone emulator (fixed 1.5 s tasks, 1,000 workers) serves it. 200 users in another process
call ``/generate`` at once, the first 50 giving up after 0.5 s (their disconnects cancel the
tasks remotely), while this process probes ``/health`` every 20 ms. Each repeat builds a fresh app
and client against the same emulator, and first runs the same burst through an app whose
``/generate`` sleeps 1.5 s instead of calling the SDK: the web server's own share of the figures
(its median is the last row).

Figures per repeat: the health probe's latency p50, p95 and worst (ms) during the burst; the
event loop's longest iteration during the burst, in CPU time of its thread (how long the loop was
blocked: it bounds the probe's worst case, and another process on the machine cannot inflate it
the way it inflates a wall-clock latency), also less the garbage collector's pauses within it;
the longest full collection (ms) and the number of collections (any generation: allocation
churn); and the app process's CPU per API request (CPU seconds of this process from the burst's
start to its last answer ÷ the requests the SDK sent: creates, polls, cancels, from the
emulator's counters). That CPU includes the web server's own work and the prober's, the same for
any client: compare it between versions of the SDK, not with zero. The summary is the median of
the repeats.

    python -m benchmarks.web_backend [--quick] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import anyio
from aiohttp import web
from aiohttp.test_utils import TestServer

from nanobanana_async import Client, PollPolicy

from ._harness import (
    GcPauses,
    StandaloneEmulator,
    cpu_seconds,
    median_spread,
    percentile,
    save,
    table,
)
from .peers import sdk_commit

TOTAL, DROPPED = 200, 50
SERVICE_TIME = 1.5  # seconds: the emulator's fixed task time
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


class LoopMeter:
    """The running loop's iterations and the garbage collector's pauses, in thread CPU time."""

    def __init__(self) -> None:
        self.iterations: list[float] = []  # CPU seconds of each loop iteration
        self.beside_gc: list[float] = []  # the same, less the collector's pauses within it
        self.gc = GcPauses()

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Time the running loop's iterations (and the collector) while the block runs."""
        loop = asyncio.get_running_loop()
        run_once = loop._run_once  # type: ignore[attr-defined]

        def timed() -> None:
            started, gc_before = time.thread_time(), self.gc.total
            try:
                run_once()
            finally:
                spent = time.thread_time() - started
                self.iterations.append(spent)
                self.beside_gc.append(spent - (self.gc.total - gc_before))

        loop._run_once = timed  # type: ignore[attr-defined]  # BaseEventLoop calls self._run_once()
        gc.callbacks.append(self.gc.on_gc)
        try:
            yield
        finally:
            gc.callbacks.remove(self.gc.on_gc)
            del loop._run_once  # type: ignore[attr-defined]


def make_app(base_url: str, api_key: str, *, sdk: bool = True) -> web.Application:
    """The app (shared with the reliability test): one client, ``/generate`` and ``/health``.

    ``sdk=False``: ``/generate`` sleeps as long as a task takes instead (the web server alone).
    """

    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        poll = PollPolicy(initial_delay=0.2, max_interval=0.3, min_interval=0.05, target_delay=0.1)
        async with Client(api_key, base_url=base_url, poll=poll) as client:
            app[CLIENT] = client
            yield

    async def generate(request: web.Request) -> web.Response:
        result = await request.app[CLIENT].generate(request.query["prompt"], timeout=30)
        return web.json_response({"request_id": result.request_id})

    async def generate_without_sdk(request: web.Request) -> web.Response:
        await asyncio.sleep(SERVICE_TIME)
        return web.json_response({"request_id": request.query["prompt"]})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    if sdk:
        app.cleanup_ctx.append(client_ctx)
    app.router.add_get("/generate", generate if sdk else generate_without_sdk)
    app.router.add_get("/health", health)
    return app


async def one_burst(
    emu: StandaloneEmulator, total: int, dropped: int, *, sdk: bool = True
) -> dict[str, Any]:
    """One repeat: a fresh app, the burst, the probe's latencies and the CPU per request."""
    before = await anyio.to_thread.run_sync(emu.stats)
    server = TestServer(make_app(emu.base_url, emu.api_key, sdk=sdk))
    await server.start_server()
    latencies: list[float] = []
    meter = LoopMeter()
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
                with meter.measure():
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
        "loop_worst_cpu_ms": 1000 * max(meter.iterations),
        "loop_worst_beside_gc_ms": 1000 * max(meter.beside_gc),
        "gc_worst_ms": 1000 * max(meter.gc.full_pauses, default=0.0),
        "gc_collections": sum(meter.gc.count),
        "burst_wall_s": wall,
        "app_cpu_s": cpu,
        "api_requests": requests,
        "cpu_ms_per_request": 1000 * cpu / max(1, requests),
        "ok": statuses.count(200),
        "dropped": statuses.count(-1),
        "cancels": after["cancels"] - before["cancels"],
    }


LOOP_FIGURES = ("loop_worst_cpu_ms", "loop_worst_beside_gc_ms", "gc_worst_ms", "gc_collections")
FIGURES = (
    "health_p50_ms",
    "health_p95_ms",
    "health_worst_ms",
    *LOOP_FIGURES,
    "cpu_ms_per_request",
    "api_requests",
    "burst_wall_s",
)


async def run(repeats: int, total: int, dropped: int) -> dict[str, Any]:
    """``repeats`` bursts against one emulator, each after one without the SDK; medians."""
    args = ["--service-time", f"fixed:{SERVICE_TIME}", "--workers", "1000"]
    runs, server_only = [], []
    with StandaloneEmulator(args) as emu:
        for _ in range(repeats):
            server_only.append(await one_burst(emu, total, dropped, sdk=False))
            runs.append(await one_burst(emu, total, dropped))
    return {
        "sdk_commit": sdk_commit(),
        "total": total,
        "dropped": dropped,
        "repeats": repeats,
        "summary": {key: median_spread([r[key] for r in runs]) for key in FIGURES},
        "runs": runs,
        "server_only": {key: median_spread([r[key] for r in server_only]) for key in FIGURES},
    }


def report(data: dict[str, Any]) -> str:
    """Each repeat's figures, then the medians, then the web server's own (no SDK)."""
    header = [
        "repeat",
        "probes",
        "p50 ms",
        "p95 ms",
        "worst ms",
        "loop worst CPU ms",
        "beside GC ms",
        "full GC ms",
        "GCs",
        "CPU ms/req",
        "requests",
        "ok",
    ]
    rows: list[list[Any]] = [
        [
            i + 1,
            r["probes"],
            r["health_p50_ms"],
            r["health_p95_ms"],
            r["health_worst_ms"],
            *(r.get(key, "—") for key in LOOP_FIGURES),
            r["cpu_ms_per_request"],
            r["api_requests"],
            f"{r['ok']}+{r['dropped']} dropped",
        ]
        for i, r in enumerate(data["runs"])
    ]
    medians = [("median", data["summary"])]
    if "server_only" in data:
        medians.append(("no SDK (median)", data["server_only"]))
    for label, s in medians:
        sdk = label == "median"
        rows.append(
            [
                label,
                "",
                s["health_p50_ms"]["median"],
                s["health_p95_ms"]["median"],
                s["health_worst_ms"]["median"],
                *(s[key]["median"] if key in s else "—" for key in LOOP_FIGURES),
                s["cpu_ms_per_request"]["median"] if sdk else "—",
                s["api_requests"]["median"] if sdk else "—",
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
