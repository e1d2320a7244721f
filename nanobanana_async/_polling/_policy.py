"""PollPolicy: when to poll a task (a backoff first, then the learned √hazard schedule)."""

from __future__ import annotations

import random
from typing import Any

import attrs

__all__ = ["PollPolicy"]


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"PollPolicy.{attribute.name} must be > 0 or None, got {value!r}")


@attrs.frozen(kw_only=True)
class PollPolicy:
    """When to poll a task.

    Until ``min_samples`` tasks have finished, polls follow a backoff: interval n (0-based) is
    ``min(max_interval, initial_delay * factor**n)``, jittered by ``±jitter``. From then on, if
    ``target_delay`` is set, polls follow Keller's inspection schedule for the completion times
    learned online: poll density ∝ √hazard, scaled so that a finished task is seen about
    ``target_delay`` seconds after it finished on average (smaller = more requests), each gap
    clamped to ``[min_interval, max_interval]``. ``max_polls_per_second`` is a global poll
    budget: when more polls are due than it allows, the tasks most likely to have finished go
    first. After ``max_errors`` failed polls in a row a task fails with the last error.
    """

    initial_delay: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    factor: float = attrs.field(default=1.5, validator=attrs.validators.ge(1))
    max_interval: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    min_interval: float = attrs.field(default=0.25, validator=attrs.validators.ge(0))
    jitter: float = attrs.field(
        default=0.1, validator=[attrs.validators.ge(0), attrs.validators.lt(1)]
    )
    target_delay: float | None = attrs.field(default=1.0, validator=_positive_or_none)
    min_samples: int = attrs.field(default=20, validator=attrs.validators.ge(2))
    max_polls_per_second: float | None = attrs.field(default=None, validator=_positive_or_none)
    max_errors: int = attrs.field(default=10, validator=attrs.validators.ge(1))

    def interval(self, poll_number: int, rng: random.Random | None = None) -> float:
        """Backoff: seconds from poll ``poll_number`` (0 = submit) to the next poll."""
        if poll_number == 0:
            base = self.initial_delay
        else:
            base = min(self.max_interval, self.initial_delay * self.factor**poll_number)
        if self.jitter:
            base *= (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return base
