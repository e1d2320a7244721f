"""OpenTelemetry (``Client(tracing=True)``): the span tree, its attributes, the metrics, and
that neither the key nor the prompt is ever recorded. In-memory exporters, the emulator.

The task span ends when the poll scheduler hands the finished (or abandoned) entry to the hook
``transport.task_end_hook()`` returned (``PollScheduler(on_end=...)``, wired by the runtime).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from nanobanana_async import Client, TaskFailedError, TimeoutError, ValidationError
from nanobanana_async.emulator import Emulator, Faults

from ..helpers import client_for

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once

pytestmark = pytest.mark.anyio

PROMPT = "a confidential banana prompt 7f3a"
CREATE = "POST /v1/queue/{model}"
POLL = "GET /v1/queue/{model}/requests/{request_id}/response"


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def metric_points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        points: list[Any] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points

    def total(self, name: str, **attributes: Any) -> float:
        return sum(
            p.value
            for p in self.metric_points(name)
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )


def _reset_globals(tracer_provider: Any, meter_provider: Any) -> None:
    # The API sets each global provider once per process; OpenTelemetry's own test helpers
    # reset these private globals the same way.
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    metrics._internal._METER_PROVIDER = None  # type: ignore[attr-defined]
    if tracer_provider is not None:
        trace.set_tracer_provider(tracer_provider)
    if meter_provider is not None:
        metrics.set_meter_provider(meter_provider)


@pytest.fixture
def otel() -> Iterator[Otel]:
    sdk = Otel()
    _reset_globals(sdk.tracer_provider, sdk.meter_provider)
    try:
        yield sdk
    finally:
        _reset_globals(None, None)
        sdk.meter_provider.shutdown()


def assert_no_secrets(spans: list[ReadableSpan], *secrets: str) -> None:
    for span in spans:
        text = span.to_json()
        for secret in secrets:
            assert secret not in text, f"{secret!r} recorded in span {span.name}"


def children_of(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


# -- the span tree --------------------------------------------------------------------------


async def test_one_task_span_with_a_child_per_http_exchange(
    otel: Otel, nanobanana_emulator: Emulator
) -> None:
    tracer = trace.get_tracer("test")
    async with client_for(nanobanana_emulator, tracing=True) as client:
        with tracer.start_as_current_span("POST /generate (the app's handler)") as handler:
            result = await client.generate(PROMPT, timeout=20)
    spans = otel.finished()
    [task] = otel.finished("nanobanana.task")
    # The task span is a child of whatever span the caller had open.
    assert task.parent is not None and task.parent.span_id == handler.get_span_context().span_id
    children = children_of(spans, task)
    assert {s.name for s in children} == {CREATE, POLL}
    assert len(children) == len(spans) - 2  # every exchange, nothing else
    assert all(s.context.trace_id == task.context.trace_id for s in children)
    polls = [s for s in children if s.name == POLL]
    attrs = dict(task.attributes or {})
    assert attrs["nanobanana.request_id"] == result.request_id
    assert attrs["nanobanana.model"] == "nano_banana_pro"
    assert attrs["nanobanana.attempts"] == 1
    assert attrs["nanobanana.polls"] == len(polls)
    assert attrs["nanobanana.outcome"] == "succeeded"
    assert attrs.get("nanobanana.queue_time", 0.0) >= 0.0
    assert "error.type" not in attrs and task.status.status_code is StatusCode.UNSET
    for span in children:
        a = dict(span.attributes or {})
        assert a["http.request.method"] in ("POST", "GET")
        assert a["url.template"] in ("/v1/queue/{model}", POLL.split(" ")[1])
        assert a["server.address"] == "127.0.0.1" and isinstance(a["server.port"], int)
        assert a["http.response.status_code"] in (200, 202)
        assert span.kind is trace.SpanKind.CLIENT
        assert task.start_time <= span.start_time <= span.end_time <= task.end_time
    assert all(
        dict(s.attributes or {})["nanobanana.request_id"] == result.request_id for s in polls
    )
    assert_no_secrets(spans, nanobanana_emulator.api_key, PROMPT, "confidential")


async def test_a_failed_task_records_its_error_type(
    otel: Otel, nanobanana_emulator: Emulator
) -> None:
    async with client_for(nanobanana_emulator, tracing=True) as client:
        with pytest.raises(TaskFailedError):
            await client.generate("a [blocked] banana", timeout=20)
    [task] = otel.finished("nanobanana.task")
    attrs = dict(task.attributes or {})
    assert attrs["nanobanana.outcome"] == "failed"
    assert attrs["error.type"] == "TaskFailedError"
    assert attrs["nanobanana.error_type"] == "CONTENT_BLOCKED"
    assert task.status.status_code is StatusCode.ERROR


@pytest.mark.nanobanana_emulator(time_scale=1.0)  # tasks take 2 s
async def test_an_abandoned_wait_and_an_unwatched_task_end_their_spans(
    otel: Otel, nanobanana_emulator: Emulator
) -> None:
    async with client_for(nanobanana_emulator, tracing=True) as client:
        with pytest.raises(TimeoutError):
            await client.generate("a slow banana", timeout=0.2)
        job = await client.submit("a banana nobody waits for")
        assert not otel.finished("nanobanana.task")[1:]  # that one is still open
    outcomes = {
        dict(s.attributes or {})["nanobanana.request_id"]: dict(s.attributes or {})
        for s in otel.finished("nanobanana.task")
    }
    assert len(outcomes) == 2
    assert outcomes[job.request_id]["nanobanana.outcome"] == "unwatched"
    [abandoned] = [a for rid, a in outcomes.items() if rid != job.request_id]
    assert abandoned["nanobanana.outcome"] == "abandoned"
    assert otel.total("nanobanana.tasks.in_flight") == 0


async def test_a_task_watched_by_id_gets_its_span_at_its_first_poll(
    otel: Otel, nanobanana_emulator: Emulator
) -> None:
    async with client_for(nanobanana_emulator) as plain:
        request_id = (await plain.submit("a banana")).request_id
    async with client_for(nanobanana_emulator, tracing=True) as client:
        await client.result(request_id, timeout=20)
    [task] = otel.finished("nanobanana.task")
    assert dict(task.attributes or {})["nanobanana.request_id"] == request_id
    assert {s.name for s in children_of(otel.finished(), task)} == {POLL}


# -- retries and metrics --------------------------------------------------------------------


@pytest.mark.nanobanana_emulator(
    faults=Faults(rate_limited_429=0.3, retry_after_seconds=0.01), seed=7
)
async def test_metrics_and_retries(otel: Otel, nanobanana_emulator: Emulator) -> None:
    prompts = [f"{PROMPT} #{i}" for i in range(6)]
    async with client_for(nanobanana_emulator, tracing=True) as client:
        results = await client.map(prompts, max_in_flight=3)
        stats = client.stats
    assert len(results) == 6
    spans = otel.finished()
    exchanges = [s for s in spans if s.kind is trace.SpanKind.CLIENT]
    limited = [
        s for s in exchanges if dict(s.attributes or {}).get("http.response.status_code") == 429
    ]
    assert limited, "the fault rate should have produced 429s"
    assert all(s.status.status_code is StatusCode.ERROR for s in limited)
    assert all(dict(s.attributes or {})["error.type"] == "429" for s in limited)
    assert any(dict(s.attributes or {}).get("http.request.resend_count", 0) >= 1 for s in exchanges)
    # The counters agree with the spans and with the client's own statistics.
    assert otel.total("nanobanana.client.requests") == len(exchanges) == stats.requests_sent
    assert otel.total("nanobanana.client.rate_limited") == len(limited) == stats.rate_limited
    assert otel.total("nanobanana.client.requests", **{"http.response.status_code": 429}) == len(
        limited
    )
    [polls] = otel.metric_points("nanobanana.task.polls")
    assert polls.count == 6 and polls.sum == stats.polls_sent
    assert otel.total("nanobanana.tasks", **{"nanobanana.outcome": "succeeded"}) == 6
    assert otel.total("nanobanana.tasks.in_flight") == 0
    [duration] = [p for p in otel.metric_points("http.client.request.duration")][:1]
    assert duration.count > 0
    tasks = otel.finished("nanobanana.task")
    assert len(tasks) == 6
    # A create that met a 429 counts it as an attempt of its task.
    attempts = sum(dict(t.attributes or {})["nanobanana.attempts"] for t in tasks)
    assert (
        attempts == len(otel.finished(CREATE)) == 6 + len([s for s in limited if s.name == CREATE])
    )
    assert [s for s in limited if s.name == CREATE], "seed 7 limits at least one create"
    assert_no_secrets(spans, nanobanana_emulator.api_key, PROMPT, "confidential")


# -- the hook wired, without tracing, without an SDK ----------------------------


async def test_the_runtime_wires_the_task_end_hook(
    otel: Otel, nanobanana_emulator: Emulator
) -> None:
    """With tracing on, the scheduler ends each task's span itself: polls are its children."""
    async with client_for(nanobanana_emulator, tracing=True) as client:
        assert client._runtime.scheduler._on_end is not None
        await client.generate(PROMPT, timeout=20)
    spans = otel.finished()
    [task] = otel.finished("nanobanana.task")
    polls = otel.finished(POLL)
    assert polls and all(span in children_of(spans, task) for span in polls)
    assert_no_secrets(spans, nanobanana_emulator.api_key, PROMPT)


