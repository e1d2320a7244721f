"""P1 — overhead: the SDK against plain aiohttp doing the same two requests per task.

A minimal server in its own process (``benchmarks/_minimal_server.py``, not the emulator, so the
server is not the bottleneck) finishes every task at create time: a task costs exactly a POST
create and one GET of its response URL. The baseline is a hand-written aiohttp loop doing just
that with as many workers as the SDK has tasks in flight (``--concurrency``, the same
concurrency); the SDK runs ``Client.stream`` with the instant poll policy. Runs are paired
(baseline then SDK, same server) and repeated; the table gives medians. Reported: the throughput
ratio SDK ÷ plain (target ≥ 0.85) and client CPU µs per task for both. Where the machine has
two cores or more, the server and the client are pinned to separate cores (``--no-pin`` lets
the OS place them), and the pairs alternate which side runs first. For context, each repeat
also times the plain loop with ``--workers`` workers (64: fewer connections cost less per request
on this server), and the last column is the default poll policy's throughput on the same instant
tasks (what the adaptive schedule leaves of the hot path).

A second part measures the poll of a running task, which is most of a task's requests at a web
backend's pace: the server answers 202 "in progress" ``--pending`` times per task before the
result; both sides poll again at once (no schedule, no sleeping), and the figure is client CPU
µs per request, plain and SDK, paired the same way.

    python -m benchmarks overhead [--quick] [--tasks 20000] [--concurrency 256] [--repeats 5]
                                  [--pending 8] [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp

from nanobanana_async import Client, Limits, PollPolicy

from ._harness import (
    StandaloneEmulator,
    cpu_seconds,
    median_spread,
    pinned,
    save,
    split_cores,
    table,
)

INSTANT = PollPolicy(
    initial_delay=0.0, factor=1.0, max_interval=0.01, jitter=0.0, target_delay=None
)
MODEL = "nano_banana_pro"


def minimal_server(cpus: set[int] | None = None, pending: int = 0) -> StandaloneEmulator:
    """The minimal server in its own process (on ``cpus`` if given; ``pending`` 202s a task)."""
    args = ["--pending", str(pending)] if pending else []
    return StandaloneEmulator(args, module="benchmarks._minimal_server", cpus=cpus)


async def plain_loop(base_url: str, tasks: int, workers: int) -> dict[str, float]:
    """Hand-written aiohttp: POST create, then GET the response URL until done, per task."""
    headers = {"Authorization": "Bearer minimal"}
    connector = aiohttp.TCPConnector(limit=workers)
    create_url = f"{base_url}/v1/queue/{MODEL}"
    remaining = tasks
    done = requests = 0
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal remaining, done, requests
            while remaining > 0:
                remaining -= 1
                async with session.post(create_url, json={"prompt": "plain"}) as r:
                    rid = (await r.json())["request_id"]
                while True:
                    requests += 1
                    async with session.get(f"{create_url}/requests/{rid}/response") as r:
                        body = await r.json()
                    if r.status == 200:
                        break
                done += bool(body["outputs"])

        wall, cpu = time.monotonic(), cpu_seconds()
        await asyncio.gather(*(worker() for _ in range(workers)))
        wall, cpu = time.monotonic() - wall, cpu_seconds() - cpu
    assert done == tasks
    return {
        "tasks_per_s": tasks / wall,
        "cpu_us_per_task": 1e6 * cpu / tasks,
        "cpu_us_per_request": 1e6 * cpu / (tasks + requests),
    }


async def sdk_run(
    base_url: str, tasks: int, concurrency: int, poll: PollPolicy = INSTANT
) -> dict[str, float]:
    """``tasks`` tasks through ``Client.stream`` at ``max_in_flight=concurrency``."""
    limits = Limits(
        max_connections=concurrency,
        max_concurrent_polls=concurrency,
        max_concurrent_creates=concurrency,
    )
    async with Client("minimal", base_url=base_url, poll=poll, limits=limits) as client:
        wall, cpu = time.monotonic(), cpu_seconds()
        done = 0
        async for outcome in client.stream(
            (f"task {i}" for i in range(tasks)), max_in_flight=concurrency
        ):
            done += outcome.ok
        wall, cpu = time.monotonic() - wall, cpu_seconds() - cpu
        sent = client.stats.requests_sent
    assert done == tasks, f"only {done} of {tasks} succeeded"
    return {
        "tasks_per_s": tasks / wall,
        "cpu_us_per_task": 1e6 * cpu / tasks,
        "cpu_us_per_request": 1e6 * cpu / sent,
        "requests_per_task": sent / tasks,
    }


async def paired(
    repeat: int, url: str, tasks: int, concurrency: int
) -> tuple[dict[str, float], dict[str, float]]:
    """One plain run and one SDK run, in an order that alternates with ``repeat``: a drift of
    the machine's speed within a pair does not always favour the same side."""
    if repeat % 2 == 0:
        plain = await plain_loop(url, tasks, concurrency)
        return plain, await sdk_run(url, tasks, concurrency)
    sdk = await sdk_run(url, tasks, concurrency)
    return await plain_loop(url, tasks, concurrency), sdk


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    # Server and client on separate cores (the same split for the SDK and the plain loop): the
    # OS no longer puts them on one core now and then (unpinned: ratios 0.64-0.98 in one run).
    cores = split_cores() if args.pin else None
    with minimal_server(cores[0] if cores else None) as server, pinned(cores[1] if cores else None):
        url = server.base_url
        await plain_loop(url, min(2000, args.tasks), args.concurrency)  # warm both paths
        await sdk_run(url, min(2000, args.tasks), args.concurrency)
        for repeat in range(args.repeats):
            plain, sdk = await paired(repeat, url, args.tasks, args.concurrency)
            few = await plain_loop(url, args.tasks, args.workers)
            runs.append(
                {
                    "sdk_tasks_per_s": sdk["tasks_per_s"],
                    "sdk_cpu_us_per_task": sdk["cpu_us_per_task"],
                    "requests_per_task": sdk["requests_per_task"],
                    "plain_tasks_per_s": plain["tasks_per_s"],
                    "plain_cpu_us_per_task": plain["cpu_us_per_task"],
                    "ratio": sdk["tasks_per_s"] / plain["tasks_per_s"],
                    "few_workers_tasks_per_s": few["tasks_per_s"],
                    "few_workers_cpu_us_per_task": few["cpu_us_per_task"],
                    "ratio_to_few_workers": sdk["tasks_per_s"] / few["tasks_per_s"],
                }
            )
        default = await sdk_run(url, min(args.tasks, 5000), 1000, PollPolicy())
    pending = await pending_polls(args, cores) if args.pending else None
    return {
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "pinned": {"server": sorted(cores[0]), "client": sorted(cores[1])} if cores else None,
        "runs": runs,
        "ratio": median_spread([r["ratio"] for r in runs]),
        "sdk_tasks_per_s": median_spread([r["sdk_tasks_per_s"] for r in runs]),
        "plain_tasks_per_s": median_spread([r["plain_tasks_per_s"] for r in runs]),
        "sdk_cpu_us_per_task": median_spread([r["sdk_cpu_us_per_task"] for r in runs]),
        "plain_cpu_us_per_task": median_spread([r["plain_cpu_us_per_task"] for r in runs]),
        "few_workers_tasks_per_s": median_spread([r["few_workers_tasks_per_s"] for r in runs]),
        "few_workers_cpu_us_per_task": median_spread(
            [r["few_workers_cpu_us_per_task"] for r in runs]
        ),
        "ratio_to_few_workers": median_spread([r["ratio_to_few_workers"] for r in runs]),
        "default_policy_tasks_per_s": default["tasks_per_s"],
        "pending": pending,
    }


