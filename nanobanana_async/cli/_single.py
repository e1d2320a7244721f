"""The one-task commands (``generate``, ``status``, ``result``, ``cancel``) and ``report``."""

from __future__ import annotations

import argparse
import json
import shlex
import sqlite3
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs

from .._client import Client
from ..download import Downloader
from ..errors import NoImageError
from ..journal import Journal, JournalReport
from ..models import GenerationRequest, GenerationResult
from ._batch import Interrupt
from ._commands import EMULATOR_POLL, UsageError, client_kwargs, emulator_config
from ._summary import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from ._ui import print_table

__all__ = [
    "cancel_command",
    "generate_command",
    "report_command",
    "result_command",
    "status_command",
]


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


async def _open(stack: AsyncExitStack, args: argparse.Namespace) -> Client:
    if getattr(args, "emulator", False):
        from ..emulator import Emulator

        emu = await stack.enter_async_context(Emulator(emulator_config()))
        client = Client(emu.api_key, base_url=emu.base_url, poll=EMULATOR_POLL)
    else:
        client = Client(**client_kwargs(args))
    return await stack.enter_async_context(client)


async def _save(client: Client, result: GenerationResult, out: str | None) -> list[str]:
    if out is None:
        return []
    files = await Downloader(client, out).download(result, stem=result.request_id)
    return [str(f.path) for f in files]


def _print_result(result: GenerationResult, paths: list[str], as_json: bool) -> None:
    if as_json:
        print(
            _dump(
                {
                    "request_id": result.request_id,
                    "files": paths,
                    "text": result.text,
                    "outputs": [attrs.asdict(o) for o in result.outputs],
                }
            )
        )
        return
    print(f"request_id {result.request_id}")
    for path in paths:
        print(path)
    if not paths:
        for image in result.images:
            print(image.url)
    if not result.images:
        # By id the request is not known: this may be a text-only task, or a refusal.
        reason = result.metadata.get("finish_reason") or result.metadata.get("finishReason")
        print(f"no image (finish reason: {reason or 'not given'})")
    if result.text:
        print(result.text)


def _print_no_image(command: str, error: NoImageError, as_json: bool) -> int:
    """A task that finished without the image asked for: what the model said, and why; exit 1."""
    reason = error.metadata.get("finish_reason") or error.metadata.get("finishReason")
    if as_json:
        document = {
            "request_id": error.request_id,
            "error_type": error.error_type,
            "finish_reason": reason,
            "text": error.text,
            "files": [],
            "outputs": [attrs.asdict(o) for o in error.outputs],
        }
        print(_dump(document))
    else:
        print(f"request_id {error.request_id}")
        print(f"no image (finish reason: {reason or 'not given'})")
        print(error.text if error.text else "(the model returned no text)")
    print(
        f"nanobanana-async {command}: task {error.request_id} finished without an image "
        f"(finish reason: {reason or 'not given'})",
        file=sys.stderr,
    )
    return EXIT_FAILED


