"""Online model of task completion times and Keller's sqrt-hazard poll schedule.

What a poll sequence tells about one task is an interval, not a time: it finished after its last
pending poll and no later than the poll that saw it done (interval-censored), and a task still
running is only known to take longer than its last pending poll (right-censored). The completion
time is fitted as a lognormal by maximising that censored likelihood,

    Σ w_i log(F(b_i) − F(a_i))  over finished tasks  +  Σ w_j log(1 − F(c_j))  over running ones,

with a few Newton steps per refit. In ``(η, τ) = (μ/σ, 1/σ)`` of log-time the likelihood is
concave (the interval probability of a log-concave density is log-concave in its endpoints, which
are linear in ``(η, τ)``), so Newton from the previous fit converges in two or three steps.
Refits are amortised (every few per cent of the window's weight, under a high completion rate at
most every 5 s or a tenth of the median, if longer, unless a quarter of the window is new; the
change detector's refits are immediate), never per poll; the running tasks come from a callable
(the scheduler's live entries), a uniform sample of at most a few hundred read at refit time. A
refit that moves the fit by less than a hair (``_FIT_HOLD``) keeps the fit the polls follow, and
with it K and the schedule's plans, exactly: no recalibration, and no refit-to-refit jitter; when
the first Newton step already says so, it stops there (one likelihood evaluation). A K
calibration starts from the last one's correction to Keller's estimate.

Which tasks: a cohort, every task submitted since the oldest of the last ``window`` finished ones,
finished or running; while the change detector stays quiet the window grows, up to 16 times
``window`` (a caught change cuts it back at once), so that where tasks are short the tail is not
fitted from a handful of them. (The last N *completions* alone would keep the slow tasks of older
cohorts and drop their fast cohort-mates: biased towards slow. Finished tasks alone, early in a
batch, are the fast ones: biased towards fast.) Each weighs ``2 ** (-age / half_life)`` by its
submission, except the newest few finished, so that a trickle still leaves enough to fit. Each
refit also carries the previous fit as a Gaussian penalty with half its information matrix, in
proportion to its standard errors, which steadies what the data leave loose without freezing
what they pin.

Sudden shifts: a two-sided CUSUM on every poll's outcome. A poll at age ``t`` after one at ``s``
finds the task done with probability ``(S(s) − S(t)) / S(s)`` under the fit, whatever was selected
before (no survivor bias); the log-likelihood ratio of that outcome against the fit with every
duration doubled (or halved) accumulates until it crosses a threshold. Then the tasks submitted
before the first task that showed the change keep a tiny weight, and the model refits at once
from that cohort. O(1) per poll. The detector then rests until a quarter of ``min_samples``
more tasks have finished: a fit from a handful of the new cohort is wrong by its own
uncertainty, and where durations are nearly fixed (a lognormal fits their sharp edge badly) it
raised alarm after alarm, an unanchored refit every dozen completions.

Where the data pin nothing (every task done at its first poll: the intervals ``(0, t1]`` only say
``F(t1) ≈ 1``) a weak prior on sigma keeps the fit off that ridge, and the first fit of a
population leans towards the fastest fit allowed: its schedule then polls early, which either
confirms that tasks are that fast (instant tasks get polled at ``min_interval``) or, finding them
running, corrects the fit at once.

Per size class (``1K``, ``4K``, ...): each class has its own fit once it has ``class_min_samples``
finished tasks; until then it uses the pooled fit of every task. While every task is of one
class, the pooled fit is that class's (the same data: one fit, not two). All classes share one
``K``: minimising total polls plus a price on total delay gives the same price, hence the same
K, for every class, chosen so that the mean delay over the mix meets the target.

Schedule: poll density ``n(t) = K·sqrt(h(t))`` with ``h`` the hazard rate (Keller, 1974). Poll i
falls where ``G(t) = ∫_0^t sqrt(h)`` reaches ``g0 + (i − 1)/K``, no gap longer than a cap nor than
the task's age. Keller's continuous argument puts the first poll at ``g0 = 1/K``, far too late
when tasks are done long before it, so ``g0`` and the cap are chosen by the exact discrete cost
(expected polls + 2K² × expected delay, the price Keller's K stands for); the family contains
the fixed intervals, which win when nearly every task is done at the first poll. ``K`` is then
calibrated on the exact expected delay of that discrete, clamped schedule. Both once per fit,
from a tabulated ``G``; each ``next_poll`` is two bisections. Everything here runs on the user's
event loop, so the plan search starts from the last plan's shape (its first poll's place between
the earliest allowed and Keller's, and its gap factor), carried over from fit to fit: a narrow
search around it, the full one only when the best lies at the edge of that bracket or another
gap factor does better (about 14 schedule evaluations instead of about 40).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import NamedTuple, Protocol

__all__ = ["CompletionModel", "FitSummary", "RunningTask"]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_INF = math.inf
# Durations are never perfectly deterministic; a floor on sigma keeps the hazard finite and the grid
# wide enough to interpolate when every sample is equal.
_MIN_SIGMA = 0.02
_MAX_SIGMA = 4.0
_MIN_DURATION = 1e-3
_MAX_DURATION = 1e6
_LOG_MIN = math.log(_MIN_DURATION)
_LOG_MAX = math.log(_MAX_DURATION)
_GRID_POINTS = 512
_GRID_Z = 7.0  # grid spans mu ± 7 sigma in log-time: beyond it the tails carry < 1e-11 of mass
# Refit when this fraction of the window's weight is new, but not more often than every
# _REFIT_SECONDS (or _REFIT_MEDIANS of the fitted median, if longer) while fewer than _REFIT_FORCE
# of it is new (a high completion rate). The change detector's refits are immediate.
_REFIT_FRACTION = 0.05
_REFIT_FORCE = 0.25
_REFIT_SECONDS = 5.0
_REFIT_MEDIANS = 0.1
# An ordinary (anchored) refit that moves mu by at most this (log-seconds) and sigma by at most
# this fraction of itself keeps the fit the polls follow (see ``_refit``).
_FIT_HOLD = 0.01
_NEWTON_STEPS = 8
# The share of the hold box a first Newton step must stay in for the fit to be kept unsolved.
_HOLD_SURE = 0.8
_RUNNING_SAMPLE = 256  # running tasks looked at per refit (a uniform sample of the live ones)
# Change detection: alternatives "durations x2" and "durations /2"; per-poll log-likelihood
# ratios capped (above only: a cap below would bias the CUSUM upwards) so that one surprising
# poll cannot raise an alarm alone.
_SHIFT = math.log(2.0)
_ALARM = 12.0
_LLR_CLIP = 1.0
_FORGET = 1e-3  # weight kept by the tasks submitted before a detected change
_LOG_CAP = 4096  # polls remembered per CUSUM run, to place the change
# After a caught change the detector rests for this fraction of min_samples completions (a
# quarter: resting for all of them cost (c) of P6, the recovery after a 3x step, 3 -> 16
# completions, since a second alarm early on helps the new cohort's fit).
_REST = 0.25
# A weak prior on sigma (the weight of _PRIOR_WEIGHT tasks, on 1/sigma around 1/_PRIOR_SIGMA).
# It matters only where the data leave sigma open: when nearly every task is done at its first
# poll, the intervals (0, t1] pin F(t1) ≈ 1 and little else, and without it the fit would wander
# along that ridge (to "tasks take just under t1": later first polls, longer delays, feeding
# itself, or to a huge sigma).
_PRIOR_SIGMA = 0.5
_PRIOR_SPREAD = 0.5
_PRIOR_WEIGHT = 2.0
# The first fit of a population is tilted towards shorter durations (-_TILT * mu): where the data
# allow every fit with (nearly) all the mass before the first poll (the backoff's first poll comes
# after most tasks are done), it picks the fastest, whose schedule polls at the earliest and so
# learns whether tasks really are that fast: polls finding tasks still running contradict it at
# once (instant tasks are then polled at min_interval, not at the first backoff interval).
_TILT = 0.5
# Each refit also carries the previous fit as a Gaussian with this fraction of its information
# (not after a change): a geometric memory of past fits, in proportion to their standard errors.
_ANCHOR = 0.5
# While the change detector is quiet the window grows to this many times ``window`` finished
# tasks (the time decay still ages them); a caught change cuts it back to ``window`` at once.
_STABLE_GROWTH = 16
_P_EPS = 1e-9
_P_MAX = 1.0 - _P_EPS
# Exact evaluation of a schedule stops once this little mass is left (or after _MAX_STEPS polls).
_TAIL = 1e-4
_MAX_STEPS = 400
_PHASE_GRID = 6
_PHASE_REFINE = 5
_CALIBRATION_STEPS = 8
# A warm start's correction to Keller's K is kept only within these (a wild one would start the
# next search far off), and for at most this many (target, bounds) keys.
_MIN_K_RATIO, _MAX_K_RATIO = 0.2, 5.0
_MAX_CALIBRATIONS = 64
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_GAP_FACTORS = (1.0, 1.5, 2.0, 3.0, 5.0)
# A plan search warm-started from the previous plan's shape: the phase within a factor
# _NEAR_SPAN either side of it, _NEAR_REFINE golden-section steps.
_NEAR_SPAN = 1.25
_NEAR_REFINE = 5
_NEAR_EDGE = 0.15  # a best phase this close (of the bracket) to an edge: search in full
# Schedule evaluations a fit remembers (a fit kept through many calibrations, e.g. one size
# class's while another refits, would otherwise collect them without bound).
_EVALUATED_KEPT = 1024


def _clip(x: float, lo: float, hi: float) -> float:
    """``min(max(x, lo), hi)``, exactly, at a third of the builtins' cost (per-poll paths)."""
    x = lo if x < lo else x
    return hi if x > hi else x


