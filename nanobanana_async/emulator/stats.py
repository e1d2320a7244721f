"""What the emulator saw: live counters and per-task records that tests assert on."""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["EmulatorStats", "TaskRecord"]


class TaskRecord:
    """One task's life; times are `time.monotonic()` so other local processes share the clock."""

    __slots__ = (
        "completed_at",
        "error",
        "error_type",
        "inference_time",
        "model",
        "request_id",
        "started_at",
        "state",
        "submitted_at",
    )

    def __init__(self, request_id: str, model: str, submitted_at: float) -> None:
        self.request_id = request_id
        self.model = model
        self.submitted_at = submitted_at
        self.started_at: float | None = None
        self.completed_at: float | None = None
        self.state = "IN_QUEUE"
        self.error_type: str | None = None
        self.error: str | None = None
        self.inference_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able data."""
        return {name: getattr(self, name) for name in TaskRecord.__slots__}

    def __repr__(self) -> str:
        return (
            f"TaskRecord({self.request_id!r}, state={self.state!r}, error_type={self.error_type!r})"
        )


class EmulatorStats:
    """Live counters of one emulator; plain attributes so tests can read them directly."""

    def __init__(self) -> None:
        self.unfinished = 0
        self.reset()

    def reset(self) -> None:
        """Clear every counter and record (tasks still live in the engine keep running)."""
        self.requests = 0
        self.creates = 0
        self.creates_by_body: Counter[str] = Counter()
        self.status_polls: Counter[str] = Counter()
        self.result_polls: Counter[str] = Counter()
        self.cancels = 0
        self.rate_limited = 0
        self.credits_rejected = 0
        self.faults: Counter[str] = Counter()
        self.lost_create_ids: list[str] = []
        self.cdn_requests = 0
        self.cdn_auth_rejected = 0
        # Tasks created before the reset and still running count toward the new maximum.
        self.max_unfinished = self.unfinished
        self.tasks: dict[str, TaskRecord] = {}

    @property
    def duplicate_creates(self) -> int:
        """Creates whose exact body had already been accepted before (a sign of unsafe retries)."""
        return sum(max(0, c - 1) for c in self.creates_by_body.values())

    def task_started(self) -> None:
        """Note one more unfinished task."""
        self.unfinished += 1
        if self.unfinished > self.max_unfinished:
            self.max_unfinished = self.unfinished

    def task_finished(self) -> None:
        """Note one task reaching COMPLETED."""
        self.unfinished -= 1

    def to_dict(self, *, tasks: bool = False) -> dict[str, Any]:
        """The counters as plain JSON-able data; per-task records only when `tasks` is true."""
        states: Counter[str] = Counter(t.state for t in self.tasks.values())
        out: dict[str, Any] = {
            "requests": self.requests,
            "creates": self.creates,
            "duplicate_creates": self.duplicate_creates,
            "creates_by_body": dict(self.creates_by_body),
            "status_polls": dict(self.status_polls),
            "result_polls": dict(self.result_polls),
            "cancels": self.cancels,
            "rate_limited": self.rate_limited,
            "credits_rejected": self.credits_rejected,
            "faults": dict(self.faults),
            "lost_create_ids": list(self.lost_create_ids),
            "cdn_requests": self.cdn_requests,
            "cdn_auth_rejected": self.cdn_auth_rejected,
            "unfinished": self.unfinished,
            "max_unfinished": self.max_unfinished,
            "task_states": dict(states),
        }
        if tasks:
            out["tasks"] = {rid: t.to_dict() for rid, t in self.tasks.items()}
        return out
