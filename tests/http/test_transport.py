"""Transport behaviour against the emulator: retries, Retry-After, create safety, key hygiene."""

from __future__ import annotations

import logging
import time

import anyio
import pytest

from nanobanana_async import (
    ConnectError,
    HttpEvent,
    NanoBananaError,
    RateLimitError,
    RequestTimeoutError,
    ResponseTooLargeError,
    RetryPolicy,
    ServerError,
    SubmissionUnknownError,
    TaskFailedError,
    Timeout,
)
from nanobanana_async.emulator import Emulator, EmulatorConfig, Faults, ServiceTime

from ..helpers import client_for

pytestmark = pytest.mark.anyio


async def test_429_retry_after_is_waited(nanobanana_emulator: Emulator) -> None:
    emu = nanobanana_emulator
    async with client_for(emu, retry=RetryPolicy(max_attempts=5, initial_backoff=0.01)) as client:
        job = await client.submit("x")
        emu.reconfigure(
            faults=Faults(
                rate_limited_429=1.0, retry_after_seconds=0.5, routes=frozenset({"status"})
            )
        )
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(job.status)
            await anyio.sleep(0.2)
            emu.reconfigure(faults=Faults())
        elapsed = time.monotonic() - started
    assert emu.stats.rate_limited == 1
    assert 0.5 <= elapsed < 1.5  # waited for the stated Retry-After, not the tiny backoff
    assert client.stats.rate_limited == 1


async def test_retry_after_over_cap_raises_without_waiting(nanobanana_emulator: Emulator) -> None:
    emu = nanobanana_emulator
    emu.reconfigure(
        faults=Faults(rate_limited_429=1.0, retry_after_seconds=600, routes=frozenset({"status"}))
    )
    async with client_for(emu, retry=RetryPolicy(max_retry_after=30)) as client:
        started = time.monotonic()
        with pytest.raises(RateLimitError) as info:
            await client.status("mmsu_x")
    assert info.value.retry_after == 600
    assert time.monotonic() - started < 1
    assert emu.stats.rate_limited == 1


async def test_5xx_retried_then_success(nanobanana_emulator: Emulator) -> None:
    emu = nanobanana_emulator
    async with client_for(
        emu, retry=RetryPolicy(max_attempts=20, initial_backoff=0.01, max_backoff=0.02)
    ) as client:
        job = await client.submit("x")
        emu.reconfigure(
            faults=Faults(error_500=0.3, error_502=0.2, error_504=0.2, routes=frozenset({"status"}))
        )
        statuses = [await job.status() for _ in range(10)]
    assert all(s.request_id == job.request_id for s in statuses)
    assert sum(emu.stats.faults.values()) > 0


async def test_retries_exhausted_raise_the_last_error(nanobanana_emulator: Emulator) -> None:
    emu = nanobanana_emulator
    emu.reconfigure(
        faults=Faults(error_503=1.0, retry_after_seconds=0.01, routes=frozenset({"status"}))
    )
    async with client_for(emu, retry=RetryPolicy(max_attempts=3, initial_backoff=0.01)) as client:
        with pytest.raises(ServerError) as info:
            await client.status("mmsu_anything")
    assert info.value.status_code == 503
    assert emu.stats.faults["error_503"] == 3
    assert emu.stats.requests == 3


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("error_500", SubmissionUnknownError),
        ("error_502", SubmissionUnknownError),
        ("error_504", SubmissionUnknownError),
        ("reset", SubmissionUnknownError),
        ("stall", SubmissionUnknownError),
        ("malformed_json", SubmissionUnknownError),
        ("lost_create_response", SubmissionUnknownError),
        ("error_503", ServerError),  # with Retry-After: certainly not processed, retried
        ("rate_limited_429", RateLimitError),  # retried until attempts run out
    ],
)
async def test_create_faults_never_duplicate(fault: str, expected: type[Exception]) -> None:
    faults = Faults(
        **{fault: 1.0}, stall_seconds=5, retry_after_seconds=0.01, routes=frozenset({"create"})
    )
    async with Emulator(EmulatorConfig(faults=faults)) as emu:
        timeout = Timeout(connect=1, read=0.3, deadline=5)
        retry = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_rate_limited=2)
        async with client_for(emu, timeout=timeout, retry=retry) as client:
            with pytest.raises(expected) as info:
                await client.submit("pay once")
        assert emu.stats.duplicate_creates == 0
        assert emu.stats.creates <= 1
        if expected is SubmissionUnknownError:
            assert "may have been created" in str(info.value)
            assert info.value.request_body == {"prompt": "pay once"}  # type: ignore[attr-defined]
            # Exactly one attempt reached the service: it was not resubmitted.
            assert emu.stats.requests == 1
        else:
            # 503 + Retry-After uses the 3 attempts; 429s are waited out 2 times first.
            expected_requests = 5 if fault == "rate_limited_429" else 3
            assert emu.stats.requests == expected_requests and emu.stats.creates == 0
        if fault == "lost_create_response":
            assert emu.stats.creates == 1 and len(emu.stats.lost_create_ids) == 1