def _std_sf(z: float) -> float:
    return 0.5 * math.erfc(z / _SQRT2)


def _std_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def _mills_hazard(z: float) -> float:
    """phi(z) / Q(z), computed without underflow for large z."""
    if z > 30.0:
        # Asymptotic expansion of the inverse Mills ratio: erfc underflows long before this matters.
        return z + 1.0 / z
    q = _std_sf(z)
    return math.exp(-0.5 * z * z) / _SQRT2PI / q


# The grid's z values and what depends on z alone (the same for every fit: a new fit then costs
# one exp and one sqrt per grid point, not six transcendental calls).
_GRID_ZS = tuple(-_GRID_Z + 2.0 * _GRID_Z * i / (_GRID_POINTS - 1) for i in range(_GRID_POINTS))
_GRID_MILLS = tuple(_mills_hazard(z) for z in _GRID_ZS)
_GRID_PHI = tuple(math.exp(-0.5 * z * z) for z in _GRID_ZS)
_GRID_SF = tuple(_std_sf(z) for z in _GRID_ZS)


class RunningTask(Protocol):
    """What the model reads from a task still running (the scheduler's ``TaskEntry``)."""

    @property
    def submitted_at(self) -> float: ...

    @property
    def last_pending_at(self) -> float | None: ...

    @property
    def size_class(self) -> str | None: ...


class FitSummary(NamedTuple):
    """The fit a class's polls follow (``pooled``: the class has too few samples of its own)."""

    median: float
    sigma: float
    samples: int
    pooled: bool


def _log_age(age: float) -> float:
    return math.log(min(max(age, _MIN_DURATION), _MAX_DURATION))


# ---- one lognormal and its schedule ------------------------------------------------------------


