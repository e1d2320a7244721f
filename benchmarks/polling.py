"""P2 — polling efficiency: requests per task and detection delay, default policy vs fixed intervals.

Service time is lognormal(median 20 s, σ 0.5) run at ``--scale`` (0.1: a "20 s" task takes 2 s),
on a standalone emulator with enough workers that nothing queues. Each policy runs the same batch
after a warm-up batch (so the adaptive policy has learned the distribution), in the same emulator
process. Delay = the time the detecting poll was sent − the server's completion time (shared
monotonic clock). Figures are reported in service seconds (divided by the scale). The √hazard
optimum is computed from the true distribution by simulation (no network).

Learning the schedule (P6, ``--part learning``): the scheduler's own decisions in a
discrete-event simulation (``benchmarks/poll_policy_sim.py``: no network, deterministic), before
(midpoint rule, from git history) and after (censored fit), plus two end-to-end checks against
the emulator: instant tasks (1,000 in flight) and a 3x service-time step.

    python -m benchmarks polling [--quick] [--part all|p2|learning] [--tasks 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import itertools
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

from nanobanana_async import Client, GenerationRequest, PollPolicy
from nanobanana_async._polling._model import CompletionModel

from . import poll_policy_sim as sim
from ._harness import (
    RESULTS,
    StandaloneEmulator,
    cpu_seconds,
    lognormal_emulator_args,
    median_spread,
    percentile,
    save,
    table,
)

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
    emulator_args = lognormal_emulator_args(MEDIAN, SIGMA, scale, seed=3)
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
    """Run P2 and/or P6 (learning the schedule) and print their tables."""
    parser = argparse.ArgumentParser(prog="benchmarks polling")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", choices=("all", "p2", "learning"), default="all")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.warmup, args.repeats, args.scale = 60, 40, 1, 0.05
    data: dict[str, Any] = {}
    if args.part in ("all", "p2"):
        data = asyncio.run(main_async(args))
        print(
            f"P2 polling: lognormal(median {MEDIAN} s, σ {SIGMA}), "
            f"{args.tasks} tasks × {args.repeats} runs"
        )
        print(report(data))
        save("polling", data, quick=args.quick)
    if args.part in ("all", "learning"):
        learned = learning(quick=args.quick)
        print()
        print(report_learning(learned))
        save("polling_learn", learned, quick=args.quick)
        if not args.quick:
            plot_learning(learned)
    return data


# ---- P6: learning the schedule --------------------------------------------------------------

LEARNERS = ("censored", "midpoint")
IMG = RESULTS.parent.parent / "docs" / "img"


def _steady(run: sim.Run) -> list[sim.Record]:
    """The tasks after the first fifth (the backoff and the first fits are a warm-up)."""
    return run.records[len(run.records) // 5 :]


def _versus_fixed(records: list[sim.Record]) -> dict[str, float]:
    polls, delay = sim.summary(records)
    interval, fixed = sim.fixed_at_polls([r.duration for r in records], polls)
    return {
        "polls_per_task": polls,
        "mean_delay_s": delay,
        "fixed_interval_s": interval,
        "fixed_delay_s": fixed,
        "delay_vs_fixed": delay / fixed if fixed > 0 else math.nan,
    }


def _median_of(
    rows: list[dict[str, float]], runs: tuple[str, ...] = ("delay_vs_fixed",)
) -> dict[str, Any]:
    """Per key: the median over seeds, with the per-seed figures of the comparisons ``runs``."""
    out: dict[str, Any] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    for key in runs:
        out[f"{key}_runs"] = [r[key] for r in rows]
    return out


def _learners() -> tuple[str, ...]:
    return LEARNERS if sim.legacy_available() else ("censored",)


SHORT = (0.3, 0.5)  # (a)'s workload: lognormal(median 0.3 s, σ 0.5)
SHORT_RUNS = ("delay_vs_fixed", "delay_vs_fixed_in_sample")


def _versus_true_fixed(
    records: list[sim.Record],
    spent: tuple[float, float],
    median: float,
    sigma: float,
    each: float = math.nan,
) -> dict[str, float]:
    """(a)'s comparison: the measured mean delay ÷ the best fixed interval's for the true
    distribution, at the polls per task the schedules used spend in expectation (``spent``:
    their expected polls and delay, under the true distribution); and, kept for the record, ÷
    the fixed interval picked in hindsight on these very durations at the measured polls.

    Why the true distribution, not an interval picked on an independent draw: the first is
    fitted to no sample at all (no order-statistic advantage, no selection noise) and is the
    best any fixed interval can do in expectation, so it is the strictest unbiased comparator.
    An interval picked on another draw of the same size carries that draw's count of tasks
    outlasting the first poll (about 21 ± 5 of 16,000 here), which at one poll per task moves
    the interval, and with it the delay, by ±4% per seed; evaluated on these tasks it no longer
    spends equal polls; and a noisy interval is on average worse than the true best (the
    trade-off is convex), so it would flatter the policy. For the same reason equal polls
    means the schedules' expected polls, not the measured count: the measured count carries
    that same chance tail count, which the fixed interval's delay would amplify ~150-fold
    (a ±4% swing per seed, and a Jensen bias); given the schedules used, the measured mean
    delay is an unbiased estimate of theirs.
    """
    polls, delay = sim.summary(records)
    interval, fixed = sim.fixed_lognormal_interval_at_polls(median, sigma, spent[0])
    hindsight = _versus_fixed(records)
    return {
        "polls_per_task": polls,
        "expected_polls_per_task": spent[0],
        "mean_delay_s": delay,
        "fixed_interval_s": interval,
        "fixed_delay_s": fixed,
        "delay_vs_fixed": delay / fixed,
        # Noise-free: the schedules' expected delay ÷ the same best fixed interval's; and
        # (``each``) the mean over tasks of each one's schedule against the best fixed interval
        # at its own expected polls. Their gap is the first poll moving with the fit from task
        # to task: the fixed interval's delay is convex in its polls, so a mix of schedules
        # each at par lies above the curve at their mean polls.
        "expected_delay_vs_fixed": spent[1] / fixed,
        "each_schedule_vs_fixed": each,
        "fixed_interval_in_sample_s": hindsight["fixed_interval_s"],
        "fixed_delay_in_sample_s": hindsight["fixed_delay_s"],
        "delay_vs_fixed_in_sample": hindsight["delay_vs_fixed"],
    }


def _short_run(
    tasks: int, in_flight: int, seed: int, learner: str
) -> tuple[list[sim.Record], tuple[float, float], float]:
    """One (a) run: its steady tasks; the mean over them of the expected (polls, delay), under
    the true distribution, of the schedule each task was given; and the mean over them of that
    schedule's expected delay ÷ the best fixed interval's at its own expected polls.

    A task's first poll is set when it is submitted, which (closed loop) is right after the
    completion before it has been learned: ``on_done`` reads the schedule then, so the k-th
    call's schedule is task ``in_flight + k``'s. (Later polls, for the ~0.15% of tasks still
    running at the first, follow the model as it is then: a negligible difference.)
    """
    spent: list[tuple[float, float]] = []

    def on_done(record: sim.Record, sched: Any) -> None:
        ready = sched.model.ready
        spent.append(sim.schedule_under(sched, *SHORT) if ready else (math.nan, math.nan))

    steady = _steady(
        sim.simulate(
            PollPolicy(),
            sim.lognormal(*SHORT),
            tasks=tasks,
            in_flight=in_flight,
            seed=seed,
            learner=learner,
            on_done=on_done,
        )
    )
    per_task = []
    for r in steady:
        schedule = spent[r.index - in_flight] if r.index >= in_flight else (math.nan, math.nan)
        # A task submitted before the model was ready (on the backoff: in short --quick runs
        # only) counts with its measured polls and delay.
        per_task.append(schedule if math.isfinite(schedule[0]) else (float(r.polls), r.delay))
    mean = (statistics.fmean(p for p, _ in per_task), statistics.fmean(d for _, d in per_task))
    fixed_at = functools.lru_cache(maxsize=None)(
        lambda polls: sim.fixed_lognormal_at_polls(*SHORT, polls)
    )
    each = statistics.fmean(d / fixed_at(p) for p, d in per_task)
    return steady, mean, each


def short_tasks(tasks: int, seeds: int) -> dict[str, Any]:
    """(a) Tasks much shorter than the target delay: lognormal(0.3 s, 0.5), default policy.

    The verdict's figure, ``delay_vs_fixed``: the measured mean delay ÷ the best fixed interval
    for the true distribution at equal polls (see ``_versus_true_fixed``). Kept beside it,
    labelled, ``delay_vs_fixed_in_sample``: ÷ the fixed interval picked in hindsight on the same
    durations, which sits just above the order statistic its poll count allows, about
    1 / (n f(t1)) s (≈ 0.9% of the delay here) earlier than any first poll t1 set before the
    durations are seen. With each seed's censored run, a reference on the same tasks: the
    schedule fitted to the true distribution (no learning), under both comparisons.
    """
    out: dict[str, Any] = {}
    ref_sched = _trained(PollPolicy(), *SHORT)
    reference = _schedule_times(ref_sched)
    ref_spent = sim.schedule_under(ref_sched, *SHORT)
    ref_each = ref_spent[1] / sim.fixed_lognormal_at_polls(*SHORT, ref_spent[0])
    for in_flight in (64, 1000):
        refs = []
        for learner in _learners():
            rows = []
            for seed in range(1, seeds + 1):
                steady, spent, each = _short_run(tasks, in_flight, seed, learner)
                rows.append(_versus_true_fixed(steady, spent, *SHORT, each))
                if learner == "censored":
                    replayed = _replay(reference, steady)
                    refs.append(_versus_true_fixed(replayed, ref_spent, *SHORT, ref_each))
            out[f"{learner}, {in_flight} in flight"] = _median_of(rows, SHORT_RUNS)
        out[f"true fit (reference), {in_flight} in flight"] = _median_of(refs, SHORT_RUNS)
    return out


def _schedule_times(sched: Any) -> list[float]:
    """The poll times (from submit) of a trained scheduler's schedule, until 1e-6 is left."""
    policy, model = sched.policy, sched.model
    k = model.k_for_target_delay(
        policy.target_delay, min_interval=policy.min_interval, max_interval=policy.max_interval
    )
    times = [0.0]
    while len(times) < 10_000 and model.cdf(times[-1]) < 1.0 - 1e-6:
        times.append(
            model.next_poll(
                times[-1], k=k, min_interval=policy.min_interval, max_interval=policy.max_interval
            )
        )
    return times[1:]


