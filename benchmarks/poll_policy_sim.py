"""Discrete-event simulation of the poll scheduler: polls per task vs detection delay.

Run: python benchmarks/poll_policy_sim.py [--tasks N] [--seed S]

No network and no real time: a simulated clock, and the real ``PollScheduler`` deciding every poll
(``watch``, ``_next_due`` after each pending poll, ``_learn`` after the poll that sees a task
done), so what is measured is the SDK's own schedule and learning, not a copy of them. A closed
loop keeps ``in_flight`` tasks running: each task found done is replaced by a new one at once.
Deterministic for a seed; a few seconds for tens of thousands of tasks.

``learner="midpoint"`` runs the rule before the censored fit (each finished task learned as the
midpoint of its last two polls, a moment fit of log-times, K from Keller's continuous formula),
taken from the repository's history (``git show``), for before/after figures.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import importlib.util
import math
import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanobanana_async._http._retry import NO_RETRY, RetryPolicy
from nanobanana_async._polling._entry import TaskEntry
from nanobanana_async._polling._policy import PollPolicy
from nanobanana_async._polling._scheduler import PollScheduler
from nanobanana_async.models import GenerationResult, Ticket

# The model and learning rule before the censored fit (the parent of the commit replacing them).
LEGACY_COMMIT = "e07f4153cb724494b698f977a6cee8556e0ae2c5"
ROOT = Path(__file__).resolve().parent.parent

# A workload draws (duration in seconds, size class) for task ``index`` submitted at ``now``.
Workload = Callable[[random.Random, float, int], "tuple[float, str | None]"]


def lognormal(median: float, sigma: float, size_class: str | None = None) -> Workload:
    """Every task lognormal(median, sigma)."""
    mu = math.log(median)
    return lambda rng, now, i: (rng.lognormvariate(mu, sigma), size_class)


def instant() -> Workload:
    """Every task is done before any poll can see it running."""
    return lambda rng, now, i: (0.0, None)


def mixture(parts: Sequence[tuple[float, str, float, float]]) -> Workload:
    """(share, size class, median, sigma) per part, e.g. 70% 1K ~15 s and 30% 4K ~45 s."""
    cum = []
    total = 0.0
    for share, *_ in parts:
        total += share
        cum.append(total)

    def draw(rng: random.Random, now: float, i: int) -> tuple[float, str | None]:
        _, cls, median, sigma = parts[bisect.bisect_left(cum, rng.random() * total)]
        return rng.lognormvariate(math.log(median), sigma), cls

    return draw


def step_change(base: Workload, *, at_task: int, factor: float) -> Workload:
    """``base``, with the tasks from index ``at_task`` on ``factor`` times slower."""

    def draw(rng: random.Random, now: float, i: int) -> tuple[float, str | None]:
        d, cls = base(rng, now, i)
        return (d * factor if i >= at_task else d), cls

    return draw


@dataclass
class Record:
    """One simulated task."""

    index: int
    submitted: float
    duration: float
    size_class: str | None
    polls: int = 0
    detected: float = math.nan  # when the poll that saw it done left

    @property
    def delay(self) -> float:
        """Detection delay: from completion to the poll that saw it."""
        return self.detected - self.submitted - self.duration


@dataclass
class Run:
    """The tasks of one simulation, in the order they were found done, and the scheduler."""

    records: list[Record]
    scheduler: PollScheduler


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - the loop never runs
        raise RuntimeError("the simulation drives the scheduler's decisions, not its loop")

    async def wait(self, seconds: float, wake: Any) -> None:  # pragma: no cover - as sleep
        raise RuntimeError("the simulation drives the scheduler's decisions, not its loop")


class _NoTransport:
    retry: RetryPolicy = NO_RETRY

    def task_url(self, request_id: str, action: str, server_url: str | None = None) -> str:
        return ""

    async def request(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise RuntimeError("no network in the simulation")


def scheduler(policy: PollPolicy, *, seed: int = 1, learner: str = "censored") -> PollScheduler:
    """A scheduler on a simulated clock (``learner``: "censored", or "midpoint" for the old)."""
    sched = PollScheduler(
        _NoTransport(), policy, max_concurrent_polls=1, clock=_Clock(), rng=random.Random(seed)
    )
    if learner == "midpoint":
        make_legacy(sched)
    elif learner != "censored":
        raise ValueError(f"unknown learner {learner!r}")
    return sched


def simulate(
    policy: PollPolicy,
    workload: Workload,
    *,
    tasks: int,
    in_flight: int,
    seed: int = 1,
    learner: str = "censored",
    classes: bool = True,
    sched: PollScheduler | None = None,
    on_done: Callable[[Record, PollScheduler], None] | None = None,
) -> Run:
    """Run ``tasks`` tasks, ``in_flight`` at a time, through the scheduler's decisions.

    ``classes=False`` hides the size classes from the scheduler (one pooled model);
    ``on_done`` is called after each task found done has been learned.
    """
    sched = sched or scheduler(policy, seed=seed, learner=learner)
    clock = sched.clock
    assert isinstance(clock, _Clock)
    rng = random.Random(seed)
    heap: list[tuple[float, int, TaskEntry, Record]] = []
    done: list[Record] = []
    seq = 0
    submitted = 0

    def submit(now: float) -> None:
        nonlocal seq, submitted
        duration, cls = workload(rng, now, submitted)
        record = Record(submitted, now, duration, cls)
        ticket = Ticket(f"sim-{seed}-{submitted}")
        submitted += 1
        entry = sched.watch(ticket, submitted_at=now, size_class=cls if classes else None)
        sched._heap.clear()  # the simulation keeps its own event heap
        heapq.heappush(heap, (entry.due, seq, entry, record))
        seq += 1

    start = clock.t
    for _ in range(min(in_flight, tasks)):
        submit(start)
    while heap:
        due, _, entry, record = heapq.heappop(heap)
        clock.t = due
        # What _poll_once and _on_status do for one poll, minus the HTTP.
        entry.polls += 1
        record.polls += 1
        entry.last_poll_at = due
        if due - record.submitted >= record.duration:
            record.detected = due
            if sched.finish(entry, GenerationResult(entry.request_id)):
                sched._learn(entry)
            done.append(record)
            if on_done is not None:
                on_done(record, sched)
            if submitted < tasks:
                submit(due)
        else:
            entry.last_pending_at = due
            nxt = sched._next_due(entry, due)
            entry.due = nxt
            heapq.heappush(heap, (nxt, seq, entry, record))
            seq += 1
    return Run(done, sched)


def summary(records: Sequence[Record]) -> tuple[float, float]:
    """(polls per task, mean detection delay)."""
    n = len(records)
    return sum(r.polls for r in records) / n, sum(r.delay for r in records) / n


# ---- fixed intervals ----------------------------------------------------------------------------


def fixed_interval(durations: Sequence[float], interval: float) -> tuple[float, float]:
    """(polls per task, mean delay) of polling every ``interval`` s from submit."""
    polls = [max(1, math.ceil(d / interval)) for d in durations]
    delay = sum(n * interval - d for n, d in zip(polls, durations, strict=True))
    return sum(polls) / len(polls), delay / len(polls)


def fixed_at_polls(durations: Sequence[float], polls: float) -> tuple[float, float]:
    """(interval, mean delay) of the fixed interval spending ``polls`` per task on ``durations``.

    The best fixed interval in hindsight at equal polls (polls fall as the interval grows).
    """
    lo, hi = 1e-4, 1e5
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if fixed_interval(durations, mid)[0] > polls:
            lo = mid
        else:
            hi = mid
    interval = math.sqrt(lo * hi)
    return interval, fixed_interval(durations, interval)[1]


def fixed_lognormal(median: float, sigma: float, interval: float) -> tuple[float, float]:
    """Expected (polls per task, mean delay) of a fixed interval for a lognormal (no sampling)."""
    mu = math.log(median)
    polls = 1.0
    k = 1
    while True:
        s = 0.5 * math.erfc((math.log(k * interval) - mu) / sigma / math.sqrt(2.0))
        polls += s
        k += 1
        if s < 1e-9 or k > 1_000_000:
            break
    return polls, interval * polls - math.exp(mu + 0.5 * sigma * sigma)


def fixed_lognormal_interval_at_polls(
    median: float, sigma: float, polls: float
) -> tuple[float, float]:
    """(interval, expected mean delay) of the fixed interval spending ``polls`` per task in
    expectation (lognormal): the best fixed interval for the true distribution, fitted to no
    sample."""
    lo, hi = 1e-4, 1e5
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if fixed_lognormal(median, sigma, mid)[0] > polls:
            lo = mid
        else:
            hi = mid
    interval = math.sqrt(lo * hi)
    return interval, fixed_lognormal(median, sigma, interval)[1]


def fixed_lognormal_at_polls(median: float, sigma: float, polls: float) -> float:
    """Expected mean delay of the fixed interval spending ``polls`` per task (lognormal)."""
    return fixed_lognormal_interval_at_polls(median, sigma, polls)[1]


def schedule_under(
    sched: PollScheduler, median: float, sigma: float, size_class: str | None = None
) -> tuple[float, float]:
    """Expected (polls per task, mean delay) of the scheduler's current schedule for a task
    submitted now, if durations were lognormal(median, sigma): no sampling noise."""
    policy = sched.policy
    model = sched.model
    if policy.target_delay is None or not model.ready:
        raise ValueError("the scheduler has no learned schedule yet")
    legacy = getattr(sched, "sim_legacy", False)
    if legacy:
        k = model.k_for_target_delay(policy.target_delay)
    else:
        k = model.k_for_target_delay(
            policy.target_delay, min_interval=policy.min_interval, max_interval=policy.max_interval
        )
    where = {} if legacy else {"size_class": size_class}
    mu = math.log(median)
    mean = math.exp(mu + 0.5 * sigma * sigma)
    polls = delay = 0.0
    last, s_last, pe_last = 0.0, 1.0, 0.0
    for _ in range(100_000):
        polls += s_last
        t = model.next_poll(
            last,
            k=k,
            min_interval=policy.min_interval,
            max_interval=policy.max_interval,
            **where,
        )
        z = (math.log(t) - mu) / sigma
        s_t = 0.5 * math.erfc(z / math.sqrt(2.0))
        pe_t = 0.5 * math.erfc(-(z - sigma) / math.sqrt(2.0))
        delay += t * (s_last - s_t) - mean * (pe_t - pe_last)
        last, s_last, pe_last = t, s_t, pe_t
        if s_t < 1e-6:
            break
    return polls, delay


def efficiency(polls: float, delay: float, median: float, sigma: float) -> float:
    """The best fixed interval's mean delay at the same polls per task, over this delay."""
    return fixed_lognormal_at_polls(median, sigma, polls) / delay