async def pending_polls(
    args: argparse.Namespace, cores: tuple[set[int], set[int]] | None
) -> dict[str, Any]:
    """The second part: tasks that answer ``args.pending`` polls with 202 first, paired runs
    (server and client on the first part's cores)."""
    tasks = max(1, args.tasks // (args.pending + 2))  # about as many requests as the first part
    runs = []
    server = minimal_server(cores[0] if cores else None, args.pending)
    with server, pinned(cores[1] if cores else None):
        url = server.base_url
        await plain_loop(url, min(200, tasks), args.concurrency)  # warm both paths
        await sdk_run(url, min(200, tasks), args.concurrency)
        for repeat in range(args.repeats):
            plain, sdk = await paired(repeat, url, tasks, args.concurrency)
            runs.append(
                {
                    "plain_cpu_us_per_request": plain["cpu_us_per_request"],
                    "sdk_cpu_us_per_request": sdk["cpu_us_per_request"],
                    "sdk_requests_per_task": sdk["requests_per_task"],
                    "ratio": sdk["cpu_us_per_request"] / plain["cpu_us_per_request"],
                }
            )
    return {
        "polls_pending": args.pending,
        "tasks": tasks,
        "runs": runs,
        "plain_cpu_us_per_request": median_spread([r["plain_cpu_us_per_request"] for r in runs]),
        "sdk_cpu_us_per_request": median_spread([r["sdk_cpu_us_per_request"] for r in runs]),
        "ratio": median_spread([r["ratio"] for r in runs]),
    }


def report(data: dict[str, Any]) -> str:
    """The overhead table."""
    ratio = data["ratio"]
    rows = [
        [
            data["tasks"],
            data["concurrency"],
            data["plain_tasks_per_s"]["median"],
            data["sdk_tasks_per_s"]["median"],
            f"{ratio['median']:.2f} ({ratio['min']:.2f}–{ratio['max']:.2f})",
            data["plain_cpu_us_per_task"]["median"],
            data["sdk_cpu_us_per_task"]["median"],
            data["default_policy_tasks_per_s"],
        ]
    ]
    header = [
        "tasks",
        "in flight (both)",
        "plain tasks/s",
        "SDK tasks/s",
        "SDK ÷ plain",
        "plain CPU µs/task",
        "SDK CPU µs/task",
        "default policy tasks/s (1,000 in flight)",
    ]
    out = table(rows, header)
    few = data.get("ratio_to_few_workers")
    if few is not None:
        out += (
            f"\n\nFor context: plain aiohttp with {data['workers']} workers (fewer connections)"
            f" did {data['few_workers_tasks_per_s']['median']:.0f} tasks/s at"
            f" {data['few_workers_cpu_us_per_task']['median']:.0f} µs/task; the SDK at"
            f" {data['concurrency']} in flight makes {few['median']:.2f}"
            f" ({few['min']:.2f}–{few['max']:.2f}) of that."
        )
    pending = data.get("pending")
    if pending:
        ratio = pending["ratio"]
        out += (
            f"\n\nPolls of running tasks (the server answers 202 {pending['polls_pending']} times"
            f" per task, {pending['tasks']} tasks, both polling again at once): client CPU"
            f" {pending['plain_cpu_us_per_request']['median']:.0f} µs per request for plain"
            f" aiohttp, {pending['sdk_cpu_us_per_request']['median']:.0f} µs for the SDK:"
            f" **{ratio['median']:.2f}×** ({ratio['min']:.2f}–{ratio['max']:.2f}) of plain."
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run P1 and print its table."""
    parser = argparse.ArgumentParser(prog="benchmarks overhead")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--pending", type=int, default=8, help="202s per task in the second part (0: skip it)"
    )
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="let the OS place server and client"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.repeats = 2000, 1
    data = asyncio.run(main_async(args))
    print(
        f"P1 overhead: minimal instant server, {args.tasks} tasks; SDK and plain aiohttp"
        f" create+GET both at {args.concurrency} in flight (and plain with {args.workers}"
        f" workers); median of {args.repeats}"
    )
    print(report(data))
    save("overhead", data, quick=args.quick)
    return data


if __name__ == "__main__":
    main()
