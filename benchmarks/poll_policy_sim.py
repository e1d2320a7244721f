"""Simulate poll policies: polls per task vs detection delay (stdlib only).

Run: python benchmarks/poll_policy_sim.py [--tasks N] [--seed S]

For each completion-time distribution, compares fixed intervals, exponential backoff and the
learned sqrt-hazard schedule of ``nanobanana_async._polling._model.CompletionModel`` (trained online
on the first 50 tasks, then frozen) at several target delays.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanobanana_async._polling._model import CompletionModel

HORIZON = 3600.0
TRAIN = 50


def lognormal(median: float, sigma: float) -> Callable[[random.Random], float]:
    return lambda rng: rng.lognormvariate(math.log(median), sigma)


def mixture(rng: random.Random) -> float:
    # 70% 1K images (~15 s), 30% 4K images (~45 s): a bimodal load a single lognormal fits poorly.
    if rng.random() < 0.7:
        return rng.lognormvariate(math.log(15.0), 0.3)
    return rng.lognormvariate(math.log(45.0), 0.3)


def evaluate(schedule: list[float], durations: list[float]) -> tuple[float, float, float]:
    polls, delays = 0, []
    for d in durations:
        i = min(bisect.bisect_left(schedule, d), len(schedule) - 1)
        polls += i + 1
        delays.append(max(0.0, schedule[i] - d))
    delays.sort()
    return polls / len(durations), sum(delays) / len(delays), delays[int(0.95 * len(delays))]


def evaluate_fixed(interval: float, durations: list[float]) -> tuple[float, float, float]:
    counts = [max(1, math.ceil(d / interval)) for d in durations]
    delays = sorted(n * interval - d for n, d in zip(counts, durations, strict=True))
    return sum(counts) / len(counts), sum(delays) / len(delays), delays[int(0.95 * len(delays))]


def expo(first: float, factor: float, cap: float) -> list[float]:
    t, gap, out = 0.0, first, []
    while t < HORIZON:
        t += gap
        out.append(t)
        gap = min(gap * factor, cap)
    return out


def learned(model: CompletionModel, k: float) -> list[float]:
    t, out = 0.0, []
    while t < HORIZON:
        t = model.next_poll(t, k=k, min_interval=0.1, max_interval=30.0)
        out.append(t)
    return out


def run(name: str, draw: Callable[[random.Random], float], tasks: int, seed: int) -> None:
    rng = random.Random(seed)
    model = CompletionModel()
    for _ in range(TRAIN):
        model.observe(draw(rng))
    durations = [draw(rng) for _ in range(tasks)]
    mean_t = sum(durations) / len(durations)
    print(
        f"\n{name}: mean T {mean_t:.1f} s; fit median {model.median:.1f} s sigma {model.sigma:.2f}"
    )
    print(f"{'strategy':38s} {'polls/task':>10s} {'mean delay':>10s} {'p95 delay':>10s}")
    rows: list[tuple[str, tuple[float, float, float]]] = []
    for d in (0.1, 0.5, 1.0, 3.0):
        rows.append((f"fixed {d:g} s", evaluate_fixed(d, durations)))
    rows.append(("expo 0.5 s x1.5 cap 10 s", evaluate(expo(0.5, 1.5, 10.0), durations)))
    for target in (0.25, 0.5, 1.0, 1.5, 2.0):
        k = model.k_for_target_delay(target)
        label = f"sqrt-hazard target {target:g} s (K={k:.2f})"
        rows.append((label, evaluate(learned(model, k), durations)))
    for label, (polls, mean_delay, p95) in rows:
        print(f"{label:38s} {polls:10.1f} {mean_delay:9.2f}s {p95:9.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    run("lognormal(median 20 s, sigma 0.5)", lognormal(20.0, 0.5), args.tasks, args.seed)
    run("mixture 70% 1K ~15 s / 30% 4K ~45 s (sigma 0.3 each)", mixture, args.tasks, args.seed)


if __name__ == "__main__":
    main()
