"""How fast the emulator answers status polls, and what ten thousand live tasks cost it.

Runs the emulator in its own process (so client and server do not share a core), creates tasks
that never finish during the run, hammers the status route from many connections with plain
aiohttp, and prints requests per second and the emulator's resident memory.

    python benchmarks/emulator_speed.py [--seconds 5] [--connections 64] [--tasks 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

MODEL = "nano_banana_pro"


def start_emulator() -> tuple[subprocess.Popen[str], str, str]:
    """Launch `python -m nanobanana_async.emulator` and read its base URL and key."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nanobanana_async.emulator",
            "--port",
            "0",
            "--service-time",
            "fixed:100000",
            "--workers",
            "8",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    fields = dict(part.split("=", 1) for part in proc.stdout.readline().split())
    return proc, fields["base_url"], fields["api_key"]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def create_many(session: aiohttp.ClientSession, base: str, n: int, conc: int) -> list[str]:
    """Create `n` tasks with `conc` requests in flight; returns their ids."""
    ids: list[str] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            async with session.post(f"{base}/v1/queue/{MODEL}", json={"prompt": f"bench {i}"}) as r:
                ids.append((await r.json())["request_id"])

    await asyncio.gather(*(worker() for _ in range(conc)))
    return ids


async def hammer(
    session: aiohttp.ClientSession, base: str, ids: list[str], seconds: float, conc: int
) -> tuple[int, list[float]]:
    """Poll status from `conc` loops for `seconds`: (completed requests, latencies)."""
    deadline = time.perf_counter() + seconds
    done = 0
    latencies: list[float] = []

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < deadline:
            rid = ids[i % len(ids)]
            i += conc
            t0 = time.perf_counter()
            async with session.get(f"{base}/v1/queue/{MODEL}/requests/{rid}/status") as r:
                await r.read()
                assert r.status == 200, r.status
            latencies.append(time.perf_counter() - t0)
            done += 1

    await asyncio.gather(*(worker(k) for k in range(conc)))
    return done, latencies


async def run(args: argparse.Namespace) -> dict[str, float]:
    """The whole benchmark; returns the figures."""
    proc, base, key = start_emulator()
    try:
        conn = aiohttp.TCPConnector(limit=args.connections)
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(connector=conn, headers=headers) as session:
            ids = await create_many(session, base, args.tasks, args.connections)
            await hammer(session, base, ids, 0.5, args.connections)  # warm-up: open connections
            start, cpu0 = time.perf_counter(), cpu_seconds(proc.pid)
            done, lat = await hammer(session, base, ids, args.seconds, args.connections)
            elapsed = time.perf_counter() - start
            server_cpu = (cpu_seconds(proc.pid) - cpu0) / elapsed
            lat.sort()
            rss_before = rss_mib(proc.pid)
            t0 = time.perf_counter()
            await create_many(session, base, args.live_tasks, args.connections)
            create_rate = args.live_tasks / (time.perf_counter() - t0)
            rss_after = rss_mib(proc.pid)
        return {
            "status_requests_per_s": done / elapsed,
            "status_p50_ms": lat[len(lat) // 2] * 1000,
            "status_p99_ms": lat[int(len(lat) * 0.99)] * 1000,
            "emulator_cpu_share": server_cpu,
            "creates_per_s": create_rate,
            "live_tasks": args.tasks + args.live_tasks,
            "rss_mib_with_1k_tasks": rss_before,
            "rss_mib_with_live_tasks": rss_after,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def main() -> None:
    """Parse arguments, run, print the figures (and JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--live-tasks", type=int, default=10_000)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    figures = asyncio.run(run(args))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"status polls:  {figures['status_requests_per_s']:,.0f} req/s "
        f"(p50 {figures['status_p50_ms']:.1f} ms, p99 {figures['status_p99_ms']:.1f} ms, "
        f"{args.connections} connections, {args.tasks} queued tasks; "
        f"emulator used {figures['emulator_cpu_share']:.0%} of a core)"
    )
    print(f"creates:       {figures['creates_per_s']:,.0f} req/s")
    print(
        f"emulator RSS:  {figures['rss_mib_with_1k_tasks']:.1f} MiB with {args.tasks} tasks, "
        f"{figures['rss_mib_with_live_tasks']:.1f} MiB with {figures['live_tasks']:,.0f} live tasks"
    )


if __name__ == "__main__":
    main()
