"""The rate budget shared through Redis, against a real ``redis-server`` (``redis_server``).

The pacers of one account share slots, the learned rate and Retry-After holds; Redis failing
(refused, killed, frozen) costs at most one short timeout, then the client paces alone, says so
once, and rejoins when Redis is back. Then four client processes on one account against one
limit, and Redis killed in the middle of their run.
"""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
import time
from pathlib import Path

import anyio
import pytest

from benchmarks import ratelimit as bench
from benchmarks._harness import StandaloneEmulator
from nanobanana_async import Client, ValidationError
from nanobanana_async._http._pacer import AdaptiveRateLimiter
from nanobanana_async._http._shared import (
    LocalRateLimit,
    RedisRateLimit,
    SharedPacer,
    account_key,
    make_pacer,
)
from nanobanana_async.emulator import Emulator, EmulatorConfig, ServiceTime

from ..helpers import client_for
from ..redis_server import RedisServer

pytestmark = pytest.mark.anyio


def shared(url: str, name: str = "acct", **kwargs: object) -> SharedPacer:
    pacer = RedisRateLimit(url, name=name, **kwargs).pacer("unused")  # type: ignore[arg-type]
    assert isinstance(pacer, SharedPacer)
    return pacer


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "shared rate limit" in r.getMessage()
    ]


# -- configuration ---------------------------------------------------------------------------


def test_rate_limit_takes_none_a_redis_url_or_a_config() -> None:
    assert isinstance(make_pacer(None, base_url="u", api_key="k"), AdaptiveRateLimiter)
    local = make_pacer(LocalRateLimit(max_rate=5), base_url="u", api_key="k")
    assert isinstance(local, AdaptiveRateLimiter) and local.rate == 5
    assert isinstance(make_pacer("redis://127.0.0.1:1/0", base_url="u", api_key="k"), SharedPacer)
    for bad in ("http://redis:6379", 12, object()):
        with pytest.raises(ValidationError, match="rate_limit"):
            Client("key", rate_limit=bad)  # type: ignore[arg-type]
    for kwargs in ({"timeout": 0}, {"retry_interval": -1}, {"max_rate": 0}):
        with pytest.raises(ValidationError):
            RedisRateLimit("redis://h", **kwargs)  # type: ignore[arg-type]


def test_without_the_redis_package_the_error_says_which_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ValidationError, match=r"nanobanana-async\[redis\]"):
        Client("key", rate_limit="redis://127.0.0.1:6379/0")


def test_the_budget_is_named_by_a_hash_of_the_account_never_the_key() -> None:
    name = account_key("https://api.example/model", "sk-secret")
    assert "sk-secret" not in name and len(name) == 24
    assert name != account_key("https://api.example/model", "sk-other")
    assert name != account_key("https://other.example/model", "sk-secret")


# -- one budget, several clients -------------------------------------------------------------


async def test_two_clients_share_one_rate(redis_server: RedisServer) -> None:
    a, b = shared(redis_server.url, max_rate=40), shared(redis_server.url, max_rate=40)
    started = anyio.current_time()

    async def take(pacer: SharedPacer, n: int) -> None:
        for _ in range(n):
            await pacer.acquire()

    async with anyio.create_task_group() as tg:
        for pacer in (a, b, a, b):
            tg.start_soon(take, pacer, 10)
    # 40 sends at 40/s together (the first one free): each alone would take half as long.
    assert 0.9 <= anyio.current_time() - started < 1.6
    assert a.shared and b.shared
    await a.aclose()
    await b.aclose()


async def test_a_429_seen_by_one_client_holds_and_slows_every_client(
    redis_server: RedisServer,
) -> None:
    a, b = shared(redis_server.url), shared(redis_server.url)
    for _ in range(20):
        await a.acquire()
        await b.acquire()
    assert a.rate is None and b.rate is None  # nothing learnt yet: unpaced
    for _ in range(3):
        a.on_throttle(0.5)  # refused, nothing accepted: a real limit, not a stray 429
    await anyio.sleep(0.05)  # the report goes out in the background
    started = anyio.current_time()
    await b.acquire()
    assert anyio.current_time() - started >= 0.35  # b waits out a's Retry-After
    assert b.rate is not None and b.rate == a.rate  # and paces at the rate a learnt
    await a.aclose()
    await b.aclose()