def _replay(times: list[float], records: list[sim.Record]) -> list[sim.Record]:
    """The same tasks polled at ``times`` (from submit)."""
    out = []
    for r in records:
        i = min(bisect.bisect_left(times, r.duration), len(times) - 1)
        while times[i] < r.duration:  # past the listed times: the last gap, repeated
            times.append(2 * times[-1] - times[-2])
            i += 1
        out.append(
            sim.Record(r.index, 0.0, r.duration, r.size_class, polls=i + 1, detected=times[i])
        )
    return out


TIGHT = (
    ("lognormal(20 s, 0.5), target 0.25 s", (20.0, 0.5), {"target_delay": 0.25}),
    (
        "lognormal(0.3 s, 0.5), target 0.1 s",
        (0.3, 0.5),
        {"target_delay": 0.1, "min_interval": 0.05},
    ),
)


def tight_target(tasks: int, seeds: int) -> dict[str, Any]:
    """(b) A tight target: at equal polls, against the best fixed interval in hindsight."""
    out: dict[str, Any] = {}
    for name, (median, sigma), options in TIGHT:
        for learner in _learners():
            rows = [
                _versus_fixed(
                    _steady(
                        sim.simulate(
                            PollPolicy(**options),  # type: ignore[arg-type]
                            sim.lognormal(median, sigma),
                            tasks=tasks,
                            in_flight=64,
                            seed=seed,
                            learner=learner,
                        )
                    )
                )
                for seed in range(1, seeds + 1)
            ]
            out[f"{name}, {learner}"] = _median_of(rows)
    return out