class _Fit:
    """A lognormal of completion time with its tabulated ``G`` and per-K schedule plans."""

    __slots__ = (
        "_concave_from",
        "_cum",
        "_evaluated",
        "_plans",
        "_root_h_end",
        "_ts",
        "hints",
        "mu",
        "sigma",
        "unit_delay",
    )

    def __init__(
        self, mu: float, sigma: float, hints: dict[tuple[float, float], _Shape] | None = None
    ) -> None:
        self.mu = mu
        self.sigma = sigma
        exp, sqrt = math.exp, math.sqrt
        ts = [exp(mu + sigma * z) for z in _GRID_ZS]
        root_h = [sqrt(m / (sigma * t)) for m, t in zip(_GRID_MILLS, ts, strict=True)]
        # Weight for the continuous mean detection delay: f / (2 sqrt(h)) = sqrt(f * S) / 2.
        norm = _SQRT2PI * sigma
        delay_w = [
            0.5 * sqrt(phi / (norm * t) * sf)
            for phi, sf, t in zip(_GRID_PHI, _GRID_SF, ts, strict=True)
        ]
        cum = [0.0]
        g = delay = 0.0
        for t0, t1, r0, r1, w0, w1 in zip(
            ts, ts[1:], root_h, root_h[1:], delay_w, delay_w[1:], strict=False
        ):
            dt = t1 - t0
            g += 0.5 * (r1 + r0) * dt
            cum.append(g)
            delay += 0.5 * (w1 + w0) * dt
        self._ts = ts
        self._cum = cum
        # From where sqrt(h) only falls (the tabulated G is concave after it, Keller's gaps only
        # grow): past the hazard's peak.
        peak = _GRID_POINTS - 1
        while peak > 0 and root_h[peak - 1] >= root_h[peak]:
            peak -= 1
        self._concave_from = ts[peak]
        self._root_h_end = root_h[-1]
        self.unit_delay = delay  # Keller: mean delay ≈ unit_delay / K
        self._plans: dict[tuple[float, float, float], _Plan] = {}
        self._evaluated: dict[tuple[float, _Plan, float], tuple[float, float]] = {}
        # The shape (phase, gap factor) of the last plan searched per interval bounds, carried
        # over from the fit this one refines: a plan search then starts from it (see _search).
        self.hints: dict[tuple[float, float], _Shape] = {} if hints is None else dict(hints)

    # distribution

    def z(self, t: float) -> float:
        return (math.log(t) - self.mu) / self.sigma

    def sf(self, t: float) -> float:
        return 1.0 if t <= 0 else _std_sf((math.log(t) - self.mu) / self.sigma)

    def cdf(self, t: float) -> float:
        return 0.0 if t <= 0 else _std_cdf((math.log(t) - self.mu) / self.sigma)

    def hazard(self, t: float) -> float:
        if t <= 0:
            return 0.0
        return _mills_hazard(self.z(t)) / (self.sigma * t)

    def completion_probability(self, last: float, now: float) -> float:
        if now <= last:
            return 0.0
        s_last = self.sf(last)
        if s_last <= 0.0:
            # Far past the fitted tail the model has nothing to say; treat the task as overdue.
            return 1.0
        p = (s_last - self.sf(now)) / s_last
        return min(1.0, max(0.0, p))

    # G and its inverse

    def g(self, t: float) -> float:
        ts, cum = self._ts, self._cum
        if t <= ts[0]:
            return 0.0
        if t >= ts[-1]:
            # Past the grid the lognormal hazard changes slowly: extend with its last value.
            return cum[-1] + self._root_h_end * (t - ts[-1])
        i = bisect_right(ts, t)
        t0, t1 = ts[i - 1], ts[i]
        return cum[i - 1] + (cum[i] - cum[i - 1]) * (t - t0) / (t1 - t0)

    def g_inv(self, g: float) -> float:
        ts, cum = self._ts, self._cum
        if g <= 0.0:
            return ts[0]
        if g >= cum[-1]:
            return ts[-1] + (g - cum[-1]) / self._root_h_end
        i = bisect_left(cum, g)
        c0, c1 = cum[i - 1], cum[i]
        return ts[i - 1] + (ts[i] - ts[i - 1]) * (g - c0) / (c1 - c0)

    # the schedule

    def first_poll(self, g0: float, min_interval: float, max_interval: float) -> float:
        return min(max(self.g_inv(g0), min_interval), max_interval)

    def step(self, last: float, k: float, plan: _Plan, min_interval: float) -> float:
        """The poll after one at ``last`` (0 = submit), its gap clamped to the plan's bounds."""
        # (Conditionals and _clip for min/max here: this runs per poll, on the event loop.)
        g0, cap = plan.g0, plan.cap
        if not last > 0:
            last = 0.0
            target = g0
        else:
            # One Keller step after the last poll, and not before the plan's first poll (a task
            # polled early, before the model was ready, or before a refit moved the plan).
            target = self.g(last) + 1.0 / k
            if not target > g0:
                target = g0
            # No gap longer than the task's age: a task still running where the fit said it
            # would long be done is evidence against the fit, and is then polled at least by
            # doubling.
            cap = _clip(last, min_interval, cap)
        t = self.g_inv(target)
        return last + _clip(t - last, min_interval, cap)

    def evaluate(self, k: float, plan: _Plan, min_interval: float) -> tuple[float, float]:
        """Exact expected polls and detection delay of the schedule under this lognormal.

        Remembered per fit: a plan search's golden-section steps land on points already
        evaluated (about a quarter of them), and K's calibration evaluates the plans the searches
        chose.
        """
        key = (k, plan, min_interval)
        found = self._evaluated.get(key)
        if found is None:
            if len(self._evaluated) >= _EVALUATED_KEPT:
                self._evaluated.clear()
            found = self._evaluated[key] = self._evaluate(k, plan, min_interval)
        return found

    def _evaluate(self, k: float, plan: _Plan, min_interval: float) -> tuple[float, float]:
        """:meth:`evaluate`, computed.

        The same steps as :meth:`step`, keeping G of the last poll instead of recomputing it.
        """
        mu, sigma = self.mu, self.sigma
        inv_sigma = 1.0 / sigma
        scale = math.exp(mu + 0.5 * sigma * sigma)
        g, log, erfc, isfinite = self.g, math.log, math.erfc, math.isfinite
        # G's inverse inline (as in g_inv): this loop is most of a plan search's time.
        ts, cum, root_h_end = self._ts, self._cum, self._root_h_end
        ts_end, cum_end = ts[-1], cum[-1]
        cap, inc, g0 = plan.cap, 1.0 / k, plan.g0
        c_sf = inv_sigma / _SQRT2
        polls = delay = pe_last = 0.0  # pe: ∫_0^t s f(s) ds / scale = Φ(z − σ)
        s_last = 1.0
        last = 0.0
        target = g0
        concave_from = self._concave_from
        at_cap = False
        for _ in range(_MAX_STEPS):
            polls += s_last
            if at_cap:
                t = last + cap
            else:
                if target <= 0.0:
                    t = ts[0]
                elif target >= cum_end:
                    t = ts_end + (target - cum_end) / root_h_end
                else:
                    i = bisect_left(cum, target)
                    c0 = cum[i - 1]
                    t = ts[i - 1] + (ts[i] - ts[i - 1]) * (target - c0) / (cum[i] - c0)
                gap = t - last
                top = cap if last <= 0 else _clip(last, min_interval, cap)
                if gap < min_interval or gap > top:
                    t = last + _clip(gap, min_interval, top)
                    # Past the hazard's peak Keller's gaps only grow: once one is cut to the
                    # cap, every later one is (the same polls, without the two look-ups).
                    at_cap = gap > top and top == cap and last >= concave_from
                    target = g(t)
            lt = log(t)
            s_t = 0.5 * erfc((lt - mu) * c_sf)
            pe_t = 0.5 * erfc(-((lt - mu) * inv_sigma - sigma) / _SQRT2)
            delay += t * (s_last - s_t) - scale * (pe_t - pe_last)
            last, s_last, pe_last = t, s_t, pe_t
            if s_t < _TAIL or not isfinite(t):
                break
            target += inc
            if target < g0:
                target = g0
        return polls, max(0.0, delay)

    def make_plan(
        self, k: float, g0: float, gap_factor: float, min_interval: float, max_interval: float
    ) -> _Plan:
        """First poll where G reaches ``g0``; no gap longer than ``gap_factor`` × that wait."""
        cap = max_interval
        if gap_factor < _INF:
            cap = min(cap, max(min_interval, gap_factor * self.first_poll(g0, min_interval, cap)))
        return _Plan(g0, cap, g0 * k, gap_factor)

    def _phase_range(self, k: float, min_interval: float) -> tuple[float, float]:
        """The first poll's G: from min_interval's to Keller's own (1/K)."""
        hi = 1.0 / k
        return (min(self.g(min_interval), hi) if min_interval > 0 else 0.0), hi

    def plan(self, k: float, min_interval: float, max_interval: float) -> _Plan:
        """The schedule minimising expected polls + 2K² × expected delay (cached per fit).

        The price 2K² of a second of delay is the one Keller's density stands for. The family
        searched: Keller's gaps after a first poll at ``g0`` (not later than Keller's own,
        ``1/K``), each gap at most a few times the first wait. The latter contains the fixed
        intervals, where they win: tasks that are nearly all done at the first poll.
        """
        key = (k, min_interval, max_interval)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._search(k, min_interval, max_interval)
            self._plans[key] = plan
        return plan

    def _search(self, k: float, min_interval: float, max_interval: float) -> _Plan:
        price = 2.0 * k * k

        def cost(g0: float, factor: float) -> float:
            plan = self.make_plan(k, g0, factor, min_interval, max_interval)
            polls, delay = self.evaluate(k, plan, min_interval)
            return polls + price * delay

        bounds = (min_interval, max_interval)
        hint = self.hints.get(bounds)
        near = None if hint is None else self._near(k, min_interval, hint, cost)
        if near is not None:
            g0, factor = near
        else:
            g0, c = self._best_phase(k, min_interval, _INF, cost)
            factor = _INF
            for f in _GAP_FACTORS:
                cf = cost(g0, f)
                if cf < c:
                    factor, c = f, cf
            if factor < _INF:
                g0, c = self._best_phase(k, min_interval, factor, cost)
        lo, hi = self._phase_range(k, min_interval)
        self.hints[bounds] = _Shape((g0 - lo) / (hi - lo) if hi > lo else 1.0, factor)
        return self.make_plan(k, g0, factor, min_interval, max_interval)

    def _near(
        self,
        k: float,
        min_interval: float,
        hint: _Shape,
        cost: Callable[[float, float], float],
    ) -> tuple[float, float] | None:
        """The search warm-started from a known shape: the phase within a narrow bracket
        around it, then the neighbouring gap factors (and none) at that phase.

        About a third of the evaluations of the full search: the shape moves little from one
        K of a calibration to the next, or from one fit to the one refining it. None (search
        in full) when the best phase is at an edge of the bracket, or another factor does
        better: the shape has moved.
        """
        lo, hi = self._phase_range(k, min_interval)
        factor = hint.gap_factor
        best_g = lo + hint.position * (hi - lo)
        best_c = cost(best_g, factor)
        a0 = max(lo, best_g / _NEAR_SPAN)
        b0 = min(hi, best_g * _NEAR_SPAN)
        best_g, best_c = _golden_refine(
            cost, factor, a0, b0, best_g, best_c, _NEAR_REFINE, min_width=1e-9 * hi
        )
        others: list[float] = [_INF] if factor < _INF else [_GAP_FACTORS[-1]]
        if factor in _GAP_FACTORS:
            i = _GAP_FACTORS.index(factor)
            others += list(_GAP_FACTORS[max(0, i - 1) : i]) + list(_GAP_FACTORS[i + 1 : i + 2])
        edge = _NEAR_EDGE * (b0 - a0)
        if (a0 > lo and best_g - a0 < edge) or (b0 < hi and b0 - best_g < edge):
            return None
        for f in others:
            if cost(best_g, f) < best_c:
                return None
        return best_g, factor

    def _best_phase(
        self,
        k: float,
        min_interval: float,
        factor: float,
        cost: Callable[[float, float], float],
    ) -> tuple[float, float]:
        lo, hi = self._phase_range(k, min_interval)
        best_g, best_c = hi, cost(hi, factor)
        if hi - lo <= 1e-9 * hi:
            return best_g, best_c
        step = (hi - lo) / _PHASE_GRID
        for i in range(_PHASE_GRID):
            g = lo + i * step
            c = cost(g, factor)
            if c < best_c:
                best_g, best_c = g, c
        a, b = max(lo, best_g - step), min(hi, best_g + step)
        return _golden_refine(cost, factor, a, b, best_g, best_c, _PHASE_REFINE)


