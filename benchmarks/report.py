"""Regenerate ``docs/benchmarks.md`` (tables) and ``docs/img/bench_*.png`` (plots) from results.

Reads whatever ``benchmarks/results/*.json`` exist; a scenario not yet run is listed as such.
Plots need matplotlib (the ``bench`` extra); without it the page is written with tables only.

    python -m benchmarks report
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import overhead, peers, polling, ratelimit, scale
from ._harness import RESULTS

DOCS = Path(__file__).resolve().parent.parent / "docs"
IMG = DOCS / "img"

SECTIONS = [
    (
        "overhead",
        "P1 — overhead ceiling",
        overhead.report,
        "Instant service (each task is one create and one poll). The ceiling is plain aiohttp "
        "GETs against the same emulator at the same concurrency, in the same run; the ratio is "
        "SDK tasks/s ÷ (raw req/s ÷ 2). Target ≥ 0.8. **Missed** (about 0.4): both sides "
        "are bound by the client's CPU, not the emulator; two raw requests cost about 0.5 ms "
        "while a task costs the SDK 1.0–1.3 ms (a task per create and per poll, limiter "
        "borrows, pacer accounting, parsing into typed models). Persistent poll workers and a "
        "lighter result parser are the next steps.",
    ),
    (
        "polling",
        "P2 — polling efficiency",
        polling.report,
        "Lognormal service time (median 20 s, σ 0.5) run at a time scale; figures in service "
        "seconds. Delay = when the detecting poll was sent − the server's completion time. "
        "'√hazard optimum polls' is the optimum schedule's polls/task at the same mean delay, "
        "from the true distribution. Target: within 10% of the optimum, Pareto-better than "
        "every fixed interval. Fixed 0.1 s and 0.5 s cannot be sustained at this time scale "
        "(thousands of polls/s): the client saturates and their delays exceed the interval's.",
    ),
    (
        "scale",
        "P3 — scale",
        scale.report,
        "Tasks in flight at the same total poll rate. Targets: ≤ 150 MB at 10,000 in flight; "
        "CPU per poll ≤ 1.3× from 100 to 10,000.",
    ),
    (
        "ratelimit",
        "P4 — rate limit",
        ratelimit.report,
        "The emulator enforces R requests/s (burst R/10); the batch needs more. Useful = "
        "non-429 requests. Targets: useful/R ≥ 0.9, 429 share ≤ 2%. The first seconds, before "
        "the first 429 teaches the pacer the limit, are the settle phase.",
    ),
    (
        "peers",
        "P5 — peers in one run",
        peers.report,
        "The same lognormal workload through this SDK, fal-client (real PyPI package, over TLS "
        "to the emulator's fal-compatible front) and a hand-written asyncio.gather loop polling "
        "every 3 s (scaled), one emulator process, each client in its own process. fal-client's "
        "low requests/task is not efficiency: it is CPU-bound (its client CPU ≈ its wall time) "
        "and cannot keep its 0.1 s interval, hence its long detection delay.",
    ),
]


def load(name: str) -> dict[str, Any] | None:
    """A scenario's saved results, or None."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def plots(results: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Write the PNG plots; returns scenario name -> image path relative to docs/."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    IMG.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    data = results.get("polling")
    if data:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        curve = sorted(data["optimum"], key=lambda c: c["mean_delay"])
        ax.plot(
            [c["mean_delay"] for c in curve],
            [c["polls_per_task"] for c in curve],
            "k--",
            label="√hazard optimum (true distribution)",
        )
        for name, s in data["policies"].items():
            marker = "o" if name.startswith(("default", "target")) else "s"
            ax.plot(s["mean_delay_s"]["median"], s["polls_per_task"]["median"], marker, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("mean detection delay (service seconds)")
        ax.set_ylabel("polls per task")
        ax.set_title("P2: requests vs promptness (lower left is better)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(IMG / "bench_polling.png", dpi=110)
        plt.close(fig)
        made["polling"] = "img/bench_polling.png"
    data = results.get("scale")
    if data:
        sizes = [r["in_flight"] for r in data["sizes"]]
        fig, ax1 = plt.subplots(figsize=(7, 4))
        ax1.plot(sizes, [r["cpu_ms_per_poll"] for r in data["sizes"]], "o-", label="CPU ms/poll")
        ax1.set_xscale("log")
        ax1.set_xlabel("tasks in flight")
        ax1.set_ylabel("client CPU ms per poll")
        ax2 = ax1.twinx()
        ax2.plot(sizes, [r["rss_mb"] for r in data["sizes"]], "s--", color="tab:red")
        ax2.set_ylabel("client RSS MB", color="tab:red")
        ax1.set_title("P3: cost per poll and memory vs tasks in flight")
        fig.tight_layout()
        fig.savefig(IMG / "bench_scale.png", dpi=110)
        plt.close(fig)
        made["scale"] = "img/bench_scale.png"
    data = results.get("peers")
    if data and data.get("peers"):
        names = list(data["peers"])
        metrics = [
            ("wall_s", "wall s"),
            ("requests_per_task", "requests/task"),
            ("client_cpu_s", "client CPU s"),
            ("mean_delay_s", "mean delay s"),
        ]
        fig, axes = plt.subplots(1, len(metrics), figsize=(11, 3.4))
        for ax, (key, label) in zip(axes, metrics, strict=True):
            ax.bar(
                names,
                [data["peers"][n][key]["median"] for n in names],
                color=["tab:green", "tab:orange", "tab:blue"][: len(names)],
            )
            ax.set_title(label, fontsize=9)
            ax.tick_params(axis="x", labelsize=8)
        fig.suptitle("P5: the same workload through each client (lower is better)")
        fig.tight_layout()
        fig.savefig(IMG / "bench_peers.png", dpi=110)
        plt.close(fig)
        made["peers"] = "img/bench_peers.png"
    return made


def render() -> str:
    """The Markdown of the benchmarks page."""
    results = {name: data for name, *_ in SECTIONS if (data := load(name)) is not None}
    images = plots(results)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks all` (or `... all --quick` for a smoke run); "
        "every figure is the median of repeated runs with the spread where shown, and every "
        "comparison is a ratio measured in one run. The emulator runs in its own process so "
        "that client and server do not share a core.",
        "",
    ]
    for name, title, table, blurb in SECTIONS:
        lines += [f"## {title}", "", blurb, ""]
        data = results.get(name)
        if data is None:
            lines += [f"_Not run yet: `python -m benchmarks {name}`._", ""]
            continue
        machine = data.get("machine", {})
        lines += [
            f"Measured {machine.get('date', '?')} on {machine.get('cpus', '?')} cores, "
            f"Python {machine.get('python', '?')}.",
            "",
            table(data),
            "",
        ]
        if name in images:
            lines += [f"![{title}]({images[name]})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Write docs/benchmarks.md."""
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.md").write_text(render())
    print(f"wrote {DOCS / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
