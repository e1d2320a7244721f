"""Where a peer's CPU goes at a web backend's pace: wake-ups, poll bursts and collections.

One P5 peer (``sdk``, ``sdk-fixed`` or ``gather``) runs its batch against a standalone emulator
(lognormal median 20 s × ``--scale``, 50 in flight) in a subprocess that counts, in the measured
window (after imports and warm-up):

- CPU per request, and the times the process blocked (voluntary context switches): each one is a
  wake-up later, which on Linux costs 0.1–0.3 ms of CPU after a long sleep;
- event-loop iterations, and *bursts*: wake-ups less than 30 ms apart, with what started each
  (a timer or a socket) — the polls that leave together on one wake-up;
- garbage collections by generation and their CPU time;
- thread CPU per burst, split by least squares into a fixed part and a part per ready socket
  (what a burst costs before its requests: the wake-up, cold caches, the scheduler's round).

Not part of ``benchmarks all`` and not saved: a diagnostic for the real-time P5 figure (a time
scale of 0.25 runs the same shape in about 35 s per peer).

    python -m benchmarks.wakeups [--peer sdk,gather] [--scale 0.25] [--tasks 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import resource
import selectors
import statistics
import subprocess
import sys
import time
from typing import Any

from . import peers
from ._harness import GcPauses, StandaloneEmulator, cpu_seconds

BURST_GAP = 0.03  # s: wake-ups closer than this belong to one burst
BLOCKED = 0.0003  # s: a select that waited at least this long put the process to sleep


class _CountingSelector(selectors.DefaultSelector):
    """Records each ``select``: when it returned, how long it waited, how many were ready."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, float, int]] = []
        self.cpu_at_entry: list[float] = []  # thread CPU as each recorded select began
        self.on = False

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        cpu = time.thread_time()
        started = time.monotonic()
        ready: list[tuple[Any, int]] = super().select(timeout)
        if self.on:
            now = time.monotonic()
            self.calls.append((now, now - started, len(ready)))
            self.cpu_at_entry.append(cpu)
        return ready


def _bursts(calls: list[tuple[float, float, int]]) -> dict[str, Any]:
    """Wake-ups (selects that slept) grouped into bursts; what started each burst."""
    wakes = [(t, ready) for t, waited, ready in calls if waited >= BLOCKED]
    bursts: list[list[tuple[float, int]]] = []
    for wake in wakes:
        if bursts and wake[0] - bursts[-1][-1][0] < BURST_GAP:
            bursts[-1].append(wake)
        else:
            bursts.append([wake])
    if len(bursts) < 2:
        return {"bursts": len(bursts)}
    span = bursts[-1][0][0] - bursts[0][0][0]
    gaps = [b[0][0] - a[-1][0] for a, b in itertools.pairwise(bursts)]
    return {
        "bursts": len(bursts),
        "bursts_per_s": len(bursts) / span,
        "wakes_per_burst": len(wakes) / len(bursts),
        "started_by_timer": sum(1 for b in bursts if b[0][1] == 0) / len(bursts),
        "median_gap_s": statistics.median(gaps),
    }


def _burst_cost(calls: list[tuple[float, float, int]], cpu_at_entry: list[float]) -> dict[str, Any]:
    """Thread CPU per burst (from the select that slept to the next such one) against the
    sockets that were ready in it: ``cpu ≈ fixed + per_ready × ready`` by least squares."""
    starts = [i for i, (_, waited, _) in enumerate(calls) if waited >= BURST_GAP]
    cpu: list[float] = []
    ready: list[float] = []
    for a, b in itertools.pairwise(starts):
        cpu.append(cpu_at_entry[b] - cpu_at_entry[a])
        ready.append(float(sum(n for _, _, n in calls[a:b])))
    if len(cpu) < 3 or len(set(ready)) < 2:
        return {}
    slope, fixed = statistics.linear_regression(ready, cpu)
    return {
        "median_cpu_ms": 1000 * statistics.median(cpu),
        "median_ready": statistics.median(ready),
        "fixed_ms": 1000 * fixed,
        "per_ready_ms": 1000 * slope,
    }