def _golden_refine(
    cost: Callable[[float, float], float],
    factor: float,
    a: float,
    b: float,
    best_g: float,
    best_c: float,
    steps: int,
    *,
    min_width: float | None = None,
) -> tuple[float, float]:
    """Golden-section steps on the first poll's G within ``[a, b]``: the best (G, cost) seen.

    Stops early once the bracket is ``min_width`` or narrower (when given).
    """
    for _ in range(steps):
        if min_width is not None and b - a <= min_width:
            break
        m1 = b - _GOLDEN * (b - a)
        m2 = a + _GOLDEN * (b - a)
        c1, c2 = cost(m1, factor), cost(m2, factor)
        if c1 < best_c:
            best_g, best_c = m1, c1
        if c2 < best_c:
            best_g, best_c = m2, c2
        if c1 <= c2:
            b = m2
        else:
            a = m1
    return best_g, best_c


class _Shape(NamedTuple):
    """A plan's shape, for any K: where its first poll is between the earliest one allowed
    (0, at min_interval) and Keller's (1), and its gap factor."""

    position: float
    gap_factor: float


class _Plan(NamedTuple):
    """Where a fit's schedule starts and its longest gap, for one K and interval bounds."""

    g0: float  # G at the first poll
    cap: float  # the longest gap (seconds)
    phase: float  # g0 * K: the start relative to Keller's (1.0)
    gap_factor: float  # cap / first wait (inf: only max_interval)


# ---- one population (pooled, or one size class) -----------------------------------------------


class _Obs:
    """One finished task: it completed in log-time (lo, hi] (lo = -inf: any time before hi)."""

    __slots__ = ("hi", "lo", "submitted")

    def __init__(self, lo: float, hi: float, submitted: float) -> None:
        self.lo = lo
        self.hi = hi
        self.submitted = submitted


class _Population:
    """Finished tasks of one class (or all), their fit and their change detector."""

    def __init__(self, window: int, fit: _Fit, rest: int) -> None:
        # In completion order. The fit uses a cohort: every task submitted since ``cutoff``,
        # finished (here) or running. A window of the last N *completions* alone would keep the
        # slow tasks of older cohorts and drop their fast cohort-mates: biased towards slow.
        self.obs: deque[_Obs] = deque()
        self.window = window
        self.cutoff = -_INF
        # Change times: a task (finished or running) submitted before each keeps _FORGET of its
        # weight; the cohort since is the one whose polls showed the change.
        self.alarms: list[float] = []
        self.added = 0  # finished tasks ever added
        # After a caught change the detector rests until ``rest`` more tasks have finished: a
        # fit from a handful of the new cohort, wrong by its own uncertainty, would otherwise
        # raise alarm after alarm.
        self.rest = rest
        self.rest_until = 0
        self.fit = fit
        self.fitted = False
        self.since_fit = 0
        self.fitted_at = -_INF
        self.weight_at_fit = 0.0
        self.info = _Info(0.0, 0.0, 0.0)
        self.up = 0.0  # CUSUM towards "slower"
        self.down = 0.0  # CUSUM towards "faster"
        # Since each CUSUM last left 0: (submission time, log-likelihood ratio) of every poll.
        self.up_log: list[tuple[float, float]] = []
        self.down_log: list[tuple[float, float]] = []
        self.share = 0.0  # decayed count of recent completions (at share_at), for the class mix
        self.share_at = 0.0

    def score(self, after: float, before: float, done: bool, now: float) -> bool:
        """Feed one poll outcome to the CUSUMs; True when they detect a change."""
        if not self.fitted or before <= after or self.added < self.rest_until:
            return False
        fit = self.fit
        mu, sigma = fit.mu, fit.sigma
        la = math.log(after) if after > 0 else -_INF
        lb = math.log(before)
        # The outcome's probability under the fit, shared by both alternatives.
        p0 = _clip(_p_done(la, lb, mu, sigma), _P_EPS, _P_MAX)
        llr_up = _llr(p0, _p_done(la, lb, mu + _SHIFT, sigma), done)
        llr_down = _llr(p0, _p_done(la, lb, mu - _SHIFT, sigma), done)
        submitted = now - before
        up, down = self.up + llr_up, self.down + llr_down
        # max(0.0, ·), without the builtin's cost (this runs per poll)
        self.up = up = up if up > 0.0 else 0.0
        self.down = down = down if down > 0.0 else 0.0
        _log(self.up_log, up, submitted, llr_up)
        _log(self.down_log, down, submitted, llr_down)
        return up > _ALARM or down > _ALARM

    def change_cohort(self) -> float:
        """The submission time from which tasks showed the change the alarm is about.

        The cut that keeps the largest sum of log-likelihood ratios after it (in submission
        order): tasks before it looked like the fit, tasks after it like the alternative.
        """
        log = sorted(self.up_log if self.up > _ALARM else self.down_log)
        best, best_at, total = -_INF, -_INF, 0.0
        for submitted, llr in reversed(log):
            total += llr
            if total > best:
                best, best_at = total, submitted
        return best_at

    def add(self, obs: _Obs) -> None:
        self.obs.append(obs)
        self.added += 1
        self._trim(_STABLE_GROWTH * self.window)

    def _trim(self, size: int) -> None:
        while len(self.obs) > size:
            self.cutoff = max(self.cutoff, self.obs.popleft().submitted)

    def forget_before(self, since: float) -> None:
        self._trim(self.window)
        self.rest_until = self.added + self.rest
        self.alarms = [*self.alarms[-2:], since]
        self.up = self.down = 0.0
        self.up_log.clear()
        self.down_log.clear()

    def forgotten(self, submitted: float) -> float:
        """The weight the alarms leave to a task submitted at ``submitted``."""
        w = 1.0
        for since in self.alarms:
            if submitted < since:
                w *= _FORGET
        return w


