"""P1 — overhead ceiling: how close the SDK gets to plain aiohttp against an instant service.

The emulator (own process) completes every task at create time, so a task costs exactly two
requests (create, then one poll of the response URL). The ceiling is measured in the same run:
plain aiohttp GETs of a status URL at the same concurrency. Reported: SDK tasks/s ÷ (raw req/s ÷ 2)
(target ≥ 0.8) and client CPU seconds per task.

    python -m benchmarks overhead [--quick] [--tasks 20000] [--concurrency 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp

from nanobanana_async import Client, Limits, PollPolicy

from ._harness import StandaloneEmulator, cpu_seconds, median_spread, save, table

INSTANT = PollPolicy(
    initial_delay=0.0, factor=1.0, max_interval=0.01, jitter=0.0, target_delay=None
)


async def raw_ceiling(emu: StandaloneEmulator, requests: int, concurrency: int) -> dict[str, float]:
    """Plain aiohttp GETs of one task's status URL from ``concurrency`` workers."""
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async with session.post(
            f"{emu.base_url}/v1/queue/nano_banana_pro", json={"prompt": "raw"}
        ) as r:
            rid = (await r.json())["request_id"]
        url = f"{emu.base_url}/v1/queue/nano_banana_pro/requests/{rid}/status"
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.get(url) as resp:
                    await resp.read()

        wall, cpu = time.monotonic(), cpu_seconds()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.monotonic() - wall, cpu_seconds() - cpu
    return {"req_per_s": requests / wall, "cpu_per_req": cpu / requests}


async def sdk_run(
    emu: StandaloneEmulator, tasks: int, concurrency: int, tag: str
) -> dict[str, float]:
    """``tasks`` tasks through ``Client.stream`` at ``max_in_flight=concurrency``."""
    limits = Limits(max_connections=concurrency, max_concurrent_polls=concurrency)
    async with Client(emu.api_key, base_url=emu.base_url, poll=INSTANT, limits=limits) as client:
        wall, cpu = time.monotonic(), cpu_seconds()
        done = 0
        async for outcome in client.stream(
            (f"{tag} {i}" for i in range(tasks)), max_in_flight=concurrency
        ):
            done += outcome.ok
        wall, cpu = time.monotonic() - wall, cpu_seconds() - cpu
        sent = client.stats.requests_sent
    assert done == tasks, f"only {done} of {tasks} succeeded"
    return {
        "tasks_per_s": tasks / wall,
        "cpu_per_task": cpu / tasks,
        "requests_per_task": sent / tasks,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    with StandaloneEmulator(
        ["--service-time", "fixed:0", "--workers", "100000", "--retention", "60"]
    ) as emu:
        await sdk_run(emu, min(1000, args.tasks), args.concurrency, "warm")
        for repeat in range(args.repeats):
            raw = await raw_ceiling(emu, 2 * args.tasks, args.concurrency)
            sdk = await sdk_run(emu, args.tasks, args.concurrency, f"run{repeat}")
            runs.append(
                {
                    **sdk,
                    "raw_req_per_s": raw["req_per_s"],
                    "raw_cpu_per_req": raw["cpu_per_req"],
                    "ratio": sdk["tasks_per_s"] / (raw["req_per_s"] / 2),
                }
            )
    return {
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "runs": runs,
        "ratio": median_spread([r["ratio"] for r in runs]),
        "tasks_per_s": median_spread([r["tasks_per_s"] for r in runs]),
        "raw_req_per_s": median_spread([r["raw_req_per_s"] for r in runs]),
        "cpu_ms_per_task": median_spread([1000 * r["cpu_per_task"] for r in runs]),
        "raw_cpu_ms_per_request": median_spread([1000 * r["raw_cpu_per_req"] for r in runs]),
    }


def report(data: dict[str, Any]) -> str:
    """The overhead table."""
    rows = [
        [
            data["tasks"],
            data["raw_req_per_s"]["median"],
            data["tasks_per_s"]["median"],
            f"{data['ratio']['median']:.2f} ({data['ratio']['min']:.2f}–{data['ratio']['max']:.2f})",
            data["cpu_ms_per_task"]["median"],
            data["raw_cpu_ms_per_request"]["median"],
        ]
    ]
    header = [
        "tasks",
        "raw req/s",
        "SDK tasks/s",
        "SDK ÷ (raw/2)",
        "SDK CPU ms/task",
        "raw CPU ms/req",
    ]
    return table(rows, header)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run P1 and print its table."""
    parser = argparse.ArgumentParser(prog="benchmarks overhead")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.repeats = 2000, 1
    data = asyncio.run(main_async(args))
    print(f"P1 overhead: instant service, {args.tasks} tasks at concurrency {args.concurrency}")
    print(report(data))
    save("overhead", data)
    return data


if __name__ == "__main__":
    main()
