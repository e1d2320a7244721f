"""The wire format: one cattrs converter between the service's JSON and the models.

Strict when sending (only the fields the user set, by their wire names, nothing else) and
tolerant when receiving: the variants listed under "seen in the wild" in the API description are
normalised first (status case and synonyms, ``id`` for ``request_id``, ``error`` as a string or
an object), then the generated cattrs hooks check the types. Unknown fields are kept in
``extra``. Anything that is not JSON, or JSON of the wrong shape, raises ``ProtocolError`` with a
short excerpt.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn
from cattrs.preconf.json import make_converter

from ..errors import ProtocolError, ValidationError
from ..models import (
    AspectRatio,
    GenerationRequest,
    GenerationResult,
    ImageSize,
    LogEntry,
    Modality,
    Output,
    TaskState,
    TaskStatus,
    Ticket,
)

__all__ = [
    "CONVERTER",
    "encode_request",
    "parse_request",
    "parse_response",
    "parse_status",
    "parse_ticket",
]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

_STATES: dict[str, TaskState] = {
    "IN_QUEUE": TaskState.IN_QUEUE,
    "QUEUED": TaskState.IN_QUEUE,
    "PENDING": TaskState.IN_QUEUE,
    "IN_PROGRESS": TaskState.IN_PROGRESS,
    "RUNNING": TaskState.IN_PROGRESS,
    "PROCESSING": TaskState.IN_PROGRESS,
    "COMPLETED": TaskState.SUCCEEDED,
    "SUCCEEDED": TaskState.SUCCEEDED,
    "FAILED": TaskState.FAILED,
    "ERROR": TaskState.FAILED,
    "CANCELED": TaskState.CANCELLED,
    "CANCELLED": TaskState.CANCELLED,
}
_CANCELLED_TYPES = frozenset({"CANCELED", "CANCELLED"})


def _enum_value(member: enum.Enum) -> Any:
    return member.value


def _build() -> cattrs.Converter:
    conv = make_converter(omit_if_default=True)
    # Simple hooks first: the generated class hooks capture them when they are built.
    for enum_cls in (AspectRatio, ImageSize, Modality):
        conv.register_unstructure_hook(enum_cls, _enum_value)
    conv.register_unstructure_hook(
        GenerationRequest,
        make_dict_unstructure_fn(GenerationRequest, conv, _cattrs_omit_if_default=True),
    )
    # Users' JSONL uses the wire names; the attrs converters on the model do the validation.
    conv.register_structure_hook(
        GenerationRequest,
        make_dict_structure_fn(
            GenerationRequest,
            conv,
            _cattrs_forbid_extra_keys=True,
            _cattrs_prefer_attrib_converters=True,
        ),
    )
    for cls in (Ticket, LogEntry, TaskStatus, Output, GenerationResult):
        conv.register_structure_hook(cls, make_dict_structure_fn(cls, conv))
    return conv


CONVERTER = _build()


def encode_request(request: GenerationRequest) -> dict[str, Any]:
    """The create body: only the fields the user set, by their wire names."""
    body: dict[str, Any] = CONVERTER.unstructure(request)
    return body


def parse_request(data: Any) -> GenerationRequest:
    """Build a ``GenerationRequest`` from a wire-shaped mapping (e.g. a JSONL line)."""
    if not isinstance(data, Mapping):
        raise ValidationError("request", data, "must be a JSON object", "an object with 'prompt'")
    try:
        return CONVERTER.structure(data, GenerationRequest)
    except ValidationError:
        raise
    except cattrs.ClassValidationError as exc:
        for sub in exc.exceptions:
            if isinstance(sub, ValidationError):
                raise sub from None
            if isinstance(sub, cattrs.ForbiddenExtraKeysError):
                names = ", ".join(sorted(sub.extra_fields))
                allowed = ", ".join(f.name for f in attrs.fields(GenerationRequest))
                raise ValidationError(names, data, "unknown field", allowed) from None
            if isinstance(sub, KeyError):
                raise ValidationError("prompt", None, "is required", "1 to 2500 chars") from None
        raise ValidationError("request", data, "; ".join(cattrs.transform_error(exc))) from None


def _mapping(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} is not a JSON object", body=_dump(data)[:200])
    return data


def _depth_guarded(parse: Callable[P, R]) -> Callable[P, R]:
    """JSON nested just below the decoder's limit can still exhaust the stack later (in a
    ``str()``, ``repr()`` or ``json.dumps`` of a part of it): that too is a bad response."""

    @functools.wraps(parse)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return parse(*args, **kwargs)
        except RecursionError:
            raise ProtocolError("response is nested too deeply") from None

    return guarded


def _structure(data: dict[str, Any], cls: type[T], raw: Any) -> T:
    try:
        return CONVERTER.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(f"unexpected {cls.__name__} shape", body=_dump(raw)) from exc


def _dump(raw: Any) -> str:
    try:
        return json.dumps(raw, default=repr)[:400]
    except (ValueError, RecursionError):
        try:
            return repr(raw)[:400]
        except RecursionError:
            return "<nested too deeply>"


def _split(data: dict[str, Any], cls: type[Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """Keep the known fields (after renames) and move the rest to ``extra``."""
    known = {f.name for f in attrs.fields(cls)} - {"extra"}
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        name = renames.get(key, key)
        if name in known and name not in out:
            if value is not None:
                out[name] = value
        else:
            extra[key] = value
    if "extra" in {f.name for f in attrs.fields(cls)}:
        out["extra"] = extra
    return out


def _request_id(data: Mapping[str, Any]) -> Any:
    rid = data.get("request_id")
    return data.get("id") if rid is None else rid


_TICKET_URLS = ("status_url", "response_url", "cancel_url")
_TICKET_KEYS = frozenset({"request_id", *_TICKET_URLS, "queue_position", "status"})


def _plain_ticket(raw: Any) -> Ticket | None:
    """The common create answer built directly (plain dict access), or None for cattrs to do."""
    if type(raw) is not dict or not raw.keys() <= _TICKET_KEYS:
        return None
    rid = raw.get("request_id")
    position = raw.get("queue_position")
    if type(rid) is not str or not rid or not _usable_id(rid):
        return None
    if position is not None and type(position) is not int:
        return None
    status_url, response_url, cancel_url = (raw.get(name) for name in _TICKET_URLS)
    for url in (status_url, response_url, cancel_url):
        if url is not None and type(url) is not str:
            return None
    return Ticket(
        rid,
        status_url=status_url,
        response_url=response_url,
        cancel_url=cancel_url,
        queue_position=position,
    )


_RESULT_KEYS = frozenset({"request_id", "outputs", "metadata"})
_OUTPUT_STR_KEYS = frozenset({"type", "url", "text", "content_type", "file_name"})
_OUTPUT_INT_KEYS = frozenset({"file_size", "width", "height"})


def _plain_result(raw: dict[str, Any]) -> GenerationResult | None:
    """The common success body built directly, or None for the general path."""
    if not raw.keys() <= _RESULT_KEYS:
        return None
    rid, outputs, metadata = raw.get("request_id"), raw.get("outputs"), raw.get("metadata", {})
    if type(rid) is not str or type(outputs) is not list or type(metadata) is not dict:
        return None
    parsed = []
    for item in outputs:
        if type(item) is not dict or type(item.get("type")) is not str:
            return None
        for key, value in item.items():
            if value is None:
                continue
            if key in _OUTPUT_STR_KEYS:
                if type(value) is not str:
                    return None
            elif key not in _OUTPUT_INT_KEYS or type(value) is not int:
                return None
        parsed.append(Output(**{k: v for k, v in item.items() if v is not None}))
    return GenerationResult(rid, tuple(parsed), metadata)


@_depth_guarded
def parse_ticket(raw: Any) -> Ticket:
    """Parse a create response into a ``Ticket``."""
    plain = _plain_ticket(raw)
    if plain is not None:
        return plain
    data = _mapping(raw, "create response")
    fields = {"request_id": _request_id(data)}
    for name in ("status_url", "response_url", "cancel_url", "queue_position"):
        if data.get(name) is not None:
            fields[name] = data[name]
    if not isinstance(fields["request_id"], str) or not fields["request_id"]:
        raise ProtocolError("create response has no request_id", body=_dump(raw))
    if not _usable_id(fields["request_id"]):
        raise ProtocolError("create response has an unusable request_id", body=_dump(raw))
    return _structure(fields, Ticket, raw)


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _usable_id(request_id: str) -> bool:
    """Whether an id can go into a URL path: encodable as UTF-8, no control characters."""
    try:
        request_id.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, which JSON's \udXXX escapes can produce
        return False
    return _CONTROL.search(request_id) is None


def _present(value: Any) -> Any:
    """None for a field that says nothing (missing, null, empty)."""
    return None if value is None or value == "" or value == {} else value


def _error_fields(data: Mapping[str, Any]) -> tuple[Any, Any]:
    """(error_type, message) from ``error`` as a string or an object, and ``error_type``."""
    error = _present(data.get("error"))
    error_type = _present(data.get("error_type"))
    message: Any = error
    if isinstance(error, dict):
        message = _present(error.get("message"))
        error_type = error_type or error.get("code") or error.get("type")
        if message is None and error_type is None:
            message = _dump(error)[:200]  # an error object of another shape is still an error
    if message is None and isinstance(data.get("provider_error"), dict):
        message = data["provider_error"].get("message")
    return error_type, message


def has_error(data: Mapping[str, Any]) -> bool:
    """Whether a body reports a failure (API.md: then it is the failure, whatever else it has)."""
    return _present(data.get("error")) is not None or _present(data.get("error_type")) is not None


def _state_of(data: Mapping[str, Any], raw: Any) -> TaskState:
    error_type, message = _error_fields(data)
    if error_type is not None or message is not None:
        # API.md: a body with error/error_type is the failure, whatever its status says.
        if str(error_type).upper() in _CANCELLED_TYPES:
            return TaskState.CANCELLED
        return TaskState.FAILED
    value = data.get("status")
    if not isinstance(value, str):
        raise ProtocolError("status is missing or not a string", body=_dump(raw))
    state = _STATES.get(value.strip().upper())
    if state is None:
        raise ProtocolError(f"unknown task status {value[:40]!r}", body=_dump(raw))
    return state


@_depth_guarded
def parse_status(raw: Any) -> TaskStatus:
    """Parse a status-shaped body (status route, or the result route while pending)."""
    plain = _plain_status(raw)
    if plain is not None:
        return plain
    return _general_status(raw)


_STATUS_KEYS = frozenset({"status", "request_id", "queue_position", "response_url", "progress"})


def _plain_status(raw: Any) -> TaskStatus | None:
    """The common pending/done body (no error, logs or extras) built directly, or None.

    Most polls bring one of these: at a web backend's pace the general path (split, cattrs)
    was a large share of a poll's CPU. It must agree with ``_general_status`` (tested).
    """
    if type(raw) is not dict:
        return None
    logs = _plain_logs(raw.get("logs"))
    if logs is None:
        return None
    if not (raw.keys() - {"logs"} if "logs" in raw else raw.keys()) <= _STATUS_KEYS:
        return None
    status, rid = raw.get("status"), raw.get("request_id")
    position, progress, url = (
        raw.get("queue_position"),
        raw.get("progress"),
        raw.get("response_url"),
    )
    if type(status) is not str or (rid is not None and type(rid) is not str):
        return None
    if position is not None and type(position) is not int:
        return None
    if progress is not None and type(progress) is not float:
        return None
    if url is not None and type(url) is not str:
        return None
    state = _STATES.get(status.strip().upper())
    if state is None:
        return None
    return TaskStatus(
        state,
        request_id=rid,
        queue_position=position,
        progress=progress,
        logs=logs,
        response_url=url,
    )


def _plain_logs(value: Any) -> tuple[LogEntry, ...] | None:
    """Logs absent, null, or a list of ``{"message": str, "timestamp": str | null}``; else None."""
    if value is None:
        return ()
    if type(value) is not list:
        return None
    entries = []
    for item in value:
        if type(item) is not dict or not item.keys() <= _LOG_KEYS:
            return None
        message, timestamp = item.get("message"), item.get("timestamp")
        if type(message) is not str or (timestamp is not None and type(timestamp) is not str):
            return None
        entries.append(LogEntry(message, timestamp))
    return tuple(entries)


_LOG_KEYS = frozenset({"message", "timestamp"})


def _general_status(raw: Any) -> TaskStatus:
    data = _mapping(raw, "status response")
    state = _state_of(data, raw)
    error_type, message = _error_fields(data)
    fields = _split(data, TaskStatus, {"id": "request_id"})
    fields.pop("state", None)
    fields["state"] = state
    for key in ("error", "error_type", "status", "metrics", "provider_error"):
        fields["extra"].pop(key, None)
    fields["error_type"] = None if error_type is None else str(error_type)
    fields["error_message"] = None if message is None else str(message)
    fields["logs"] = _logs(data.get("logs"))
    metrics = data.get("metrics")
    if isinstance(metrics, dict) and metrics.get("inference_time") is not None:
        fields["inference_time"] = metrics["inference_time"]
    provider_error = data.get("provider_error")
    if isinstance(provider_error, dict):
        fields["provider_error"] = provider_error
    return _structure({k: v for k, v in fields.items() if v is not None}, TaskStatus, raw)


def _logs(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    entries = []
    for item in value:
        if isinstance(item, dict) and item.get("message") is not None:
            entries.append({"message": str(item["message"]), "timestamp": item.get("timestamp")})
        elif isinstance(item, str):
            entries.append({"message": item})
    return entries


def _is_status_shaped(data: Mapping[str, Any]) -> bool:
    return has_error(data) or ("outputs" not in data and "status" in data)


@_depth_guarded
def parse_response(status_code: int, raw: Any) -> GenerationResult | TaskStatus:
    """Parse the result route: a ``GenerationResult`` when done, else the status it carries.

    202 (or any status-shaped body, or a body with ``error``/``error_type``) yields a
    ``TaskStatus``; the caller decides whether that means pending, failed or cancelled.
    """
    data = _mapping(raw, "result response")
    if status_code == 202 or _is_status_shaped(data):
        return parse_status(data)
    plain = _plain_result(data)
    if plain is not None:
        return plain
    outputs = data.get("outputs")
    if outputs is None:
        outputs = data.get("images", [])  # Gemini-style passthrough
    if not isinstance(outputs, list):
        raise ProtocolError("outputs is not a list", body=_dump(raw))
    parsed = tuple(_parse_output(o, raw) for o in outputs)
    rid = _request_id(data)
    metadata = data.get("metadata")
    metrics = data.get("metrics")
    fields: dict[str, Any] = {
        "request_id": rid if rid is not None else "",
        "metadata": metadata if isinstance(metadata, dict) else {},
    }
    if isinstance(metrics, dict) and metrics.get("inference_time") is not None:
        fields["inference_time"] = metrics["inference_time"]
    result = _structure(fields, GenerationResult, raw)
    return attrs.evolve(result, outputs=parsed)


def _parse_output(item: Any, raw: Any) -> Output:
    data = _mapping(item, "output")
    fields = _split(data, Output, {})
    fields.setdefault("type", "image" if "url" in data else "text" if "text" in data else "file")
    return _structure(fields, Output, raw)