def _rest(min_samples: int) -> int:
    """Completions the change detector rests after a change it caught (see _Population)."""
    return max(1, math.ceil(_REST * min_samples))


def _log(log: list[tuple[float, float]], cusum: float, submitted: float, llr: float) -> None:
    if cusum <= 0.0:
        log.clear()
        return
    log.append((submitted, llr))
    if len(log) > _LOG_CAP:
        del log[: _LOG_CAP // 2]  # a run this long is a slow drift: its start matters less


def _p_done(la: float, lb: float, mu: float, sigma: float) -> float:
    """P(T <= e^lb | T > e^la) for a lognormal(mu, sigma) in log-time."""
    # _std_sf inline: three of these run per poll, on the event loop.
    erfc = math.erfc
    s_a = 1.0 if la == -_INF else 0.5 * erfc((la - mu) / sigma / _SQRT2)
    if s_a <= 0.0:
        return 1.0
    return (s_a - 0.5 * erfc((lb - mu) / sigma / _SQRT2)) / s_a


def _llr(p0: float, p_done: float, done: bool) -> float:
    """The outcome's log-likelihood ratio, alternative (``p_done``) against the fit (``p0``,
    already clipped like ``p_done`` is here)."""
    p1 = _clip(p_done, _P_EPS, _P_MAX)
    llr = math.log(p1 / p0) if done else math.log((1.0 - p1) / (1.0 - p0))
    return llr if llr < _LLR_CLIP else _LLR_CLIP


def _newton(
    finished: list[tuple[float, float, float]],
    running: list[tuple[float, float]],
    mu: float,
    sigma: float,
    tilt: float = 0.0,
    anchor: _Anchor | None = None,
    hold: float | None = None,
) -> tuple[float, float, _Info]:
    """Maximise the censored lognormal likelihood from (mu, sigma): the new (mu, sigma), and the
    information (minus the Hessian) in (η, τ) at it.

    ``finished``: (lo, hi, weight) in log-time; ``running``: (lo, weight), known to exceed lo.
    Newton in (η, τ) = (μ/σ, 1/σ), where the log-likelihood is concave, with step halving.
    ``hold``: when the first full step moves μ by at most ``_HOLD_SURE`` of it and σ by at most
    that share relatively, (mu, sigma) itself is returned, with the information there: near the
    maximum the first step is accurate to second order, so the maximum lies within ``hold`` too
    and the caller keeps its fit either way. Such a refit costs one likelihood evaluation, not
    four (in the policy simulation, 169 of 204 kept fits; the fits made are the same).
    """
    tau = 1.0 / sigma
    eta = mu * tau
    cur = _loglik(finished, running, eta, tau, tilt, anchor)
    full = _newton_step(cur)
    if hold is not None and full is not None:
        new_eta, new_tau = _clamp(eta + full[0], tau + full[1])
        if (
            abs(new_eta / new_tau - mu) <= _HOLD_SURE * hold
            and abs(1.0 / new_tau - sigma) <= _HOLD_SURE * hold * sigma
        ):
            return mu, sigma, _Info(-cur[3], -cur[4], -cur[5])
    for _ in range(_NEWTON_STEPS):
        if full is None:
            break
        ll = cur[0]
        de, dt = full
        step = 1.0
        moved = False
        for _ in range(20):
            new_eta, new_tau = _clamp(eta + step * de, tau + step * dt)
            nxt = _loglik(finished, running, new_eta, new_tau, tilt, anchor)
            if nxt[0] >= ll - 1e-12 * abs(ll):
                moved = (new_eta, new_tau) != (eta, tau)
                eta, tau, cur = new_eta, new_tau, nxt
                break
            step *= 0.5
        if not moved:
            break
        if abs(step * de) < 1e-6 * (1.0 + abs(eta)) and abs(step * dt) < 1e-6 * tau:
            break
        full = _newton_step(cur)
    return eta / tau, 1.0 / tau, _Info(-cur[3], -cur[4], -cur[5])


def _newton_step(
    cur: tuple[float, float, float, float, float, float],
) -> tuple[float, float] | None:
    """The full Newton step (dη, dτ) from a ``_loglik`` result; None where the Hessian is not
    negative definite (or not finite)."""
    _, ge, gt, hee, het, htt = cur
    # Solve (-H + λI) d = g: λ keeps a flat direction (data that pins only a ridge) finite.
    a, b, c = -hee, -het, -htt
    lam = 1e-9 * (abs(a) + abs(c)) + 1e-12
    a += lam
    c += lam
    det = a * c - b * b
    if not det > 0 or not math.isfinite(det):
        return None
    return (c * ge - b * gt) / det, (a * gt - b * ge) / det


class _Info(NamedTuple):
    """Minus the Hessian of a fit's objective in (η, τ): how tightly the data pin it."""

    ee: float
    et: float
    tt: float


class _Anchor(NamedTuple):
    """The previous fit at (η, τ), with the information (a fraction of its own) it carries."""

    eta: float
    tau: float
    ee: float
    et: float
    tt: float


def _clamp(eta: float, tau: float) -> tuple[float, float]:
    tau = min(max(tau, 1.0 / _MAX_SIGMA), 1.0 / _MIN_SIGMA)
    mu = min(max(eta / tau, _LOG_MIN), _LOG_MAX)
    return mu * tau, tau


def _loglik(
    finished: list[tuple[float, float, float]],
    running: list[tuple[float, float]],
    eta: float,
    tau: float,
    tilt: float = 0.0,
    anchor: _Anchor | None = None,
) -> tuple[float, float, float, float, float, float]:
    """Weighted log-likelihood and its gradient and Hessian in (η, τ)."""
    erfc = math.erfc
    exp = math.exp
    log = math.log
    inv_sqrt2 = 1.0 / _SQRT2
    inv_sqrt2pi = 1.0 / _SQRT2PI
    # The prior on sigma: -(w/2) ((tau sigma0 - 1) / spread)^2, concave in tau.
    dev = (tau * _PRIOR_SIGMA - 1.0) / _PRIOR_SPREAD
    # The tilt: -tilt * eta / tau; its gradient only (its Hessian is not negative definite, and
    # the step halving checks the true objective).
    ll = -0.5 * _PRIOR_WEIGHT * dev * dev - tilt * eta / tau
    gt = -_PRIOR_WEIGHT * dev * _PRIOR_SIGMA / _PRIOR_SPREAD + tilt * eta / (tau * tau)
    htt = -_PRIOR_WEIGHT * (_PRIOR_SIGMA / _PRIOR_SPREAD) ** 2
    ge = -tilt / tau
    hee = het = 0.0
    if anchor is not None:
        # The previous fit as a Gaussian in (η, τ): -(1/2) d' A d, A its weighted information.
        de, dt = eta - anchor.eta, tau - anchor.tau
        ae = anchor.ee * de + anchor.et * dt
        at = anchor.et * de + anchor.tt * dt
        ll -= 0.5 * (de * ae + dt * at)
        ge -= ae
        gt -= at
        hee -= anchor.ee
        het -= anchor.et
        htt -= anchor.tt
    log_tau = log(tau)
    for lo, hi, w in finished:
        if hi - lo < 1e-6 or (lo != -_INF and tau * (hi - lo) < 1e-4):
            # Exact (or nearly): the density of log-time at x.
            x = 0.5 * (lo + hi)
            z = tau * x - eta
            ll += w * (log_tau - 0.5 * z * z)
            ge += w * z
            gt += w * (1.0 / tau - z * x)
            hee -= w
            het += w * x
            htt -= w * (1.0 / (tau * tau) + x * x)
            continue
        beta = tau * hi - eta
        if lo == -_INF:
            p = 0.5 * erfc(-beta * inv_sqrt2)
            if p < 1e-300:
                continue
            b1 = exp(-0.5 * beta * beta) * inv_sqrt2pi
            a1 = la1 = aa1 = lla1 = llla1 = 0.0
            alpha = -_INF
        else:
            alpha = tau * lo - eta
            if alpha > 0.0:
                p = 0.5 * (erfc(alpha * inv_sqrt2) - erfc(beta * inv_sqrt2))
            else:
                p = 0.5 * (erfc(-beta * inv_sqrt2) - erfc(-alpha * inv_sqrt2))
            if p < 1e-300:
                # Both ends deep in one tail: as good as an exact time at the nearer end.
                x = lo if alpha > 0.0 else hi
                z = tau * x - eta
                ll += w * (log_tau - 0.5 * z * z)
                ge += w * z
                gt += w * (1.0 / tau - z * x)
                hee -= w
                het += w * x
                htt -= w * (1.0 / (tau * tau) + x * x)
                continue
            b1 = exp(-0.5 * beta * beta) * inv_sqrt2pi
            a1 = exp(-0.5 * alpha * alpha) * inv_sqrt2pi
            la1 = lo * a1
            aa1 = alpha * a1
            lla1 = lo * aa1
            llla1 = lo * lla1
        ll += w * log(p)
        ub1 = hi * b1
        bb1 = beta * b1
        n = b1 - a1
        m = ub1 - la1
        ip = 1.0 / p
        ge -= w * n * ip
        gt += w * m * ip
        ip2 = ip * ip
        hee += w * (-(bb1 - aa1) * p - n * n) * ip2
        het += w * ((hi * bb1 - lla1) * p + n * m) * ip2
        htt += w * ((-hi * hi * bb1 + llla1) * p - m * m) * ip2
    for lo, w in running:
        alpha = tau * lo - eta
        s = 0.5 * erfc(alpha * inv_sqrt2)
        if s < 1e-300:
            # Older than the fit thinks possible: the likelihood says "much slower"; cap its pull.
            alpha = 37.0
            s = 0.5 * erfc(alpha * inv_sqrt2)
        ll += w * log(s)
        a1 = exp(-0.5 * alpha * alpha) * inv_sqrt2pi
        la1 = lo * a1
        ip = 1.0 / s
        # Right-censored: the interval (lo, +inf); b1 = 0.
        ge += w * a1 * ip
        gt -= w * la1 * ip
        ip2 = ip * ip
        aa1 = alpha * a1
        hee += w * (aa1 * s - a1 * a1) * ip2
        het += w * (a1 * la1 - lo * aa1 * s) * ip2
        htt += w * (lo * lo * aa1 * s - la1 * la1) * ip2
    return ll, ge, gt, hee, het, htt


# ---- the model ---------------------------------------------------------------------------------


class CompletionModel:
    """Online estimate of task completion times (seconds from submit to completion)."""

    def __init__(
        self,
        *,
        min_samples: int = 20,
        window: int = 1000,
        half_life: float = 600.0,
        class_min_samples: int | None = None,
        prior_median: float = 10.0,
        prior_sigma: float = 1.0,
        running: Callable[[], Collection[RunningTask]] | None = None,
        seed: int = 0,
    ) -> None:
        """Start from a lognormal prior that is replaced by the fit once ``min_samples`` arrive.

        ``window``: finished tasks kept per population; ``half_life``: seconds after which a
        finished task counts half; ``class_min_samples`` (default ``min_samples``): finished tasks
        a size class needs before it has its own fit; ``running``: returns the tasks still
        running (read at refit time, for the right-censored part of the likelihood).
        """
        if min_samples < 1 or window < 2:
            raise ValueError("min_samples must be >= 1 and window >= 2")
        if not (prior_median > 0 and prior_sigma > 0):
            raise ValueError("prior_median and prior_sigma must be positive")
        if not half_life > 0:
            raise ValueError("half_life must be positive")
        self._min_samples = min_samples
        self._class_min = min_samples if class_min_samples is None else class_min_samples
        if self._class_min < 1:
            raise ValueError("class_min_samples must be >= 1")
        self._window = window
        self._decay = math.log(2.0) / half_life
        self._running = running
        self._rng = random.Random(seed)
        self._prior = _Fit(math.log(prior_median), prior_sigma)
        self._pooled = _Population(window, self._prior, _rest(min_samples))
        self._classes: dict[str, _Population] = {}
        self._now = 0.0  # the latest time an observation carried
        self._calibration: dict[tuple[float, float, float], float] = {}
        # Per calibration key: the last calibrated K ÷ Keller's continuous estimate. It changes
        # little from fit to fit, so the next calibration starts there (often within tolerance
        # at the first evaluation) instead of at Keller's estimate. Kept across refits.
        self._k_ratio: dict[tuple[float, float, float], float] = {}
        self.fits = 0  # bumped by every refit: whoever derives figures from the fit redoes them
        self.changes = 0  # shifts the change detector caught

    # ---- fitting -------------------------------------------------------------------------------

    def observe(
        self, duration: float, *, size_class: str | None = None, now: float | None = None
    ) -> None:
        """Add a finished task whose duration in seconds is known exactly (garbage is ignored)."""
        if not math.isfinite(duration) or duration < 0:
            return
        x = _log_age(duration)
        self._add(x, x, duration, size_class, now)

    def observe_interval(
        self,
        after: float,
        before: float,
        *,
        size_class: str | None = None,
        now: float | None = None,
    ) -> None:
        """Add a finished task: still running at age ``after`` (0: not polled), done at ``before``.

        Ages are seconds since submit; ``now`` is the clock time of the observation (for the time
        decay; None: the latest time seen). The outcome also feeds the change detector.
        """
        if not (math.isfinite(after) and math.isfinite(before)) or before < 0:
            return
        after = max(0.0, after)
        before = max(before, after)
        if now is not None:
            self._score(after, before, True, size_class, now)
        lo = _log_age(after) if after > 0 else -_INF
        self._add(lo, _log_age(before), before, size_class, now)

    def observe_pending(
        self,
        after: float,
        before: float,
        *,
        size_class: str | None = None,
        now: float,
    ) -> None:
        """A poll at age ``before`` found the task running (the previous one was at ``after``).

        Only the change detector reads this (O(1)); the fit sees running tasks at refit time.
        """
        if math.isfinite(after) and math.isfinite(before) and before > after:
            self._score(after if after > 0.0 else 0.0, before, False, size_class, now)

    def _score(
        self, after: float, before: float, done: bool, size_class: str | None, now: float
    ) -> None:
        if now > self._now:
            self._now = now
        key, pop = self._scored(size_class)
        if pop.score(after, before, done, now):
            since = pop.change_cohort()
            pop.forget_before(since)
            self.changes += 1
            self._refit(pop, key, anchored=False)
            if key is not None and self._pooled.fitted:
                # The pooled fit mixes this class in: it changed too (a class that has no
                # fit of its own yet would otherwise be polled on the old times).
                self._pooled.forget_before(since)
                self._refit(self._pooled, None, anchored=False)

    def _scored(self, size_class: str | None) -> tuple[str | None, _Population]:
        """The population whose fit schedules this class's polls (the one to check)."""
        if size_class is not None:
            pop = self._classes.get(size_class)
            if pop is not None and pop.fitted:
                return size_class, pop
        return None, self._pooled

    def _add(
        self, lo: float, hi: float, age: float, size_class: str | None, now: float | None
    ) -> None:
        if now is not None:
            self._now = max(self._now, now)
        at = self._now
        # Without a clock (``observe(duration)`` alone) tasks count as submitted now, in order.
        submitted = at if now is None else at - age
        targets: list[tuple[str | None, _Population]] = [(None, self._pooled)]
        if size_class is not None:
            pop = self._classes.get(size_class)
            if pop is None:
                pop = self._classes[size_class] = _Population(
                    self._window, self._prior, _rest(self._class_min)
                )
            # The class first: while it is the only one, the pooled refit copies its fit.
            targets.insert(0, (size_class, pop))
        for key, pop in targets:
            pop.add(_Obs(lo, hi, submitted))
            pop.since_fit += 1
            pop.share = pop.share * math.exp(-self._decay * max(0.0, at - pop.share_at)) + 1.0
            pop.share_at = at
            needed = self._min_samples if key is None else self._class_min
            n = len(pop.obs)
            if n < needed:
                continue
            if not pop.fitted:
                self._refit(pop, key)
                continue
            due = max(1.0, _REFIT_FRACTION * pop.weight_at_fit)
            if pop.since_fit >= due and (
                now is None
                or at - pop.fitted_at >= max(_REFIT_SECONDS, _REFIT_MEDIANS * math.exp(pop.fit.mu))
                or pop.since_fit >= _REFIT_FORCE * pop.weight_at_fit
            ):
                self._refit(pop, key)

    def _refit(self, pop: _Population, size_class: str | None, *, anchored: bool = True) -> None:
        if size_class is None and self._copy_sole_class(pop):
            return
        now = self._now
        decay = self._decay
        finished: list[tuple[float, float, float]] = []
        total = 0.0
        cutoff = pop.cutoff
        # Newest first: the last few (twice min_samples) keep their full weight, so that a slow
        # trickle of tasks still leaves enough to fit.
        recent = 2 * self._min_samples
        for i, o in enumerate(reversed(pop.obs)):
            if o.submitted < cutoff:
                continue
            w = 1.0 if i < recent else math.exp(-decay * max(0.0, now - o.submitted))
            if pop.alarms:
                w *= pop.forgotten(o.submitted)
            if w > 1e-6:
                finished.append((o.lo, o.hi, w))
                total += w
        running = self._running_sample(pop, size_class)
        start = pop.fit if pop.fitted else self._start_from(finished)
        anchor = None
        info = pop.info
        if anchored and pop.fitted and info.ee > 0 and info.ee * info.tt > info.et * info.et:
            # The previous fit, as a Gaussian in (η, τ) carrying a fraction of the information
            # it had (its standard errors, widened): it steadies what the window alone leaves
            # loose (when nearly every task is done at its first poll, only the rare straggler
            # speaks of the tail), pulling hard only where the data pinned it.
            a = _ANCHOR
            anchor = _Anchor(
                pop.fit.mu / pop.fit.sigma, 1.0 / pop.fit.sigma, *(a * x for x in info)
            )
        tilt = 0.0 if pop.fitted else _TILT
        hold = _FIT_HOLD if anchor is not None else None
        mu, sigma, pop.info = _newton(finished, running, start.mu, start.sigma, tilt, anchor, hold)
        sigma = max(_MIN_SIGMA, sigma)
        pop.since_fit = 0
        pop.fitted_at = now
        pop.weight_at_fit = total
        held = pop.fit
        if (
            anchor is not None
            and abs(mu - held.mu) <= _FIT_HOLD
            and abs(sigma - held.sigma) <= _FIT_HOLD * held.sigma
        ):
            # It barely moved: the fit the polls follow is kept, exactly, and with it K and the
            # schedule's plans (no new grid, plan search or calibration, and no refit-to-refit
            # jitter). Moves add up against the kept fit, so a slow drift is followed.
            return
        # The plan searches of the new fit start from the last plans' shapes.
        pop.fit = _Fit(mu, sigma, held.hints)
        pop.fitted = True
        self._calibration.clear()
        self.fits += 1

    def _copy_sole_class(self, pooled: _Population) -> bool:
        """Take the fit of the only size class when the pooled data are exactly its data.

        Every task so far of one class (the usual case: one image size) makes the pooled
        population a copy of that class's (same finished tasks, cutoff and changes, same
        running tasks): refitting it would redo the same Newton steps, grid and K calibration.
        """
        if len(self._classes) != 1:
            return False
        ((key, pop),) = self._classes.items()
        if not (
            pop.fitted
            and pop.fitted_at == self._now
            and pop.added == pooled.added
            and pop.cutoff == pooled.cutoff
            and pop.alarms == pooled.alarms
        ):
            return False
        if self._running is not None and any(t.size_class != key for t in self._running()):
            return False
        pooled.since_fit = pop.since_fit
        pooled.fitted_at = pop.fitted_at
        pooled.weight_at_fit = pop.weight_at_fit
        pooled.info = pop.info
        if pooled.fit is not pop.fit or not pooled.fitted:
            pooled.fit = pop.fit
            pooled.fitted = True
            self._calibration.clear()
            self.fits += 1
        return True

    def _start_from(self, finished: list[tuple[float, float, float]]) -> _Fit:
        """A first guess from interval midpoints (the Newton steps then remove their bias)."""
        xs = []
        for lo, hi, _ in finished:
            xs.append(hi - 0.5 if lo == -_INF else 0.5 * (lo + hi))
        mu = sum(xs) / len(xs)
        var = sum((x - mu) ** 2 for x in xs) / len(xs)
        return _Fit(mu, min(_MAX_SIGMA, max(0.3, math.sqrt(var))))

    def _running_sample(
        self, pop: _Population, size_class: str | None
    ) -> list[tuple[float, float]]:
        if self._running is None:
            return []
        tasks = self._running()
        n = len(tasks)
        if n == 0:
            return []
        pool: Iterable[RunningTask]
        if n > 4 * _RUNNING_SAMPLE:
            pool = self._rng.sample(list(tasks), 4 * _RUNNING_SAMPLE)
            scale = n / (4 * _RUNNING_SAMPLE)
        else:
            pool = tasks
            scale = 1.0
        out: list[tuple[float, float]] = []
        now, decay, cutoff = self._now, self._decay, pop.cutoff
        for task in pool:
            if size_class is not None and task.size_class != size_class:
                continue
            pending = task.last_pending_at
            submitted = task.submitted_at
            if pending is None or submitted < cutoff:
                continue
            age = pending - submitted
            if age > _MIN_DURATION:
                w = scale * math.exp(-decay * max(0.0, now - submitted))
                if pop.alarms:
                    w *= pop.forgotten(submitted)
                out.append((_log_age(age), w))
        if len(out) > _RUNNING_SAMPLE:
            scale_more = len(out) / _RUNNING_SAMPLE
            out = [(lo, w * scale_more) for lo, w in self._rng.sample(out, _RUNNING_SAMPLE)]
        return out

    def refit(self) -> None:
        """Refit every population with enough samples now (e.g. when a batch ends), from the
        data alone (not anchored to the previous fit)."""
        pops: list[tuple[str | None, _Population]] = list(self._classes.items())
        pops.append((None, self._pooled))  # last: it may copy the only class's fit
        for key, pop in pops:
            needed = self._min_samples if key is None else self._class_min
            if len(pop.obs) >= needed:
                self._refit(pop, key, anchored=False)

    # ---- state ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether enough samples have arrived to trust the (pooled) fit."""
        return self._pooled.fitted

    @property
    def samples(self) -> int:
        """Number of finished tasks in the pooled window."""
        return len(self._pooled.obs)

    @property
    def median(self) -> float:
        """Median completion time of the pooled fit (or prior), in seconds."""
        return math.exp(self._pooled.fit.mu)

    @property
    def sigma(self) -> float:
        """Standard deviation of log completion time in the pooled fit (or prior)."""
        return self._pooled.fit.sigma

    def summary(self, size_class: str | None = None) -> FitSummary:
        """The fit the polls of ``size_class`` follow, and whether it is the pooled one."""
        pop = self._classes.get(size_class) if size_class is not None else None
        own = pop is not None and pop.fitted
        used = pop if pop is not None and own else self._pooled
        return FitSummary(
            median=math.exp(used.fit.mu),
            sigma=used.fit.sigma,
            samples=len(used.obs),
            pooled=not own,
        )

    def _fit(self, size_class: str | None) -> _Fit:
        if size_class is not None:
            pop = self._classes.get(size_class)
            if pop is not None and pop.fitted:
                return pop.fit
        return self._pooled.fit

    # ---- distribution --------------------------------------------------------------------------

    def cdf(self, t: float, *, size_class: str | None = None) -> float:
        """P(T <= t) under the fit of ``size_class``."""
        return self._fit(size_class).cdf(t)

    def hazard(self, t: float, *, size_class: str | None = None) -> float:
        """Hazard rate f(t) / (1 - F(t)) at elapsed time ``t``."""
        return self._fit(size_class).hazard(t)

    def completion_probability(
        self, last_poll: float, now: float, *, size_class: str | None = None
    ) -> float:
        """P(done by ``now`` | not done at ``last_poll``), in [0, 1]."""
        return self._fit(size_class).completion_probability(last_poll, now)

    # ---- schedule ------------------------------------------------------------------------------

    def _mix(self) -> list[tuple[float, _Fit]]:
        """(share, fit) of each class with its own fit, the rest on the pooled fit."""
        now, decay = self._now, self._decay

        def share(pop: _Population) -> float:
            return pop.share * math.exp(-decay * max(0.0, now - pop.share_at))

        own = [(share(p), p.fit) for p in self._classes.values() if p.fitted]
        own = [(s, f) for s, f in own if s > 0]
        pooled = share(self._pooled)
        rest = pooled - sum(s for s, _ in own)
        mix = own
        if rest > 1e-6 * pooled or not own:
            mix = [*own, (max(rest, 1e-9), self._pooled.fit)]
        total = sum(s for s, _ in mix)
        return [(s / total, f) for s, f in mix]

    def k_for_target_delay(
        self,
        target_delay: float,
        *,
        min_interval: float = 0.0,
        max_interval: float = _INF,
    ) -> float:
        """The K whose schedule gives about ``target_delay`` s of mean delay over the task mix.

        Calibrated on the exact expected delay of the discrete schedule (with its first poll
        placed by :meth:`next_poll`'s rule and gaps clamped to the bounds); where even a sparse
        schedule sees tasks sooner than the target (they all finish before the first poll can
        usefully come), the delay stays below the target. Cached until the next refit.
        """
        if not target_delay > 0:
            raise ValueError("target_delay must be positive")
        key = (target_delay, min_interval, max_interval)
        cached = self._calibration.get(key)
        if cached is not None:
            return cached
        mix = self._mix()

        def delay_for(k: float) -> float:
            return sum(
                w * f.evaluate(k, f.plan(k, min_interval, max_interval), min_interval)[1]
                for w, f in mix
            )

        # From Keller's continuous estimate (times the last calibration's correction to it), a
        # secant search on log K vs log delay (delay falls as K grows), each K with its own best
        # plan.
        keller = sum(w * f.unit_delay for w, f in mix) / target_delay
        k = keller * self._k_ratio.get(key, 1.0)
        lo: tuple[float, float] | None = None  # (log k, log delay) with delay above the target
        hi: tuple[float, float] | None = None  # ... below it
        log_t = math.log(target_delay)
        # The K evaluated nearest the target (delay is not monotone in K where the plan's shape
        # changes, and the last step's K is never evaluated: the best evaluated one is returned).
        best: tuple[float, float] | None = None  # (|log delay - log target|, k)
        for _ in range(_CALIBRATION_STEPS):
            delay = delay_for(k)
            if not delay > 0:
                break
            point = (math.log(k), math.log(delay))
            if best is None or abs(point[1] - log_t) < best[0]:
                best = (abs(point[1] - log_t), k)
            if abs(point[1] - log_t) < 0.02:
                break
            if point[1] > log_t:
                lo = point
            else:
                hi = point
            if lo is not None and hi is not None:
                slope = (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] != lo[0] else -1.0
                x = lo[0] + (log_t - lo[1]) / slope if slope < 0 else 0.5 * (lo[0] + hi[0])
                # Stay strictly inside the bracket (a flat stretch would stall the secant).
                span = hi[0] - lo[0]
                x = min(max(x, lo[0] + 0.1 * span), hi[0] - 0.1 * span)
            else:
                x = point[0] + (point[1] - log_t)  # delay ∝ 1/K
            k = math.exp(x)
        else:
            k = best[1] if best is not None else k
        self._calibration[key] = k
        ratio = k / keller
        if _MIN_K_RATIO <= ratio <= _MAX_K_RATIO and (
            key in self._k_ratio or len(self._k_ratio) < _MAX_CALIBRATIONS
        ):
            self._k_ratio[key] = ratio
        return k

    def next_poll(
        self,
        last_poll: float,
        *,
        k: float,
        min_interval: float,
        max_interval: float,
        size_class: str | None = None,
    ) -> float:
        """Elapsed time of the poll after an unsuccessful one at ``last_poll`` (0 = submit)."""
        if not k > 0:
            return max(0.0, last_poll) + max_interval
        fit = self._fit(size_class)
        return fit.step(last_poll, k, fit.plan(k, min_interval, max_interval), min_interval)
