"""What a batch takes and gives: its options, each item's ``Outcome`` and progress events."""

from __future__ import annotations

import enum
import os
from collections.abc import AsyncIterable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from .._config import TaskRetry
from ..errors import NanoBananaError, ValidationError
from ..models import GenerationRequest, GenerationResult

if TYPE_CHECKING:
    from ..journal import Journal

__all__ = [
    "BatchEvent",
    "BatchOptions",
    "EventKind",
    "Outcome",
    "RequestLike",
    "RequestSource",
    "as_request",
]

RequestLike: TypeAlias = "GenerationRequest | str"
RequestSource: TypeAlias = "Iterable[RequestLike] | AsyncIterable[RequestLike]"
DEFAULT_MAX_IN_FLIGHT = 64


def as_request(request: object) -> GenerationRequest:
    """A ``GenerationRequest`` from a request or a prompt string (``ValidationError`` else)."""
    if isinstance(request, GenerationRequest):
        return request
    if isinstance(request, str):
        return GenerationRequest(request)
    raise ValidationError("request", request, "must be a GenerationRequest or a prompt string")


@attrs.frozen
class Outcome:
    """How one input item ended: its result, or the error that stopped it.

    ``attempts`` counts the tasks created for the item (more than one with a ``TaskRetry``);
    ``request_ids`` lists them all, the last one being ``request_id``.
    """

    index: int
    request: GenerationRequest | None
    request_id: str | None = None
    result: GenerationResult | None = None
    error: NanoBananaError | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    resumed: bool = False
    attempts: int = attrs.field(default=1, kw_only=True)
    request_ids: tuple[str, ...] = attrs.field(default=(), kw_only=True)

    @property
    def ok(self) -> bool:
        """True when the item produced a result."""
        return self.result is not None and self.error is None

    @property
    def latency(self) -> float | None:
        """Seconds from submit to the moment the SDK saw the task finish."""
        if self.submitted_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.submitted_at

    def unwrap(self) -> GenerationResult:
        """The result, or raise the item's error."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class EventKind(str, enum.Enum):
    """What a ``BatchEvent`` reports."""

    SUBMITTED = "submitted"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@attrs.frozen
class BatchEvent:
    """A progress event of one item of a batch (cheap: emitted synchronously)."""

    kind: EventKind
    index: int
    request_id: str | None = None
    queue_position: int | None = None
    error: NanoBananaError | None = None


def _max_in_flight(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("max_in_flight", value, "must be an integer >= 1")


def _submit_rate(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValidationError("submit_rate", value, "must be > 0 creates/s or None")


def _optional_bool(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValidationError(attribute.name, value, "must be True, False or None")


def _bool(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ValidationError(attribute.name, value, "must be True or False")


def _callable_or_none(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise ValidationError(attribute.name, value, "must be a callable or None")


def _max_creates(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError("max_creates", value, "must be an integer >= 0 or None")


def _task_retry(_: object, __: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, TaskRetry):
        raise ValidationError("task_retry", value, "must be a TaskRetry or None")


def _journal(_: object, __: attrs.Attribute[Any], value: object) -> None:
    from ..journal import Journal

    if value is not None and not isinstance(value, (Journal, str, os.PathLike)):
        raise ValidationError("journal", value, "must be a Journal, a path or None")


@attrs.frozen(kw_only=True)
class BatchOptions:
    """How ``stream``/``map`` run a batch; each field may also be passed as a keyword.

    ``max_in_flight``: tasks submitted and not yet consumed (the next input is read only when
    fewer are). ``submit_rate``: creates per second at most. ``cancel_on_abandon``: cancel the
    remote tasks still running when the stream is left early (None: the client's setting).
    ``on_event``: called with each ``BatchEvent`` (its failures are logged, never raised).
    ``journal``: a path or an open ``Journal`` that makes the batch resumable.
    ``resubmit_unknown``: on resume, create again the items whose create may have been lost.
    ``max_creates``: a spending cap: the batch stops with ``BatchAbortedError`` rather than
    send more than this many creates (with a journal, creates of earlier runs count too).
    ``task_retry``: a ``TaskRetry`` that creates failed tasks again (None: the client's).
    """

    max_in_flight: int = attrs.field(default=DEFAULT_MAX_IN_FLIGHT, validator=_max_in_flight)
    submit_rate: float | None = attrs.field(default=None, validator=_submit_rate)
    cancel_on_abandon: bool | None = attrs.field(default=None, validator=_optional_bool)
    on_event: Callable[[BatchEvent], None] | None = attrs.field(
        default=None, validator=_callable_or_none
    )
    journal: Journal | str | os.PathLike[str] | None = attrs.field(default=None, validator=_journal)
    resubmit_unknown: bool = attrs.field(default=False, validator=_bool)
    max_creates: int | None = attrs.field(default=None, validator=_max_creates)
    task_retry: TaskRetry | None = attrs.field(default=None, validator=_task_retry)

    def with_overrides(self, overrides: dict[str, Any]) -> BatchOptions:
        """These options with some fields replaced (``ValidationError`` for an unknown name)."""
        if not overrides:
            return self
        names = attrs.fields_dict(BatchOptions)
        for name in overrides:
            if name not in names:
                raise ValidationError(
                    name, overrides[name], "is not a batch option", ", ".join(names)
                )
        return attrs.evolve(self, **overrides)
