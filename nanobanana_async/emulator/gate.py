"""Admission before a route runs: the per-key token bucket and the seeded per-request fault draw."""

from __future__ import annotations

import math
import random
import time

from .config import Faults

__all__ = ["FaultPicker", "TokenBuckets"]


class TokenBuckets:
    """One token bucket per API key; rate and burst are read per call so they can change live."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)

    def take(self, key: str, rate: float, burst: int) -> float:
        """Take a token: 0.0 when allowed, else the seconds until the next token."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate if rate > 0 else math.inf


class FaultPicker:
    """Maps one draw of the seeded fault stream per eligible request onto at most one fault kind."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"faults:{seed}")
        self._faults: Faults | None = None
        self._table: dict[str, tuple[tuple[str, float], ...]] = {}

    def pick(self, faults: Faults, route: str) -> str | None:
        """The fault to inject on this request, or None."""
        if faults is not self._faults:
            self._faults = faults
            kinds = faults.kinds()
            self._table = {
                r: tuple(
                    (k, p)
                    for k, p in kinds
                    if p > 0 and (k != "lost_create_response" or r == "create")
                )
                for r in faults.routes
            }
        table = self._table.get(route)
        if table is None:
            return None
        # Draw even when nothing can fire: the stream position depends only on the request sequence.
        u = self._rng.random()
        for kind, p in table:
            if u < p:
                return kind
            u -= p
        return None
