"""P4 — rate limit: a batch larger than the account's limit R allows, against a 429-ing emulator.

The emulator (own process) enforces a token bucket of R requests/s (burst R/10) and answers 429
with Retry-After beyond it. The client sends creates and polls as fast as its adaptive pacer
allows. Reported: useful (non-429) requests/s ÷ R over the busy window, the share of responses
that were 429, and the time until the rolling useful rate first reached 0.9·R.

Then several processes on one account (4 by default, each its own client, all started at the
same instant and creating for the same seconds) against the same limit R: each pacing alone
(``rate_limit=None``) and all drawing from one budget on Redis (``rate_limit="redis://..."``, a
``redis-server`` started for the run). Reported side by side: aggregate useful requests/s ÷ R
after the first second, and the 429 share after the first second and overall.

    python -m benchmarks ratelimit [--quick] [--rates 50 200] [--seconds 20]
                                   [--processes 4] [--mp-rate 100] [--mp-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nanobanana_async import Client, HttpEvent, PollPolicy

from ._harness import StandaloneEmulator, save, table

STEADY_AFTER = 3.0  # seconds: the first burst (before any 429 taught the pacer) is the settle phase
MP_SETTLE = 1.0  # seconds: the multi-process figures are taken after the first second
MP_POLL = PollPolicy(initial_delay=0.3, max_interval=0.5, target_delay=None)


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


# -- several processes on one account ------------------------------------------------------


def emulator_args(rate: float) -> list[str]:
    """The emulator of the multi-process scenario: limit R, burst R/10, 0.2 s tasks."""
    burst = str(max(1, int(rate / 10)))
    args = ["--rate-limit", str(rate), "--rate-burst", burst, "--service-time", "fixed:0.2"]
    return [*args, "--workers", "100000"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway ``redis-server`` on a free loopback port: its URL, or None if not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = _free_port()
    with tempfile.TemporaryDirectory() as folder:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        proc = subprocess.Popen(
            [*args, "--appendonly", "no", "--dir", folder],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                        sock.sendall(b"PING\r\n")
                        if sock.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


def start_workers(
    emu: StandaloneEmulator,
    processes: int,
    *,
    redis_url: str | None,
    seconds: float,
    folder: Path,
    timeout: float = 60.0,
) -> tuple[float, float, list[tuple[subprocess.Popen[bytes], Path]]]:
    """Start ``processes`` client processes that create from one common instant for ``seconds``.

    Each worker says it is ready (imported, client open) with a file; once all are, the start
    and stop times go out in another. Returns (start, stop, [(process, its result file)]);
    times are ``time.time()``.
    """
    go = folder / "go"
    workers = []
    for i in range(processes):
        out = folder / f"worker-{i}.json"
        cmd = [sys.executable, "-m", "benchmarks.ratelimit", "--worker", "--base-url"]
        cmd += [emu.base_url, "--key", emu.api_key, "--tag", f"p{i}", "--out", str(out)]
        cmd += ["--go", str(go)]
        if redis_url:
            cmd += ["--redis", redis_url]
        workers.append((subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent), out))
    deadline = time.monotonic() + timeout
    while not all(out.with_suffix(".ready").exists() for _, out in workers):
        if time.monotonic() > deadline or any(p.poll() is not None for p, _ in workers):
            for proc, _ in workers:
                proc.kill()
            raise RuntimeError("the workers did not start")
        time.sleep(0.01)
    start = time.time() + 0.1
    stop = start + seconds
    go.with_suffix(".tmp").write_text(f"{start!r} {stop!r}")
    go.with_suffix(".tmp").replace(go)
    return start, stop, workers


def collect(
    workers: list[tuple[subprocess.Popen[bytes], Path]], timeout: float = 120.0
) -> list[dict[str, Any]]:
    """Wait for every worker and read its result."""
    results = []
    for proc, out in workers:
        code = proc.wait(timeout=timeout)
        if code != 0:
            raise RuntimeError(f"worker {out.name} exited {code}")
        results.append(json.loads(out.read_text()))
    return results


def summarise(
    results: list[dict[str, Any]], rate: float, start: float, stop: float, emu: dict[str, Any]
) -> dict[str, Any]:
    """Aggregate figures of one multi-process run (after MP_SETTLE seconds unless 'overall')."""
    events = sorted((t, status) for r in results for t, status in r["events"])
    after = [status for t, status in events if t >= start + MP_SETTLE]
    window = [status for t, status in events if start + MP_SETTLE <= t < stop]
    useful = sum(1 for status in window if status != 429) / (stop - start - MP_SETTLE)
    return {
        "processes": len(results),
        "rate_limit": rate,
        "seconds": stop - start,
        "tasks": sum(r["ok"] + r["failed"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "useful_per_s": useful,
        "utilisation": useful / rate,
        "share_429": sum(1 for status in after if status == 429) / max(1, len(after)),
        "share_429_overall": sum(1 for _, s in events if s == 429) / max(1, len(events)),
        "late_starts": sum(1 for r in results if r["late"] > 0.05),
        "warnings": sum(len(r["warnings"]) for r in results),
        "duplicate_creates": emu["duplicate_creates"],
    }


def multi_process(
    rate: float, seconds: float, processes: int, redis_url: str | None
) -> dict[str, Any]:
    """``processes`` clients on one account against limit R, sharing a budget or not."""
    with StandaloneEmulator(emulator_args(rate)) as emu, tempfile.TemporaryDirectory() as tmp:
        start, stop, workers = start_workers(
            emu, processes, redis_url=redis_url, seconds=seconds, folder=Path(tmp)
        )
        results = collect(workers)
        stats = emu.stats()
    return {"budget": "shared (Redis)" if redis_url else "each alone"} | summarise(
        results, rate, start, stop, stats
    )


def multi_process_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The same run without and with the shared budget."""
    runs = [multi_process(args.mp_rate, args.mp_seconds, args.processes, None)]
    with redis_server() as url:
        if url is None:
            print("redis-server not found: the shared-budget run is skipped", file=sys.stderr)
        else:
            runs.append(multi_process(args.mp_rate, args.mp_seconds, args.processes, url))
    return runs


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _ready_then_go(ready: Path, go: Path) -> tuple[float, float]:
    ready.touch()
    while not go.exists():
        time.sleep(0.005)
    start, stop = map(float, go.read_text().split())
    return start, stop


