import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanobanana_async import (
    GenerationRequest,
    GenerationResult,
    NanoBananaError,
    ProtocolError,
    TaskState,
    TaskStatus,
    ValidationError,
)
from nanobanana_async._http._transport import Response
from nanobanana_async._http._wire import (
    encode_request,
    parse_request,
    parse_response,
    parse_status,
    parse_ticket,
)


def test_encode_sends_only_fields_the_user_set() -> None:
    assert encode_request(GenerationRequest("a cat")) == {"prompt": "a cat"}
    body = encode_request(
        GenerationRequest(
            "a cat",
            image_urls=["https://x/1.png"],
            aspect_ratio="21:9",
            image_size="4K",
            response_modalities=["Text", "Image"],
        )
    )
    assert body == {
        "prompt": "a cat",
        "image_urls": ["https://x/1.png"],
        "aspect_ratio": "21:9",
        "image_size": "4K",
        "response_modalities": ["Text", "Image"],
    }
    # Plain JSON types only, so the body serialises exactly as the service expects.
    assert json.loads(json.dumps(body)) == body
    assert all(type(v) in (str, list) for v in body.values())


def test_parse_request_round_trip_and_strictness() -> None:
    req = GenerationRequest("p", aspect_ratio="3:4", image_size="2K")
    assert parse_request(encode_request(req)) == req
    with pytest.raises(ValidationError) as info:
        parse_request({"prompt": "p", "webhook_url": "https://x"})
    assert info.value.field == "webhook_url"
    with pytest.raises(ValidationError) as info:
        parse_request({"prompt": "p", "image_size": "3K"})
    assert info.value.field == "image_size"
    with pytest.raises(ValidationError) as info:
        parse_request({"aspect_ratio": "1:1"})
    assert info.value.field == "prompt"
    with pytest.raises(ValidationError):
        parse_request(["not", "an", "object"])


@pytest.mark.parametrize(
    "body",
    [
        {
            "request_id": "mmsu_1",
            "response_url": "https://h/r",
            "status_url": "https://h/s",
            "cancel_url": "https://h/c",
            "queue_position": 0,
        },
        {"request_id": "mmsu_1", "status": "QUEUED"},
        {"request_id": "mmsu_1", "status": "queued", "unknown": {"x": 1}},
        {"id": "mmsu_1"},
    ],
)
def test_ticket_variants(body: dict[str, Any]) -> None:
    ticket = parse_ticket(body)
    assert ticket.request_id == "mmsu_1"
    assert ticket.status_url == body.get("status_url")
    assert ticket.queue_position == body.get("queue_position")


def test_ticket_without_id_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        parse_ticket({"status": "QUEUED"})
    with pytest.raises(ProtocolError):
        parse_ticket({"request_id": 17})


@pytest.mark.parametrize(
    ("body", "state", "error_type", "message"),
    [
        (
            {"status": "IN_QUEUE", "request_id": "r", "queue_position": 3},
            TaskState.IN_QUEUE,
            None,
            None,
        ),
        ({"status": "QUEUED", "request_id": "r"}, TaskState.IN_QUEUE, None, None),
        ({"status": "queued", "request_id": "r"}, TaskState.IN_QUEUE, None, None),
        ({"status": "in_progress", "id": "r", "logs": None}, TaskState.IN_PROGRESS, None, None),
        (
            {"status": "COMPLETED", "request_id": "r", "metrics": {"inference_time": 12.34}},
            TaskState.SUCCEEDED,
            None,
            None,
        ),
        ({"status": "completed", "request_id": "r"}, TaskState.SUCCEEDED, None, None),
        (
            {
                "status": "COMPLETED",
                "request_id": "r",
                "error": "boom",
                "error_type": "INFERENCE_FAILURE",
            },
            TaskState.FAILED,
            "INFERENCE_FAILURE",
            "boom",
        ),
        (
            {
                "status": "COMPLETED",
                "request_id": "r",
                "error": {"code": "CONTENT_BLOCKED", "message": "no"},
            },
            TaskState.FAILED,
            "CONTENT_BLOCKED",
            "no",
        ),
        (
            {
                "status": "COMPLETED",
                "request_id": "r",
                "error": "cancelled",
                "error_type": "CANCELED",
            },
            TaskState.CANCELLED,
            "CANCELED",
            "cancelled",
        ),
        (
            {"status": "COMPLETED", "request_id": "r", "error_type": "SOMETHING_NEW"},
            TaskState.FAILED,
            "SOMETHING_NEW",
            None,
        ),
        (
            {
                "status": "COMPLETED",
                "request_id": "r",
                "error_type": "REQUEST_INVALID",
                "provider_error": {"message": "bad ratio"},
            },
            TaskState.FAILED,
            "REQUEST_INVALID",
            "bad ratio",
        ),
    ],
)
def test_status_variants(
    body: dict[str, Any], state: TaskState, error_type: str | None, message: str | None
) -> None:
    status = parse_status(body)
    assert status.state is state
    assert status.request_id == "r"
    assert status.error_type == error_type
    assert status.error_message == message


