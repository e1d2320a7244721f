"""The engine of ``batch`` and ``demo``: stream a journaled batch, download outputs, tally it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup

from .._batch._engine import BatchStream, Outcome
from .._client import Client, ClientStats
from ..download import Downloader, _sha256_of
from ..errors import (
    BatchAbortedError,
    NanoBananaError,
    NoImageError,
    TaskCancelledError,
    TaskError,
)
from ..journal import Journal, JournalItem
from ..models import GenerationRequest, GenerationResult
from ._input import BadLine
from ._ui import Progress

__all__ = [
    "ABANDON_NOTE",
    "EXIT_INTERRUPTED",
    "Interrupt",
    "ItemReport",
    "RunOptions",
    "RunResult",
    "run_batch",
]


@attrs.define
class RunOptions:
    """How one batch run behaves."""

    out_dir: Path
    max_in_flight: int = 64
    submit_rate: float | None = None
    resubmit_unknown: bool = False
    detach: bool = False
    max_downloads: int = 8
    max_creates: int | None = None
    # A shard's item numbers in the whole input, by its own item index (filled as it is read):
    # report.json and file names use them; the shard's journal keeps its own indices.
    positions: list[int] | None = None

    def position(self, index: int) -> int:
        """The number of item ``index`` in the whole input (itself when not sharded)."""
        if self.positions is None or index >= len(self.positions):
            return index
        return self.positions[index]


@attrs.define
class ItemReport:
    """What became of one item, as written to report.json."""

    index: int
    prompt: str | None
    request_id: str | None
    state: str
    error_type: str | None = None
    error_message: str | None = None
    files: list[dict[str, Any]] = attrs.field(factory=list)
    latency: float | None = None
    resumed: bool = False
    text: str | None = None

    @property
    def ok(self) -> bool:
        """True when the task succeeded and its files are on disk."""
        return self.state == "succeeded"


@attrs.define
class RunResult:
    """Everything a finished (or interrupted) run produced."""

    items: dict[int, ItemReport] = attrs.field(factory=dict)
    bad_lines: list[BadLine] = attrs.field(factory=list)
    wall: float = 0.0
    interrupted: str | None = None  # the signal's name
    stats: ClientStats | None = None
    # Why the batch stopped creating (the account cannot go on, or max_creates): every outcome
    # in hand was delivered and saved; the items not sent are journaled so a rerun creates them.
    stopped: BatchAbortedError | None = None


EXIT_INTERRUPTED = 130  # what a shell expects of a command stopped by Ctrl-C
ABANDON_NOTE = "remote tasks may still be running (`nanobanana-async cancel <id>` stops one)"


class Interrupt:
    """SIGINT/SIGTERM handlers: the first cancels one scope, so every cleanup path still runs.

    Cleanup (cancelling the remote tasks, flushing the journal) can take a while. A second
    signal stops waiting for it: one line on stderr says what may still be running and how to
    resume (``abandon_note``), and the process exits 130 at once. Every journal write already
    committed stays (SQLite WAL), so a rerun resumes; writes not yet committed are lost, which
    the journal is built to survive (an intent without an id is never created again unasked).
    """

    def __init__(
        self,
        progress: Progress | None = None,
        *,
        abandon_note: str = ABANDON_NOTE,
        exit_process: Callable[[int], object] = os._exit,
    ) -> None:
        self.scope = anyio.CancelScope()
        self.signal: str | None = None
        self._progress = progress
        self._abandon_note = abandon_note
        self._exit = exit_process  # os._exit: no atexit, no thread joins, nothing left to wait for

    def _fire(self, name: str) -> None:
        if self.signal is None:
            self.signal = name
            if self._progress is not None:
                self._progress.note(
                    f"{name}: stopping; cancelling what is running (a second signal exits at once)"
                )
            self.scope.cancel()
            return
        self._abandon(name)

    def _abandon(self, name: str) -> None:
        if self._progress is not None:
            self._progress.stop()  # a live bar gives the terminal back (cursor shown again)
        line = f"{name} again: exiting without waiting for cleanup; {self._abandon_note}"
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        with contextlib.suppress(OSError, ValueError):
            print(line, file=sys.stderr, flush=True)
        self._exit(EXIT_INTERRUPTED)

    @contextlib.contextmanager
    def installed(self) -> Iterator[anyio.CancelScope]:
        """Install the handlers for the duration of the block; yields the scope to enter.

        Install them around the cleanup too (closing the client and the journal), so that a
        second signal during it is still handled here.
        """
        loop = asyncio.get_running_loop()
        done: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._fire, sig.name)
                done.append(sig)
        try:
            yield self.scope
        finally:
            for sig in done:
                loop.remove_signal_handler(sig)


def _wanted(result: GenerationResult) -> set[int]:
    # Mirrors Downloader.download: every output with a URL that is not text.
    return {i for i, o in enumerate(result.outputs) if o.url and o.type != "text"}


def _file_dict(output_index: int, path: Path, size: int, sha: str, out_dir: Path) -> dict[str, Any]:
    shown = path.name if path.parent.resolve() == out_dir.resolve() else str(path)
    return {"output_index": output_index, "path": shown, "size": size, "sha256": sha}


def _base_report(outcome: Outcome, index: int) -> ItemReport:
    request = outcome.request
    report = ItemReport(
        index,
        request.prompt if request is not None else None,
        outcome.request_id,
        "succeeded" if outcome.ok else "failed",
        latency=None if outcome.latency is None else round(outcome.latency, 3),
        resumed=outcome.resumed,
        text=outcome.result.text if outcome.result is not None else None,
    )
    error = outcome.error
    if error is not None:
        report.state = "cancelled" if isinstance(error, TaskCancelledError) else "failed"
        report.error_type = (
            error.error_type if isinstance(error, TaskError) and error.error_type else None
        ) or type(error).__name__
        report.error_message = str(error)
        if isinstance(error, NoImageError):
            report.text = error.text  # the model's refusal, if it said anything
    return report


class _Runner:
    def __init__(
        self,
        client: Client,
        journal: Journal,
        opts: RunOptions,
        progress: Progress,
        prior: dict[int, JournalItem],
    ) -> None:
        self.client = client
        self.journal = journal
        self.opts = opts
        self.progress = progress
        self.prior = prior
        self.downloader = Downloader(client, opts.out_dir)
        self.limiter = anyio.CapacityLimiter(opts.max_downloads)
        self.result = RunResult()

    async def run(self, requests: Iterable[GenerationRequest]) -> None:
        # A run killed mid-download leaves hidden temp files; they are never under a final name.
        await self.downloader.remove_stale_parts()
        stream = self.client.stream(
            requests,
            max_in_flight=self.opts.max_in_flight,
            submit_rate=self.opts.submit_rate,
            cancel_on_abandon=not self.opts.detach,
            on_event=self.progress.on_event,
            journal=self.journal,
            resubmit_unknown=self.opts.resubmit_unknown,
            max_creates=self.opts.max_creates,
        )
        fatal: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                try:
                    await self._consume(stream, tg)
                except BatchAbortedError as exc:
                    # Raised after the last outcome in hand: the downloads under way finish.
                    self.result.stopped = exc
                except Exception as exc:  # noqa: BLE001 - re-raised below, not as a group
                    fatal = exc
                    tg.cancel_scope.cancel()
        finally:
            # Shielded: the stream's cleanup (remote cancels, journal writes) must finish.
            with anyio.CancelScope(shield=True):
                await stream.aclose()
        if fatal is not None:
            raise fatal

    async def _consume(self, stream: BatchStream, tg: TaskGroup) -> None:
        async for outcome in stream:
            report = _base_report(outcome, self.opts.position(outcome.index))
            self.result.items[report.index] = report
            if outcome.result is not None and _wanted(outcome.result):
                token = object()
                # Acquired here so that at most max_downloads tasks exist at once.
                await self.limiter.acquire_on_behalf_of(token)
                tg.start_soon(self._save, outcome, outcome.result, report, token)
            else:
                self.progress.on_outcome(outcome, ok=report.ok)

    async def _present(self, index: int, result: GenerationResult) -> list[dict[str, Any]] | None:
        """The files an earlier run saved for this item, if all are there and intact."""
        prior = self.prior.get(index)
        if prior is None or not prior.files:
            return None
        by_output = {f.output_index: f for f in prior.files}
        if not _wanted(result) <= by_output.keys():
            return None
        found = []
        for i in sorted(_wanted(result)):
            file = by_output[i]
            path = Path(file.path)
            if not path.is_absolute():
                path = self.opts.out_dir / path
            if await anyio.to_thread.run_sync(_sha256_of, path, file.size) != file.sha256:
                return None
            found.append(_file_dict(i, path, file.size, file.sha256, self.opts.out_dir))
        return found

    async def _save(
        self, outcome: Outcome, result: GenerationResult, report: ItemReport, token: object
    ) -> None:
        try:
            files = await self._present(outcome.index, result)
            if files is None:
                number = self.opts.position(outcome.index)
                stem = f"{number:05d}_{outcome.request_id or result.request_id}"
                saved = await self.downloader.download(result, stem=stem)
                files = []
                for f in saved:
                    await self.journal.record_file(
                        outcome.index, f.output_index, str(f.path), f.size, f.sha256
                    )
                    files.append(
                        _file_dict(f.output_index, f.path, f.size, f.sha256, self.opts.out_dir)
                    )
            report.files = files
        except (NanoBananaError, OSError, RuntimeError, sqlite3.Error) as exc:
            report.state = "download_failed"
            report.error_type = type(exc).__name__
            report.error_message = str(exc)
        finally:
            self.limiter.release_on_behalf_of(token)
        self.progress.on_outcome(outcome, ok=report.ok)


async def run_batch(
    client: Client,
    journal: Journal,
    requests: Iterable[GenerationRequest],
    opts: RunOptions,
    progress: Progress,
    interrupt: Interrupt,
) -> RunResult:
    """Run the batch until done or interrupted; downloads each success into ``opts.out_dir``.

    ``interrupt``'s handlers are installed by the caller, around the client's and the journal's
    cleanup as well; this runs inside ``interrupt.scope``.
    """
    started = time.monotonic()
    runner = _Runner(client, journal, opts, progress, await journal.load())
    # The caller installed the handlers (around its cleanup too); this scope is what they cancel.
    with interrupt.scope:
        await runner.run(requests)
    result = runner.result
    result.wall = time.monotonic() - started
    result.interrupted = interrupt.signal
    result.stats = client.stats
    return result