async def test_tracing_off_records_nothing(otel: Otel, nanobanana_emulator: Emulator) -> None:
    async with client_for(nanobanana_emulator) as client:
        assert client._runtime.transport.task_end_hook() is None
        await client.generate(PROMPT, timeout=20)
    assert otel.finished() == []
    assert otel.metric_points("nanobanana.client.requests") == []


async def test_no_sdk_configured_is_the_apis_no_op(nanobanana_emulator: Emulator) -> None:
    _reset_globals(None, None)
    async with client_for(nanobanana_emulator, tracing=True) as client:
        result = await client.generate(PROMPT, timeout=20)
    assert result.images


def test_route_templates() -> None:
    from nanobanana_async._http._otel import Telemetry

    telemetry = Telemetry(
        base_url="https://api.example/model",
        create_url="https://api.example/model/v1/queue/nano_banana_pro",
        model="nano_banana_pro",
    )
    assert telemetry.route("/model/v1/queue/nano_banana_pro") == ("/v1/queue/{model}", None)
    assert telemetry.route("/model/v1/queue/nano_banana_pro/requests/a%2Fb/cancel") == (
        "/v1/queue/{model}/requests/{request_id}/cancel",
        "a/b",
    )
    assert telemetry.route("/elsewhere/requests/r1") == (
        "/v1/queue/{model}/requests/{request_id}",
        "r1",
    )
    assert telemetry.route("/model/health") == ("other", None)


