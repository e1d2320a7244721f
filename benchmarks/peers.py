"""P5 — peers in one run: this SDK vs PyPI's fal-client vs a hand-written asyncio.gather loop.

One standalone emulator (with its fal-compatible TLS front) serves the same lognormal workload
(median 20 s, σ 0.5, at ``--scale``; workers unlimited so nothing queues) to three clients, each in
its own subprocess so that client CPU seconds and peak RSS are per peer:

- ``sdk``: ``Client.stream(prompts, max_in_flight=N)`` with the default ``PollPolicy`` scaled to the
  time scale, after a warm-up batch that is not counted (the adaptive policy learns first);
- ``fal-client``: ``fal_client.AsyncClient(key=...).submit("fal-ai/nano-banana-pro", ...)`` then
  ``handle.get()`` per task under a semaphore of N, at fal's default poll interval (0.1 s, not
  scaled: that is what a user gets), over TLS to the fal front;
- ``gather``: plain aiohttp, create then poll the status URL every 3 s (the provider docs' interval,
  scaled) then GET the response, under a semaphore of N.

Requests = creates + status polls + result polls of the peer's own request ids (emulator counters).
Detection delay = the monotonic time the client held the result − the emulator's ``completed_at``
(CLOCK_MONOTONIC is shared by processes on Linux), reported in service seconds (÷ scale).

Client CPU per request = the peer's client CPU seconds ÷ its requests, per run; the SDK ÷ gather
ratio of it is taken within each repeat (the two ran against the same emulator minutes apart).

``--real-time`` runs the web-backend pace of issue 14 instead (time scale 1.0: 200 tasks, 50 in
flight, 40 SDK warm-up tasks, one repeat unless ``--repeats`` says more) and saves it apart, in
``results/peers_realtime.json``, so the scaled run's figures stay as they are. At that pace the
cost is not saturation but wake-ups: each time the process sleeps and wakes costs it 0.1–0.3 ms of
CPU on Linux, more than a request. So each peer also reports its wake-ups (voluntary context
switches) per request, and the real-time run adds ``sdk-fixed``: the SDK on the gather loop's own
schedule (every 3 s, no learning), which separates the SDK's per-request path from what its
learned schedule costs or saves (the model's work; its wake-ups).

    python -m benchmarks.peers [--quick] [--tasks 1000] [--concurrency 100] [--repeats 3]
    python -m benchmarks.peers --real-time [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ._harness import (
    GcPauses,
    StandaloneEmulator,
    cpu_seconds,
    lognormal_emulator_args,
    median_spread,
    peak_rss_mb,
    percentile,
    save,
    table,
)

MEDIAN, SIGMA = 20.0, 0.5
FAL_APP = "fal-ai/nano-banana-pro"
FAL_DEFAULT_INTERVAL = 0.1  # fal_client.client.DEFAULT_QUEUE_POLL_INTERVAL in 1.0.3
DOCS_INTERVAL = 3.0  # the provider's documented polling example
PEERS = ("sdk", "fal-client", "gather")
# The real-time run (issue 14): a web backend's pace, every setting fixed.
REAL_TIME = {"scale": 1.0, "tasks": 200, "concurrency": 50, "warmup": 40, "repeats": 1}
REAL_TIME_QUICK_TASKS, REAL_TIME_QUICK_WARMUP = 50, 20  # one wave: about a minute per peer


class FalEmulator(StandaloneEmulator):
    """A standalone emulator started with ``--fal-tls``; also reads ``fal_url`` and ``fal_ca``."""

    def __init__(self, args: list[str], cert_dir: str) -> None:
        super().__init__(["--fal-tls", cert_dir, *args])
        self.fal_url = ""
        self.fal_ca = ""

    def __enter__(self) -> FalEmulator:
        super().__enter__()
        if "fal_url" not in self.fields:
            self.__exit__()
            raise RuntimeError(f"emulator did not start its fal front: {self.fields!r}")
        self.fal_url, self.fal_ca = self.fields["fal_url"], self.fields["fal_ca"]
        return self


# -- workers (run in a subprocess: `python -m benchmarks.peers --worker NAME ...`) --------------


async def _sdk_worker(args: argparse.Namespace, prompts: list[str]) -> list[list[Any]]:
    from nanobanana_async import Client

    from .polling import adaptive, fixed

    policy = adaptive(args.scale)
    if args.worker == "sdk-fixed":
        # The gather loop's schedule (every 3 s from submit, no learning): what the SDK's own
        # per-request path costs, apart from where its learned schedule puts the polls.
        policy = fixed(DOCS_INTERVAL * args.scale)
    done: list[list[Any]] = []
    async with Client(args.key, base_url=args.base_url, poll=policy) as client:
        if args.warmup:
            warm = (f"warm {args.tag} {i}" for i in range(args.warmup))
            async for _ in client.stream(warm, max_in_flight=args.concurrency):
                pass
        _mark()
        async for o in client.stream(prompts, max_in_flight=args.concurrency):
            done.append([o.request_id, time.monotonic(), bool(o.ok)])
    return done


async def _fal_worker(args: argparse.Namespace, prompts: list[str]) -> list[list[Any]]:
    # The environment (FAL_QUEUE_RUN_HOST, FAL_KEY, SSL_CERT_FILE) was set by the parent: fal
    # reads its hosts at import time.
    import fal_client

    client = fal_client.AsyncClient(key=args.key)
    sem = asyncio.Semaphore(args.concurrency)

    async def one(prompt: str) -> list[Any]:
        async with sem:
            handle = await client.submit(FAL_APP, arguments={"prompt": prompt})
            try:
                result = await handle.get()
            except fal_client.FalClientError:
                return [handle.request_id, time.monotonic(), False]
            return [handle.request_id, time.monotonic(), bool(result.get("images"))]

    _mark()
    return list(await asyncio.gather(*(one(p) for p in prompts)))


async def _gather_worker(args: argparse.Namespace, prompts: list[str]) -> list[list[Any]]:
    import aiohttp

    interval = DOCS_INTERVAL * args.scale
    sem = asyncio.Semaphore(args.concurrency)
    headers = {"Authorization": f"Bearer {args.key}"}
    create_url = f"{args.base_url}/v1/queue/nano_banana_pro"

    async with aiohttp.ClientSession(headers=headers) as session:

        async def one(prompt: str) -> list[Any]:
            async with sem:
                async with session.post(create_url, json={"prompt": prompt}) as resp:
                    resp.raise_for_status()
                    task = await resp.json()
                while True:
                    await asyncio.sleep(interval)
                    async with session.get(task["status_url"]) as resp:
                        status = await resp.json()
                    if status["status"] == "COMPLETED":
                        break
                async with session.get(task["response_url"]) as resp:
                    ok = resp.status == 200 and "outputs" in await resp.json()
                return [task["request_id"], time.monotonic(), ok]

        _mark()
        return list(await asyncio.gather(*(one(p) for p in prompts)))


_START: dict[str, float] = {}


def _mark() -> None:
    """Start the measured window (after imports and any warm-up)."""
    _START["wall"], _START["cpu"] = time.monotonic(), cpu_seconds()
    _START["sleeps"] = _voluntary_switches()
    _GC.restart()


# Collections inside the window (``_mark`` starts it): see GcPauses for why they are shown apart.
_GC = GcPauses(on=False)


def _voluntary_switches() -> float:
    """Times the process has blocked so far (each one a wake-up later: on Linux 0.1-0.3 ms
    of CPU when it slept for long, which is what sets a client's CPU at a web backend's pace)."""
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw)


WORKERS: dict[
    str, Callable[[argparse.Namespace, list[str]], Coroutine[Any, Any, list[list[Any]]]]
] = {
    "sdk": _sdk_worker,
    "sdk-fixed": _sdk_worker,
    "fal-client": _fal_worker,
    "gather": _gather_worker,
}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Run one peer's batch and print its own figures as one JSON line."""
    prompts = [f"measure {args.tag} {i}" for i in range(args.tasks)]
    gc.callbacks.append(_GC.on_gc)
    try:
        done = asyncio.run(WORKERS[args.worker](args, prompts))
    finally:
        gc.callbacks.remove(_GC.on_gc)
    out = {
        "wall": time.monotonic() - _START["wall"],
        "cpu": cpu_seconds() - _START["cpu"],
        "wakeups": _voluntary_switches() - _START["sleeps"],
        "gc_seconds": _GC.total,
        "gc_collections": {"young": _GC.count[0] + _GC.count[1], "full": _GC.count[2]},
        "peak_rss_mb": peak_rss_mb(),
        "done": done,
    }
    print(json.dumps(out), flush=True)
    return out