def drift(tasks: int, seeds: int, horizon: int) -> dict[str, Any]:
    """(c) Every task from the middle on 3x slower (64 in flight): how fast the schedule recovers.

    The schedule's efficiency (the best fixed interval's mean delay at the same polls per task
    over the schedule's mean delay) is computed exactly for the true distribution from the
    scheduler's state after each completion of a slow task (no sampling noise), averaged over
    seeds; before the shift over the 50 completions before the first slow task is submitted.
    """
    in_flight, half = 64, tasks // 2
    before, after = (20.0, 0.5), (60.0, 0.5)
    curves: dict[str, Any] = {}
    for learner in _learners():
        pre: list[float] = []
        per_m: dict[int, list[float]] = {}
        for seed in range(seeds):
            state = {"done": 0, "slow": 0}

            def on_done(
                record: sim.Record,
                sched: Any,
                state: dict[str, int] = state,
                pre: list[float] = pre,
                per_m: dict[int, list[float]] = per_m,
            ) -> None:
                state["done"] += 1
                first_slow = half - in_flight + 1  # the completion that submits task `half`
                if first_slow - 50 <= state["done"] < first_slow:
                    polls, delay = sim.schedule_under(sched, *before)
                    pre.append(sim.efficiency(polls, delay, *before))
                if record.index >= half:
                    state["slow"] += 1
                    if state["slow"] <= horizon:
                        polls, delay = sim.schedule_under(sched, *after)
                        per_m.setdefault(state["slow"], []).append(
                            sim.efficiency(polls, delay, *after)
                        )

            sim.simulate(
                PollPolicy(),
                sim.step_change(sim.lognormal(*before), at_task=half, factor=3.0),
                tasks=tasks,
                in_flight=in_flight,
                seed=seed,
                learner=learner,
                on_done=on_done,
            )
        e_pre = statistics.fmean(pre)
        curve = [statistics.fmean(per_m[m]) / e_pre for m in sorted(per_m)]
        recovered = next(
            (m + 1 for m in range(len(curve)) if all(c >= 0.9 for c in curve[m:])), None
        )
        curves[learner] = {
            "pre_efficiency": e_pre,
            "ratio_to_pre": curve,
            "recovered_at": recovered,
        }
    # The ceiling: the schedule fitted to the true distribution, before and after. After the
    # shift it is lower than before (median 60 s: Keller's first gaps exceed max_interval 10 s).
    ceiling = {
        "before": _true_efficiency(*before),
        "after": _true_efficiency(*after),
    }
    return {
        "tasks": tasks,
        "seeds": seeds,
        "in_flight": in_flight,
        "curves": curves,
        "true_fit_efficiency": ceiling,
    }