async def generate_command(args: argparse.Namespace) -> int:
    """``generate PROMPT --out DIR``: one task, its images saved, their paths printed."""
    try:
        request = GenerationRequest(
            args.prompt,
            image_urls=tuple(args.image_url or ()),
            aspect_ratio=args.aspect_ratio,
            image_size=args.image_size,
            response_modalities=("Text", "Image") if args.text else None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not args.emulator:
        client_kwargs(args)
    interrupt = Interrupt()
    # Installed around the client's close too: a second signal there exits at once.
    with interrupt.installed() as scope:
        async with AsyncExitStack() as stack:
            client = await _open(stack, args)
            with scope:
                try:
                    result = await client.generate(request)
                except NoImageError as exc:
                    return _print_no_image("generate", exc, args.json)
                paths = await _save(client, result, args.out)
                _print_result(result, paths, args.json)
    return EXIT_INTERRUPTED if interrupt.signal else EXIT_OK


async def status_command(args: argparse.Namespace) -> int:
    """``status ID``: the task's current state."""
    async with AsyncExitStack() as stack:
        client = await _open(stack, args)
        status = await client.status(args.id)
    if args.json:
        print(_dump(attrs.asdict(status)))
    else:
        position = f" (queue position {status.queue_position})" if status.queue_position else ""
        print(f"{args.id}: {status.state.value}{position}")
        if status.error_type or status.error_message:
            print(f"  {status.error_type}: {status.error_message}")
    return EXIT_OK


async def result_command(args: argparse.Namespace) -> int:
    """``result ID [--out DIR]``: wait for the task, print its outputs, optionally save them."""
    interrupt = Interrupt(
        abandon_note=f"the task keeps running (`nanobanana-async result {shlex.quote(args.id)}`)"
    )
    with interrupt.installed() as scope:
        async with AsyncExitStack() as stack:
            client = await _open(stack, args)
            with scope:
                # The task may belong to another process: Ctrl-C here must not cancel it.
                try:
                    result = await client.result(args.id, cancel_on_abandon=False)
                except NoImageError as exc:
                    return _print_no_image("result", exc, args.json)
                _print_result(result, await _save(client, result, args.out), args.json)
    return EXIT_INTERRUPTED if interrupt.signal else EXIT_OK


async def cancel_command(args: argparse.Namespace) -> int:
    """``cancel ID``: ask the service to cancel the task."""
    async with AsyncExitStack() as stack:
        client = await _open(stack, args)
        cancelled = await client.cancel(args.id)
    if args.json:
        print(_dump({"request_id": args.id, "cancelled": cancelled}))
    else:
        print(f"{args.id}: {'cancel requested' if cancelled else 'already finished'}")
    return EXIT_OK


NOT_SENT = "NOT_SENT"  # the error_type of a rejected item a stopped batch read but never sent


def _count_not_sent(path: str) -> int:
    """Rejected items that were never sent (a stopped batch), read-only like ``report_sync``."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    try:
        query = "SELECT COUNT(*) FROM items WHERE state = 'rejected' AND error_type = ?"
        count: int = conn.execute(query, (NOT_SENT,)).fetchone()[0]
    finally:
        conn.close()
    return count


def _journal_report(path: str) -> tuple[JournalReport, int]:
    """One journal's report and its count of items never sent (read-only)."""
    try:
        report = Journal.report_sync(path)
        rejected = report.counts.get("rejected", 0)
        not_sent = min(rejected, _count_not_sent(path)) if rejected else 0
    except (FileNotFoundError, OSError, sqlite3.Error) as exc:
        raise UsageError(str(exc)) from None
    return report, not_sent


def report_command(args: argparse.Namespace) -> int:
    """``report JOURNAL...``: counts by state, request ids and ambiguous items of journals.

    Rejected items are split: ``not sent`` (a stopped batch read them and never sent them) and
    ``rejected`` (the service refused the create); neither was created, a rerun creates both.
    Several journals (the shards of one batch) are merged into one report; their ambiguous
    items are named by journal, with each journal's own item numbers.
    """
    paths = list(dict.fromkeys(args.journal))  # a journal named twice counts once
    reports = [(path, *_journal_report(path)) for path in paths]
    if len(reports) == 1:
        path, report, not_sent = reports[0]
        unknown: list[tuple[str, tuple[int, ...]]] = [(path, report.unknown)]
        if args.json:
            print(_dump({**attrs.asdict(report), "not_sent": not_sent}))
            return EXIT_OK
        title = f"journal {path}"
    else:
        counts: dict[str, int] = {}
        for _, report, _ in reports:
            for state, n in report.counts.items():
                counts[state] = counts.get(state, 0) + n
        not_sent = sum(n for _, _, n in reports)
        ids = tuple(rid for _, report, _ in reports for rid in report.request_ids)
        unknown = [(path, report.unknown) for path, report, _ in reports]
        if args.json:
            document = {
                "journals": [
                    {"journal": path, **attrs.asdict(report), "not_sent": n}
                    for path, report, n in reports
                ],
                "counts": counts,
                "request_ids": ids,
                "unknown": [
                    {"journal": path, "index": i} for path, items in unknown for i in items
                ],
                "total": sum(report.total for _, report, _ in reports),
                "not_sent": not_sent,
            }
            print(_dump(document))
            return EXIT_OK
        report = JournalReport(counts, ids, (), sum(report.total for _, report, _ in reports))
        title = f"{len(reports)} journals"
    _print_report(title, report, not_sent, unknown)
    return EXIT_OK


def _print_report(
    title: str,
    report: JournalReport,
    not_sent: int,
    unknown: list[tuple[str, tuple[int, ...]]],
) -> None:
    rejected = report.counts.get("rejected", 0)
    rows = []
    for state, n in report.counts.items():
        if state == "rejected":
            if not_sent:
                rows.append(("not sent", str(not_sent)))
            n -= not_sent
        if n:
            rows.append((state, str(n)))
    rows.append(("total", str(report.total)))
    print_table(title, rows)
    if rejected:
        print(
            "not sent / rejected: never created, nothing billed; rerunning the batch with "
            "this journal creates them (and any input lines a stopped run never read)"
        )
    if report.request_ids:
        print(f"request ids ({len(report.request_ids)}):")
        for rid in report.request_ids:
            print(f"  {rid}")
    named = [(path, items) for path, items in unknown if items]
    if not named:
        return
    advice = (
        "a rerun reports them as failed; pass --resubmit-unknown to create them again "
        "(accepting you may pay twice)"
    )
    if len(unknown) == 1:
        shown = ", ".join(str(i) for i in named[0][1])
        print(
            f"unknown (may have been created and billed, no id recorded): items {shown}\n  {advice}"
        )
        return
    print("unknown (may have been created and billed, no id recorded), by journal:")
    for path, items in named:
        print(f"  {path}: items {', '.join(str(i) for i in items)}")
    print(f"  {advice.replace('a rerun', 'a rerun of that shard')}")
