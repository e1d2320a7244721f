"""OpenTelemetry for ``Client(tracing=True)``: a span per task, a child span per HTTP exchange,
and metrics. Imported only then (the ``otel`` extra, ``opentelemetry-api`` alone).

The API's default providers do nothing, so without an OpenTelemetry SDK configured by the
application this costs little and records nothing. Never recorded: the key, the prompt or any
request body, query strings, output URLs.

How it hooks in:

- every HTTP exchange is already reported to the transport's ``HttpEvent`` hooks; ``on_http``
  is one of them and turns the event into a CLIENT span (backdated by its elapsed time) and
  metric points;
- a create runs inside ``creating()``, which makes the task span current, so the create's
  exchanges are its children; the request id read from the answer maps later polls to it;
- the task span ends when the poll scheduler hands the ``TaskEntry`` to ``task_ended`` (the
  hook ``task_end_hook()`` returns; the runtime passes it as ``PollScheduler(on_end=...)``).
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .._version import __version__
from ..errors import NoImageError, ProtocolError, TaskCancelledError, TaskFailedError
from ..models import GenerationResult
from ._retry import RetryPolicy
from ._transport import HttpEvent, Kind, Response, Transport
from ._wire import parse_ticket

__all__ = ["TaskRecord", "Telemetry", "TracedTransport"]

TASK_SPAN = "nanobanana.task"
# Tasks created but never watched (a Job never awaited) are never handed back by the scheduler:
# past this many open ones the oldest is ended as "unwatched" so a long-lived client stays small.
MAX_TRACKED_TASKS = 10_000
_TASK_ROUTE = re.compile(r"/requests/([^/]+)(?:/(status|response|cancel))?/?$")


class TaskRecord(Protocol):
    """What ``task_ended`` reads from the scheduler's ``TaskEntry``."""

    @property
    def request_id(self) -> str: ...

    polls: int
    submitted_at: float
    started_at: float | None
    outcome: object


class _Creation:
    """One create in progress: its task span (if tracked) and its exchanges."""

    __slots__ = ("attempts", "context", "span")

    def __init__(self) -> None:
        self.span: Span | None = None
        self.context: otel_context.Context | None = None
        self.attempts = 0


class _Task:
    __slots__ = ("context", "span")

    def __init__(self, span: Span | None, context: otel_context.Context | None) -> None:
        self.span = span
        self.context = context


# The create in progress in this context (its exchanges count as its attempts).
_CREATING: contextvars.ContextVar[_Creation | None] = contextvars.ContextVar(
    "nanobanana_creating", default=None
)


def outcome_name(outcome: object) -> str:
    """The ``nanobanana.outcome`` attribute of a task's outcome (None: abandoned)."""
    if outcome is None:
        return "abandoned"
    if isinstance(outcome, GenerationResult):
        return "succeeded"
    if isinstance(outcome, NoImageError):
        return "no_image"
    if isinstance(outcome, TaskCancelledError):
        return "cancelled"
    if isinstance(outcome, TaskFailedError):
        return "failed"
    return "error"