# -- the optional dependency ----------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_nothing_from_opentelemetry_is_imported_without_tracing() -> None:
    proc = run_python(
        "import sys, nanobanana_async\n"
        "c = nanobanana_async.Client('k', base_url='https://api.example/model')\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().replace("'", '"')) == []


def test_tracing_without_the_extra_names_it() -> None:
    proc = run_python(
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if the extra were not installed\n"
        "from nanobanana_async import Client, ValidationError\n"
        "try:\n"
        "    Client('k', base_url='https://api.example/model', tracing=True)\n"
        "except ValidationError as exc:\n"
        "    print(exc.field, '|', exc)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tracing |") and "nanobanana-async[otel]" in proc.stdout


def test_tracing_must_be_a_bool() -> None:
    with pytest.raises(ValidationError, match="tracing"):
        Client("k", base_url="https://api.example/model", tracing=1)  # type: ignore[arg-type]


async def test_concurrent_tasks_keep_their_exchanges_apart(
    otel: Otel, nanobanana_emulator: Emulator
) -> None:
    """Creates sent at the same time: each exchange lands under its own task's span."""
    async with (
        client_for(nanobanana_emulator, tracing=True) as client,
        anyio.create_task_group() as tg,
    ):
        for i in range(5):
            tg.start_soon(client.generate, f"banana {i}")
    spans = otel.finished()
    tasks = otel.finished("nanobanana.task")
    assert len(tasks) == 5
    for task in tasks:
        rid = dict(task.attributes or {})["nanobanana.request_id"]
        children = children_of(spans, task)
        assert [s.name for s in children].count(CREATE) == 1
        polls = [s for s in children if s.name == POLL]
        assert polls and all(
            dict(s.attributes or {})["nanobanana.request_id"] == rid for s in polls
        )
    assert sum(len(children_of(spans, t)) for t in tasks) == len(spans) - 5
