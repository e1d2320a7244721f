"""Tests for the adaptive client-side rate limiter."""

from __future__ import annotations

import heapq
import itertools
import math
import random

import anyio
import pytest

from nanobanana_async._http._pacer import AdaptiveRateLimiter, PacingCore


def simulate(
    server_rate: float,
    *,
    workers: int,
    retry_after: bool = False,
    latency: float = 0.05,
    duration: float = 70.0,
    settle: float = 10.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Drive a PacingCore against a server token bucket; (utilisation, 429 share) after `settle`.

    Workers loop reserve -> send -> response -> on_success/on_throttle as fast as allowed. The
    server is the emulator's bucket (burst R/10); with `retry_after` it answers 429s with the
    emulator's whole-second Retry-After (at least 1 s).
    """
    rng = random.Random(seed)
    core = PacingCore()
    cap = max(1.0, server_rate / 10)
    tokens, last = cap, 0.0
    events: list[tuple[float, int, str, int, float]] = []
    seq = 0

    def push(t: float, kind: str, worker: int, extra: float = 0.0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, worker, extra))

    for w in range(workers):
        push(rng.random() * 0.01, "ready", w)
    ok = throttled = 0
    while events:
        t, _, kind, w, extra = heapq.heappop(events)
        if t > duration:
            break
        if kind == "ok":
            core.on_success(t)
            push(t, "ready", w)
            continue
        if kind == "429":
            core.on_throttle(t, extra if retry_after else None)
            push(t, "ready", w)
            continue
        if kind == "ready":
            slot = core.reserve(t)
            if slot > t:
                push(slot, "wake", w, core.epoch)
                continue
        elif not core.still_valid(int(extra), t):
            push(t, "ready", w)
            continue
        core.record_send(t)
        arrival = t + latency / 2
        tokens = min(cap, tokens + (arrival - last) * server_rate)
        last = arrival
        if tokens >= 1.0:
            tokens -= 1.0
            outcome, wait = "ok", 0.0
        else:
            outcome, wait = "429", max(1.0, math.ceil((1.0 - tokens) / server_rate))
        if arrival >= settle:
            if outcome == "ok":
                ok += 1
            else:
                throttled += 1
        push(arrival + latency / 2 * (0.5 + rng.random()), outcome, w, wait)
    return ok / (duration - settle) / server_rate, throttled / max(1, ok + throttled)


@pytest.mark.parametrize("server_rate", [20, 100, 500])
def test_settles_near_server_rate_with_few_429s(server_rate: int) -> None:
    util, share = simulate(server_rate, workers=max(64, server_rate // 4))
    assert util >= 0.9
    assert util <= 1.0 + 1e-9
    assert share <= 0.02


@pytest.mark.parametrize("server_rate", [20, 100, 500])
def test_whole_second_retry_after_costs_little(server_rate: int) -> None:
    # Every 429 that signals overload holds all senders for >= 1 s, so each throttling episode
    # is expensive; stray 429s below the overload share are retried alone. The steady 429
    # share sits a little above the 2% of the exact-Retry-After case (measured 3-4%).
    util, share = simulate(server_rate, workers=max(64, server_rate // 4), retry_after=True)
    assert util >= 0.85
    assert share <= 0.05


def test_unlimited_until_first_throttle() -> None:
    core = PacingCore()
    assert core.fill_rate is None
    assert all(core.reserve(1.0) == 1.0 for _ in range(1000))


def test_max_rate_paces_from_start() -> None:
    core = PacingCore(max_rate=10.0)
    slots = [core.reserve(0.0) for _ in range(5)]
    assert slots == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_throttle_cuts_measured_rate_and_voids_reserved_slots() -> None:
    core = PacingCore(max_rate=100.0)
    for i in range(100):  # one second of sends at 100/s
        core.record_send(i / 100)
    epoch = core.epoch
    slots = [core.reserve(1.0) for _ in range(50)]
    core.on_throttle(1.0)
    assert core.fill_rate == pytest.approx(70.0, rel=0.1)
    assert not core.still_valid(epoch, slots[-1])
    # Waiters re-reserve at the new pace, not the old one.
    fresh = [core.reserve(1.0) for _ in range(8)]
    gaps = [b - a for a, b in itertools.pairwise(fresh)]
    assert core.fill_rate is not None
    assert min(gaps) == pytest.approx(1 / core.fill_rate)


def test_one_cut_per_episode() -> None:
    core = PacingCore(max_rate=100.0)
    for i in range(100):
        core.record_send(i / 100)
    core.on_throttle(1.0)
    rate = core.fill_rate
    for j in range(20):  # late 429s for requests sent before the cut
        core.on_throttle(1.0 + j * 0.01)
    assert core.fill_rate == rate
    assert core.throttled == 21


def test_rate_recovers_after_cut() -> None:
    core = PacingCore()
    t = 0.0
    while t < 1.0:
        core.record_send(t)
        t += 0.005  # 200/s
    core.on_throttle(t)
    cut = core.fill_rate
    assert cut is not None
    for i in range(1, 400):
        now = t + i * 0.005
        core.record_send(now)
        core.on_success(now)
    assert core.fill_rate is not None and core.fill_rate > cut * 1.2


def test_hold_blocks_reservations() -> None:
    core = PacingCore()
    core.on_throttle(5.0, retry_after=2.0)
    assert core.reserve(5.5) >= 7.0
    assert not core.still_valid(core.epoch, 6.9)


def test_rate_meter_ignores_hold_time() -> None:
    core = PacingCore()
    for i in range(50):
        core.record_send(i / 50)
    before = core.measured_rate(1.0)
    core.on_throttle(1.0, retry_after=3.0)
    assert core.measured_rate(4.0) == pytest.approx(before, rel=0.01)


@pytest.mark.anyio
async def test_acquire_paces_with_real_clock() -> None:
    limiter = AdaptiveRateLimiter(max_rate=50.0)
    start = anyio.current_time()
    for _ in range(20):
        await limiter.acquire()
    elapsed = anyio.current_time() - start
    assert elapsed >= 0.35
    assert limiter.rate == 50.0


@pytest.mark.anyio
async def test_concurrent_acquires_are_paced() -> None:
    limiter = AdaptiveRateLimiter(max_rate=100.0)
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        times.append(anyio.current_time())

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(one)
    assert max(times) - start >= 0.27


@pytest.mark.anyio
async def test_retry_after_holds_next_acquire() -> None:
    limiter = AdaptiveRateLimiter()
    await limiter.acquire()
    assert limiter.rate is None
    start = anyio.current_time()
    limiter.on_throttle(retry_after=0.2)
    await limiter.acquire()
    assert anyio.current_time() - start >= 0.2 - 1e-3
    assert limiter.throttled == 1
    assert limiter.rate is not None


@pytest.mark.anyio
async def test_unlimited_acquire_is_free() -> None:
    now = 100.0
    limiter = AdaptiveRateLimiter(clock=lambda: now)
    for _ in range(1000):
        await limiter.acquire()
    limiter.on_success()
    assert limiter.rate is None
    assert limiter.throttled == 0
