"""P4 — rate limit: a batch larger than the account's limit R allows, against a 429-ing emulator.

The emulator (own process) enforces a token bucket of R requests/s (burst R/10) and answers 429
with Retry-After beyond it. The client sends creates and polls as fast as its adaptive pacer
allows. Reported: useful (non-429) requests/s ÷ R over the busy window, the share of responses
that were 429, and the time until the rolling useful rate first reached 0.9·R.

    python -m benchmarks ratelimit [--quick] [--rates 50 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections import Counter
from typing import Any

from nanobanana_async import Client, HttpEvent, PollPolicy

from ._harness import StandaloneEmulator, save, table

STEADY_AFTER = 3.0  # seconds: the first burst (before any 429 taught the pacer) is the settle phase


async def one_rate(rate: float, seconds: float) -> dict[str, float]:
    tasks = int(rate * seconds / 2.2)  # a create and about one poll per task
    args = [
        "--rate-limit",
        str(rate),
        "--rate-burst",
        str(max(1, int(rate / 10))),
        "--service-time",
        "fixed:0.2",
        "--workers",
        "100000",
    ]
    times: list[tuple[float, bool]] = []
    loop = asyncio.get_running_loop()

    def hook(event: HttpEvent) -> None:
        if event.status is not None:
            times.append((loop.time(), event.status == 429))

    policy = PollPolicy(initial_delay=0.3, max_interval=0.5, target_delay=None)
    with StandaloneEmulator(args) as emu:
        async with Client(emu.api_key, base_url=emu.base_url, poll=policy, hooks=[hook]) as client:
            start = loop.time()
            outcomes = [
                o
                async for o in client.stream((f"rl {i}" for i in range(tasks)), max_in_flight=2000)
            ]
            end = loop.time()
            learned = client.stats.send_rate
        stats = emu.stats()
    assert all(o.ok for o in outcomes), "every item must finish"
    useful = Counter(int(t - start) for t, limited in times if not limited)
    busy = [useful[s] for s in range(1, max(2, int(end - start) - 1))]
    settle = next((s for s in range(len(busy)) if busy[s] >= 0.9 * rate), None)
    limited = sum(1 for _, lim in times if lim)
    steady = [lim for t, lim in times if t - start >= STEADY_AFTER]
    return {
        "share_429_steady": sum(steady) / max(1, len(steady)),
        "rate_limit": rate,
        "tasks": tasks,
        "wall_s": end - start,
        "useful_per_s_median": statistics.median(busy),
        "utilisation": statistics.median(busy) / rate,
        "share_429": limited / len(times),
        "emulator_429": stats["rate_limited"],
        "settle_s": (settle + 1) if settle is not None else None,
        "learned_rate": learned,
        "duplicate_creates": stats["duplicate_creates"],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    return {"runs": [await one_rate(r, args.seconds) for r in args.rates]}


def report(data: dict[str, Any]) -> str:
    """The rate-limit table."""
    rows = [
        [
            r["rate_limit"],
            r["tasks"],
            r["utilisation"],
            f"{100 * r['share_429']:.2f}%",
            f"{100 * r['share_429_steady']:.2f}%",
            r["settle_s"],
            r["learned_rate"],
            r["duplicate_creates"],
        ]
        for r in data["runs"]
    ]
    header = [
        "R req/s",
        "tasks",
        "useful/R",
        "429 share",
        "429 share after 3 s",
        "settle s",
        "learned rate",
        "dup creates",
    ]
    return table(rows, header)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run P4 and print its table."""
    parser = argparse.ArgumentParser(prog="benchmarks ratelimit")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rates", type=float, nargs="+", default=[50.0, 200.0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.rates, args.seconds = [100.0], 6.0
    data = asyncio.run(main_async(args))
    print(f"P4 rate limit: emulator token bucket R, burst R/10, ~{args.seconds:g} s of work")
    print(report(data))
    save("ratelimit", data, quick=args.quick)
    return data


if __name__ == "__main__":
    main()
