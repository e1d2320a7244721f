"""Online model of task completion times and Keller's sqrt-hazard poll schedule.

A poll schedule with density ``n(t) = k * sqrt(h(t))`` (``h`` the hazard rate of the completion
time) is near-optimal for the trade-off between polls per task and detection delay (Keller, 1974).
The completion time is fitted as a lognormal on a sliding window of observed durations; the
cumulative schedule ``G(t) = ∫_0^t sqrt(h(u)) du`` is tabulated on a grid that is rebuilt only
when the fit has moved, so each :meth:`CompletionModel.next_poll` is two bisections.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque

__all__ = ["CompletionModel"]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
# Durations are never perfectly deterministic; a floor on sigma keeps the hazard finite and the grid
# wide enough to interpolate when every sample is equal.
_MIN_SIGMA = 0.02
_MIN_DURATION = 1e-3
_GRID_POINTS = 512
_GRID_Z = 7.0  # grid spans mu ± 7 sigma in log-time: beyond it the tails carry < 1e-11 of mass
_REFIT_FRACTION = 0.05


def _std_sf(z: float) -> float:
    return 0.5 * math.erfc(z / _SQRT2)


def _mills_hazard(z: float) -> float:
    """phi(z) / Q(z), computed without underflow for large z."""
    if z > 30.0:
        # Asymptotic expansion of the inverse Mills ratio: erfc underflows long before this matters.
        return z + 1.0 / z
    q = _std_sf(z)
    return math.exp(-0.5 * z * z) / _SQRT2PI / q


class CompletionModel:
    """Online estimate of task completion times (seconds from submit to completion)."""

    def __init__(
        self,
        *,
        min_samples: int = 20,
        window: int = 2000,
        prior_median: float = 10.0,
        prior_sigma: float = 1.0,
    ) -> None:
        """Start from a lognormal prior that is replaced by the fit once ``min_samples`` arrive."""
        if min_samples < 1 or window < 2:
            raise ValueError("min_samples must be >= 1 and window >= 2")
        if not (prior_median > 0 and prior_sigma > 0):
            raise ValueError("prior_median and prior_sigma must be positive")
        self._min_samples = min_samples
        self._logs: deque[float] = deque(maxlen=window)
        self._sum = 0.0
        self._sumsq = 0.0
        self._since_exact = 0
        self._since_fit = 0
        self._mu = math.log(prior_median)
        self._sigma = prior_sigma
        self._fitted = False
        self.fits = 0  # bumped by every refit: whoever derives figures from the fit redoes them
        self._build_grid()

    # ---- fitting -------------------------------------------------------------------------------

    def observe(self, duration: float) -> None:
        """Add a finished task's duration in seconds (non-finite or negative values are ignored)."""
        if not math.isfinite(duration) or duration < 0:
            return
        x = math.log(max(duration, _MIN_DURATION))
        logs = self._logs
        if len(logs) == logs.maxlen:
            old = logs[0]
            self._sum -= old
            self._sumsq -= old * old
        logs.append(x)
        self._sum += x
        self._sumsq += x * x
        self._since_exact += 1
        self._since_fit += 1
        if self._since_exact >= len(logs):
            # Sliding-window subtraction accumulates rounding error; resum exactly now and then
            # (amortised O(1) per observation).
            self._sum = math.fsum(logs)
            self._sumsq = math.fsum(v * v for v in logs)
            self._since_exact = 0
        n = len(logs)
        if n < self._min_samples:
            return
        if not self._fitted or self._since_fit >= max(1.0, _REFIT_FRACTION * n):
            self._refit()

    def _refit(self) -> None:
        n = len(self._logs)
        mu = self._sum / n
        var = max(0.0, self._sumsq / n - mu * mu) * n / max(1, n - 1)
        self._mu = mu
        self._sigma = max(_MIN_SIGMA, math.sqrt(var))
        self._fitted = True
        self.fits += 1
        self._since_fit = 0
        self._build_grid()

    def _build_grid(self) -> None:
        mu, sigma = self._mu, self._sigma
        zs = [-_GRID_Z + 2.0 * _GRID_Z * i / (_GRID_POINTS - 1) for i in range(_GRID_POINTS)]
        ts = [math.exp(mu + sigma * z) for z in zs]
        root_h = [math.sqrt(_mills_hazard(z) / (sigma * t)) for z, t in zip(zs, ts, strict=True)]
        # Weight for the mean detection delay: f / (2 sqrt(h)) = sqrt(f * S) / 2.
        dens = [
            math.exp(-0.5 * z * z) / (_SQRT2PI * sigma * t) for z, t in zip(zs, ts, strict=True)
        ]
        delay_w = [0.5 * math.sqrt(f * _std_sf(z)) for f, z in zip(dens, zs, strict=True)]
        cum = [0.0] * _GRID_POINTS
        delay = 0.0
        for i in range(1, _GRID_POINTS):
            dt = ts[i] - ts[i - 1]
            cum[i] = cum[i - 1] + 0.5 * (root_h[i] + root_h[i - 1]) * dt
            delay += 0.5 * (delay_w[i] + delay_w[i - 1]) * dt
        self._ts = ts
        self._cum = cum
        self._root_h_end = root_h[-1]
        self._unit_delay = delay

    # ---- distribution --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether enough samples have arrived to trust the fit."""
        return self._fitted

    @property
    def samples(self) -> int:
        """Number of durations in the sliding window."""
        return len(self._logs)

    @property
    def median(self) -> float:
        """Median completion time of the current fit (or prior), in seconds."""
        return math.exp(self._mu)

    @property
    def sigma(self) -> float:
        """Standard deviation of log completion time in the current fit (or prior)."""
        return self._sigma

    def _z(self, t: float) -> float:
        return (math.log(t) - self._mu) / self._sigma

    def _sf(self, t: float) -> float:
        return 1.0 if t <= 0 else _std_sf(self._z(t))

    def cdf(self, t: float) -> float:
        """P(T <= t) under the fitted distribution."""
        return 0.0 if t <= 0 else 1.0 - _std_sf(self._z(t))

    def hazard(self, t: float) -> float:
        """Hazard rate f(t) / (1 - F(t)) at elapsed time ``t``."""
        if t <= 0:
            return 0.0
        return _mills_hazard(self._z(t)) / (self._sigma * t)

    # ---- schedule ------------------------------------------------------------------------------

    def _g(self, t: float) -> float:
        """Unit-K cumulative poll count G(t) = ∫_0^t sqrt(h)."""
        ts, cum = self._ts, self._cum
        if t <= ts[0]:
            return 0.0
        if t >= ts[-1]:
            # Past the grid the lognormal hazard changes slowly: extend with its last value.
            return cum[-1] + self._root_h_end * (t - ts[-1])
        i = bisect_right(ts, t)
        t0, t1 = ts[i - 1], ts[i]
        return cum[i - 1] + (cum[i] - cum[i - 1]) * (t - t0) / (t1 - t0)

    def _g_inv(self, g: float) -> float:
        ts, cum = self._ts, self._cum
        if g <= 0.0:
            return ts[0]
        if g >= cum[-1]:
            return ts[-1] + (g - cum[-1]) / self._root_h_end
        i = bisect_left(cum, g)
        c0, c1 = cum[i - 1], cum[i]
        return ts[i - 1] + (ts[i] - ts[i - 1]) * (g - c0) / (c1 - c0)

    def k_for_target_delay(self, target_delay: float) -> float:
        """The K whose schedule gives about ``target_delay`` seconds of mean detection delay."""
        if not target_delay > 0:
            raise ValueError("target_delay must be positive")
        # Mean delay ≈ E[1 / (2 n(T))] = E[1 / (2 sqrt(h(T)))] / K.
        return self._unit_delay / target_delay

    def next_poll(
        self, last_poll: float, *, k: float, min_interval: float, max_interval: float
    ) -> float:
        """Elapsed time of the poll after an unsuccessful one at ``last_poll`` (0 = submit)."""
        last = max(0.0, last_poll)
        target = self._g(last) + 1.0 / k if k > 0 else math.inf
        t = self._g_inv(target) if math.isfinite(target) else math.inf
        gap = min(max(t - last, min_interval), max_interval)
        return last + gap

    def completion_probability(self, last_poll: float, now: float) -> float:
        """P(done by ``now`` | not done at ``last_poll``), in [0, 1]."""
        if now <= last_poll:
            return 0.0
        s_last = self._sf(last_poll)
        if s_last <= 0.0:
            # Far past the fitted tail the model has nothing to say; treat the task as overdue.
            return 1.0
        p = (s_last - self._sf(now)) / s_last
        return min(1.0, max(0.0, p))