# ---- the rule before the censored fit -----------------------------------------------------------


def _legacy_model_class() -> Any:
    """``CompletionModel`` as it was at LEGACY_COMMIT (read with ``git show``)."""
    source = subprocess.run(
        ["git", "show", f"{LEGACY_COMMIT}:nanobanana_async/_polling/_model.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec = importlib.util.spec_from_loader("nanobanana_async._polling._legacy_model", None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "nanobanana_async._polling"
    exec(compile(source, f"{LEGACY_COMMIT[:7]}:_model.py", "exec"), module.__dict__)
    return module.CompletionModel


def make_legacy(sched: PollScheduler) -> None:
    """Swap in the old model, its midpoint learning and its K (``_next_due`` and ``_learn``)."""
    model = _legacy_model_class()(min_samples=sched.policy.min_samples)
    sched.model = model
    state = {"k": None, "fit": -1}

    def next_due(entry: TaskEntry, now: float) -> float:
        policy = sched.policy
        if policy.target_delay is not None and model.ready:
            if state["k"] is None or state["fit"] != model.fits:
                state["k"], state["fit"] = model.k_for_target_delay(policy.target_delay), model.fits
            offset = model.next_poll(
                now - entry.submitted_at,
                k=state["k"],
                min_interval=policy.min_interval,
                max_interval=policy.max_interval,
            )
            return float(entry.submitted_at + offset)
        return now + policy.interval(entry.polls, sched._rng)

    def learn(entry: TaskEntry) -> None:
        if entry.finished_at is None or sched.policy.target_delay is None:
            return
        last = entry.last_pending_at if entry.last_pending_at is not None else entry.submitted_at
        model.observe((last + entry.finished_at) / 2 - entry.submitted_at)

    sched._next_due = next_due  # type: ignore[method-assign]
    sched._learn = learn  # type: ignore[method-assign]
    sched.sim_legacy = True  # type: ignore[attr-defined]


def legacy_available() -> bool:
    """Whether the old rule can be read from git here."""
    try:
        _legacy_model_class()
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


# ---- the command-line table ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Print polls/task and mean delay for a few workloads, against fixed intervals."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    learners = ["censored", "midpoint"] if legacy_available() else ["censored"]
    workloads = [
        ("lognormal(20 s, 0.5)", lognormal(20.0, 0.5), PollPolicy()),
        (
            "lognormal(20 s, 0.5), target 0.25 s",
            lognormal(20.0, 0.5),
            PollPolicy(target_delay=0.25),
        ),
        ("lognormal(0.3 s, 0.5)", lognormal(0.3, 0.5), PollPolicy()),
        (
            "70% 1K ~15 s / 30% 4K ~45 s",
            mixture([(0.7, "1K", 15.0, 0.3), (0.3, "4K", 45.0, 0.3)]),
            PollPolicy(),
        ),
    ]
    print(
        f"{'workload':38s} {'learner':9s} {'polls/task':>10s} {'delay':>7s} {'fixed@=polls':>12s}"
    )
    for name, workload, policy in workloads:
        for learner in learners:
            run = simulate(
                policy,
                workload,
                tasks=args.tasks,
                in_flight=args.in_flight,
                seed=args.seed,
                learner=learner,
            )
            steady = run.records[len(run.records) // 5 :]
            polls, delay = summary(steady)
            _, fixed = fixed_at_polls([r.duration for r in steady], polls)
            print(f"{name:38s} {learner:9s} {polls:10.3f} {delay:6.3f}s {fixed:11.3f}s")


if __name__ == "__main__":
    main()