def test_status_details_and_extras_kept() -> None:
    status = parse_status(
        {
            "status": "IN_PROGRESS",
            "request_id": "r",
            "response_url": "https://h/r",
            "progress": 0.5,
            "logs": [{"message": "step 1", "timestamp": "2026-01-01T00:00:00Z"}, {"x": 1}],
            "new_field": [1, 2],
        }
    )
    assert status.progress == 0.5
    assert [log.message for log in status.logs] == ["step 1"]
    assert status.logs[0].timestamp == "2026-01-01T00:00:00Z"
    assert status.response_url == "https://h/r"
    assert status.extra == {"new_field": [1, 2]}
    done = parse_status({"status": "COMPLETED", "metrics": {"inference_time": 12.34}})
    assert done.inference_time == 12.34


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "r"},
        {"status": 3},
        {"status": "EXPLODED"},
        {"status": "IN_QUEUE", "queue_position": "third"},
        {"status": "IN_QUEUE", "progress": {"a": 1}},
        ["status", "IN_QUEUE"],
        None,
    ],
)
def test_status_of_wrong_shape_is_protocol_error(body: Any) -> None:
    with pytest.raises(ProtocolError):
        parse_status(body)


def test_result_success_body() -> None:
    body = {
        "request_id": "r",
        "outputs": [
            {
                "type": "image",
                "url": "https://cdn.example/a.png",
                "content_type": "image/png",
                "file_name": "a.png",
                "file_size": 123456,
                "width": 1024,
                "height": 1024,
            },
            {"type": "text", "text": "Here is your image"},
            {"type": "image", "url": "https://cdn.example/b.png", "seed": 7},
        ],
        "metadata": {"prompt": "a cat"},
    }
    result = parse_response(200, body)
    assert isinstance(result, GenerationResult)
    assert result.request_id == "r"
    assert [o.url for o in result.images] == [
        "https://cdn.example/a.png",
        "https://cdn.example/b.png",
    ]
    assert result.images[0].file_size == 123456 and result.images[0].width == 1024
    assert result.images[1].extra == {"seed": 7}
    assert result.text == "Here is your image"
    assert result.metadata == {"prompt": "a cat"}


def test_result_pending_and_failed_bodies_are_statuses() -> None:
    pending = parse_response(202, {"status": "IN_PROGRESS", "request_id": "r"})
    assert isinstance(pending, TaskStatus) and pending.state is TaskState.IN_PROGRESS
    failed = parse_response(
        400, {"request_id": "r", "error": "blocked", "error_type": "CONTENT_BLOCKED"}
    )
    assert isinstance(failed, TaskStatus) and failed.state is TaskState.FAILED
    minimal = parse_response(200, {"outputs": [{"type": "file"}]})
    assert isinstance(minimal, GenerationResult) and minimal.outputs[0].type == "file"


def test_result_wrong_shapes() -> None:
    with pytest.raises(ProtocolError):
        parse_response(200, {"outputs": "not a list"})
    with pytest.raises(ProtocolError):
        parse_response(200, {"outputs": [5]})
    with pytest.raises(ProtocolError):
        parse_response(200, {"outputs": [{"type": "image", "width": "wide"}]})


