"""Where the client's time per task goes: ``python -m benchmarks profile [--tasks N]``.

Runs ``Client.stream`` against the minimal server (its own process) under ``cProfile`` and
prints the exclusive CPU time per task by area (the SDK's own modules one by one, aiohttp,
anyio, asyncio's loop, JSON, attrs/cattrs, the rest). Profiling inflates every figure by a
similar factor; compare areas with each other and with an earlier run, not with P1's µs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
from collections import defaultdict
from typing import Any

from ._harness import table
from .overhead import minimal_server, sdk_run

_AREAS = (
    ("nanobanana_async/", None),
    ("aiohttp/", "aiohttp"),
    ("multidict/", "aiohttp"),
    ("yarl/", "aiohttp"),
    ("anyio/", "anyio"),
    ("asyncio/", "asyncio loop"),
    ("selectors.py", "asyncio loop"),
    ("json/", "json"),
    ("cattrs/", "attrs/cattrs"),
    ("attr/", "attrs/cattrs"),
)


def area_of(filename: str) -> str:
    """The area a profiled function belongs to."""
    for marker, area in _AREAS:
        if marker in filename:
            if area is None:
                return "sdk " + filename.split("nanobanana_async/", 1)[1]
            return area
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    return "other"


async def _run(url: str, tasks: int, concurrency: int) -> None:
    await sdk_run(url, tasks, concurrency)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Profile one SDK run and print µs per task by area."""
    parser = argparse.ArgumentParser(prog="benchmarks profile")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks = 1000
    with minimal_server() as server:
        asyncio.run(_run(server.base_url, min(1000, args.tasks), args.concurrency))  # warm
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(_run(server.base_url, args.tasks, args.concurrency))
        profiler.disable()
    stats = pstats.Stats(profiler)
    by_area: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_area[area_of(filename)] += tottime
    total = sum(by_area.values())
    rows = [
        [area, 1e6 * seconds / args.tasks, f"{100 * seconds / total:.1f}%"]
        for area, seconds in sorted(by_area.items(), key=lambda kv: -kv[1])
        if seconds / total >= 0.005
    ]
    rows.append(["total", 1e6 * total / args.tasks, "100%"])
    print(f"CPU per task by area, {args.tasks} tasks at {args.concurrency} in flight (profiled)")
    print(table(rows, ["area", "µs/task (profiled)", "share"]))
    return {
        "tasks": args.tasks,
        "us_per_task": {k: 1e6 * v / args.tasks for k, v in by_area.items()},
    }


if __name__ == "__main__":
    main()
