"""One watched task and its explicit life: ``Phase`` and the only place that changes it.

::

    QUEUED ──pop, recheck, slot──▶ POLLING ──poll says "not yet"──▶ QUEUED
       │                              │
       ├──────────── finish ──────────┼──▶ FINISHED   (has an outcome; never polled again)
       └──────────── abandon ─────────┴──▶ ABANDONED  (nobody wants it; never polled again)

A task is *live* (counted by ``stats.in_flight``) while QUEUED or POLLING. FINISHED and ABANDONED
are final: a poll that was in flight when its task was abandoned cannot put it back in the heap,
because ``requeue`` only moves a POLLING entry.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import anyio
import attrs

from ..errors import NanoBananaError
from ..models import GenerationResult, TaskState, TaskStatus, Ticket

__all__ = ["Listener", "Observer", "Phase", "TaskEntry"]

Listener = Callable[["TaskEntry"], None]
Observer = Callable[["TaskEntry", TaskStatus], None]


class Phase(enum.Enum):
    """Where a watched task is in the scheduler's hands."""

    QUEUED = "queued"
    POLLING = "polling"
    FINISHED = "finished"
    ABANDONED = "abandoned"


_ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.QUEUED: frozenset({Phase.POLLING, Phase.FINISHED, Phase.ABANDONED}),
    Phase.POLLING: frozenset({Phase.QUEUED, Phase.FINISHED, Phase.ABANDONED}),
    Phase.FINISHED: frozenset(),
    Phase.ABANDONED: frozenset(),
}
LIVE = frozenset({Phase.QUEUED, Phase.POLLING})


@attrs.define(eq=False)
class TaskEntry:
    """The scheduler's record of one task (small: no coroutine, no history)."""

    ticket: Ticket
    poll_url: str
    submitted_at: float
    phase: Phase = Phase.QUEUED
    due: float = 0.0
    generation: int = 0
    polls: int = 0
    errors: int = 0
    state: TaskState = TaskState.IN_QUEUE
    queue_position: int | None = None
    progress: float | None = None
    logs_seen: int = 0
    started_at: float | None = None
    last_poll_at: float | None = None
    last_pending_at: float | None = None
    finished_at: float | None = None
    outcome: GenerationResult | NanoBananaError | None = None
    waiters: int = 0
    event: anyio.Event | None = None
    listeners: list[Listener] = attrs.field(factory=list)
    observers: list[Observer] = attrs.field(factory=list)
    use_status_route: bool = False
    fell_back: bool = False  # the status-route fallback is taken at most once per task
    expect_image: bool | None = None  # None: unknown (a task watched by id only)
    size_class: str | None = None  # e.g. the image size: tasks of a class share a completion model
    scored_until: float = 0.0  # age (s) up to which the completion model has seen this task's polls
    poll_scope: anyio.CancelScope | None = None
    poll_done: anyio.Event | None = None

    @property
    def request_id(self) -> str:
        """The task's request id."""
        return self.ticket.request_id

    @property
    def done(self) -> bool:
        """True once the task has an outcome."""
        return self.phase is Phase.FINISHED

    @property
    def live(self) -> bool:
        """True while the scheduler still polls this task (QUEUED or POLLING)."""
        return self.phase in LIVE

    @property
    def wanted(self) -> bool:
        """True while someone waits for the outcome (a ``result()`` caller or a batch)."""
        return self.waiters > 0 or bool(self.listeners)

    def move(self, to: Phase) -> bool:
        """Change phase if the machine allows it; False (and no change) otherwise."""
        if to not in _ALLOWED[self.phase]:
            return False
        self.phase = to
        self.generation += 1  # any heap item pushed for the old phase is now stale
        return True