def _trained(policy: PollPolicy, median: float, sigma: float) -> Any:
    """A scheduler whose model has learned lognormal(median, sigma) from 1,000 exact quantiles
    (in a shuffled order: the model's window is its last 1,000 tasks)."""
    sched = sim.scheduler(policy)
    normal = statistics.NormalDist()
    quantiles = [median * math.exp(sigma * normal.inv_cdf((i + 0.5) / 1000)) for i in range(1000)]
    random.Random(0).shuffle(quantiles)
    for d in quantiles:
        sched.model.observe(d)
    return sched


def _true_efficiency(median: float, sigma: float) -> float:
    polls, delay = sim.schedule_under(_trained(PollPolicy(), median, sigma), median, sigma)
    return sim.efficiency(polls, delay, median, sigma)


MIX = ((0.7, "1K", 15.0, 0.3), (0.3, "4K", 45.0, 0.3))


def size_classes(tasks: int, seeds: int) -> dict[str, Any]:
    """(d) 70% 1K (~15 s) and 30% 4K (~45 s): per-size models against one pooled model.

    Per size at targets 0.5, 1 and 2 s, pooled also at 4 s; at equal polls, the pooled delay is
    read off its own curve (log-log interpolation) at the per-size polls.
    """
    curves: dict[str, list[dict[str, float]]] = {"per size": [], "pooled": []}
    for target in (0.5, 1.0, 2.0, 4.0):
        for name, classes in (("per size", True), ("pooled", False)):
            if classes and target > 2.0:
                continue  # the pooled curve goes further, to cover the per-size polls
            rows = []
            for seed in range(1, seeds + 1):
                run = sim.simulate(
                    PollPolicy(target_delay=target),
                    sim.mixture(MIX),
                    tasks=tasks,
                    in_flight=64,
                    seed=seed,
                    classes=classes,
                )
                rows.append(_versus_fixed(_steady(run)))
            row = _median_of(rows)
            row["target"] = target
            curves[name].append(row)
    pooled = sorted((r["polls_per_task"], r["mean_delay_s"]) for r in curves["pooled"])
    comparison = []
    for r in curves["per size"]:
        at = _interpolate(pooled, r["polls_per_task"])
        comparison.append(
            {
                "target": r["target"],
                "polls_per_task": r["polls_per_task"],
                "per_size_delay_s": r["mean_delay_s"],
                "pooled_delay_at_equal_polls_s": at,
                "ratio": r["mean_delay_s"] / at if at == at else math.nan,
            }
        )
    return {"curves": curves, "at_equal_polls": comparison}


def _interpolate(points: list[tuple[float, float]], x: float) -> float:
    """y at x on a log-log polyline through (x, y) points sorted by x (nan outside)."""
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= x <= x1:
            w = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp(math.log(y0) + w * (math.log(y1) - math.log(y0)))
    return math.nan


def instant_sim(tasks: int) -> dict[str, Any]:
    """(e) in the simulation: 1,000 instant tasks in flight; when is each first polled?"""
    out = {}
    for learner in _learners():
        run = sim.simulate(
            PollPolicy(), sim.instant(), tasks=tasks, in_flight=1000, learner=learner
        )
        steady = run.records[2000:]  # after the first two waves (the first is the backoff's)
        out[learner] = {
            "first_poll_s": statistics.fmean(r.detected - r.submitted for r in steady),
            "polls_per_task": sim.summary(steady)[0],
        }
    return out


