"""Regenerate ``docs/benchmarks.md`` (tables) and ``docs/img/bench_*.png`` (plots) from results.

Reads whatever ``benchmarks/results/*.json`` exist; a scenario not yet run is listed as such.
Plots need matplotlib (the ``bench`` extra); without it the page is written with tables only.
Every target in ``TARGETS`` is checked against the figures it names: the page says met or missed
from the numbers, lists every miss at the top, and labels figures from a quick (smoke) run.

    python -m benchmarks report
    python -m benchmarks.report --quick   # print the page for results/quick/ (writes nothing)
"""

from __future__ import annotations

import argparse
import json
import operator
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from . import overhead, peers, polling, ratelimit, scale, web_backend
from ._harness import RESULTS

DOCS = Path(__file__).resolve().parent.parent / "docs"
IMG = DOCS / "img"

# (results name, title, table renderer, blurb) per section of the page, in order.
SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], str], str]] = [
    (
        "overhead",
        "P1 — overhead ceiling",
        lambda data: _overhead_table(data),
        "Instant service (each task is one create and one poll). The SDK's tasks/s against a "
        "plain aiohttp loop doing the same two requests per task, in the same run. Both sides "
        "are bound by the client's CPU, not the server (a minimal aiohttp app in its own "
        "process): what separates them is the SDK's work per task (recording and pacing each "
        "request, the create's shield, parsing into typed models, the outcome stream). "
        "`python -m benchmarks profile` breaks the SDK's CPU down by area; with `--offline` it "
        "first measures the SDK's own work per task without sockets. Below the table, the "
        "same pairing for polls of running tasks (the server answers 202 first), the request "
        "a web backend sends most (`profile --pending 8` breaks it down).",
    ),
    (
        "polling",
        "P2 — polling efficiency",
        polling.report,
        "Lognormal service time (median 20 s, σ 0.5) run at a time scale; figures in service "
        "seconds. Delay = when the detecting poll was sent − the server's completion time. "
        "'√hazard optimum polls' is the optimum schedule's polls/task at the same mean delay, "
        "from the true distribution. Targets: within 10% of the optimum, Pareto-better than "
        "every fixed interval (at the same mean delay, each fixed interval is farther above the "
        "optimum than every adaptive policy). Fixed 0.1 s and 0.5 s cannot be sustained at this time scale "
        "(thousands of polls/s): the client saturates and their delays exceed the interval's.",
    ),
    (
        "polling_learn",
        "P6 — learning the poll schedule",
        polling.report_learning,
        "The real scheduler's decisions in a discrete-event simulation (and emulator checks): "
        "the censored maximum-likelihood fit against the old midpoint rule, for short tasks, "
        "tight targets, a 3x latency step, a 1K/4K mix and instant tasks "
        "(`python -m benchmarks polling --part learning`).",
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
    (
        "peers_realtime",
        "P5 (real time) — peers at a web backend's pace",
        peers.report,
        "The same three clients at time scale 1.0 (200 tasks of median 20 s, 50 in flight, 40 "
        "SDK warm-up tasks; `python -m benchmarks peers --real-time`), beside the scaled run "
        "above. At this pace no client is busy: the cost is the wake-ups between polls, so the "
        "figure that matters is client CPU per request (measured after imports and warm-up). "
        "Target: the SDK's at most 1.2× the gather loop's. Wake-ups/req counts the times the "
        "client slept and woke (each 0.1–0.3 ms of CPU after a long sleep on this machine); "
        "`sdk-fixed` is the SDK on the gather loop's own schedule (every 3 s, no learning), "
        "which separates the SDK's per-request path from what its learned schedule costs or "
        "saves: the model's own work, and wake-ups (learned polls share instants on a "
        "power-of-two grid, so the SDK can wake less often than the fixed schedule). Single "
        "real-time runs on this VM vary by about ±15% from one to the next: read the ratios "
        "paired by repeat.",
    ),
    (
        "web_backend",
        "Web backend — health probe during a burst",
        web_backend.report,
        "An aiohttp web app that calls the SDK (one shared `Client`) takes a burst of 200 "
        "requests, the first 50 dropped after 0.5 s (their tasks cancelled), while a health "
        "route is probed every few ms: how long the health route waits while the SDK works on "
        "the same event loop, and the app's CPU per API request (web server and prober "
        "included: compare it between SDK versions only). The loop's longest iteration is in "
        "CPU time of its thread, in full and less the garbage collector's pauses (a full "
        "collection walks the whole app's heap, ~40,000 objects after imports, most not the "
        "SDK's); the last row is the same burst through the app with `/generate` sleeping "
        "instead of calling the SDK. Same scenario as "
        "`tests/reliability/test_web_backend.py`; `python -m benchmarks web_backend`.",
    ),
]

# The command that measures a section, where it is not `python -m benchmarks <name>`.
RUN = {"peers_realtime": "peers --real-time"}

QUICK_NOTE = (
    "**Quick run** (`--quick`: fewer tasks, repeats and sizes): smoke figures, not for the "
    "record; the verdicts below only say what these figures show."
)


@attrs.frozen
class Check:
    """One target checked against one measured figure."""

    section: str
    target: str  # e.g. "429 share ≤ 2% (R = 50 req/s)"
    figure: float | None
    shown: str  # the figure as printed
    met: bool | None  # None: the figure is missing

    @property
    def verdict(self) -> str:
        return "not measured" if self.met is None else "met" if self.met else "**MISSED**"


_OPS: dict[str, Callable[[float, float], bool]] = {"≥": operator.ge, "≤": operator.le}


def _check(
    section: str, what: str, figure: float | None, op: str, limit: float, fmt: str = "{:.3g}"
) -> Check:
    shown_limit = fmt.format(limit)
    target = f"{what} {op} {shown_limit}"
    if figure is None:
        return Check(section, target, None, "—", None)
    return Check(section, target, figure, fmt.format(figure), _OPS[op](figure, limit))


def _overhead(data: dict[str, Any]) -> Iterator[Check]:
    ratio = data.get("ratio", {}).get("median")
    yield _check("P1", "SDK ÷ plain aiohttp tasks/s, same concurrency", ratio, "≥", 0.85, "{:.2f}")


ADAPTIVE = ("default", "target")


def _polling(data: dict[str, Any]) -> Iterator[Check]:
    policies = data["policies"]
    adaptive = {n: s for n, s in policies.items() if n.startswith(ADAPTIVE)}
    for name, s in adaptive.items():
        ratio = s.get("ratio_to_optimum")
        yield _check("P2", f"{name}: polls ÷ √hazard optimum", ratio, "≤", 1.10, "{:.2f}")
    worst = max((s["ratio_to_optimum"] or 0.0 for s in adaptive.values()), default=None)
    for name, f in policies.items():
        if name in adaptive:
            continue
        ratio = f.get("ratio_to_optimum")
        target = f"{name}: polls ÷ optimum, above every adaptive policy's"
        if ratio is None or worst is None:
            yield Check("P2", target, None, "—", None)
            continue
        yield Check("P2", f"{target} ({worst:.2f})", ratio, f"{ratio:.2f}", ratio > worst)


def _scale(data: dict[str, Any]) -> Iterator[Check]:
    sizes = data["sizes"]
    at = {r["in_flight"]: r for r in sizes}
    rss = at[10000]["rss_mb"] if 10000 in at else None
    yield _check("P3", "client RSS MB at 10,000 in flight", rss, "≤", 150, "{:.0f}")
    worst = max(r["cpu_per_poll_ratio"] for r in sizes)
    span = f"{sizes[0]['in_flight']:,} to {sizes[-1]['in_flight']:,}"
    yield _check("P3", f"CPU per poll × vs smallest, {span}", worst, "≤", 1.3, "{:.2f}")


def _ratelimit(data: dict[str, Any]) -> Iterator[Check]:
    for r in data["runs"]:
        at = f"(R = {r['rate_limit']:g} req/s)"
        yield _check("P4", f"useful/R {at}", r["utilisation"], "≥", 0.9, "{:.2f}")
        yield _check("P4", f"overall 429 share {at}", 100 * r["share_429"], "≤", 2, "{:.2f}%")


def _peers_realtime(data: dict[str, Any]) -> Iterator[Check]:
    ratio = peers.sdk_over_gather(data)
    figure = None if ratio is None else ratio["median"]
    yield _check(
        "P5", "real time: SDK ÷ gather client CPU per request", figure, "≤", 1.2, "{:.2f}×"
    )


def _learning(data: dict[str, Any]) -> Iterator[Check]:
    for target, shown, met in polling.learning_targets(data):
        yield Check("P6", target, None, shown, met)


TARGETS: dict[str, Callable[[dict[str, Any]], Iterator[Check]]] = {
    "overhead": _overhead,
    "polling": _polling,
    "scale": _scale,
    "ratelimit": _ratelimit,
    "peers_realtime": _peers_realtime,
    "polling_learn": _learning,
}
# Sections whose own tables already show their verdicts (counted at the top all the same).
SELF_JUDGED = frozenset({"polling_learn"})


def checks(name: str, data: dict[str, Any]) -> list[Check]:
    """Every target of a scenario, checked against its figures."""
    judge = TARGETS.get(name)
    return list(judge(data)) if judge is not None else []


def verdict_table(found: list[Check]) -> str:
    rows = [f"| {c.target} | {c.shown} | {c.verdict} |" for c in found]
    return "\n".join(["| target | measured | verdict |", "|---|---|---|", *rows])


def _overhead_table(data: dict[str, Any]) -> str:
    """P1's table."""
    return overhead.report(data)


def load(name: str, *, quick: bool = False) -> dict[str, Any] | None:
    """A scenario's saved results (``results/quick/`` for quick runs), or None."""
    path = (RESULTS / "quick" if quick else RESULTS) / f"{name}.json"
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


def render(*, quick: bool = False) -> str:
    """The Markdown of the benchmarks page (of the quick runs' results with ``quick``)."""
    results = {n: d for n, *_ in SECTIONS if (d := load(n, quick=quick)) is not None}
    images = {} if quick else plots(results)
    judged = {name: checks(name, data) for name, data in results.items()}
    missed = [c for found in judged.values() for c in found if c.met is False]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m benchmarks all` (or `... all --quick` for a smoke run); "
        "every figure is the median of repeated runs with the spread where shown, and every "
        "comparison is a ratio measured in one run. The emulator runs in its own process so "
        "that client and server do not share a core. Every verdict is computed from the "
        "figures by `benchmarks/report.py` (its `TARGETS`).",
        "",
    ]
    if quick:
        lines += [QUICK_NOTE, ""]
    total = sum(len(found) for found in judged.values())
    if missed:
        lines += [f"**{len(missed)} of {total} targets missed:**", ""]
        lines += [f"- {c.section}: {c.target} — measured {c.shown}" for c in missed]
    elif total:
        lines += [f"All {total} targets checked are met."]
    else:
        lines += ["No results to check yet."]
    lines.append("")
    for name, title, render_table, blurb in SECTIONS:
        lines += [f"## {title}", "", blurb, ""]
        data = results.get(name)
        if data is None:
            lines += [f"_Not run yet: `python -m benchmarks {RUN.get(name, name)}`._", ""]
            continue
        machine = data.get("machine", {})
        if data.get("quick") or quick:
            lines += [QUICK_NOTE, ""]
        lines += [
            f"Measured {machine.get('date', '?')} on {machine.get('cpus', '?')} cores, "
            f"Python {machine.get('python', '?')}.",
            "",
            render_table(data),
            "",
        ]
        if judged[name] and name not in SELF_JUDGED:
            lines += [verdict_table(judged[name]), ""]
        if name in images:
            lines += [f"![{title}]({images[name]})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Write docs/benchmarks.md; with ``--quick``, print the quick runs' page instead."""
    parser = argparse.ArgumentParser(prog="benchmarks report")
    parser.add_argument(
        "--quick", action="store_true", help="print the page for results/quick/ (writes nothing)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        print(render(quick=True))
        return
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.md").write_text(render())
    print(f"wrote {DOCS / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
