"""P2 — polling efficiency: requests per task and detection delay, default policy vs fixed intervals.

Service time is lognormal(median 20 s, σ 0.5) run at ``--scale`` (0.1: a "20 s" task takes 2 s),
on a standalone emulator with enough workers that nothing queues. Each policy runs the same batch
after a warm-up batch (so the adaptive policy has learned the distribution), in the same emulator
process. Delay = the time the detecting poll was sent − the server's completion time (shared
monotonic clock). Figures are reported in service seconds (divided by the scale). The √hazard
optimum is computed from the true distribution by simulation (no network).

    python -m benchmarks polling [--quick] [--tasks 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import random
import statistics
from typing import Any

from nanobanana_async import Client, PollPolicy
from nanobanana_async._polling._model import CompletionModel

from ._harness import StandaloneEmulator, median_spread, percentile, save, table

MEDIAN, SIGMA = 20.0, 0.5


def fixed(interval: float) -> PollPolicy:
    """Poll every ``interval`` seconds from submit, forever."""
    return PollPolicy(
        initial_delay=interval,
        factor=1.0,
        max_interval=interval,
        min_interval=0,
        jitter=0.0,
        target_delay=None,
    )


def adaptive(scale: float, target_delay: float = 1.0) -> PollPolicy:
    """The default policy with its times scaled to the emulator's time scale."""
    base = PollPolicy(target_delay=target_delay)
    return PollPolicy(
        initial_delay=base.initial_delay * scale,
        max_interval=base.max_interval * scale,
        min_interval=base.min_interval * scale,
        target_delay=target_delay * scale,
    )


async def run_policy(
    emu: StandaloneEmulator, policy: PollPolicy, tasks: int, warmup: int, tag: str
) -> dict[str, float]:
    """One batch under ``policy``; returns polls/task and delay figures (emulator seconds)."""
    async with Client(emu.api_key, base_url=emu.base_url, poll=policy) as client:
        if warmup:
            async for _ in client.stream(
                (f"warm {tag} {i}" for i in range(warmup)), max_in_flight=warmup
            ):
                pass
        outcomes = [
            o
            async for o in client.stream(
                (f"measure {tag} {i}" for i in range(tasks)), max_in_flight=tasks
            )
        ]
    stats = emu.stats(tasks=True)
    delays, polls = [], 0
    for o in outcomes:
        assert o.ok and o.request_id is not None and o.finished_at is not None
        record = stats["tasks"][o.request_id]
        delays.append(o.finished_at - record["completed_at"])
        polls += stats["result_polls"].get(o.request_id, 0) + stats["status_polls"].get(
            o.request_id, 0
        )
    return {
        "polls_per_task": polls / len(outcomes),
        "mean_delay": statistics.fmean(delays),
        "p95_delay": percentile(delays, 0.95),
    }


def optimum_curve(targets: list[float], n: int = 20000) -> list[dict[str, float]]:
    """Polls/task and mean delay of the √hazard schedule for the true distribution (simulated)."""
    rng = random.Random(1)
    model = CompletionModel(min_samples=20, window=5000)
    for _ in range(5000):
        model.observe(rng.lognormvariate(math.log(MEDIAN), SIGMA))
    draws = [rng.lognormvariate(math.log(MEDIAN), SIGMA) for _ in range(n)]
    curve = []
    for target in targets:
        k = model.k_for_target_delay(target)
        polls_total, delay_total = 0, 0.0
        for t in draws:
            last, count = 0.0, 0
            while True:
                last = model.next_poll(last, k=k, min_interval=0.0, max_interval=1e9)
                count += 1
                if last >= t:
                    break
            polls_total += count
            delay_total += last - t
        curve.append(
            {"target": target, "polls_per_task": polls_total / n, "mean_delay": delay_total / n}
        )
    return curve


def polls_at_delay(curve: list[dict[str, float]], delay: float) -> float:
    """The optimum's polls/task at a given mean delay (log-log interpolation on the curve)."""
    pts = sorted((c["mean_delay"], c["polls_per_task"]) for c in curve)
    for (d0, p0), (d1, p1) in itertools.pairwise(pts):
        if d0 <= delay <= d1:
            w = (math.log(delay) - math.log(d0)) / (math.log(d1) - math.log(d0))
            return math.exp(math.log(p0) + w * (math.log(p1) - math.log(p0)))
    return math.nan


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    scale = args.scale
    policies: dict[str, PollPolicy] = {
        "default (target 1 s)": adaptive(scale, 1.0),
        "target 0.5 s": adaptive(scale, 0.5),
        "target 2 s": adaptive(scale, 2.0),
        "fixed 0.1 s": fixed(0.1 * scale),
        "fixed 0.5 s": fixed(0.5 * scale),
        "fixed 1 s": fixed(1.0 * scale),
        "fixed 3 s": fixed(3.0 * scale),
    }
    emulator_args = [
        "--service-time",
        f"lognormal:{MEDIAN},{SIGMA}",
        "--time-scale",
        str(scale),
        "--workers",
        "100000",
        "--seed",
        "3",
    ]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in policies}
    with StandaloneEmulator(emulator_args) as emu:
        for repeat in range(args.repeats):
            for name, policy in policies.items():
                warmup = args.warmup if name.startswith(("default", "target")) else 0
                runs[name].append(
                    await run_policy(emu, policy, args.tasks, warmup, f"{repeat}{name}")
                )
    curve = optimum_curve([0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0])
    summary = {}
    for name, results in runs.items():
        polls = median_spread([r["polls_per_task"] for r in results])
        delay = median_spread([r["mean_delay"] / scale for r in results])
        p95 = median_spread([r["p95_delay"] / scale for r in results])
        best = polls_at_delay(curve, delay["median"])
        summary[name] = {
            "polls_per_task": polls,
            "mean_delay_s": delay,
            "p95_delay_s": p95,
            "optimum_polls_at_same_delay": best,
            "ratio_to_optimum": polls["median"] / best if best == best else None,
        }
    return {
        "scale": scale,
        "tasks": args.tasks,
        "repeats": args.repeats,
        "policies": summary,
        "optimum": curve,
    }


def report(data: dict[str, Any]) -> str:
    """The polling table."""
    rows = []
    for name, s in data["policies"].items():
        rows.append(
            [
                name,
                s["polls_per_task"]["median"],
                f"{s['polls_per_task']['min']:.3g}–{s['polls_per_task']['max']:.3g}",
                s["mean_delay_s"]["median"],
                s["p95_delay_s"]["median"],
                s["optimum_polls_at_same_delay"],
                s["ratio_to_optimum"] if s["ratio_to_optimum"] is not None else "n/a",
            ]
        )
    header = [
        "policy",
        "polls/task",
        "spread",
        "mean delay s",
        "p95 delay s",
        "√hazard optimum polls",
        "ratio",
    ]
    return table(rows, header)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run P2 and print its table."""
    parser = argparse.ArgumentParser(prog="benchmarks polling")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.warmup, args.repeats, args.scale = 60, 40, 1, 0.05
    data = asyncio.run(main_async(args))
    print(
        f"P2 polling: lognormal(median {MEDIAN} s, σ {SIGMA}), {args.tasks} tasks × {args.repeats} runs"
    )
    print(report(data))
    save("polling", data)
    return data


if __name__ == "__main__":
    main()
