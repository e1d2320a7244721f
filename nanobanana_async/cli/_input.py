"""Reading a batch input file: JSONL request objects or plain prompts, one per line, lazily.

A shard ``i/n`` of the input is the request lines whose position (0-based, counting every line
that is neither blank nor a comment, valid or not) is ``i`` modulo ``n``: the same lines on
every rerun, whichever machine runs it, and a bad line belongs to exactly one shard.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from .._http._wire import parse_request
from ..errors import ValidationError, excerpt
from ..models import GenerationRequest

__all__ = ["BadLine", "Shard", "count_candidates", "read_requests"]


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


@attrs.frozen
class Shard:
    """Shard ``index`` of ``count``: the request lines at positions ``index`` modulo ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` with ``0 <= I < N`` (e.g. ``$JOB_COMPLETION_INDEX/4``); ValueError else."""
        head, sep, tail = text.partition("/")
        try:
            if not sep:
                raise ValueError
            index, count = int(head), int(tail)
        except ValueError:
            raise ValueError(f"--shard takes I/N, such as 0/4 (got {text!r})") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"--shard I/N needs N >= 1 and 0 <= I < N (got {text!r})")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def label(self) -> str:
        """``shard-I-of-N``, for default file names."""
        return f"shard-{self.index}-of-{self.count}"

    def takes(self, position: int) -> bool:
        """Whether the request line at ``position`` (0-based) is in this shard."""
        return position % self.count == self.index


def _candidates(path: Path, shard: Shard | None = None) -> Iterator[tuple[int, int, str]]:
    """(position, line number, text) of each request line (of ``shard``, if given)."""
    with path.open(encoding="utf-8") as fh:
        position = 0
        for number, raw in enumerate(fh, start=1):
            text = raw.strip()
            if text and not text.startswith("#"):
                if shard is None or shard.takes(position):
                    yield position, number, text
                position += 1


def count_candidates(path: Path, shard: Shard | None = None) -> int:
    """How many lines are neither blank nor comments (the expected number of items)."""
    return sum(1 for _ in _candidates(path, shard))


def _parse(text: str, as_json: bool) -> GenerationRequest:
    if as_json or text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError("json", text, f"not valid JSON ({exc.msg})") from None
        return parse_request(data)
    return GenerationRequest(text)


def read_requests(
    path: Path,
    on_bad: Callable[[BadLine], None] | None = None,
    *,
    shard: Shard | None = None,
    positions: list[int] | None = None,
) -> Iterator[GenerationRequest]:
    """Yield the valid requests of ``path`` (of ``shard``) in order; bad lines go to ``on_bad``.

    The n-th request yielded is item n of the batch, so a rerun with the same file maps the
    same indices (and bad lines never shift them). ``positions``, if given, gets the position
    of each request yielded in the whole input (the item's number across all shards).
    """
    as_json = path.suffix.lower() == ".jsonl"
    for position, number, text in _candidates(path, shard):
        try:
            request = _parse(text, as_json)
        except ValidationError as exc:
            if on_bad is not None:
                on_bad(BadLine.from_error(number, exc))
            continue
        if positions is not None:
            positions.append(position)
        yield request
