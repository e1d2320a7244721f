"""The end of a run: report.json, the summary table, the --json summary and the exit code."""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import attrs

from .._version import __version__
from ._batch import EXIT_INTERRUPTED, RunResult
from ._ui import percentile, print_table

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "exit_code", "finish"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def totals(result: RunResult) -> dict[str, Any]:
    """Counts, wall time, requests per task and latency percentiles of a run."""
    items = result.items.values()
    latencies = [i.latency for i in items if i.latency is not None]
    sent = result.stats.requests_sent if result.stats is not None else 0
    n = len(result.items)
    return {
        "items": n,
        "succeeded": sum(1 for i in items if i.ok),
        "failed": sum(1 for i in items if not i.ok),
        "resumed": sum(1 for i in items if i.resumed),
        "bad_lines": len(result.bad_lines),
        "wall_seconds": round(result.wall, 3),
        "requests_sent": sent,
        "requests_per_task": round(sent / n, 2) if n else None,
        "latency_p50": _round(percentile(latencies, 0.5)),
        "latency_p95": _round(percentile(latencies, 0.95)),
    }


def exit_code(result: RunResult, expected_failures: Collection[int] = ()) -> int:
    """130 if interrupted, 1 if an item failed (other than ``expected_failures``), else 0."""
    if result.interrupted:
        return EXIT_INTERRUPTED
    bad = [i for i in result.items.values() if not i.ok and i.index not in expected_failures]
    missing = [i for i in expected_failures if i in result.items and result.items[i].ok]
    return EXIT_FAILED if bad or missing else EXIT_OK


def _write_report(path: Path, document: dict[str, Any]) -> None:
    # Written beside and renamed, so a crash never leaves half a report.
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temp, path)


def _hint(result: RunResult, command: str, detach: bool) -> str:
    if detach:
        return (
            f"interrupted ({result.interrupted}); the remote tasks keep running: "
            f"rerun `{command}` to re-attach to them and download the rest"
        )
    return (
        f"interrupted ({result.interrupted}); the running tasks were cancelled (a rerun reports "
        f"them as cancelled; use --detach to keep them running instead). Rerun `{command}` to "
        "resume the rest: finished and submitted items are never created twice"
    )


def finish(
    result: RunResult,
    *,
    out_dir: Path,
    journal: Path,
    title: str,
    as_json: bool,
    command: str,
    detach: bool = False,
    expected_failures: Collection[int] = (),
) -> int:
    """Write report.json, print the summary (table or JSON) and return the exit code."""
    code = exit_code(result, expected_failures)
    tally = totals(result)
    stats = attrs.asdict(result.stats) if result.stats is not None else None
    document = {
        "version": __version__,
        "exit_code": code,
        "interrupted": result.interrupted,
        "journal": str(journal),
        "totals": tally,
        "client_stats": stats,
        "bad_lines": [attrs.asdict(b) for b in result.bad_lines],
        "items": [attrs.asdict(result.items[i]) for i in sorted(result.items)],
    }
    report_path = out_dir / "report.json"
    _write_report(report_path, document)
    if as_json:
        failures = [
            {
                "index": i.index,
                "state": i.state,
                "error_type": i.error_type,
                "request_id": i.request_id,
            }
            for i in document_items(result)
            if not i.ok
        ]
        summary = {k: v for k, v in document.items() if k != "items"}
        summary.update(report=str(report_path), out_dir=str(out_dir), failures=failures)
        print(json.dumps(summary, indent=2))
        return code
    p50, p95, per_task = tally["latency_p50"], tally["latency_p95"], tally["requests_per_task"]
    rows = [
        ("done", str(tally["succeeded"])),
        ("failed", str(tally["failed"])),
        ("wall time", f"{result.wall:.1f} s"),
        ("requests per task", "-" if per_task is None else f"{per_task:.2f}"),
        ("latency p50 / p95", "-" if p50 is None else f"{p50:.2f} s / {p95:.2f} s"),
    ]
    if tally["resumed"]:
        rows.insert(2, ("replayed from journal", str(tally["resumed"])))
    if tally["bad_lines"]:
        rows.insert(2, ("bad input lines", str(tally["bad_lines"])))
    print_table(title, rows)
    for item in document_items(result):
        if not item.ok and item.index not in expected_failures:
            print(f"  item {item.index} {item.state}: {item.error_type}: {item.error_message}")
    print(f"files and report.json in {out_dir}; journal {journal}")
    if result.interrupted:
        print(_hint(result, command, detach))
    return code


def document_items(result: RunResult) -> list[Any]:
    """The item reports in index order."""
    return [result.items[i] for i in sorted(result.items)]
