"""JSON bodies exactly as the service writes them, bent by the configured wire variants.

Built by hand (not with the SDK's models) so that an SDK parsing bug cannot cancel itself out.
"""

from __future__ import annotations

import datetime
from typing import Any

from .config import Variants
from .engine import Engine, Task
from .images import dimensions

__all__ = [
    "FOREIGN_ORIGIN",
    "PROVIDER_CODES",
    "REFUSAL_TEXT",
    "create_body",
    "detail",
    "failure_body",
    "gateway_error",
    "status_body",
    "status_name",
    "success_body",
    "task_url",
]

FOREIGN_ORIGIN = "http://evil.invalid/model"
_NOT_FOUND = {"detail": "Request not found"}
# The provider's own error codes, sent in `error.code` by the `failure_with_outputs` variant.
PROVIDER_CODES = {
    "REQUEST_INVALID": "InvalidParameter",
    "CONTENT_BLOCKED": "ContentBlocked",
    "INFERENCE_FAILURE": "InferenceFailed",
    "INFERENCE_TIMEOUT": "InferenceTimeout",
    "CANCELED": "Canceled",
}
REFUSAL_TEXT = "I can't generate that image. Try rephrasing the prompt."


def status_name(state: str, v: Variants) -> str:
    """The state as this server spells it."""
    if state == "IN_QUEUE" and v.queued_synonym:
        state = "QUEUED"
    return state.lower() if v.lowercase_status else state


def task_url(base_url: str, task: Task, leaf: str) -> str:
    """Absolute URL of one of a task's routes (`status`, `response`, `cancel`)."""
    return f"{base_url}/v1/queue/{task.model}/requests/{task.request_id}/{leaf}"


def _id_key(v: Variants) -> str:
    return "id" if v.id_field else "request_id"


def create_body(task: Task, position: int, v: Variants, base_url: str) -> dict[str, Any]:
    """The create response for a just-accepted task."""
    body: dict[str, Any] = {_id_key(v): task.request_id}
    if v.minimal_create:
        return body
    origin = FOREIGN_ORIGIN if v.foreign_urls else base_url
    body["response_url"] = task_url(origin, task, "response")
    body["status_url"] = task_url(origin, task, "status")
    body["cancel_url"] = task_url(origin, task, "cancel")
    body["queue_position"] = position
    if v.create_status_field:
        body["status"] = status_name("QUEUED", v)
    return body


def _error_value(task: Task, v: Variants) -> object:
    if v.error_object:
        return {"code": task.error_type, "message": task.error}
    return task.error


def _logs(task: Task, progress: float) -> list[dict[str, str]] | None:
    # Early in a run the service reports null logs; later a list, both seen in the wild.
    if progress < 0.5:
        return None
    ts = datetime.datetime.fromtimestamp(task.started_wall, datetime.timezone.utc).isoformat()
    return [{"message": "Generating image", "timestamp": ts}]


def status_body(task: Task, engine: Engine, v: Variants, base_url: str) -> dict[str, Any]:
    """The status document of a task in its current state."""
    origin = FOREIGN_ORIGIN if v.foreign_urls else base_url
    body: dict[str, Any] = {
        "status": status_name(task.state, v),
        _id_key(v): task.request_id,
        "response_url": task_url(origin, task, "response"),
    }
    state = task.state
    if state == "IN_QUEUE":
        body["queue_position"] = engine.queue_position(task)
        body["logs"] = None
    elif state == "IN_PROGRESS":
        progress = engine.progress(task)
        body["logs"] = _logs(task, progress)
        body["progress"] = round(progress, 4)
    else:
        body["logs"] = None
        body["metrics"] = {"inference_time": round(task.inference_time or 0.0, 4)}
        if task.error_type is not None:
            body["error"] = _error_value(task, v)
            body["error_type"] = task.error_type
    return body


def failure_body(task: Task, v: Variants) -> dict[str, Any]:
    """The result-route body of a task that failed or was cancelled.

    Sent with HTTP 400; under `failure_with_outputs` with HTTP 200 and an empty `outputs` list,
    the error object (if `error_object`) carrying the provider's code.
    """
    error = _error_value(task, v)
    if v.failure_with_outputs and isinstance(error, dict):
        error["code"] = PROVIDER_CODES.get(task.error_type or "", task.error_type)
    body: dict[str, Any] = {
        "request_id": task.request_id,
        "status": status_name("COMPLETED", v),
        "error": error,
        "error_type": task.error_type,
    }
    if v.failure_with_outputs:
        body["outputs"] = []
    return body


def success_body(task: Task, cdn_url: str, file_size: int | None) -> dict[str, Any]:
    """The result-route body of a successful task; `file_size` is None when there is no image.

    A task that finished without an image (`task.no_image`) carries only a text refusal (when
    Text was asked for; else no output at all) and `metadata.finish_reason` `SAFETY`.
    """
    if task.no_image:
        refusal = [{"type": "text", "text": REFUSAL_TEXT}] if "Text" in task.modalities else []
        metadata = {"prompt": task.prompt, "finish_reason": "SAFETY"}
        return {"request_id": task.request_id, "outputs": refusal, "metadata": metadata}
    outputs: list[dict[str, Any]] = []
    if file_size is not None:
        width, height = dimensions(task.image_size, task.aspect_ratio)
        outputs.append(
            {
                "type": "image",
                "url": f"{cdn_url}/files/{task.request_id}/0.png",
                "content_type": "image/png",
                "file_name": f"{task.request_id}_0.png",
                "file_size": file_size,
                "width": width,
                "height": height,
            }
        )
    if "Text" in task.modalities:
        outputs.append({"type": "text", "text": f"Here is your image for: {task.prompt[:80]}"})
    return {"request_id": task.request_id, "outputs": outputs, "metadata": {"prompt": task.prompt}}


def gateway_error(code: str, message: str, request_id: str) -> dict[str, Any]:
    """A gateway-level error (401, 429) body."""
    return {"error": {"code": code, "message": message}, "request_id": request_id}


def detail(message: str = _NOT_FOUND["detail"]) -> dict[str, Any]:
    """An application-level `{"detail": ...}` error body."""
    return {"detail": message}