async def test_mixed_create_faults_one_create_per_body() -> None:
    faults = Faults(
        error_500=0.1,
        error_503=0.1,
        rate_limited_429=0.1,
        reset=0.05,
        lost_create_response=0.05,
        retry_after_seconds=0.01,
        routes=frozenset({"create"}),
    )
    async with Emulator(EmulatorConfig(faults=faults, seed=7)) as emu, client_for(emu) as client:
        unknown = ok = 0
        for i in range(120):
            try:
                await client.submit(f"prompt {i}")
                ok += 1
            except SubmissionUnknownError:
                unknown += 1
            except (RateLimitError, ServerError):
                pass
    assert emu.stats.duplicate_creates == 0
    assert max(emu.stats.creates_by_body.values()) == 1
    assert ok > 60 and unknown > 0
    # Every accepted create is either known (ok) or reported as unknown: none is lost silently.
    assert emu.stats.creates <= ok + unknown


async def test_connect_refused_is_retried_then_connect_error() -> None:
    from nanobanana_async import Client

    async with Client(
        "k",
        base_url="http://127.0.0.1:9/model",
        retry=RetryPolicy(max_attempts=2, initial_backoff=0.01),
    ) as client:
        with pytest.raises(ConnectError):
            await client.submit("nobody listens")
        assert client.stats.requests_sent == 2  # a refused connection sent nothing: safe to retry


async def test_status_stall_times_out(nanobanana_emulator: Emulator) -> None:
    emu = nanobanana_emulator
    emu.reconfigure(faults=Faults(stall=1.0, stall_seconds=5, routes=frozenset({"status"})))
    timeout = Timeout(connect=1, read=0.2, deadline=1.0)
    async with client_for(
        emu, timeout=timeout, retry=RetryPolicy(max_attempts=2, initial_backoff=0.01)
    ) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            await client.status("mmsu_x")
    assert time.monotonic() - started < 2


async def test_key_never_logged_and_never_sent_to_other_origins(
    nanobanana_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[HttpEvent] = []
    emu = nanobanana_emulator
    async with client_for(emu, hooks=[events.append]) as client:
        result = await client.generate("hygiene")
        url = result.images[0].url
        assert url is not None and not client._runtime.transport.is_api_origin(url)
        resp = await client._runtime.transport.request("GET", url, kind="result")
        assert resp.status == 200 and resp.body.startswith(b"\x89PNG")
        with pytest.raises(TaskFailedError) as info:
            await client.generate("a [blocked] one")
        assert isinstance(info.value, NanoBananaError)
        assert emu.api_key not in str(info.value) and emu.api_key not in repr(info.value)
    assert emu.stats.cdn_requests == 1 and emu.stats.cdn_auth_rejected == 0
    assert caplog.records, "debug logging produced nothing"
    assert any("/response" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert emu.api_key not in record.getMessage()
    assert events and all(emu.api_key not in repr(e) for e in events)
    assert {e.method for e in events} == {"POST", "GET"}
    assert emu.api_key not in repr(client)


async def test_oversized_body_is_a_protocol_error(nanobanana_emulator: Emulator) -> None:
    from nanobanana_async import Limits, ProtocolError

    async with client_for(nanobanana_emulator, limits=Limits(max_response_bytes=1000)) as client:
        result = await client.generate("big")
        url = result.images[0].url
        assert url is not None and (result.images[0].file_size or 0) > 1000
        sent = client.stats.requests_sent
        with pytest.raises(ResponseTooLargeError, match="cap") as info:
            await client._runtime.transport.request("GET", url, kind="result")
        assert isinstance(info.value, ProtocolError) and info.value.limit == 1000
        assert client.stats.requests_sent == sent + 1  # not retried: it would be as large again


@pytest.mark.nanobanana_emulator(service_time=ServiceTime.fixed(0.0))
async def test_poll_errors_are_retried_by_the_scheduler(nanobanana_emulator: Emulator) -> None:
    emu = nanobanana_emulator
    emu.reconfigure(
        faults=Faults(error_502=0.3, reset=0.2, malformed_json=0.2, routes=frozenset({"result"}))
    )
    async with client_for(emu) as client:
        results = [await client.generate(f"p{i}", timeout=10) for i in range(10)]
    assert len({r.request_id for r in results}) == 10
    assert sum(emu.stats.faults.values()) > 0
