"""P3 — scale: 100, 1,000 and 10,000 tasks in flight at the same poll rate.

The emulator (own process) holds every task for far longer than the run, so the client keeps all
of them in flight and polls each at a fixed interval chosen to give the same total poll rate at
every size. Over a steady window we measure the client's CPU seconds per poll, its resident
memory, and how late the scheduler sends a due poll.

    python -m benchmarks scale [--quick] [--rate 400] [--window 6]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import anyio

from nanobanana_async import Client, Limits, PollPolicy

from ._harness import StandaloneEmulator, cpu_seconds, current_rss_mb, save, table


async def one_size(emu: StandaloneEmulator, n: int, rate: float, window: float) -> dict[str, float]:
    interval = n / rate
    # Polls come in rounds one interval apart: the window must span at least a whole round.
    window = max(window, interval)
    policy = PollPolicy(
        initial_delay=interval, factor=1.0, max_interval=interval, min_interval=0, target_delay=None
    )
    limits = Limits(max_concurrent_polls=64, max_connections=64)
    rss_before = current_rss_mb()
    async with Client(emu.api_key, base_url=emu.base_url, poll=policy, limits=limits) as client:
        stream = client.stream(
            (f"scale {n} {i}" for i in range(n)), max_in_flight=n, cancel_on_abandon=False
        )

        async def consume() -> None:
            async for _ in stream:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            with anyio.fail_after(300):
                while client.stats.submitted < n:
                    await anyio.sleep(0.1)
            # One full interval after the last create, every task has had its first poll: from
            # then on the poll rate is steady.
            await anyio.sleep(interval * 1.1)
            scheduler = client._runtime.scheduler
            assert scheduler is not None
            polls0, cpu0 = scheduler.polls_sent, cpu_seconds()
            late0 = scheduler.lateness_total
            scheduler.lateness_max = 0.0
            await anyio.sleep(window)
            polls = scheduler.polls_sent - polls0
            cpu = cpu_seconds() - cpu0
            lateness = (scheduler.lateness_total - late0) / max(polls, 1)
            late_max = scheduler.lateness_max
            rss = current_rss_mb()
            await stream.aclose()
            tg.cancel_scope.cancel()
        await client.aclose(detach=True)
    return {
        "in_flight": n,
        "polls": polls,
        "polls_per_s": polls / window,
        "cpu_ms_per_poll": 1000 * cpu / max(polls, 1),
        "rss_mb": rss,
        "rss_growth_mb": rss - rss_before,
        "mean_lateness_ms": 1000 * lateness,
        "max_lateness_ms": 1000 * late_max,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for n in args.sizes:
        # A fresh emulator per size, so its own load does not carry over.
        with StandaloneEmulator(
            ["--service-time", "fixed:100000", "--workers", str(max(n, 8))]
        ) as emu:
            results.append(await one_size(emu, n, args.rate, args.window))
            results[-1]["emulator_rss_mb"] = emu.rss_mb()
    base = results[0]["cpu_ms_per_poll"]
    for r in results:
        r["cpu_per_poll_ratio"] = r["cpu_ms_per_poll"] / base
    return {"rate": args.rate, "window": args.window, "sizes": results}


def report(data: dict[str, Any]) -> str:
    """The scale table."""
    rows = [
        [
            r["in_flight"],
            r["polls_per_s"],
            r["cpu_ms_per_poll"],
            r["cpu_per_poll_ratio"],
            r["rss_mb"],
            r["mean_lateness_ms"],
            r["max_lateness_ms"],
        ]
        for r in data["sizes"]
    ]
    header = [
        "in flight",
        "polls/s",
        "CPU ms/poll",
        "× vs smallest",
        "client RSS MB",
        "mean late ms",
        "max late ms",
    ]
    return table(rows, header)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run P3 and print its table."""
    parser = argparse.ArgumentParser(prog="benchmarks scale")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--rate", type=float, default=400.0, help="polls/s at every size")
    parser.add_argument("--window", type=float, default=6.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.window = [100, 1000], 2.0
    data = asyncio.run(main_async(args))
    print(f"P3 scale: same poll rate ({args.rate:g}/s) at every size, {args.window:g} s window")
    print(report(data))
    save("scale", data, quick=args.quick)
    return data


if __name__ == "__main__":
    main()
