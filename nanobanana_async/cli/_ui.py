"""Terminal output of the command line: a live progress bar with rich, plain lines without it."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from .._batch._engine import BatchEvent, EventKind, Outcome

__all__ = ["Progress", "load_rich", "percentile", "print_table"]

_HINT = "note: rich is not installed; install nanobanana-async[cli] for a live progress bar"


def load_rich(quiet: bool = False) -> Any | None:
    """The ``rich`` module, or None (with a one-line hint on stderr unless ``quiet``)."""
    try:
        import rich
        import rich.console
        import rich.progress
        import rich.table
    except ImportError:
        if not quiet:
            print(_HINT, file=sys.stderr)
        return None
    return rich


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) of ``values`` by nearest rank, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[rank]


class Progress:
    """Counts of a running batch, shown live (rich), as periodic lines (plain) or not at all."""

    def __init__(self, *, total: int | None, enabled: bool, label: str = "tasks") -> None:
        self.total = total
        self.submitted = 0
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._label = label
        self._enabled = enabled
        self._rich = load_rich() if enabled else None
        self._bar: Any = None
        self._task: Any = None
        self._last_plain = 0.0
        self._live_ids: set[int] = set()
        self._stopped = False

    @property
    def in_flight(self) -> int:
        """Items submitted and not finished yet."""
        return len(self._live_ids)

    def __enter__(self) -> Progress:
        if self._rich is not None:
            rp = self._rich.progress
            console = self._rich.console.Console(stderr=True)
            self._bar = rp.Progress(
                rp.SpinnerColumn(),
                rp.TextColumn("[bold]{task.description}"),
                rp.BarColumn(),
                rp.MofNCompleteColumn(),
                rp.TextColumn("{task.fields[counts]}"),
                rp.TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=self.total, counts="")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the display (a final refresh; the live bar gives the terminal back); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._bar is not None:
            self._refresh()
            self._bar.stop()
            self._bar = None
        elif self._enabled:
            self._plain(force=True)

    def note(self, message: str) -> None:
        """A message for the user (stderr) that does not garble the live bar."""
        if self._bar is not None:
            # soft_wrap: one message stays one line (the terminal folds it, not rich)
            self._bar.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            print(message, file=sys.stderr)

    def skipped(self) -> None:
        """One expected input turned out invalid: shrink the total."""
        if self.total is not None:
            self.total = max(0, self.total - 1)

    def on_event(self, event: BatchEvent) -> None:
        """Callback for ``client.stream(on_event=...)``."""
        if event.kind is EventKind.SUBMITTED:
            self.submitted += 1
            self._live_ids.add(event.index)
        elif event.kind in (EventKind.SUCCEEDED, EventKind.FAILED):
            self._live_ids.discard(event.index)
        self._refresh()

    def on_outcome(self, outcome: Outcome, *, ok: bool) -> None:
        """One item is finished (``ok`` after its downloads too)."""
        self._live_ids.discard(outcome.index)
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self._refresh()

    def _counts(self) -> str:
        return f"done {self.done}  failed {self.failed}  in flight {self.in_flight}"

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=self.done + self.failed,
                total=self.total,
                counts=self._counts(),
            )
        elif self._enabled:
            self._plain()

    def _plain(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_plain < 2.0:
            return
        self._last_plain = now
        of = f"/{self.total}" if self.total is not None else ""
        finished = self.done + self.failed
        print(f"[{now - self.started:6.1f}s] {finished}{of} {self._counts()}", file=sys.stderr)


def print_table(title: str, rows: Sequence[tuple[str, str]], *, file: TextIO | None = None) -> None:
    """A two-column table: a rich table when rich is there, aligned text otherwise."""
    out = file or sys.stdout
    rich = load_rich(quiet=True)
    if rich is not None:
        table = rich.table.Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(justify="right")
        for key, value in rows:
            table.add_row(key, value)
        rich.console.Console(file=out, highlight=False).print(table)
        return
    width = max((len(k) for k, _ in rows), default=0)
    print(title, file=out)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}", file=out)
