"""Shared pieces of the benchmarks: a standalone emulator process, its stats, and statistics."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


class StandaloneEmulator:
    """The emulator in its own process, so that client and server do not share a core."""

    def __init__(
        self,
        args: Sequence[str],
        module: str = "nanobanana_async.emulator",
        *,
        cpus: set[int] | None = None,
    ) -> None:
        self.args = list(args)
        self.module = module
        self.cpus = cpus  # the cores the process may run on (None: wherever the OS puts it)
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.api_key = ""
        self.fields: dict[str, str] = {}  # every key=value of the emulator's first line

    def __enter__(self) -> StandaloneEmulator:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self._port_args(), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        if self.cpus is not None:
            pin_process(self.proc.pid, self.cpus)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if "base_url" not in self.fields:
            self.__exit__()
            raise RuntimeError(f"the emulator did not start: {line!r}")
        self.base_url, self.api_key = self.fields["base_url"], self.fields["api_key"]
        return self

    def _port_args(self) -> list[str]:
        return ["--port", "0"] if self.module == "nanobanana_async.emulator" else []

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def stats(self, tasks: bool = False) -> dict[str, Any]:
        """The emulator's /_emulator/stats JSON (per-task records with ``tasks=True``)."""
        root = self.base_url.rsplit("/model", 1)[0]
        url = f"{root}/_emulator/stats" + ("?tasks=1" if tasks else "")
        with urllib.request.urlopen(url, timeout=30) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def rss_mb(self) -> float:
        """The emulator process's resident memory in MiB."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return math.nan


def split_cores() -> tuple[set[int], set[int]] | None:
    """Two disjoint sets of the cores this process may use (server, client), or None when
    there are fewer than two (or the OS cannot pin)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    half = len(cores) // 2
    return set(cores[:half]), set(cores[half:])


def pin_process(pid: int, cpus: set[int]) -> None:
    """Keep every thread of process ``pid`` (and the threads it starts later) on ``cpus``."""
    try:
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        threads = [pid]
    for tid in threads:
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(tid, cpus)


@contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the block with this process on ``cpus`` (all of its threads); restored after."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    pin_process(os.getpid(), cpus)
    try:
        yield
    finally:
        pin_process(os.getpid(), before)


def cpu_seconds() -> float:
    """User + system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class GcPauses:
    """The garbage collector's pauses while ``on``, in thread CPU time, by generation.

    Register ``on_gc`` in ``gc.callbacks``. A full collection walks every object of the process
    (imports included), so whether one lands in a short measured window is luck, not the path
    measured: benchmarks show these pauses apart.
    """

    def __init__(self, *, on: bool = True) -> None:
        self.restart()
        self.on = on

    def restart(self) -> None:
        """Forget what was counted and count from now on."""
        self.on = True
        self.count = [0, 0, 0]  # collections of each generation
        self.cpu = [0.0, 0.0, 0.0]  # their CPU seconds
        self.full_pauses: list[float] = []  # CPU seconds of each collection of generation 2
        self._started = 0.0

    @property
    def total(self) -> float:
        """CPU seconds of every collection so far."""
        return sum(self.cpu)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """The ``gc.callbacks`` hook."""
        if not self.on:
            return
        now = time.thread_time()
        if phase == "start":
            self._started = now
            return
        generation = info["generation"]
        self.count[generation] += 1
        self.cpu[generation] += now - self._started
        if generation == 2:
            self.full_pauses.append(now - self._started)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    Read from VmHWM: ``ru_maxrss`` survives ``exec`` on Linux, so a worker started by a large
    parent would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current resident memory of this process in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def lognormal_emulator_args(median: float, sigma: float, scale: float, seed: int) -> list[str]:
    """Emulator arguments for lognormal(median, sigma) service times × ``scale``, nothing queued."""
    return [
        "--service-time",
        f"lognormal:{median},{sigma}",
        "--time-scale",
        str(scale),
        "--workers",
        "100000",
        "--seed",
        str(seed),
    ]


def median_spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }


def save(name: str, data: dict[str, Any], *, quick: bool = False) -> Path:
    """Write ``benchmarks/results/<name>.json``; quick (smoke) runs go to ``results/quick/``
    (not committed), so a CI run never overwrites the committed figures."""
    folder = RESULTS / "quick" if quick else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    data = {**data, "quick": quick}
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str) + "\n")
    return path


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """Wall and CPU seconds of the block."""
    out: dict[str, float] = {}
    wall, cpu = time.monotonic(), cpu_seconds()
    try:
        yield out
    finally:
        out["wall"] = time.monotonic() - wall
        out["cpu"] = cpu_seconds() - cpu


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain-text table for the terminal (and Markdown-compatible)."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
