"""Job: the awaitable handle of one submitted task."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from .models import GenerationResult, TaskStatus, Ticket

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["Job"]


class Job:
    """A task on the service: ``await job`` (or ``job.result()``) for its result."""

    __slots__ = ("_client", "ticket")

    def __init__(self, client: Client, ticket: Ticket) -> None:
        self._client = client
        self.ticket = ticket

    @property
    def request_id(self) -> str:
        """The service's id for this task."""
        return self.ticket.request_id

    def __repr__(self) -> str:
        return f"<Job {self.request_id}>"

    async def status(self) -> TaskStatus:
        """Fetch the task's current status (one request)."""
        return await self._client._fetch_status(self.ticket)

    async def result(
        self, *, timeout: float | None = None, cancel_on_abandon: bool | None = None
    ) -> GenerationResult:
        """Wait for the task to finish and return its result.

        Raises ``TaskFailedError`` / ``TaskCancelledError`` when the task ends without a result,
        and ``TimeoutError`` after ``timeout`` seconds. If the wait is cancelled or times out, the
        task is cancelled on the service too, unless ``cancel_on_abandon=False``.
        """
        return await self._client._wait(
            self.ticket, timeout=timeout, cancel_on_abandon=cancel_on_abandon
        )

    async def cancel(self) -> bool:
        """Ask the service to cancel the task; False if it had already finished."""
        return await self._client._cancel(self.ticket)

    def __await__(self) -> Generator[Any, None, GenerationResult]:
        return self.result().__await__()
