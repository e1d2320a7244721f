"""Client-side adaptive rate limiter shared by all requests of a client.

Unlimited until the service first answers 429; from then on requests are paced by a token bucket
whose rate follows a CUBIC curve (as in the AWS SDKs' "adaptive" retry mode): a 429 cuts the rate
to ``beta`` times the measured send rate, after which the rate grows back quickly toward the rate
at which the 429 happened, lingers there, and then slowly probes beyond it.

The pacing math lives in :class:`PacingCore`, which is synchronous and takes ``now`` explicitly so
that it can be driven by a discrete-event simulation; :class:`AdaptiveRateLimiter` adds the
sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["AdaptiveRateLimiter", "PacingCore"]


class _RateMeter:
    """Exponentially weighted event rate over time constant ``tau``, O(1) per event."""

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self.acc = 0.0
        self.last = -math.inf
        self.first = -math.inf

    def add(self, t: float) -> None:
        if self.first == -math.inf:
            self.first = self.last = t
        elif t > self.last:
            self.acc *= math.exp(-(t - self.last) / self.tau)
            self.last = t
        self.acc += 1.0

    def rate(self, t: float) -> float:
        if self.first == -math.inf:
            return 0.0
        acc = self.acc * math.exp(-max(0.0, t - self.last) / self.tau)
        # Bias-correct the warm-up: right after the first event only part of a window is seen.
        seen = 1.0 - math.exp(-max(t - self.first, 1e-3) / self.tau)
        return acc / (self.tau * seen)


class PacingCore:
    """Synchronous pacing and rate-adaptation state; every method takes the current time."""

    def __init__(
        self,
        *,
        max_rate: float | None = None,
        min_rate: float = 0.5,
        beta: float = 0.7,
        recovery_time: float = 1.0,
        probe_time: float = 60.0,
        burst: float = 1.0,
        cooldown: float = 0.3,
        rate_window: float = 0.5,
        margin: float = 0.93,
        min_share: float = 0.1,
    ) -> None:
        """Configure the limiter; see :class:`AdaptiveRateLimiter` for the public knobs."""
        if max_rate is not None and max_rate <= 0:
            raise ValueError("max_rate must be positive")
        if min_rate <= 0 or not 0 < beta < 1 or burst < 1:
            raise ValueError("need min_rate > 0, 0 < beta < 1, burst >= 1")
        self.max_rate = max_rate
        self.min_rate = min_rate if max_rate is None else min(min_rate, max_rate)
        self.beta = beta
        self.recovery_time = recovery_time
        self.probe_time = probe_time
        self.burst = burst
        self.cooldown = cooldown
        self.rate_window = rate_window
        self.margin = margin
        # None = no limit yet; a configured max_rate turns pacing on from the start.
        self.fill_rate: float | None = max_rate
        self.next_free = -math.inf
        self.hold_until = -math.inf
        self.epoch = 0
        self.throttled = 0
        self.last_max = 0.0
        self.last_cut = -math.inf
        self._cut_rate = 0.0
        self._hold_start = -math.inf
        self._held = 0.0
        self._sent = _RateMeter(rate_window)
        self._accepted = _RateMeter(rate_window)
        self._refused = _RateMeter(rate_window)
        self.min_share = min_share

    # ---- measured rates ----------------------------------------------------------------------

    def _active(self, now: float) -> float:
        """``now`` minus time spent in Retry-After holds, so holds do not depress rate estimates."""
        if self.hold_until == -math.inf:
            return now  # never held (the usual case, twice per request): nothing to take out
        return now - self._held - max(0.0, min(now, self.hold_until) - self._hold_start)

    def record_send(self, now: float) -> None:
        """Count one request actually sent at ``now``."""
        self._sent.add(self._active(now))

    def measured_rate(self, now: float) -> float:
        """Recent send rate in requests/s (time spent on hold excluded)."""
        return self._sent.rate(self._active(now))

    def accepted_rate(self, now: float) -> float:
        """Recent rate of non-429 responses in requests/s (time spent on hold excluded)."""
        return self._accepted.rate(self._active(now))

    # ---- pacing --------------------------------------------------------------------------------

    def unpaced(self, now: float) -> bool:
        """Whether a send at ``now`` needs no slot: no rate set yet and no hold in force."""
        return self.fill_rate is None and now >= self.hold_until

    def send_unpaced(self, now: float) -> bool:
        """Count a send at ``now`` if it needs no slot (``unpaced``) and return True; False
        (nothing counted) when it must reserve one. One call on the hot path instead of two."""
        if self.fill_rate is not None or now < self.hold_until:
            return False
        self._sent.add(self._active(now))
        return True

    def reserve(self, now: float) -> float:
        """Reserve the next send slot; returns the time at which the caller may send."""
        start = max(now, self.hold_until)
        rate = self.fill_rate
        if rate is None:
            return start
        interval = 1.0 / rate
        # GCRA: a slot may lag `now` by up to burst-1 intervals, which is the bucket's capacity.
        slot = max(self.next_free, start - (self.burst - 1.0) * interval)
        self.next_free = slot + interval
        return max(slot, start)

    def still_valid(self, epoch: int, now: float) -> bool:
        """Whether a slot reserved under ``epoch`` may be used at ``now`` (no cut, not on hold)."""
        return epoch == self.epoch and now >= self.hold_until

    # ---- adaptation ----------------------------------------------------------------------------

    def _curve(self, now: float) -> float:
        """Target rate ``now`` on the recovery/probe curve after the last cut."""
        w = self.last_max
        dt = now - self.last_cut
        k = self.recovery_time
        if dt <= k:
            # Concave CUBIC recovery from the cut rate up to w within recovery_time.
            x = dt / k - 1.0
            return w + (w - self._cut_rate) * x * x * x
        # Convex probe past w, gentler than the recovery so the rate lingers near the old limit.
        x = (dt - k) / self.probe_time
        return w * (1.0 + (1.0 - self.beta) * x * x * x)

    def on_success(self, now: float) -> None:
        """A response that was not a 429: let the rate rise along the curve."""
        self._accepted.add(self._active(now))
        if self.fill_rate is None or self.last_max <= 0.0:
            return
        rate = self._curve(now)
        # Do not grow an allowance the client is not using: it would be unchecked burst later.
        rate = min(rate, max(2.0 * self.measured_rate(now), self._cut_rate))
        self._set_rate(rate)

    def on_throttle(self, now: float, retry_after: float | None = None) -> None:
        """A 429: if it signals overload, hold senders for ``retry_after`` and cut the rate.

        A stray 429 (a shared key, a hiccup) among many accepted requests is not a limit this
        client is hitting: only the refused request waits (its retry honours Retry-After). A
        client that cut and held for every stray 429 would ratchet down to the floor.
        """
        self.throttled += 1
        active = self._active(now)
        self._refused.add(active)
        refused = self._refused.rate(active)
        accepted = self.accepted_rate(now)
        if refused < self.min_share * (refused + accepted):
            return
        if retry_after is not None and retry_after > 0 and math.isfinite(retry_after):
            hold = now + retry_after
            if hold > self.hold_until:
                if now >= self.hold_until:
                    self._held += max(0.0, self.hold_until - self._hold_start)
                    self._hold_start = now
                self.hold_until = hold
        if now - self.last_cut < self.cooldown:
            # Responses to requests sent before the cut took effect: one cut per episode.
            return
        base = self.measured_rate(now)
        if self.fill_rate is not None:
            base = min(base, self.fill_rate)
        if 0.0 < accepted < base:
            # The service let through less than was sent: its limit is near what it accepted.
            base = accepted
        base = max(base, self.min_rate)
        self.last_max = base * self.margin
        self.last_cut = now
        self._cut_rate = base * self.beta
        self._set_rate(self._cut_rate)
        # Slots reserved at the old pace are void; waiters re-reserve when they wake.
        self.next_free = now
        self.epoch += 1

    def _set_rate(self, rate: float) -> None:
        rate = max(rate, self.min_rate)
        if self.max_rate is not None:
            rate = min(rate, self.max_rate)
        self.fill_rate = rate


class AdaptiveRateLimiter:
    """Paces requests; learns the service's rate limit from 429s (CUBIC-like, as AWS's adaptive)."""

    def __init__(
        self,
        *,
        max_rate: float | None = None,
        min_rate: float = 0.5,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        """Create a limiter; ``max_rate`` (requests/s) paces from the start and caps learning."""
        self._core = PacingCore(max_rate=max_rate, min_rate=min_rate)
        self._clock = clock
        self._sleep = sleep

    @property
    def core(self) -> PacingCore:
        """The synchronous pacing state (for inspection and simulation)."""
        return self._core

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Read time from ``clock`` from now on (e.g. the running loop's ``time``)."""
        self._clock = clock

    async def acquire(self) -> None:
        """Wait for a send slot; free (no wait) until the first 429 unless ``max_rate`` is set."""
        core = self._core
        if core.send_unpaced(self._clock()):
            return  # no slot to reserve, only the send to count
        while True:
            now = self._clock()
            slot = core.reserve(now)
            if slot <= now:
                break
            epoch = core.epoch
            await self._sleep(slot - now)
            if core.still_valid(epoch, self._clock()):
                break
            # The rate was cut or a hold set while sleeping: the slot was priced at the old pace.
        core.record_send(self._clock())

    def on_success(self) -> None:
        """Record a response that was not a 429: the allowed rate may rise again."""
        self._core.on_success(self._clock())

    def on_throttle(self, retry_after: float | None = None) -> None:
        """Record a 429: cut the rate and, given ``retry_after``, hold every sender that long."""
        self._core.on_throttle(self._clock(), retry_after)

    @property
    def rate(self) -> float | None:
        """Current allowed requests/s (None = unlimited)."""
        return self._core.fill_rate

    @property
    def throttled(self) -> int:
        """Number of 429s seen."""
        return self._core.throttled