async def instant_e2e(tasks: int, in_flight: int) -> dict[str, Any]:
    """(e) end to end: instant tasks on the emulator, ``in_flight`` at a time, each learner."""
    out: dict[str, Any] = {}
    emulator_args = ["--service-time", "fixed:0", "--workers", "100000", "--seed", "5"]
    with StandaloneEmulator(emulator_args) as emu:
        for learner in _learners():
            async with Client(emu.api_key, base_url=emu.base_url) as client:
                if learner == "midpoint":
                    sim.make_legacy(client._runtime.scheduler)
                prompts = (f"instant {learner} {i}" for i in range(tasks))
                start, cpu = time.monotonic(), cpu_seconds()
                outcomes = [o async for o in client.stream(prompts, max_in_flight=in_flight)]
                wall, cpu = time.monotonic() - start, cpu_seconds() - cpu
            stats = emu.stats()
            steady = outcomes[2 * in_flight :]  # after the first two waves
            assert all(o.ok and o.request_id for o in outcomes)
            polls = sum(
                stats["result_polls"].get(o.request_id, 0)
                + stats["status_polls"].get(o.request_id, 0)
                for o in outcomes
            )
            span = max(o.finished_at or 0.0 for o in steady) - min(
                o.submitted_at or 0.0 for o in steady
            )
            out[learner] = {
                "tasks": tasks,
                "in_flight": in_flight,
                "first_poll_s": statistics.fmean(o.latency or 0.0 for o in steady),
                "polls_per_task": polls / tasks,
                "tasks_per_s": tasks / wall,
                "steady_tasks_per_s": len(steady) / span,
                "client_cpu_ms_per_task": 1000 * cpu / tasks,
            }
    return out


async def drift_e2e(tasks: int, scale: float) -> dict[str, Any]:
    """(c) end to end: the emulator's service time triples halfway (``@AT*3``); 64 in flight.

    Tasks are told apart by the emulator's clock: those created after the step (its start,
    taken when the process was launched, plus AT) are the slow ones; the few within 0.5 s
    of the step either way are left out.
    """
    in_flight = 64
    at = tasks / 2 * 1.13 * MEDIAN / in_flight  # unscaled seconds until about half are created
    args = [
        "--service-time",
        f"lognormal:{MEDIAN},{SIGMA}@{at:.1f}*3",
        "--time-scale",
        str(scale),
        "--workers",
        "100000",
        "--seed",
        "7",
    ]
    launched = time.monotonic()
    with StandaloneEmulator(args) as emu:
        async with Client(emu.api_key, base_url=emu.base_url, poll=adaptive(scale)) as client:
            prompts = (f"drift {i}" for i in range(tasks))
            outcomes = [o async for o in client.stream(prompts, max_in_flight=in_flight)]
            model = client._runtime.scheduler.model
            changes = model.changes
            fit_median = model.summary(GenerationRequest("x").size_class).median / scale
        stats = emu.stats(tasks=True)
    step = launched + at * scale
    rows = []
    for o in outcomes:
        assert o.ok and o.request_id is not None and o.finished_at is not None
        record = stats["tasks"][o.request_id]
        polls = stats["result_polls"].get(o.request_id, 0) + stats["status_polls"].get(
            o.request_id, 0
        )
        rows.append(
            (
                record["submitted_at"],
                polls,
                (o.finished_at - record["completed_at"]) / scale,
                o.finished_at,
            )
        )
    rows.sort()
    # Before: tasks found done before the step (every poll of theirs under the old regime).
    pre = [r for r in rows if r[3] < step - 0.5][-200:]
    post = [r for r in rows if r[0] > step + 0.5]
    windows = []
    for lo in range(0, len(post), 50):
        chunk = post[lo : lo + 50]
        if len(chunk) < 25:
            break
        windows.append(_window(f"slow tasks {lo + 1}–{lo + len(chunk)}", chunk, 3 * MEDIAN))
    return {
        "tasks": tasks,
        "scale": scale,
        "step_at_s": at,
        "before": _window("last 200 before the step", pre, MEDIAN),
        "after": windows,
        "changes_detected": changes,
        "final_fit_median_s": fit_median,
    }