async def test_redis_refusing_paces_locally_says_so_once_and_never_stalls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "nanobanana_async")
    with anyio.fail_after(5):
        pacer = shared(f"redis://127.0.0.1:{_closed_port()}/0", timeout=0.2)
        started = anyio.current_time()
        for _ in range(50):
            await pacer.acquire()
            pacer.on_success()
        assert anyio.current_time() - started < 0.5
    assert not pacer.shared and pacer.fallbacks == 1
    assert len(warnings_of(caplog)) == 1
    assert "pacing this process alone" in warnings_of(caplog)[0]
    await pacer.aclose()


async def test_redis_killed_then_back_falls_back_once_and_rejoins(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "nanobanana_async")
    pacer = shared(redis_server.url, max_rate=200, timeout=0.2, retry_interval=0.3)
    for _ in range(10):
        await pacer.acquire()
    assert pacer.shared
    redis_server.kill()
    with anyio.fail_after(5):
        for _ in range(20):
            await pacer.acquire()
    assert not pacer.shared and len(warnings_of(caplog)) == 1
    assert pacer.rate is not None and pacer.rate <= 200  # paced alone, at its share at most
    redis_server.start()
    await anyio.sleep(0.35)
    for _ in range(5):
        await pacer.acquire()
    assert pacer.shared
    assert any("is back" in r.getMessage() for r in caplog.records)
    assert len(warnings_of(caplog)) == 1
    await pacer.aclose()


async def test_a_frozen_redis_costs_one_timeout_then_local_pacing(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    pacer = shared(redis_server.url, timeout=0.2)
    await pacer.acquire()
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
    try:
        started = anyio.current_time()
        with anyio.fail_after(5):
            for _ in range(10):
                await pacer.acquire()
        assert anyio.current_time() - started < 0.6
        assert not pacer.shared and len(warnings_of(caplog)) == 1
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    await pacer.aclose()


async def test_a_client_with_a_shared_budget_runs_a_batch(redis_server: RedisServer) -> None:
    config = EmulatorConfig(service_time=ServiceTime.fixed(0.02), rate_limit=100, rate_burst=5)
    async with Emulator(config) as emu:
        async with client_for(emu, rate_limit=redis_server.url) as client:
            outcomes = [o async for o in client.stream(f"p{i}" for i in range(40))]
            assert client.stats.send_rate is not None  # learnt from the emulator's 429s
        assert all(o.ok for o in outcomes)
        assert emu.stats.duplicate_creates == 0
    import redis

    keys = redis.Redis.from_url(redis_server.url).keys("*")
    assert len(keys) == 1 and emu.api_key.encode() not in keys[0]


# -- processes on one account ----------------------------------------------------------------

RATE = 100.0


def test_four_processes_sharing_the_budget_use_the_limit_with_few_429s(
    redis_server: RedisServer,
) -> None:
    with (
        StandaloneEmulator(bench.emulator_args(RATE)) as emu,
        tempfile.TemporaryDirectory() as tmp,
    ):
        start, stop, workers = bench.start_workers(
            emu, 4, redis_url=redis_server.url, seconds=5.0, folder=Path(tmp)
        )
        results = bench.collect(workers)
        figures = bench.summarise(results, RATE, start, stop, emu.stats())
    assert figures["failed"] == 0 and figures["warnings"] == 0, figures
    assert figures["utilisation"] >= 0.9, figures
    assert figures["share_429"] <= 0.02, figures
    assert figures["duplicate_creates"] == 0


def test_redis_killed_mid_run_every_task_finishes_and_none_is_created_twice(
    redis_server: RedisServer,
) -> None:
    with (
        StandaloneEmulator(bench.emulator_args(RATE)) as emu,
        tempfile.TemporaryDirectory() as tmp,
    ):
        start, stop, workers = bench.start_workers(
            emu, 4, redis_url=redis_server.url, seconds=3.0, folder=Path(tmp)
        )
        time.sleep(max(0.0, start + 1.5 - time.time()))
        redis_server.kill()
        results = bench.collect(workers, timeout=60)
        stats = emu.stats()
    assert all(r["failed"] == 0 for r in results), [r["errors"] for r in results]
    ok = sum(r["ok"] for r in results)
    assert ok == sum(stats["creates_by_body"].values()) > 0
    assert stats["duplicate_creates"] == 0
    # Each process said once that it paces alone; none stalled (they stopped creating on time).
    assert [len(r["warnings"]) for r in results] == [1, 1, 1, 1]
    assert all(t < stop + 10 for r in results for t, _ in r["events"])


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens on it any more
