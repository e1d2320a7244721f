"""Where the client's time per task goes: ``python -m benchmarks profile [--tasks N] [--offline]``.

Runs ``Client.stream`` against the minimal server (its own process) under ``cProfile`` and
prints the exclusive CPU time per task by area (the SDK's own modules one by one, aiohttp,
anyio, asyncio's loop, JSON, attrs/cattrs, the rest). Profiling inflates every figure by a
similar factor; compare areas with each other and with an earlier run, not with P1's µs.

``--offline`` first measures the SDK's own work without sockets, unprofiled: aiohttp's request
is replaced by canned answers (a ticket, then a finished result), so the CPU µs per task it
prints is what the SDK adds on top of the two HTTP exchanges (P1's gap, without the noise of a
server). Then the profile runs offline too. ``--pending N`` makes every task answer its first
N polls with 202 "in progress" (offline and against the minimal server): the cost of polling a
running task, which is most of a task's requests at a web backend's pace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import itertools
import json
import pstats
import statistics
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, cast

from nanobanana_async._http._transport import Transport

from ._harness import table
from ._minimal_server import still_pending
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


class _Canned:
    """An answered aiohttp response: what the transport reads of one."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.status = status
        self.headers = {"Content-Type": "application/json"}
        self.content_length = len(body)
        self._body = body

    async def read(self) -> bytes:
        return self._body

    async def __aenter__(self) -> _Canned:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


_RESULT = json.dumps(
    {
        "request_id": "offline",
        "outputs": [{"type": "image", "url": "https://cdn.example/x.png"}],
        "metadata": {},
    }
).encode()


@contextlib.contextmanager
def offline(pending: int = 0) -> Iterator[None]:
    """Clients opened inside answer every create and poll from memory (no sockets); each
    task's first ``pending`` polls answer 202 "in progress"."""
    ids = itertools.count()
    polls: dict[str, int] = {}

    def answer(method: str, url: str, **_: Any) -> _Canned:
        if method == "POST":
            return _Canned(b'{"request_id":"r%d"}' % next(ids))
        if pending and still_pending(polls, url, pending):
            return _Canned(_PENDING, status=202)
        return _Canned(_RESULT)

    original = Transport.open

    async def open_offline(self: Transport) -> None:
        await original(self)
        self._http = cast(Any, answer)  # answers as much of an aiohttp response as is read

    Transport.open = open_offline  # type: ignore[method-assign]
    try:
        yield
    finally:
        Transport.open = original  # type: ignore[method-assign]


def offline_cpu(
    tasks: int, concurrency: int, repeats: int = 3, pending: int = 0
) -> dict[str, float]:
    """Median CPU µs per task and per request of ``Client.stream`` with canned answers
    (``pending`` 202s per task first): the SDK's own work."""

    async def measure() -> list[dict[str, float]]:
        await sdk_run(OFFLINE_URL, min(2000, tasks), concurrency)  # warm
        return [await sdk_run(OFFLINE_URL, tasks, concurrency) for _ in range(repeats)]

    with offline(pending):
        runs = asyncio.run(measure())
    return {
        key: statistics.median(run[key] for run in runs)
        for key in ("cpu_us_per_task", "cpu_us_per_request")
    }


OFFLINE_URL = "http://127.0.0.1:9/model"  # never connected to
_PENDING = b'{"status":"IN_PROGRESS","request_id":"offline"}'


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Profile one SDK run and print µs per task by area."""
    parser = argparse.ArgumentParser(prog="benchmarks profile")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--offline", action="store_true", help="no sockets: the SDK's own work")
    parser.add_argument("--pending", type=int, default=0, help="202s per task before the result")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks = 1000
    if args.pending:
        args.tasks = max(1, args.tasks // (args.pending + 1))  # about as many requests
    if args.offline:
        cpu = offline_cpu(args.tasks, args.concurrency, pending=args.pending)
        print(
            "SDK work without sockets (unprofiled, median of 3): "
            f"{cpu['cpu_us_per_task']:.0f} µs per task, {cpu['cpu_us_per_request']:.1f} µs per "
            f"request ({args.pending} pending polls per task)"
        )
        with offline(args.pending):
            asyncio.run(_run(OFFLINE_URL, min(1000, args.tasks), args.concurrency))  # warm
            profiler = cProfile.Profile()
            profiler.enable()
            asyncio.run(_run(OFFLINE_URL, args.tasks, args.concurrency))
            profiler.disable()
    else:
        with minimal_server(pending=args.pending) as server:
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