def _window(
    name: str, rows: list[tuple[float, int, float, float]], median: float
) -> dict[str, Any]:
    polls = statistics.fmean(r[1] for r in rows)
    delay = statistics.fmean(r[2] for r in rows)
    return {
        "window": name,
        "polls_per_task": polls,
        "mean_delay_s": delay,
        "efficiency": sim.efficiency(polls, delay, median, SIGMA),
    }


def learning(*, quick: bool) -> dict[str, Any]:
    """Every P6 figure (smaller and fewer with ``quick``)."""
    tasks, seeds = (3000, 1) if quick else (20000, 3)
    started = time.monotonic()
    data: dict[str, Any] = {"legacy_commit": sim.LEGACY_COMMIT if sim.legacy_available() else None}
    data["short_tasks"] = short_tasks(tasks, seeds)
    data["tight_target"] = tight_target(tasks // 2, seeds)
    data["drift"] = drift(800 if quick else 1600, 2 if quick else 16, 30 if quick else 100)
    data["size_classes"] = size_classes(tasks // 4, seeds)
    data["instant"] = {
        "simulation": instant_sim(3000 if quick else 5000),
        "emulator": asyncio.run(instant_e2e(3000 if quick else 5000, 1000)),
    }
    data["drift_emulator"] = asyncio.run(drift_e2e(300 if quick else 800, 0.1))
    data["seconds"] = time.monotonic() - started
    return data


def _fmt_runs(values: list[float]) -> str:
    return "–".join(f"{v:.2f}" for v in (min(values), max(values)))


def learning_targets(data: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for (a)–(e), from the censored learner's figures."""
    found = []
    for name, r in data["short_tasks"].items():
        if name.startswith("censored"):
            in_sample = r.get("delay_vs_fixed_in_sample")
            found.append(
                (
                    f"(a) {name.split(', ', 1)[1]}: mean delay ÷ best fixed interval at equal "
                    "polls (for the true distribution) ≤ 1",
                    f"{r['delay_vs_fixed']:.4f}"
                    + (f" (in-sample hindsight: {in_sample:.4f})" if in_sample else ""),
                    r["delay_vs_fixed"] <= 1.0,
                )
            )
    for name, r in data["tight_target"].items():
        if name.endswith("censored"):
            what = name.rsplit(", ", 1)[0]
            found.append(
                (
                    f"(b) {what}: mean delay ÷ best fixed at equal polls ≤ 0.85",
                    f"{r['delay_vs_fixed']:.2f}",
                    r["delay_vs_fixed"] <= 0.85,
                )
            )
    c = data["drift"]["curves"]["censored"]
    at = c["recovered_at"]
    found.append(
        (
            "(c) 3× slowdown: efficiency ≥ 0.9 × before the step from completion ≤ 50 on",
            f"from completion {at}" if at else "not within the horizon",
            at is not None and at <= 50,
        )
    )
    for r in data["size_classes"]["at_equal_polls"]:
        found.append(
            (
                f"(d) target {r['target']:g} s: per-size delay ÷ pooled delay at equal polls < 1",
                f"{r['ratio']:.2f}",
                r["ratio"] < 1.0,
            )
        )
    e = data["instant"]["emulator"]
    found.append(
        (
            "(e) instant tasks, 1,000 in flight: first poll sooner than the old rule's",
            f"{e['censored']['first_poll_s']:.2f} s"
            + (f" (was {e['midpoint']['first_poll_s']:.2f} s)" if "midpoint" in e else ""),
            "midpoint" not in e or e["censored"]["first_poll_s"] < e["midpoint"]["first_poll_s"],
        )
    )
    return found


def _vs_fixed_row(name: str, r: dict[str, Any]) -> list[Any]:
    """A row of polls, delay, the best fixed interval's delay and their ratio (per seed)."""
    return [
        name,
        r["polls_per_task"],
        r["mean_delay_s"],
        r["fixed_delay_s"],
        f"{r['delay_vs_fixed']:.2f} ({_fmt_runs(r['delay_vs_fixed_runs'])})",
    ]


def _fmt_runs4(values: list[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def _short_tasks_table(short: dict[str, Any]) -> list[str]:
    """(a)'s table and what its comparisons mean (results without the in-sample key: as was)."""
    if not all("delay_vs_fixed_in_sample" in r for r in short.values()):
        rows = [_vs_fixed_row(name, r) for name, r in short.items()]
        header = [
            "(a) lognormal(0.3 s, 0.5), default policy",
            "polls/task",
            "mean delay s",
            "best fixed in hindsight at equal polls, s",
            "delay ÷ fixed (seeds)",
        ]
        return [table(rows, header), ""]
    rows = [
        [
            name,
            f"{r['polls_per_task']:.4f}",
            f"{r['expected_polls_per_task']:.4f}",
            f"{r['mean_delay_s']:.4f}",
            f"{r['fixed_delay_s']:.4f}",
            f"{r['delay_vs_fixed']:.4f} ({_fmt_runs4(r['delay_vs_fixed_runs'])})",
            f"{r['fixed_delay_in_sample_s']:.4f}",
            f"{r['delay_vs_fixed_in_sample']:.4f} "
            f"({_fmt_runs4(r['delay_vs_fixed_in_sample_runs'])})",
        ]
        for name, r in short.items()
    ]
    header = [
        "(a) lognormal(0.3 s, 0.5), default policy",
        "polls/task",
        "expected polls/task",
        "mean delay s",
        "best fixed (true distribution) at equal polls, s",
        "delay ÷ fixed (per seed)",
        "in-sample: fixed in hindsight, s",
        "in-sample: delay ÷ it (per seed)",
    ]
    return [
        table(rows, header),
        "",
        "Best fixed (the verdict's comparison): the best fixed interval for the true "
        "distribution, in expectation, spending the polls per task the schedules used spend in "
        "expectation (the measured count differs from that by the chance number of tasks still "
        "running at their first poll, about 21 ± 5 of 16,000, a swing the fixed interval's delay "
        "amplifies some 150-fold at one poll per task). It is fitted to no sample, so it is both "
        "unbiased and the best any fixed interval can do; an interval picked on an independent "
        "draw instead would carry that draw's tail count (±4% per seed), no longer spend equal "
        "polls on these tasks, and on average do worse than the true best, flattering the "
        "policy. In-sample (for the record, no verdict reads it): the fixed interval picked in "
        "hindsight on the very durations measured, at the measured polls; it sits just above the "
        "order statistic its poll count allows, about 1 / (n f(t1)) s (≈ 0.9% of the delay "
        "here) earlier than any first poll t1 set before the durations are seen, an advantage "
        "no policy can have (and, for a first poll that moves from task to task, it also carries "
        "that chance tail count, which cuts both ways). True fit (reference): the schedule "
        "fitted to the true distribution, no learning, replayed on the censored runs' tasks.",
        "",
        *_short_tasks_why(short),
    ]


def _short_tasks_why(short: dict[str, Any]) -> list[str]:
    """Where the censored policy's delay ÷ the best fixed interval comes from (noise-free)."""
    parts = [
        f"{name.split(', ', 1)[1]}: {r['each_schedule_vs_fixed']:.4f} each, "
        f"{r['expected_delay_vs_fixed']:.4f} together"
        for name, r in short.items()
        if name.startswith("censored") and "each_schedule_vs_fixed" in r
    ]
    if not parts:
        return []
    return [
        "Noise-free, under the true distribution (median of seeds): each schedule the "
        "censored policy gave a task against the best fixed interval at that schedule's own "
        "polls, and all of them together against it at their mean polls ("
        + "; ".join(parts)
        + "). The gap between the two is the first poll moving with the fit from task to "
        "task: the fixed interval's delay is convex in its polls, so schedules each at par, "
        "spending different polls, lie above the curve at their mean polls.",
        "",
    ]


def report_learning(data: dict[str, Any]) -> str:
    """P6's tables (Markdown): the targets checked, then each scenario's figures."""
    rows: list[list[Any]] = [
        [t, m, "met" if ok else "**MISSED**"] for t, m, ok in learning_targets(data)
    ]
    out = [table(rows, ["target", "measured", "verdict"]), ""]
    out += _short_tasks_table(data["short_tasks"])
    rows = [_vs_fixed_row(name, r) for name, r in data["tight_target"].items()]
    header = [
        "(b) tight target, 64 in flight",
        "polls/task",
        "mean delay s",
        "best fixed at equal polls, s",
        "delay ÷ fixed (seeds)",
    ]
    out += [table(rows, header), ""]
    d = data["drift"]
    rows = []
    for learner, c in d["curves"].items():
        curve = c["ratio_to_pre"]
        pick = [curve[m - 1] if m <= len(curve) else math.nan for m in (1, 5, 10, 25, 50, 100)]
        rows.append([learner, c["pre_efficiency"], *pick, c["recovered_at"] or "not within"])
    header = [
        "(c) ×3 at task N/2",
        "efficiency before",
        "after 1 slow completion",
        "5",
        "10",
        "25",
        "50",
        "100",
        "≥ 0.9 of before from",
    ]
    out += [table(rows, header), ""]
    ceiling = d["true_fit_efficiency"]
    out += [
        f"Efficiency = the best fixed interval's mean delay at the same polls per task ÷ the "
        f"schedule's, for the true distribution, from the scheduler's state after each slow "
        f"completion (mean of {d['seeds']} seeds, {d['in_flight']} in flight). The ceiling, "
        f"the schedule fitted to the true distribution: {ceiling['before']:.2f} before and "
        f"{ceiling['after']:.2f} after (max_interval binds for a 60 s median), i.e. "
        f"{ceiling['after'] / ceiling['before']:.2f} of before.",
        "",
    ]
    rows = [
        [
            r["target"],
            r["polls_per_task"],
            r["per_size_delay_s"],
            r["pooled_delay_at_equal_polls_s"],
            r["ratio"],
        ]
        for r in data["size_classes"]["at_equal_polls"]
    ]
    header = [
        "(d) 70% 1K ~15 s / 30% 4K ~45 s: target s",
        "polls/task (per size)",
        "per-size delay s",
        "pooled delay at equal polls s",
        "ratio",
    ]
    out += [table(rows, header), ""]
    inst = data["instant"]
    rows = []
    for learner in inst["emulator"]:
        e, s_ = inst["emulator"][learner], inst["simulation"][learner]
        rows.append(
            [
                learner,
                s_["first_poll_s"],
                e["first_poll_s"],
                e["polls_per_task"],
                e["tasks_per_s"],
                e["steady_tasks_per_s"],
                e["client_cpu_ms_per_task"],
            ]
        )
    header = [
        "(e) instant tasks, 1,000 in flight",
        "first poll s (simulation)",
        "first poll s (emulator)",
        "polls/task",
        "tasks/s (whole run)",
        "tasks/s (steady)",
        "client CPU ms/task",
    ]
    out += [table(rows, header), ""]
    de = data["drift_emulator"]
    rows = [
        [w["window"], w["polls_per_task"], w["mean_delay_s"], w["efficiency"]]
        for w in [de["before"], *de["after"]]
    ]
    header = [
        f"(c) emulator, ×3 step at {de['step_at_s']:.0f} s (scale {de['scale']:g})",
        "polls/task",
        "mean delay s",
        "efficiency",
    ]
    out += [table(rows, header), ""]
    out.append(
        f"Changes detected: {de['changes_detected']}; fitted median at the end "
        f"{de['final_fit_median_s']:.1f} s (true 60 s)."
    )
    if (IMG / "bench_polling_learn.png").exists() and not data.get("quick"):
        out += ["", "![P6 — learning the poll schedule](img/bench_polling_learn.png)"]
    return "\n".join(out)


def plot_learning(data: dict[str, Any]) -> Path | None:
    """docs/img/bench_polling_learn.png: drift recovery, and the 1K/4K mix's curves."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    IMG.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for learner, c in data["drift"]["curves"].items():
        curve = c["ratio_to_pre"]
        label = "censored fit + change detector" if learner == "censored" else "midpoint (before)"
        left.plot(range(1, len(curve) + 1), curve, label=label)
    ceiling = data["drift"]["true_fit_efficiency"]
    left.axhline(
        ceiling["after"] / ceiling["before"], color="grey", ls=":", label="true-fit ceiling"
    )
    left.axhline(0.9, color="grey", ls="--", lw=0.8, label="0.9 of before")
    left.set_xlabel("completions of slow tasks since the 3× step")
    left.set_ylabel("efficiency ÷ efficiency before the step")
    left.set_title("(c) recovery after a 3× slowdown")
    left.legend(fontsize=8)
    for name, rows in data["size_classes"]["curves"].items():
        rows = sorted(rows, key=lambda r: r["mean_delay_s"])
        right.plot(
            [r["mean_delay_s"] for r in rows],
            [r["polls_per_task"] for r in rows],
            "o-",
            label=f"{name} model",
        )
    fixed = sorted(
        (r["fixed_delay_s"], r["polls_per_task"]) for r in data["size_classes"]["curves"]["pooled"]
    )
    right.plot(
        [f[0] for f in fixed],
        [f[1] for f in fixed],
        "s--",
        color="grey",
        label="best fixed interval",
    )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("mean detection delay s")
    right.set_ylabel("polls per task")
    right.set_title("(d) 70% 1K ~15 s / 30% 4K ~45 s")
    right.legend(fontsize=8)
    fig.tight_layout()
    path = IMG / "bench_polling_learn.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