# -- the parent --------------------------------------------------------------------------------


def _run_peer(emu: FalEmulator, peer: str, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """One peer's batch in a subprocess, scored against the emulator's counters."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if peer == "fal-client":
        host = emu.fal_url.removeprefix("https://")
        env.update(
            FAL_QUEUE_RUN_HOST=host,
            FAL_RUN_HOST=host,
            FAL_KEY=emu.api_key,
            SSL_CERT_FILE=emu.fal_ca,
        )
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.peers",
        "--worker",
        peer,
        "--base-url",
        emu.base_url,
        "--key",
        emu.api_key,
        "--tasks",
        str(args.tasks),
        "--concurrency",
        str(args.concurrency),
        "--warmup",
        str(args.warmup if peer.startswith("sdk") else 0),
        "--scale",
        str(args.scale),
        "--tag",
        tag,
    ]
    before = emu.stats()
    emu_cpu = _proc_cpu(emu)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        return {"error": f"{peer} worker exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    emu_cpu = _proc_cpu(emu) - emu_cpu
    stats = emu.stats(tasks=True)
    ids, requests, delays = score(stats, out["done"], args.scale)
    return {
        "wall_s": out["wall"],
        "requests": requests,
        "cpu_ms_per_request": 1000 * out["cpu"] / max(1, requests),
        "requests_per_task": requests / max(1, len(ids)),
        "wakeups_per_request": out["wakeups"] / max(1, requests),
        "gc_ms_per_request": 1000 * out["gc_seconds"] / max(1, requests),
        "gc_collections": out["gc_collections"],
        "requests_delta_all": stats["requests"] - before["requests"],
        "client_cpu_s": out["cpu"],
        "client_peak_rss_mb": out["peak_rss_mb"],
        "emulator_cpu_s": emu_cpu,
        "mean_delay_s": statistics.fmean(delays) if delays else float("nan"),
        "p95_delay_s": percentile(delays, 0.95),
        "ok": sum(1 for d in out["done"] if d[2]),
        "tasks": len(out["done"]),
    }


def score(
    stats: dict[str, Any], done: list[list[Any]], scale: float
) -> tuple[list[str], int, list[float]]:
    """A peer's request ids, its requests (creates + status and result polls, from the
    emulator's counters) and detection delays in service seconds."""
    ids = [d[0] for d in done if d[0] is not None]
    polls = sum(stats["status_polls"].get(i, 0) + stats["result_polls"].get(i, 0) for i in ids)
    delays = [
        (t - stats["tasks"][i]["completed_at"]) / scale
        for i, t, _ in done
        if i in stats["tasks"] and stats["tasks"][i]["completed_at"] is not None
    ]
    return ids, len(ids) + polls, delays


def emulator_args(scale: float) -> list[str]:
    """The emulator's workload for P5: lognormal(MEDIAN, SIGMA) × ``scale``, nothing queued."""
    return lognormal_emulator_args(MEDIAN, SIGMA, scale, seed=5)


def _proc_cpu(emu: StandaloneEmulator) -> float:
    """User + system CPU seconds of the emulator process (server cost of a peer, TLS included)."""
    assert emu.proc is not None
    with open(f"/proc/{emu.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sdk_commit() -> str | None:
    """The commit the SDK was measured at (``+uncommitted`` when its files differ); None
    outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "nanobanana_async"],
            cwd=root,
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")


def _fal_unavailable() -> str | None:
    if importlib.util.find_spec("fal_client") is None:
        return "fal-client is not installed (pip install fal-client==1.0.3)"
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All peers, `repeats` times each, against one emulator process."""
    skipped: dict[str, str] = {}
    reason = _fal_unavailable()
    if reason:
        skipped["fal-client"] = reason
    names = PEERS + (("sdk-fixed",) if getattr(args, "real_time", False) else ())
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in names if p not in skipped}
    with (
        tempfile.TemporaryDirectory(prefix="peers-tls-") as cert_dir,
        FalEmulator(emulator_args(args.scale), cert_dir) as emu,
    ):
        for repeat in range(args.repeats):
            for peer in list(runs):
                result = _run_peer(emu, peer, args, f"{repeat}-{peer}")
                if "error" in result:
                    skipped[peer] = result["error"]
                    del runs[peer]
                    continue
                runs[peer].append(result)
    summary: dict[str, Any] = {}
    for peer, results in runs.items():
        summary[peer] = {
            key: median_spread([r[key] for r in results])
            for key in (
                "wall_s",
                "requests",
                "requests_per_task",
                "client_cpu_s",
                "cpu_ms_per_request",
                "wakeups_per_request",
                "gc_ms_per_request",
                "client_peak_rss_mb",
                "emulator_cpu_s",
                "mean_delay_s",
                "p95_delay_s",
            )
        }
        summary[peer]["ok"] = [r["ok"] for r in results]
        summary[peer]["runs"] = results
    ratio = cpu_ratio(runs.get("sdk", []), runs.get("gather", []))
    fixed_ratio = cpu_ratio(runs.get("sdk-fixed", []), runs.get("gather", []))
    fal_version = None
    if "fal-client" not in skipped or "not installed" not in skipped["fal-client"]:
        fal_version = importlib.metadata.version("fal-client")
    return {
        "scale": args.scale,
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "warmup_sdk": args.warmup,
        "repeats": args.repeats,
        "poll_intervals_real_s": {
            "sdk": "adaptive (default PollPolicy × scale)",
            "sdk-fixed": DOCS_INTERVAL * args.scale,
            "fal-client": FAL_DEFAULT_INTERVAL,
            "gather": DOCS_INTERVAL * args.scale,
        },
        "fal_client_version": fal_version,
        "real_time": bool(getattr(args, "real_time", False)),
        "sdk_commit": sdk_commit(),
        "sdk_over_gather_cpu_per_request": ratio,
        "sdk_fixed_over_gather_cpu_per_request": fixed_ratio,
        "peers": summary,
        "skipped": skipped,
    }


def cpu_ratio(sdk: list[dict[str, Any]], gather: list[dict[str, Any]]) -> dict[str, float] | None:
    """SDK ÷ gather client CPU per request, paired by repeat (median, min, max); None if either
    peer has no run."""
    return _paired_ratio(sdk, gather, _cpu_per_request)


def _paired_ratio(
    sdk: list[dict[str, Any]],
    gather: list[dict[str, Any]],
    per_run: Callable[[dict[str, Any]], float],
    needs: str | None = None,
) -> dict[str, float] | None:
    """``per_run`` of the SDK ÷ of gather, repeat by repeat (median, min, max); None if no pair,
    or if a paired run was saved without the field ``needs``."""
    if needs is not None and any(
        needs not in run for pair in zip(sdk, gather, strict=False) for run in pair
    ):
        return None
    ratios = [per_run(s) / per_run(g) for s, g in zip(sdk, gather, strict=False)]
    return median_spread(ratios) if ratios else None


def _cpu_per_request(run: dict[str, Any]) -> float:
    """Client CPU ms per request of one run (results saved before the field: from its parts)."""
    if "cpu_ms_per_request" in run:
        return float(run["cpu_ms_per_request"])
    return 1000 * float(run["client_cpu_s"]) / max(1, int(run["requests"]))


def cpu_per_request(peer: dict[str, Any]) -> float:
    """A peer's median client CPU ms per request (over its runs)."""
    if "cpu_ms_per_request" in peer:
        return float(peer["cpu_ms_per_request"]["median"])
    return statistics.median(_cpu_per_request(r) for r in peer["runs"])


def cpu_per_task_ratio(
    sdk: list[dict[str, Any]], gather: list[dict[str, Any]]
) -> dict[str, float] | None:
    """SDK ÷ gather client CPU per task, paired by repeat; None if a run lacks its task count.

    Beside the per-request figure: the SDK's result route answers the poll that finds a task
    done, so it sends fewer requests per task than the gather loop (status, then result).
    """
    return _paired_ratio(
        sdk, gather, lambda run: run["client_cpu_s"] / max(1, run["tasks"]), needs="tasks"
    )


def cpu_outside_gc_ratio(
    sdk: list[dict[str, Any]], gather: list[dict[str, Any]]
) -> dict[str, float] | None:
    """SDK ÷ gather client CPU per request less the GC pauses, paired; None without GC figures."""
    return _paired_ratio(
        sdk,
        gather,
        lambda run: _cpu_per_request(run) - float(run["gc_ms_per_request"]),
        needs="gc_ms_per_request",
    )


def sdk_over_gather(data: dict[str, Any]) -> dict[str, float] | None:
    """The saved SDK ÷ gather ratio of CPU per request (computed for results saved without it)."""
    if "sdk_over_gather_cpu_per_request" in data:
        ratio: dict[str, float] | None = data["sdk_over_gather_cpu_per_request"]
        return ratio
    peers = data.get("peers", {})
    if "sdk" not in peers or "gather" not in peers:
        return None
    return cpu_ratio(peers["sdk"].get("runs", []), peers["gather"].get("runs", []))


def report(data: dict[str, Any]) -> str:
    """The peers table (medians; spread of wall time as min–max), then SDK ÷ gather CPU/request."""
    intervals = data["poll_intervals_real_s"]
    scale = data["scale"]
    rows = []
    for peer, s in data["peers"].items():
        interval = intervals[peer]
        shown = (
            "adaptive" if isinstance(interval, str) else f"{interval:g} s (={interval / scale:g})"
        )
        rows.append(
            [
                peer,
                shown,
                s["wall_s"]["median"],
                f"{s['wall_s']['min']:.3g}–{s['wall_s']['max']:.3g}",
                s["requests"]["median"],
                s["requests_per_task"]["median"],
                s["client_cpu_s"]["median"],
                cpu_per_request(s),
                s["gc_ms_per_request"]["median"] if "gc_ms_per_request" in s else "—",
                s["wakeups_per_request"]["median"] if "wakeups_per_request" in s else "—",
                s["client_peak_rss_mb"]["median"],
                s["emulator_cpu_s"]["median"],
                s["mean_delay_s"]["median"],
                s["p95_delay_s"]["median"],
                f"{min(s['ok'])}/{data['tasks']}",
            ]
        )
    header = [
        "peer",
        "poll interval",
        "wall s",
        "spread",
        "requests",
        "req/task",
        "client CPU s",
        "CPU ms/req",
        "of which GC",
        "wake-ups/req",
        "peak RSS MiB",
        "emulator CPU s",
        "mean delay s*",
        "p95 delay s*",
        "ok",
    ]
    lines = [table(rows, header), "* service seconds (real delay ÷ time scale)"]
    ratio = sdk_over_gather(data)
    if ratio is not None:
        spread = f" ({ratio['min']:.2f}–{ratio['max']:.2f})" if ratio["min"] != ratio["max"] else ""
        lines.append(
            f"\nClient CPU per request, SDK ÷ gather: **{ratio['median']:.2f}×**{spread} "
            "(paired by repeat)."
        )
        peers = data["peers"]
        sdk_runs = peers.get("sdk", {}).get("runs", [])
        gather_runs = peers.get("gather", {}).get("runs", [])
        per_task = cpu_per_task_ratio(sdk_runs, gather_runs)
        if per_task is not None:
            lines.append(
                f"Client CPU per task, SDK ÷ gather: **{per_task['median']:.2f}×** "
                f"({per_task['min']:.2f}–{per_task['max']:.2f}): the SDK sends fewer requests "
                "per task (the poll that finds a task done brings its result)."
            )
        outside = cpu_outside_gc_ratio(sdk_runs, gather_runs)
        if outside is not None:
            lines.append(
                f"Client CPU per request outside garbage collection, SDK ÷ gather: "
                f"**{outside['median']:.2f}×** ({outside['min']:.2f}–{outside['max']:.2f}): "
                "a full collection walks the whole process, imports included, and lands in one "
                "short window but not in another."
            )
    fixed = data.get("sdk_fixed_over_gather_cpu_per_request")
    if fixed is not None:
        lines.append(
            f"The SDK on the gather loop's schedule (sdk-fixed: every 3 s, no learning) ÷ gather: "
            f"**{fixed['median']:.2f}×**. The difference to the first ratio is what learning costs "
            "or saves: the model's work, and the wake-ups of its schedule (each one 0.1–0.3 ms of "
            "CPU after a long sleep)."
        )
    if data.get("sdk_commit"):
        lines.append(f"\nSDK measured at commit {data['sdk_commit']}.")
    for peer, why in data["skipped"].items():
        lines.append(f"{peer}: NOT MEASURED — {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run P5 and print its table (or, with --worker, one peer's batch as JSON)."""
    parser = argparse.ArgumentParser(prog="benchmarks peers")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--real-time",
        action="store_true",
        help="issue 14's web-backend pace: scale 1.0, 200 tasks, 50 in flight, 40 warm-up "
        "(saved to results/peers_realtime.json)",
    )
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100, help="N: in flight per peer")
    parser.add_argument("--warmup", type=int, default=100, help="SDK warm-up tasks, not counted")
    parser.add_argument("--repeats", type=int, default=None, help="3 (real time: 1)")
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    name = "peers"
    if args.real_time:
        name = "peers_realtime"
        for key, value in REAL_TIME.items():
            if key != "repeats" or args.repeats is None:
                setattr(args, key, value)
        if args.quick:
            args.tasks, args.warmup, args.repeats = REAL_TIME_QUICK_TASKS, REAL_TIME_QUICK_WARMUP, 1
    elif args.quick:
        args.tasks, args.repeats = 100, 1
    if args.repeats is None:
        args.repeats = 3
    data = run(args)
    print(
        f"P5 peers: lognormal(median {MEDIAN} s, σ {SIGMA}) × scale {args.scale}, "
        f"{args.tasks} tasks, {args.concurrency} in flight, {args.repeats} run(s) each"
    )
    print(report(data))
    save(name, data, quick=args.quick)
    return data


if __name__ == "__main__":
    main()
