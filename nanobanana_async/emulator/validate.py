"""Create-body validation: 422 with pydantic-style `detail` entries, like the real service."""

from __future__ import annotations

import json
from typing import Any

import attrs

__all__ = ["ASPECT_RATIOS", "IMAGE_SIZES", "MODALITIES", "CreateParams", "validate_create"]

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGE_SIZES = ("1K", "2K", "4K")
MODALITIES = ("Text", "Image")
MAX_PROMPT = 2500
MAX_IMAGES = 14
_FIELDS = frozenset({"prompt", "image_urls", "aspect_ratio", "image_size", "response_modalities"})

Detail = dict[str, Any]


@attrs.frozen
class CreateParams:
    """A create body that passed validation."""

    prompt: str
    image_size: str | None
    aspect_ratio: str | None
    modalities: tuple[str, ...]
    canonical: str  # sorted-key JSON of the body, for duplicate detection


def _err(loc: tuple[str | int, ...], msg: str, kind: str) -> Detail:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def _enum_msg(allowed: tuple[str, ...]) -> str:
    return "Input should be " + ", ".join(f"'{a}'" for a in allowed)


def _check_prompt(value: object) -> list[Detail]:
    if not isinstance(value, str):
        return [_err(("prompt",), "Input should be a valid string", "string_type")]
    if not value.strip():
        return [_err(("prompt",), "String should have at least 1 character", "string_too_short")]
    if len(value) > MAX_PROMPT:
        msg = f"String should have at most {MAX_PROMPT} characters"
        return [_err(("prompt",), msg, "string_too_long")]
    return []


def _check_image_urls(value: object) -> list[Detail]:
    if not isinstance(value, list):
        return [_err(("image_urls",), "Input should be a valid list", "list_type")]
    errors = [
        _err(("image_urls", i), "Input should be a valid string", "string_type")
        for i, item in enumerate(value)
        if not isinstance(item, str)
    ]
    if len(value) > MAX_IMAGES:
        msg = f"List should have at most {MAX_IMAGES} items after validation, not {len(value)}"
        errors.append(_err(("image_urls",), msg, "too_long"))
    return errors


def _check_enum(field: str, value: object, allowed: tuple[str, ...]) -> list[Detail]:
    if value is None or value in allowed:
        return []
    return [_err((field,), _enum_msg(allowed), "enum")]


def _check_modalities(value: object) -> list[Detail]:
    field = "response_modalities"
    if not isinstance(value, list):
        return [_err((field,), "Input should be a valid list", "list_type")]
    if not value:
        return [_err((field,), "List should have at least 1 item after validation", "too_short")]
    errors = [
        _err((field, i), _enum_msg(MODALITIES), "enum")
        for i, item in enumerate(value)
        if item not in MODALITIES
    ]
    if not errors and len(set(value)) != len(value):
        errors.append(_err((field,), "List items must be unique", "value_error"))
    return errors


def validate_create(raw: bytes) -> CreateParams | list[Detail]:
    """Parse and check a create body: the accepted parameters, or the 422 `detail` list."""
    try:
        body = json.loads(raw)
    except ValueError:
        return [_err((), "JSON decode error", "json_invalid")]
    if not isinstance(body, dict):
        return [_err((), "Input should be a valid dictionary", "dict_type")]
    errors: list[Detail] = [
        _err((k,), "Extra inputs are not permitted", "extra_forbidden")
        for k in body
        if k not in _FIELDS
    ]
    if "prompt" not in body:
        errors.append(_err(("prompt",), "Field required", "missing"))
    else:
        errors += _check_prompt(body["prompt"])
    if "image_urls" in body:
        errors += _check_image_urls(body["image_urls"])
    errors += _check_enum("aspect_ratio", body.get("aspect_ratio"), ASPECT_RATIOS)
    errors += _check_enum("image_size", body.get("image_size"), IMAGE_SIZES)
    if "response_modalities" in body:
        errors += _check_modalities(body["response_modalities"])
    if errors:
        return errors
    return CreateParams(
        prompt=body["prompt"],
        image_size=body.get("image_size"),
        aspect_ratio=body.get("aspect_ratio"),
        modalities=tuple(body.get("response_modalities") or MODALITIES),
        canonical=json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
    )