def child(args: argparse.Namespace) -> None:
    """Run the peer's batch in this process and print its counters as one JSON line."""
    selector = _CountingSelector()
    pauses = GcPauses(on=False)
    gc.callbacks.append(pauses.on_gc)
    base: dict[str, float] = {}
    mark = peers._mark

    def start_window() -> None:
        mark()
        selector.on = True
        pauses.restart()
        base["switches"] = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw

    peers._mark = start_window
    ns = argparse.Namespace(
        worker=args.peer,
        key=args.key,
        base_url=args.base_url,
        scale=args.scale,
        warmup=args.warmup if args.peer.startswith("sdk") else 0,
        concurrency=args.concurrency,
        tag=args.tag,
        tasks=args.tasks,
    )
    prompts = [f"wakeups {args.tag} {i}" for i in range(args.tasks)]
    loop = asyncio.SelectorEventLoop(selector)
    try:
        done = loop.run_until_complete(peers.WORKERS[args.peer](ns, prompts))
    finally:
        selector.on = pauses.on = False
        loop.close()
    out = {
        "cpu": cpu_seconds() - peers._START["cpu"],
        "switches": resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - base["switches"],
        "iterations": len(selector.calls),
        "bursts": _bursts(selector.calls),
        "burst_cost": _burst_cost(selector.calls, selector.cpu_at_entry),
        "gc": {str(g): [pauses.count[g], 1000 * pauses.cpu[g]] for g in (0, 1, 2)},
        "done": done,
    }
    print(json.dumps(out), flush=True)


def _line(peer: str, out: dict[str, Any], requests: int, delay: float) -> str:
    b = out["bursts"]
    c = out.get("burst_cost") or {}
    cost = (
        f"\n    CPU per burst: median {c['median_cpu_ms']:.2f} ms for {c['median_ready']:.0f} ready "
        f"sockets; fit {c['fixed_ms']:.2f} ms + {c['per_ready_ms']:.3f} ms per ready socket"
        if c
        else ""
    )
    gcs = " ".join(f"g{g}: {n} ({ms:.0f} ms)" for g, (n, ms) in out["gc"].items())
    bursts = (
        f"bursts {b['bursts_per_s']:.2f}/s (median gap {b['median_gap_s']:.3f} s, "
        f"{b['wakes_per_burst']:.2f} wake-ups each, {100 * b['started_by_timer']:.0f}% by a "
        "timer)"
        if "bursts_per_s" in b
        else "bursts: too few"
    )
    return (
        f"{peer}: {requests} requests, CPU {1000 * out['cpu'] / requests:.3f} ms/request, "
        f"wake-ups {out['switches'] / requests:.3f}/request, loop iterations "
        f"{out['iterations'] / requests:.2f}/request, mean delay {delay:.2f} s*\n"
        f"    {bursts}\n    collections {gcs}{cost}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run each peer in turn against one emulator and print its counters."""
    parser = argparse.ArgumentParser(prog="benchmarks wakeups")
    parser.add_argument(
        "--peer", default="sdk,gather", help="comma-separated: sdk, sdk-fixed, gather"
    )
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    names = args.peer.split(",")
    unknown = sorted(set(names) - {"sdk", "sdk-fixed", "gather"})
    if unknown:
        parser.error(f"--peer: unknown {', '.join(unknown)} (allowed: sdk, sdk-fixed, gather)")
    print(f"lognormal(median {peers.MEDIAN} s, σ {peers.SIGMA}) × scale {args.scale}, "
          f"{args.tasks} tasks, {args.concurrency} in flight")  # fmt: skip
    with StandaloneEmulator(peers.emulator_args(args.scale)) as emu:
        for peer in names:
            tag = f"{peer}-{time.time():.0f}"
            cmd = [
                sys.executable, "-m", "benchmarks.wakeups", "--child", "--peer", peer,
                "--key", emu.api_key, "--base-url", emu.base_url, "--scale", str(args.scale),
                "--tasks", str(args.tasks), "--concurrency", str(args.concurrency),
                "--warmup", str(args.warmup), "--tag", tag,
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                print(f"{peer}: failed: {proc.stderr.strip()[-2000:]}")
                continue
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            _, requests, delays = peers.score(emu.stats(tasks=True), out["done"], args.scale)
            delay = statistics.fmean(delays) if delays else float("nan")
            print(_line(peer, out, requests, delay), flush=True)
    print("* service seconds (real delay ÷ time scale)")


if __name__ == "__main__":
    main()
