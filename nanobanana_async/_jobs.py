"""Job: the awaitable handle of one submitted task."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from .errors import ValidationError
from .models import GenerationResult, TaskStatus, Ticket

if TYPE_CHECKING:
    from ._polling._entry import TaskEntry
    from ._runtime import Runtime, TaskUpdates

__all__ = ["Job", "check_timeout"]


def check_timeout(timeout: float | None) -> None:
    """``ValidationError`` unless ``timeout`` is None or a positive number of seconds."""
    if timeout is not None and not timeout > 0:
        raise ValidationError("timeout", timeout, "must be > 0 seconds or None")


class Job:
    """A task on the service: ``await job`` (or ``job.result()``) for its result."""

    __slots__ = (
        "_cancel_on_abandon",
        "_expect_image",
        "_known",
        "_runtime",
        "_size_class",
        "ticket",
    )

    def __init__(
        self,
        runtime: Runtime,
        ticket: Ticket,
        cancel_on_abandon: bool = True,
        expect_image: bool | None = None,
        size_class: str | None = None,
    ) -> None:
        self._runtime = runtime
        self._size_class = size_class
        self._cancel_on_abandon = cancel_on_abandon
        self._expect_image = expect_image
        self._known: TaskEntry | None = None  # the entry a finished ``updates()`` followed
        self.ticket = ticket

    @property
    def request_id(self) -> str:
        """The service's id for this task."""
        return self.ticket.request_id

    def __repr__(self) -> str:
        return f"<Job {self.request_id}>"

    async def status(self) -> TaskStatus:
        """Fetch the task's current status (one request)."""
        return await self._runtime.fetch_status(self.ticket)

    def updates(self) -> TaskUpdates:
        """Follow the task's status changes (state, queue position, progress, logs).

        ``async with job.updates() as updates: async for status in updates: ...`` — fed by the
        scheduler's own polls (no extra requests), ending with the final status; then
        ``await job.result()`` returns at once.
        """
        updates = self._runtime.updates(
            self.ticket, expect_image=self._expect_image, size_class=self._size_class
        )
        self._known = updates.entry
        return updates

    async def result(
        self,
        *,
        timeout: float | None = None,
        cancel_on_abandon: bool | None = None,
        on_update: Callable[[TaskStatus], None] | None = None,
    ) -> GenerationResult:
        """Wait for the task to finish and return its result.

        Raises ``TaskFailedError`` / ``TaskCancelledError`` when the task ends without a result
        (``NoImageError`` when it asked for images and none came back),
        and ``RequestTimeoutError`` after ``timeout`` seconds. If the wait is cancelled or times
        out, and no one else waits for the task, it is cancelled on the service too, unless
        ``cancel_on_abandon=False``. ``on_update`` is called with each status change the
        polls see (queue position, progress, logs; a raising callback is logged, not raised).
        """
        check_timeout(timeout)
        if on_update is not None and not callable(on_update):
            raise ValidationError("on_update", on_update, "must be a callable or None")
        if cancel_on_abandon is not None and not isinstance(cancel_on_abandon, bool):
            raise ValidationError("cancel_on_abandon", cancel_on_abandon, "must be a bool or None")
        cancel = self._cancel_on_abandon if cancel_on_abandon is None else cancel_on_abandon
        return await self._runtime.wait(
            self.ticket,
            timeout=timeout,
            cancel_on_abandon=cancel,
            expect_image=self._expect_image,
            on_update=on_update,
            known=self._known,
            size_class=self._size_class,
        )

    async def cancel(self) -> bool:
        """Ask the service to cancel the task; False if it had already finished."""
        return await self._runtime.cancel(self.ticket)

    def __await__(self) -> Generator[Any, None, GenerationResult]:
        return self.result().__await__()
