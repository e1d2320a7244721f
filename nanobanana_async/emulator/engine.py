"""The queue: FIFO admission, a fixed number of worker slots, task faults, cancellation, retention.

Each running task is one loop timer (no coroutine per task), so ten thousand live tasks cost little.

Prompt markers: `[blocked]` always ends CONTENT_BLOCKED; `[no-image]` always succeeds without an
image (a text refusal, `finish_reason` SAFETY). `[blocked]` wins when both are present.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import random
import secrets
import time
from collections import deque
from collections.abc import Callable

from .config import SIZE_FACTORS, EmulatorConfig
from .stats import EmulatorStats, TaskRecord

__all__ = ["BLOCKED_MARKER", "CANCEL_MESSAGE", "NO_IMAGE_MARKER", "Engine", "Task", "make_id"]

BLOCKED_MARKER = "[blocked]"
NO_IMAGE_MARKER = "[no-image]"

CANCEL_MESSAGE = "Request was cancelled"
_ERROR_MESSAGES = {
    "INFERENCE_FAILURE": "Inference failed: the model returned no image",
    "INFERENCE_TIMEOUT": "Inference timed out",
    "CONTENT_BLOCKED": "The prompt was blocked by the content policy",
    "REQUEST_INVALID": "Request parameters were rejected by the model",
}
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


class Task(TaskRecord):
    """A task as the engine holds it: the public record plus what the wire needs."""

    __slots__ = (
        "aspect_ratio",
        "expires_at",
        "handle",
        "image_size",
        "modalities",
        "no_image",
        "planned_error",
        "prompt",
        "seq",
        "service_time",
        "started_wall",
    )

    def __init__(self, request_id: str, model: str, submitted_at: float) -> None:
        super().__init__(request_id, model, submitted_at)
        self.prompt = ""
        self.image_size: str | None = None
        self.aspect_ratio: str | None = None
        self.modalities: tuple[str, ...] = ("Text", "Image")
        self.service_time = 0.0
        self.planned_error: str | None = None
        self.no_image = False  # succeeds without an image (a refusal), see NO_IMAGE_MARKER
        self.seq = 0
        self.handle: asyncio.TimerHandle | None = None
        self.started_wall = 0.0
        self.expires_at = float("inf")

    @property
    def done(self) -> bool:
        """True once the task is COMPLETED (successfully or not)."""
        return self.state == "COMPLETED"

    @property
    def has_image(self) -> bool:
        """True once the task succeeded with an image output (one PNG on the CDN)."""
        return (
            self.done
            and self.error_type is None
            and not self.no_image
            and "Image" in self.modalities
        )


def make_id(seed: int, n: int, nonce: str = "") -> str:
    """The n-th request id of a run: `mmsu_` plus 26 base-32 characters.

    Without a `nonce` the id depends on `seed` and `n` alone (the same in every run); the engine
    passes a random per-instance nonce unless `EmulatorConfig.deterministic_ids` is set, so that a
    restarted emulator never hands out an id a client may still hold from an earlier run.
    """
    material = f"{seed}:{n}" if not nonce else f"{nonce}:{seed}:{n}"
    digest = int.from_bytes(hashlib.sha256(material.encode()).digest()[:17], "big")
    chars = []
    for _ in range(26):
        digest, r = divmod(digest, 32)
        chars.append(_ID_ALPHABET[r])
    return "mmsu_" + "".join(chars)


class Engine:
    """Queue, worker slots and task bookkeeping; knows nothing about HTTP."""

    def __init__(self, config: EmulatorConfig, stats: EmulatorStats) -> None:
        self.config = config
        self.stats = stats
        self.on_complete: Callable[[Task], None] | None = None
        # Separate streams so that switching task faults on does not shift service times.
        self._service_rng = random.Random(f"service:{config.seed}")
        self._task_fault_rng = random.Random(f"task-faults:{config.seed}")
        self._counter = 0
        self._id_nonce = "" if config.deterministic_ids else secrets.token_hex(8)
        self._tasks: dict[str, Task] = {}
        self._queue: deque[Task] = deque()
        self._popped = 0  # entries ever taken off the queue's head
        self._gone: list[int] = []  # seqs of cancelled tasks still sitting in the queue
        self._running: set[Task] = set()
        self._done: deque[Task] = deque()
        self._dispatching = False
        self.credits_left = config.credits
        self._closed = False
        self._started = time.monotonic()  # the service-time drift counts from here

    # -- configuration -------------------------------------------------------------------------

    def reconfigure(self, config: EmulatorConfig) -> None:
        """Adopt a new configuration; more workers start queued tasks right away."""
        if config.credits != self.config.credits:
            self.credits_left = config.credits
        self.config = config
        self._dispatch()

    def add_credits(self, n: int) -> int:
        """Top the balance up by `n` creates; returns the new balance."""
        if self.credits_left is None:
            raise ValueError("credits are unlimited (EmulatorConfig.credits is None)")
        if n < 0:
            raise ValueError(f"cannot add a negative number of credits ({n})")
        self.credits_left += n
        return self.credits_left

    # -- lookups -------------------------------------------------------------------------------

    def get(self, request_id: str) -> Task | None:
        """The live task with this id, or None if unknown or past retention."""
        task = self._tasks.get(request_id)
        if task is not None and task.expires_at <= time.monotonic():
            self._sweep()
            self._tasks.pop(request_id, None)
            return None
        return task

    def queue_position(self, task: Task) -> int:
        """How many queued tasks are ahead of `task` (0 = next to start)."""
        return task.seq - self._popped - bisect.bisect_left(self._gone, task.seq)

    def progress(self, task: Task) -> float:
        """Fraction of the service time elapsed, 0..1."""
        if task.started_at is None or task.service_time <= 0:
            return 0.0
        return min(1.0, (time.monotonic() - task.started_at) / task.service_time)

    @property
    def queued(self) -> int:
        """Tasks waiting for a worker."""
        return len(self._queue) - len(self._gone)

    @property
    def running(self) -> int:
        """Tasks holding a worker slot."""
        return len(self._running)

    # -- transitions ---------------------------------------------------------------------------

    def spend_credit(self) -> bool:
        """Take one credit; False when the balance is exhausted."""
        if self.credits_left is None:
            return True
        if self.credits_left <= 0:
            return False
        self.credits_left -= 1
        return True

    def create(
        self,
        model: str,
        *,
        prompt: str,
        image_size: str | None = None,
        aspect_ratio: str | None = None,
        modalities: tuple[str, ...] = ("Text", "Image"),
    ) -> Task:
        """Accept one task into the queue and start it if a worker is free."""
        self._sweep()
        cfg = self.config
        now = time.monotonic()
        task = Task(make_id(cfg.seed, self._counter, self._id_nonce), model, now)
        self._counter += 1
        task.prompt = prompt
        task.image_size = image_size
        task.aspect_ratio = aspect_ratio
        task.modalities = modalities
        scale = cfg.time_scale
        elapsed = (now - self._started) / scale if scale > 0 else float("inf")
        base = cfg.service_time.sample(self._service_rng, elapsed)
        task.service_time = base * SIZE_FACTORS.get(image_size or "1K", 1.0) * scale
        task.planned_error, task.no_image = self._draw_task_fault(prompt)
        task.seq = self._popped + len(self._queue)
        self._tasks[task.request_id] = task
        self.stats.tasks[task.request_id] = task
        self.stats.task_started()
        self._queue.append(task)
        self._dispatch()
        return task

    def cancel(self, request_id: str) -> str:
        """Cancel a task: returns "accepted", "completed" (too late) or "unknown"."""
        task = self.get(request_id)
        if task is None:
            return "unknown"
        if task.done:
            return "completed"
        if task.state == "IN_QUEUE":
            bisect.insort(self._gone, task.seq)
        else:
            if task.handle is not None:
                task.handle.cancel()
            self._running.discard(task)
        self._complete(task, "CANCELED", CANCEL_MESSAGE)
        self._dispatch()
        return "accepted"

    def close(self) -> None:
        """Stop every timer; tasks freeze where they are."""
        self._closed = True
        for task in self._running:
            if task.handle is not None:
                task.handle.cancel()
        self._running.clear()

    def _draw_task_fault(self, prompt: str) -> tuple[str | None, bool]:
        """(planned error_type or None, no_image) for a new task: markers first, then one draw."""
        u = self._task_fault_rng.random()  # always drawn, so the stream does not depend on prompts
        if BLOCKED_MARKER in prompt:
            return "CONTENT_BLOCKED", False
        if NO_IMAGE_MARKER in prompt:
            return None, True
        task_faults = self.config.task_faults
        for error_type, p in task_faults.kinds():
            if u < p:
                return error_type, False
            u -= p
        # Last in the same draw: switching no_image on leaves the error draws where they were.
        return None, u < task_faults.no_image

    def _dispatch(self) -> None:
        # Instant tasks finish inside _start; the flag keeps that from recursing per task.
        if self._dispatching or self._closed:
            return
        self._dispatching = True
        try:
            while self._queue and len(self._running) < self.config.workers:
                task = self._queue.popleft()
                self._popped += 1
                if task.state != "IN_QUEUE":
                    # A cancelled entry is always the smallest seq still queued.
                    self._gone.pop(0)
                    continue
                self._start(task)
        finally:
            self._dispatching = False

    def _start(self, task: Task) -> None:
        task.state = "IN_PROGRESS"
        task.started_at = time.monotonic()
        task.started_wall = time.time()
        if task.service_time <= 0:
            self._finish(task)
            return
        self._running.add(task)
        loop = asyncio.get_running_loop()
        task.handle = loop.call_later(task.service_time, self._finish_and_dispatch, task)

    def _finish_and_dispatch(self, task: Task) -> None:
        self._running.discard(task)
        self._finish(task)
        self._dispatch()

    def _finish(self, task: Task) -> None:
        task.handle = None
        err = task.planned_error
        self._complete(task, err, _ERROR_MESSAGES.get(err) if err else None)

    def _complete(self, task: Task, error_type: str | None, error: str | None) -> None:
        now = time.monotonic()
        task.state = "COMPLETED"
        task.completed_at = now
        task.error_type = error_type
        task.error = error
        if task.started_at is not None:
            task.inference_time = now - task.started_at
        task.expires_at = now + self.config.retention
        self._done.append(task)
        self.stats.task_finished()
        if self.on_complete is not None:
            self.on_complete(task)

    def _sweep(self) -> None:
        now = time.monotonic()
        done = self._done
        while done and done[0].expires_at <= now:
            task = done.popleft()
            if self._tasks.get(task.request_id) is task:
                del self._tasks[task.request_id]