class Telemetry:
    """Spans and instruments of one client."""

    def __init__(self, *, base_url: str, create_url: str, model: str) -> None:
        self._tracer = trace.get_tracer("nanobanana_async", __version__)
        meter = metrics.get_meter("nanobanana_async", __version__)
        parts = urlsplit(base_url)
        self._server: dict[str, Any] = {"server.address": parts.hostname or ""}
        if parts.port is not None or parts.scheme in ("http", "https"):
            self._server["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        self._create_path = urlsplit(create_url).path
        self._model = model
        self._tasks: dict[str, _Task] = {}
        self.tracks_tasks = False
        self._requests = meter.create_counter(
            "nanobanana.client.requests", unit="{request}", description="HTTP requests sent"
        )
        self._rate_limited = meter.create_counter(
            "nanobanana.client.rate_limited",
            unit="{response}",
            description="429 answers received",
        )
        self._duration = meter.create_histogram(
            "http.client.request.duration", unit="s", description="HTTP exchange duration"
        )
        self._polls = meter.create_histogram(
            "nanobanana.task.polls", unit="{poll}", description="Polls a task took to finish"
        )
        self._tasks_ended = meter.create_counter(
            "nanobanana.tasks", unit="{task}", description="Tasks ended, by outcome"
        )
        self._in_flight = meter.create_up_down_counter(
            "nanobanana.tasks.in_flight", unit="{task}", description="Tasks created, not ended"
        )

    # -- routes -----------------------------------------------------------------------------

    def route(self, path: str) -> tuple[str, str | None]:
        """The route template of an API path, and the request id in it (if any)."""
        if path == self._create_path:
            return "/v1/queue/{model}", None
        match = _TASK_ROUTE.search(path)
        if match is None:
            return "other", None
        action = f"/{match.group(2)}" if match.group(2) else ""
        return "/v1/queue/{model}/requests/{request_id}" + action, unquote(match.group(1))

    # -- HTTP exchanges ---------------------------------------------------------------------

    def on_http(self, event: HttpEvent) -> None:
        """An ``HttpEvent`` hook: one CLIENT span and the request metrics."""
        end = time.time_ns()
        start = end - int(event.elapsed * 1e9)
        template, request_id = self.route(event.path)
        parent: otel_context.Context | None = None
        if request_id is not None:
            task = self._tasks.get(request_id)
            if task is None and self.tracks_tasks and template.endswith("/response"):
                # The scheduler polls a task this client did not create (watched by id).
                task = self._adopt(request_id, start)
            if task is not None:
                parent = task.context
        creation = _CREATING.get()
        if creation is not None and request_id is None:
            creation.attempts += 1
        attributes: dict[str, Any] = {
            "http.request.method": event.method,
            "url.template": template,
            **self._server,
        }
        error_type = event.error
        if event.status is not None:
            attributes["http.response.status_code"] = event.status
            if event.status >= 400 and error_type is None:
                error_type = str(event.status)
        if error_type is not None:
            attributes["error.type"] = error_type
        point = dict(attributes)
        if event.attempt > 1:
            attributes["http.request.resend_count"] = event.attempt - 1
        if request_id is not None:
            attributes["nanobanana.request_id"] = request_id
        span = self._tracer.start_span(
            f"{event.method} {template}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        if error_type is not None:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end)
        if creation is not None and creation.span is None:
            creation.context = trace.set_span_in_context(span)  # untracked: polls go under it
        self._requests.add(1, point)
        self._duration.record(event.elapsed, point)
        if event.status == 429:
            self._rate_limited.add(1, {"url.template": template})

    # -- tasks ------------------------------------------------------------------------------

    @contextmanager
    def creating(self) -> Iterator[_Creation]:
        """Around one create call: the task span is current while the create is sent."""
        creation = _Creation()
        token = None
        if self.tracks_tasks:
            creation.span = self._tracer.start_span(
                TASK_SPAN, attributes={"nanobanana.model": self._model}
            )
            creation.context = trace.set_span_in_context(creation.span)
            token = otel_context.attach(creation.context)
        marker = _CREATING.set(creation)
        try:
            yield creation
        except BaseException as exc:
            self._create_failed(creation, exc)
            raise
        finally:
            _CREATING.reset(marker)
            if token is not None:
                otel_context.detach(token)

    def created(self, creation: _Creation, response: Response) -> None:
        """The create answered: map its request id to the task span."""
        try:
            request_id = parse_ticket(response.json()).request_id
        except ProtocolError as exc:  # the runtime raises SubmissionUnknownError for it
            self._create_failed(creation, exc)
            return
        if creation.span is not None:
            creation.span.set_attribute("nanobanana.request_id", request_id)
            creation.span.set_attribute("nanobanana.attempts", creation.attempts)
            self._in_flight.add(1)
        self._track(request_id, _Task(creation.span, creation.context))

    def _create_failed(self, creation: _Creation, error: BaseException) -> None:
        if creation.span is not None:
            self._tasks_ended.add(1, {"nanobanana.outcome": "create_failed"})
            self._end(creation.span, "create_failed", error, attempts=creation.attempts)

    def _adopt(self, request_id: str, start: int) -> _Task:
        span = self._tracer.start_span(
            TASK_SPAN,
            attributes={"nanobanana.model": self._model, "nanobanana.request_id": request_id},
            start_time=start,
        )
        self._in_flight.add(1)
        task = _Task(span, trace.set_span_in_context(span))
        self._track(request_id, task)
        return task

    def _track(self, request_id: str, task: _Task) -> None:
        while len(self._tasks) >= MAX_TRACKED_TASKS:
            oldest = next(iter(self._tasks))
            self._finish(self._tasks.pop(oldest), "unwatched")
        self._tasks[request_id] = task

    def task_ended(self, entry: TaskRecord) -> None:
        """The scheduler's hook: a watched task finished or was abandoned; end its span."""
        task = self._tasks.pop(entry.request_id, None)
        if task is None or task.span is None:
            return
        span = task.span
        span.set_attribute("nanobanana.polls", entry.polls)
        if entry.started_at is not None:
            span.set_attribute("nanobanana.queue_time", entry.started_at - entry.submitted_at)
        outcome = entry.outcome
        name = outcome_name(outcome)
        self._polls.record(entry.polls, {"nanobanana.outcome": name})
        error = outcome if isinstance(outcome, BaseException) else None
        self._finish(task, name, error)

    def _finish(self, task: _Task, name: str, error: BaseException | None = None) -> None:
        if task.span is None:
            return
        self._in_flight.add(-1)
        self._tasks_ended.add(1, {"nanobanana.outcome": name})
        self._end(task.span, name, error)

    @staticmethod
    def _end(
        span: Span | None, name: str, error: BaseException | None, *, attempts: int = 0
    ) -> None:
        if span is None:
            return
        span.set_attribute("nanobanana.outcome", name)
        if attempts:
            span.set_attribute("nanobanana.attempts", attempts)
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            error_type = getattr(error, "error_type", None)
            if isinstance(error_type, str):
                span.set_attribute("nanobanana.error_type", error_type)
            if name not in ("cancelled", "abandoned"):
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    def close(self) -> None:
        """End the spans of tasks never handed back (created, never watched)."""
        tasks, self._tasks = self._tasks, {}
        for task in tasks.values():
            self._finish(task, "unwatched")


class TracedTransport(Transport):
    """``Transport`` with OpenTelemetry: chosen once, when the client is built."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.telemetry = Telemetry(
            base_url=self.base_url, create_url=self.create_url, model=self.model
        )
        self._hooks = (*self._hooks, self.telemetry.on_http)

    async def request(
        self,
        method: str,
        url: str,
        *,
        kind: Kind,
        json_body: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> Response:
        """``Transport.request``; a create runs inside its task span."""
        if kind != "create":
            return await super().request(
                method, url, kind=kind, json_body=json_body, retry=retry, ok_statuses=ok_statuses
            )
        with self.telemetry.creating() as creation:
            response = await super().request(
                method, url, kind=kind, json_body=json_body, retry=retry, ok_statuses=ok_statuses
            )
            self.telemetry.created(creation, response)
            return response

    def task_end_hook(self) -> Callable[[Any], None]:
        """``Telemetry.task_ended``, for the scheduler; from now on task spans are started."""
        self.telemetry.tracks_tasks = True
        return self.telemetry.task_ended

    async def close(self) -> None:
        """Close the sessions; end the spans of tasks nobody watched."""
        try:
            await super().close()
        finally:
            self.telemetry.close()