def test_unparsable_body_is_a_protocol_error_with_an_excerpt() -> None:
    with pytest.raises(ProtocolError) as info:
        Response(200, {}, b'{"status": "IN_QU' + b"x" * 1000).json()
    assert "status" in info.value.body_excerpt and len(info.value.body_excerpt) < 250
    with pytest.raises(ProtocolError):
        Response(200, {}, b"[" * 100_000).json()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "status",
                    "request_id",
                    "id",
                    "outputs",
                    "error",
                    "error_type",
                    "logs",
                    "progress",
                    "queue_position",
                    "metrics",
                    "type",
                    "url",
                    "width",
                    "text",
                    "x",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values, st.sampled_from([200, 202, 400]))
def test_arbitrary_json_only_parses_or_raises_protocol_error(value: Any, code: int) -> None:
    for parse in (parse_status, parse_ticket, lambda v: parse_response(code, v)):
        try:
            parsed = parse(value)
        except ProtocolError:
            continue
        assert parsed is not None


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "status": st.sampled_from(
                ["IN_QUEUE", "queued", "IN_PROGRESS", "COMPLETED", "completed"]
            )
        },
        optional={
            "request_id": st.text(min_size=1, max_size=10),
            "queue_position": st.integers(0, 10**6),
            "progress": st.floats(0, 1),
            "logs": st.none() | st.lists(st.fixed_dictionaries({"message": st.text(max_size=5)})),
            "error_type": st.sampled_from(["INFERENCE_FAILURE", "CANCELED", "CONTENT_BLOCKED"]),
        },
    )
)
def test_well_formed_statuses_always_parse(body: dict[str, Any]) -> None:
    status = parse_status(body)
    assert status.queue_position == body.get("queue_position")
    # API.md: a body with error/error_type is the failure, whatever its status says
    assert status.done == (body["status"].upper() == "COMPLETED" or "error_type" in body)
    if "error_type" in body:
        assert status.state in (TaskState.FAILED, TaskState.CANCELLED)


error_values = (
    st.text(min_size=1, max_size=20)
    | st.fixed_dictionaries(
        {"code": st.text(min_size=1, max_size=10)}, optional={"message": st.text(max_size=20)}
    )
    | st.fixed_dictionaries({"message": st.text(min_size=1, max_size=20)})
)
output_values = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["image", "text"])},
        optional={"url": st.just("https://cdn.example/a.png"), "text": st.text(max_size=10)},
    ),
    max_size=3,
)


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "request_id": st.text(min_size=1, max_size=10),
            "status": st.sampled_from(["COMPLETED", "completed", "IN_PROGRESS", "OK", "weird"]),
            "outputs": output_values,
            "metadata": st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
            "error_type": st.text(min_size=1, max_size=20),
        },
    ).flatmap(
        lambda body: st.one_of(
            st.just(body) if "error_type" in body else st.nothing(),
            error_values.map(lambda e: {**body, "error": e}),
        )
    ),
    st.sampled_from([200, 201, 202, 400, 409, 422, 500]),
)
def test_a_body_with_an_error_never_parses_as_a_result(body: dict[str, Any], code: int) -> None:
    try:
        parsed = parse_response(code, body)
    except ProtocolError:
        return  # unreadable is not a success either
    assert not isinstance(parsed, GenerationResult)
    assert parsed.state in (TaskState.FAILED, TaskState.CANCELLED)
    status = parse_status(body)
    assert status.state in (TaskState.FAILED, TaskState.CANCELLED)