async def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One process of the multi-process scenario: create from --start-at until --stop-at."""
    events: list[tuple[float, int]] = []
    caught = _Warnings()
    logging.getLogger("nanobanana_async").addHandler(caught)

    def hook(event: HttpEvent) -> None:
        if event.status is not None:
            events.append((time.time(), event.status))

    async def prompts() -> AsyncIterator[str]:
        i = 0
        while time.time() < stop_at:
            yield f"{args.tag} {i}"
            i += 1

    ok = failed = 0
    errors: Counter[str] = Counter()
    client = Client(
        args.key, base_url=args.base_url, poll=MP_POLL, hooks=[hook], rate_limit=args.redis
    )
    async with client:
        # Nothing is in flight yet: blocking the loop while waiting for the others costs nothing.
        start_at, stop_at = _ready_then_go(Path(args.out).with_suffix(".ready"), Path(args.go))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        late = time.time() - start_at
        async for outcome in client.stream(prompts(), max_in_flight=500):
            if outcome.ok:
                ok += 1
            else:
                failed += 1
                errors[type(outcome.error).__name__] += 1
    return {
        "events": events,
        "ok": ok,
        "failed": failed,
        "errors": dict(errors),
        "late": late,
        "warnings": caught.messages,
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
    text = table(rows, header)
    if data.get("processes"):
        text += "\n\n" + report_processes(data["processes"])
    return text


def report_processes(runs: list[dict[str, Any]]) -> str:
    """The multi-process table: each process alone vs one shared budget."""
    first = runs[0]
    rows = [
        [
            r["budget"],
            r["tasks"],
            r["utilisation"],
            f"{100 * r['share_429']:.2f}%",
            f"{100 * r['share_429_overall']:.2f}%",
            r["failed"],
            r["duplicate_creates"],
        ]
        for r in runs
    ]
    header = [
        f"{first['processes']} processes, R = {first['rate_limit']:g} req/s",
        "tasks",
        "useful/R after 1 s",
        "429 share after 1 s",
        "429 share overall",
        "failed",
        "dup creates",
    ]
    return table(rows, header)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run P4 and print its table."""
    parser = argparse.ArgumentParser(prog="benchmarks ratelimit")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rates", type=float, nargs="+", default=[50.0, 200.0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=4, help="client processes on one key")
    parser.add_argument("--mp-rate", type=float, default=100.0, help="R of the multi-process run")
    parser.add_argument("--mp-seconds", type=float, default=10.0, help="creating, per process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for flag in ("--base-url", "--key", "--tag", "--out", "--redis", "--go"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = asyncio.run(run_worker(args))
        Path(args.out).write_text(json.dumps(result))
        return result
    if args.quick:
        args.rates, args.seconds, args.mp_seconds = [100.0], 6.0, 4.0
    data = asyncio.run(main_async(args))
    data["processes"] = multi_process_runs(args)
    print(f"P4 rate limit: emulator token bucket R, burst R/10, ~{args.seconds:g} s of work")
    print(
        f"then {args.processes} processes on one key, R = {args.mp_rate:g} req/s, creating for "
        f"{args.mp_seconds:g} s: each pacing alone vs one budget shared through Redis"
    )
    print(report(data))
    save("ratelimit", data, quick=args.quick)
    return data


if __name__ == "__main__":
    main()
