"""The end of a run: report.json, the summary table, the --json summary and the exit code."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import attrs

from .._version import __version__
from ..errors import (
    AuthenticationError,
    BatchAbortedError,
    InsufficientCreditsError,
    PermissionDeniedError,
    RateLimitError,
)
from ._batch import EXIT_INTERRUPTED, RunResult
from ._ui import percentile, print_table

__all__ = [
    "EXIT_BAD_LINES",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "exit_code",
    "finish",
    "stop_line",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_LINES = 3  # every item read succeeded, but input lines were skipped as bad
EXIT_STOPPED = 4  # the batch stopped creating: the account cannot go on, or --max-creates
RESUME = "rerun the same command to resume"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _not_sent(result: RunResult, expected: int | None) -> int | None:
    # Only a stopped run delivers every task it created, so the rest was never sent.
    if result.stopped is None or expected is None:
        return None
    return max(0, expected - len(result.items) - len(result.bad_lines))


def totals(result: RunResult, expected: int | None = None) -> dict[str, Any]:
    """Counts, wall time, requests per task and latency percentiles of a run.

    ``expected``: the number of input lines (requests); with it, a stopped run counts the items
    it never sent (``not_sent``; None for a run that was not stopped).
    """
    items = result.items.values()
    latencies = [i.latency for i in items if i.latency is not None]
    sent = result.stats.requests_sent if result.stats is not None else 0
    n = len(result.items)
    return {
        "items": n,
        "succeeded": sum(1 for i in items if i.ok),
        "failed": sum(1 for i in items if not i.ok),
        "not_sent": _not_sent(result, expected),
        "resumed": sum(1 for i in items if i.resumed),
        "bad_lines": len(result.bad_lines),
        "wall_seconds": round(result.wall, 3),
        "requests_sent": sent,
        "requests_per_task": round(sent / n, 2) if n else None,
        "latency_p50": _round(percentile(latencies, 0.5)),
        "latency_p95": _round(percentile(latencies, 0.95)),
    }


def exit_code(result: RunResult, expected_failures: Collection[int] = ()) -> int:
    """The first that applies: 130 interrupted, 4 stopped (``BatchAbortedError``), 1 an item
    failed (other than ``expected_failures``), 3 input lines were skipped as bad, else 0."""
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.stopped is not None:
        return EXIT_STOPPED
    bad = [i for i in result.items.values() if not i.ok and i.index not in expected_failures]
    missing = [i for i in expected_failures if i in result.items and result.items[i].ok]
    if bad or missing:
        return EXIT_FAILED
    return EXIT_BAD_LINES if result.bad_lines else EXIT_OK


def stop_line(error: BatchAbortedError, *, max_creates: int | None, resume: str = RESUME) -> str:
    """One line saying why the batch stopped and what to do; ``resume`` is how to go on."""
    cause = error.cause
    if isinstance(cause, InsufficientCreditsError):
        todo = f"top up and {resume}"
    elif isinstance(cause, (AuthenticationError, PermissionDeniedError)):
        todo = f"check the API key (NANOBANANA_API_KEY or --api-key-file) and {resume}"
    elif isinstance(cause, RateLimitError):
        todo = f"wait for the rate limit to clear and {resume}"
    elif cause is None and max_creates is not None:
        return (
            f"stopped: --max-creates {max_creates} reached (creates of earlier runs with this "
            "journal count); rerun with a higher --max-creates to resume"
        )
    else:
        todo = resume
    reason = " ".join(str(error).split())  # one line, whatever the service put in its message
    return f"stopped: {reason}; {todo}"


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
    expected: int | None = None,
    max_creates: int | None = None,
    resume: str = RESUME,
    report_name: str = "report.json",
    shard: str | None = None,
) -> int:
    """Write ``report_name`` (report.json), print the summary (table or JSON), return the code.

    A stopped run (``result.stopped``) also prints one line on stderr: why, and how to resume.
    ``shard`` (``"I/N"``) is recorded in the report of a sharded run.
    """
    code = exit_code(result, expected_failures)
    tally = totals(result, expected)
    stats = attrs.asdict(result.stats) if result.stats is not None else None
    stopped = None
    if result.stopped is not None:
        cause = result.stopped.cause
        stopped = {
            "reason": str(result.stopped),
            "cause": type(cause).__name__ if cause is not None else None,
            "message": stop_line(result.stopped, max_creates=max_creates, resume=resume),
        }
    document = {
        "version": __version__,
        "exit_code": code,
        "interrupted": result.interrupted,
        "stopped": stopped,
        "journal": str(journal),
        "shard": shard,
        "totals": tally,
        "client_stats": stats,
        "bad_lines": [attrs.asdict(b) for b in result.bad_lines],
        "items": [attrs.asdict(result.items[i]) for i in sorted(result.items)],
    }
    report_path = out_dir / report_name
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
        _print_stopped(stopped)
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
        rows.insert(2, ("bad input lines (skipped)", str(tally["bad_lines"])))
    if tally["not_sent"]:
        rows.insert(2, ("not sent (stopped)", str(tally["not_sent"])))
    print_table(title, rows)
    for item in document_items(result):
        if not item.ok and item.index not in expected_failures:
            print(f"  item {item.index} {item.state}: {item.error_type}: {item.error_message}")
    for line in result.bad_lines:
        print(f"  skipped {line}")
    print(f"files and {report_name} in {out_dir}; journal {journal}")
    if result.interrupted:
        print(_hint(result, command, detach))
    _print_stopped(stopped)
    return code


def _print_stopped(stopped: dict[str, Any] | None) -> None:
    if stopped is not None:
        print(stopped["message"], file=sys.stderr)


def document_items(result: RunResult) -> list[Any]:
    """The item reports in index order."""
    return [result.items[i] for i in sorted(result.items)]