@pytest.mark.parametrize(
    "body",
    [
        # the shapes from the issue and API.md: object error, string error, outputs beside it
        {
            "request_id": "r",
            "status": "COMPLETED",
            "error": {"code": "InvalidParameter", "message": "bad"},
            "error_type": "REQUEST_INVALID",
            "outputs": [],
        },
        {
            "request_id": "r",
            "status": "COMPLETED",
            "error": "bad",
            "outputs": [{"type": "image", "url": "https://c/x.png"}],
        },
        {
            "request_id": "r",
            "error": {"code": "CONTENT_BLOCKED", "message": "no"},
            "provider_error": {"message": "safety"},
        },
        {"request_id": "r", "status": "COMPLETED", "error_type": "INFERENCE_TIMEOUT"},
    ],
)
@pytest.mark.parametrize("code", [200, 400, 422])
def test_failure_bodies_of_every_documented_shape_are_failures(
    body: dict[str, Any], code: int
) -> None:
    parsed = parse_response(code, body)
    assert isinstance(parsed, TaskStatus) and parsed.state is TaskState.FAILED
    assert parsed.error_type or parsed.error_message
    if "provider_error" in body:
        assert parsed.provider_error == body["provider_error"]


def test_a_null_or_empty_error_is_not_a_failure() -> None:
    ok = parse_response(
        200,
        {
            "request_id": "r",
            "outputs": [{"type": "image", "url": "https://c/x.png"}],
            "error": None,
            "error_type": "",
        },
    )
    assert isinstance(ok, GenerationResult) and len(ok.images) == 1


# -- the fast path for common status bodies agrees with the general parser -----------------------

_STATUS_VALUES = st.sampled_from(
    ["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "queued", " in_progress ", "RUNNING", "BOGUS", 3, None]
)
_ANY_SCALAR = st.one_of(st.none(), st.integers(-5, 5), st.floats(0, 1), st.text(max_size=8))
_STATUS_BODIES = st.fixed_dictionaries(
    {"status": _STATUS_VALUES},
    optional={
        "request_id": st.one_of(st.none(), st.text(max_size=8), st.integers()),
        "queue_position": st.one_of(
            st.none(), st.integers(0, 9), st.floats(0, 9), st.text(max_size=2)
        ),
        "progress": st.one_of(st.none(), st.floats(0, 1), st.integers(0, 1)),
        "response_url": st.one_of(
            st.none(), st.just("https://api.example/r/response"), st.integers()
        ),
        "logs": st.one_of(
            st.none(),
            st.just([]),
            st.just([{"message": "step 1"}]),
            st.just([{"message": "step 2", "timestamp": "2026-11-26T10:00:00+00:00"}]),
            st.just([{"message": "m", "timestamp": None}, "a plain line"]),
            st.just([{"message": 3}]),
            st.just([{"message": "m", "level": "info"}]),
            st.just({"message": "not a list"}),
        ),
        "error": st.one_of(st.none(), st.just(""), st.just("boom")),
        "error_type": st.one_of(st.none(), st.just("CANCELED")),
        "metrics": st.just({"inference_time": 1.5}),
        "other": _ANY_SCALAR,
    },
)


@settings(max_examples=400, deadline=None)
@given(_STATUS_BODIES)
def test_the_plain_status_path_agrees_with_the_general_one(body: dict[str, Any]) -> None:
    from nanobanana_async._http._wire import _general_status, _plain_status

    plain = _plain_status(body)
    try:
        general = _general_status(body)
    except NanoBananaError as exc:
        assert plain is None, f"the fast path accepted what the general one refuses: {exc}"
        return
    assert plain is None or plain == general
    assert parse_status(body) == general


def test_common_pending_bodies_take_the_plain_path() -> None:
    from nanobanana_async._http._wire import _plain_status

    for body in (
        {"status": "IN_QUEUE", "request_id": "r", "queue_position": 3, "response_url": "u"},
        {"status": "IN_PROGRESS", "request_id": "r", "response_url": "u", "logs": None},
        {"status": "IN_PROGRESS", "progress": 0.5},
        {  # the emulator's (and the service's) running task, logs as a list
            "status": "IN_PROGRESS",
            "request_id": "r",
            "response_url": "u",
            "logs": [{"message": "Generating image", "timestamp": "2026-11-26T10:00:00+00:00"}],
            "progress": 0.61,
        },
    ):
        assert _plain_status(body) is not None, body
