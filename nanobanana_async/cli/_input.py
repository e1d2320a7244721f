"""Reading a batch input file: JSONL request objects or plain prompts, one per line, lazily."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from .._http._wire import parse_request
from ..errors import ValidationError, excerpt
from ..models import GenerationRequest

__all__ = ["BadLine", "count_candidates", "read_requests"]


@attrs.frozen
class BadLine:
    """An input line that could not be turned into a request.

    ``value`` is a short excerpt of what was given; ``allowed`` what the field accepts (as the
    library's ``ValidationError`` says it), when known.
    """

    line: int
    field: str
    reason: str
    value: str | None = None
    allowed: str | None = None

    def __str__(self) -> str:
        text = f"line {self.line}: {self.field}: {self.reason}"
        if self.value is not None:
            text += f" (got {self.value})"
        if self.allowed:
            text += f"; allowed: {self.allowed}"
        return text

    @classmethod
    def from_error(cls, line: int, error: ValidationError) -> BadLine:
        """The bad line ``error`` describes, keeping the allowed values."""
        return cls(line, error.field, error.reason, excerpt(repr(error.value), 60), error.allowed)


def _candidates(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            text = raw.strip()
            if text and not text.startswith("#"):
                yield number, text


def count_candidates(path: Path) -> int:
    """How many lines are neither blank nor comments (the expected number of items)."""
    return sum(1 for _ in _candidates(path))


def _parse(text: str, as_json: bool) -> GenerationRequest:
    if as_json or text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError("json", text, f"not valid JSON ({exc.msg})") from None
        return parse_request(data)
    return GenerationRequest(text)


def read_requests(
    path: Path, on_bad: Callable[[BadLine], None] | None = None
) -> Iterator[GenerationRequest]:
    """Yield the valid requests of ``path`` in order; each bad line goes to ``on_bad``.

    The n-th request yielded is item n of the batch, so a rerun with the same file maps the
    same indices (and bad lines never shift them).
    """
    as_json = path.suffix.lower() == ".jsonl"
    for number, text in _candidates(path):
        try:
            request = _parse(text, as_json)
        except ValidationError as exc:
            if on_bad is not None:
                on_bad(BadLine.from_error(number, exc))
            continue
        yield request
