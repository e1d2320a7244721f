"""How the batch engine uses a journal: what to do with each item on a (re)run, and what to record.

Per item, on a rerun with the same journal and input:
- finished (succeeded, failed, cancelled): not touched; its recorded outcome is replayed;
- submitted (has a request id): re-attached and polled, never created again;
- pending or unknown (intent recorded, no id: a crash or a lost create response): reported as
  ``SubmissionUnknownError``, created again only with ``resubmit_unknown=True``;
- rejected (the create certainly was not processed), or new: created.
The intent is committed before the create is sent and the id as soon as it answers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from .._http._wire import parse_response
from ..errors import (
    APIStatusError,
    NanoBananaError,
    SubmissionUnknownError,
    TaskCancelledError,
    TaskFailedError,
)
from ..journal import ItemState, Journal, JournalItem
from ..models import GenerationResult, Output, Ticket

__all__ = ["Plan", "ResumeBinding", "output_to_wire"]


@attrs.frozen
class Plan:
    """What to do with one item: create it, re-attach to ``ticket``, or replay an outcome."""

    create: bool = False
    ticket: Ticket | None = None
    result: GenerationResult | None = None
    error: NanoBananaError | None = None
    attempts: int = 1  # tasks created for the item so far (the one to re-attach included)
    prior_ids: tuple[str, ...] = ()  # ids of earlier attempts


def output_to_wire(output: Output) -> dict[str, Any]:
    """An output back in its wire shape (for the journal)."""
    data = {k: v for k, v in attrs.asdict(output, recurse=False).items() if k != "extra"}
    return {**dict(output.extra), **{k: v for k, v in data.items() if v is not None}}


# Items an earlier run may have paid for: they count against ``max_creates`` on a rerun.
_MAYBE_CREATED = frozenset(
    {
        ItemState.PENDING,
        ItemState.SUBMITTED,
        ItemState.UNKNOWN,
        ItemState.SUCCEEDED,
        ItemState.FAILED,
        ItemState.CANCELLED,
    }
)


class ResumeBinding:
    """Connects one batch to a journal (opened here from a path, or owned by the caller)."""

    def __init__(
        self, journal: Journal | str | os.PathLike[str], *, resubmit_unknown: bool
    ) -> None:
        self._given = journal if isinstance(journal, Journal) else None
        self._path = None if isinstance(journal, Journal) else journal
        self._resubmit_unknown = resubmit_unknown
        self._journal: Journal | None = self._given
        self._prior: dict[int, JournalItem] = {}
        self.prior_creates = 0

    @property
    def journal(self) -> Journal:
        """The open journal."""
        assert self._journal is not None, "ResumeBinding.start() not called"
        return self._journal

    async def start(self) -> None:
        """Open the journal if given a path, and load what earlier runs recorded."""
        if self._journal is None:
            assert self._path is not None
            self._journal = await Journal.open(self._path)
        self._prior = await self._journal.load()
        self.prior_creates = sum(1 for item in self._prior.values() if item.state in _MAYBE_CREATED)

    async def close(self) -> None:
        """Close the journal if this binding opened it."""
        if self._given is None and self._journal is not None:
            await self._journal.aclose()

    async def plan(self, index: int, body: Mapping[str, Any]) -> Plan:
        """Decide what to do with item ``index`` (``JournalMismatchError`` on other input)."""
        journal = self.journal
        prior = self._prior.pop(index, None)
        if prior is None:
            await journal.record_intent(index, body)
            return Plan(create=True)
        if prior.key != Journal.key_for(body):
            await journal.record_intent(index, body)  # raises JournalMismatchError
        state = prior.state
        history: dict[str, Any] = {"attempts": prior.attempts, "prior_ids": prior.prior_ids}
        if state is ItemState.SUCCEEDED:
            raw = {"request_id": prior.request_id or "", "outputs": list(prior.outputs)}
            result = parse_response(200, raw)
            assert isinstance(result, GenerationResult)
            return Plan(result=result, **history)
        if state in (ItemState.FAILED, ItemState.CANCELLED):
            cls = TaskCancelledError if state is ItemState.CANCELLED else TaskFailedError
            message = prior.error_message or state.value
            error = cls(message, request_id=prior.request_id or "", error_type=prior.error_type)
            return Plan(error=error, **history)
        if state is ItemState.SUBMITTED and prior.request_id:
            return Plan(ticket=Ticket(prior.request_id), **history)
        if state in (ItemState.PENDING, ItemState.UNKNOWN) and not self._resubmit_unknown:
            if state is ItemState.PENDING:
                await journal.record_unknown(index, "interrupted before the create answered")
            return Plan(
                error=SubmissionUnknownError(
                    f"item {index}: an earlier run may have created this task (no id was "
                    "recorded); pass resubmit_unknown=True to create it again",
                    request_body=body,
                ),
                **history,
            )
        await journal.record_intent(index, body)
        return Plan(create=True, **history)

    async def retrying(self, index: int, request_id: str) -> None:
        """Record, before it is sent, that item ``index`` will be created again."""
        await self.journal.record_retry(index, request_id)

    async def not_sent(self, index: int, reason: str) -> None:
        """Record that an item whose intent was recorded was never sent (a rerun creates it)."""
        await self.journal.record_rejected(index, "NOT_SENT", reason)

    async def created(self, index: int, ticket: Ticket) -> None:
        """Record the request id as soon as the create answered."""
        await self.journal.record_submitted(index, ticket.request_id)

    async def create_failed(self, index: int, error: NanoBananaError) -> None:
        """Record a failed create: unknown when it may have been processed, else rejected."""
        if isinstance(error, SubmissionUnknownError):
            await self.journal.record_unknown(index, str(error))
        else:
            code = error.code if isinstance(error, APIStatusError) else None
            await self.journal.record_rejected(index, code or type(error).__name__, str(error))

    async def finished(
        self, index: int, result: GenerationResult | None, error: NanoBananaError | None
    ) -> None:
        """Record a task's outcome (only for tasks that have a request id)."""
        journal = self.journal
        if result is not None:
            outputs = [output_to_wire(o) for o in result.outputs]
            await journal.record_outcome(index, ItemState.SUCCEEDED, outputs=outputs)
        elif isinstance(error, TaskCancelledError):
            await journal.record_outcome(
                index, ItemState.CANCELLED, error_type=error.error_type, error_message=error.message
            )
        elif isinstance(error, TaskFailedError):
            await journal.record_outcome(
                index, ItemState.FAILED, error_type=error.error_type, error_message=error.message
            )
        # Other errors (transport, client closed, expired) leave the item SUBMITTED: a rerun
        # re-attaches to it by id.
