"""Typed value classes for requests, tickets, statuses and results.

Everything here is a frozen, slotted attrs class. ``GenerationRequest`` validates at
construction, so bad input fails with a ``ValidationError`` naming the field before anything
is sent.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from .errors import ValidationError

__all__ = [
    "AspectRatio",
    "GenerationRequest",
    "GenerationResult",
    "ImageSize",
    "LogEntry",
    "Modality",
    "Output",
    "TaskState",
    "TaskStatus",
    "Ticket",
]

MAX_PROMPT_CHARS = 2500
MAX_IMAGE_URLS = 14
_DATA_IMAGE_URI = re.compile(r"^data:image/[A-Za-z0-9.+-]+(;[A-Za-z0-9=.+-]+)*(;base64)?,", re.I)


class AspectRatio(str, enum.Enum):
    """Output aspect ratio, width:height."""

    SQUARE = "1:1"
    PORTRAIT_2_3 = "2:3"
    LANDSCAPE_3_2 = "3:2"
    PORTRAIT_3_4 = "3:4"
    LANDSCAPE_4_3 = "4:3"
    PORTRAIT_4_5 = "4:5"
    LANDSCAPE_5_4 = "5:4"
    PORTRAIT_9_16 = "9:16"
    LANDSCAPE_16_9 = "16:9"
    ULTRAWIDE_21_9 = "21:9"


class ImageSize(str, enum.Enum):
    """Output resolution tier (long side about 1024, 2048 or 4096 pixels)."""

    SIZE_1K = "1K"
    SIZE_2K = "2K"
    SIZE_4K = "4K"


class Modality(str, enum.Enum):
    """A kind of output the model may return."""

    TEXT = "Text"
    IMAGE = "Image"


def _enum_converter(cls: type[enum.Enum], field: str) -> Any:
    allowed = ", ".join(str(m.value) for m in cls)

    def convert(value: Any) -> Any:
        if value is None or isinstance(value, cls):
            return value
        try:
            return cls(value)
        except (ValueError, TypeError):
            raise ValidationError(field, value, "not an allowed value", allowed) from None

    return convert


def _to_prompt(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError("prompt", value, "must be a string", "1 to 2500 characters")
    if not value.strip():
        raise ValidationError("prompt", value, "must not be blank", "1 to 2500 characters")
    if len(value) > MAX_PROMPT_CHARS:
        raise ValidationError(
            "prompt", value, f"is {len(value)} characters long", "1 to 2500 characters"
        )
    return value


def _check_url(url: Any, index: int) -> str:
    field = f"image_urls[{index}]"
    allowed = "absolute http(s) URLs or data:image/... URIs"
    if not isinstance(url, str):
        raise ValidationError(field, url, "must be a string", allowed)
    if _DATA_IMAGE_URI.match(url):
        return url
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValidationError(field, url, "contains whitespace or control characters", allowed)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValidationError(field, url, "is not a valid URL", allowed) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, url, "is not an absolute http(s) URL", allowed)
    return url


def _to_image_urls(value: Any) -> tuple[str, ...]:
    if value is None or value == ():  # the default: no check to make
        return ()
    allowed = f"at most {MAX_IMAGE_URLS} absolute http(s) URLs"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValidationError("image_urls", value, "must be a list of URLs", allowed)
    urls = tuple(value)
    if len(urls) > MAX_IMAGE_URLS:
        raise ValidationError("image_urls", f"{len(urls)} URLs", "too many", allowed)
    return tuple(_check_url(url, i) for i, url in enumerate(urls))


_to_modality = _enum_converter(Modality, "response_modalities")
_to_aspect = _enum_converter(AspectRatio, "aspect_ratio")
_to_size = _enum_converter(ImageSize, "image_size")


def _to_aspect_ratio(value: Any) -> AspectRatio | None:
    result: AspectRatio | None = _to_aspect(value)
    return result


def _to_image_size(value: Any) -> ImageSize | None:
    result: ImageSize | None = _to_size(value)
    return result


def _to_modalities(value: Any) -> tuple[Modality, ...] | None:
    allowed = "a non-empty list of distinct values from Text, Image"
    if value is None:
        return None
    if isinstance(value, (str, Modality)):
        value = [value]
    if not isinstance(value, Iterable):
        raise ValidationError("response_modalities", value, "must be a list", allowed)
    items = tuple(_to_modality(v) for v in value)
    if not items:
        raise ValidationError("response_modalities", value, "must not be empty", allowed)
    if len(set(items)) != len(items):
        raise ValidationError("response_modalities", value, "has duplicates", allowed)
    return items


@attrs.frozen(kw_only=False)
class GenerationRequest:
    """One image generation task: a prompt plus optional references and output settings."""

    prompt: str = attrs.field(converter=_to_prompt)
    image_urls: tuple[str, ...] = attrs.field(default=(), converter=_to_image_urls)
    aspect_ratio: AspectRatio | None = attrs.field(default=None, converter=_to_aspect_ratio)
    image_size: ImageSize | None = attrs.field(default=None, converter=_to_image_size)
    response_modalities: tuple[Modality, ...] | None = attrs.field(
        default=None, converter=_to_modalities
    )

    @property
    def size_class(self) -> str:
        """The class of tasks this one is timed with (its image size; the service's default)."""
        return self.image_size.value if self.image_size is not None else "default"

    @property
    def wants_image(self) -> bool:
        """Whether the request asks for images (the default modalities include them)."""
        modalities = self.response_modalities
        return modalities is None or Modality.IMAGE in modalities

    def __repr__(self) -> str:
        prompt = self.prompt if len(self.prompt) <= 60 else self.prompt[:57] + "..."
        parts = [f"prompt={prompt!r}"]
        if self.image_urls:
            parts.append(f"image_urls=<{len(self.image_urls)}>")
        for name in ("aspect_ratio", "image_size"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value.value!r}")
        if self.response_modalities is not None:
            parts.append(f"response_modalities={[m.value for m in self.response_modalities]!r}")
        return f"GenerationRequest({', '.join(parts)})"


@attrs.frozen
class Ticket:
    """What a create returns: the task's id and where to poll, fetch and cancel it."""

    request_id: str
    status_url: str | None = None
    response_url: str | None = None
    cancel_url: str | None = None
    queue_position: int | None = None


class TaskState(str, enum.Enum):
    """Lifecycle state of a task; the wire's COMPLETED is split by outcome."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def done(self) -> bool:
        """True once the task has stopped, whatever the outcome."""
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


@attrs.frozen
class LogEntry:
    """One log line the service reported for a task."""

    message: str
    timestamp: str | None = None


@attrs.frozen
class TaskStatus:
    """A snapshot of a task's state as the service reported it."""

    state: TaskState
    request_id: str | None = None
    queue_position: int | None = None
    progress: float | None = None
    logs: tuple[LogEntry, ...] = ()
    error_type: str | None = None
    error_message: str | None = None
    inference_time: float | None = None
    response_url: str | None = None
    provider_error: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    @property
    def done(self) -> bool:
        """True once the task has stopped, whatever the outcome."""
        return self.state.done


@attrs.frozen
class Output:
    """One output of a finished task: an image (or other file) by URL, or a text part."""

    type: str
    url: str | None = None
    text: str | None = None
    content_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None
    width: int | None = None
    height: int | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class GenerationResult:
    """The outputs of a task that finished successfully."""

    request_id: str
    outputs: tuple[Output, ...] = ()
    metadata: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    inference_time: float | None = None

    @property
    def images(self) -> tuple[Output, ...]:
        """The image outputs, in the order the service returned them."""
        return tuple(o for o in self.outputs if o.type == "image")

    @property
    def text(self) -> str | None:
        """The text parts joined by newlines, or None when there is no text output."""
        parts = [o.text for o in self.outputs if o.type == "text" and o.text is not None]
        return "\n".join(parts) if parts else None


# Resolve the string annotations now: the package root re-exports these classes under its own
# ``__module__``, after which ``typing.get_type_hints`` could no longer find this module's names.
for _cls in (GenerationRequest, Ticket, LogEntry, TaskStatus, Output, GenerationResult):
    attrs.resolve_types(_cls)
del _cls
