"""The runtime seam: waiting, cancelling, bounded cleanup, final errors. Against the stand-in."""

from __future__ import annotations

import contextlib
import json
import time

import anyio
import pytest

from nanobanana_async import (
    Client,
    Limits,
    NanoBananaError,
    PollPolicy,
    ResponseTooLargeError,
    RetryPolicy,
    TaskCancelledError,
    Timeout,
)

from .standin import StandIn, serve

pytestmark = pytest.mark.anyio
POLL = PollPolicy(initial_delay=0.01, factor=1.0, max_interval=0.02, jitter=0.0)


def client(standin: StandIn, **kwargs: object) -> Client:
    kwargs.setdefault("poll", POLL)
    kwargs.setdefault("retry", RetryPolicy(max_attempts=2, initial_backoff=0.01))
    kwargs.setdefault("timeout", Timeout(connect=2, read=2, deadline=5, cancel=1, close=1))
    return Client("k", base_url=standin.base_url, **kwargs)  # type: ignore[arg-type]


async def test_close_with_many_tasks_on_a_stalling_cancel_route_is_bounded() -> None:
    async with serve(StandIn(pending_polls=10_000, stall_cancel=True)) as standin:
        c = client(standin, timeout=Timeout(connect=2, read=30, deadline=60, cancel=30, close=1))
        async with anyio.create_task_group() as waiters:
            async with c:
                stream = c.stream([f"p{i}" for i in range(200)], max_in_flight=200)
                with anyio.move_on_after(0.5):
                    async for _ in stream:
                        pass  # pragma: no cover - nothing finishes
                # the stream's own cleanup is bounded by Timeout.close too
                started = time.monotonic()
                await stream.aclose()
                assert time.monotonic() - started < 2.0
                jobs = [await c.submit(f"w{i}") for i in range(50)]
                for job in jobs:
                    waiters.start_soon(_ignore, job.result())
                while c.stats.in_flight < 50:
                    await anyio.sleep(0.01)
                started = time.monotonic()
            closed_in = time.monotonic() - started
        assert closed_in < 2.0, closed_in
        assert standin.count("cancel") >= 50  # concurrent: all went out before the deadline


async def _ignore(awaitable: object) -> None:
    with contextlib.suppress(NanoBananaError):  # the waiter's task fails when the client closes
        await awaitable  # type: ignore[misc]


async def test_a_task_another_waiter_wants_is_not_cancelled_remotely() -> None:
    async with serve(StandIn(pending_polls=30)) as standin, client(standin) as c:
        job = await c.submit("shared")
        async with anyio.create_task_group() as tg:
            results: list[object] = []

            async def patient() -> None:
                results.append(await job.result(timeout=5))

            tg.start_soon(patient)
            with anyio.move_on_after(0.05):
                await job.result()  # the impatient waiter gives up
        assert standin.count("cancel") == 0
        assert len(results) == 1


async def test_last_waiter_giving_up_cancels_remotely_and_stops_polling() -> None:
    async with serve(StandIn(pending_polls=10_000)) as standin, client(standin) as c:
        job = await c.submit("alone")
        with anyio.move_on_after(0.1):
            await job.result()
        assert standin.count("cancel", job.request_id) == 1
        polls = standin.count("response")
        await anyio.sleep(0.1)
        assert standin.count("response") == polls
        assert c.stats.in_flight == 0


async def test_cancel_says_true_when_accepted_false_when_already_finished() -> None:
    standin = StandIn(pending_polls=0)

    async def already_done(request: object) -> object:
        from aiohttp import web

        rid = request.match_info["rid"]  # type: ignore[attr-defined]
        standin._hit("cancel", rid)
        return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)

    async with serve(standin), client(standin) as c:
        job = await c.submit("x")
        assert await job.cancel() is True
        with pytest.raises(TaskCancelledError):
            await job.result(timeout=5)
        standin.cancel = already_done  # type: ignore[method-assign]
    standin2 = StandIn(pending_polls=0)
    standin2.cancel = already_done  # type: ignore[method-assign]
    async with serve(standin2), client(standin2) as c:
        job = await c.submit("y")
        await job.result(timeout=5)
        assert await job.cancel() is False


async def test_a_result_over_the_size_cap_is_final_after_one_fetch() -> None:
    big = json.dumps({"request_id": "r", "outputs": [], "pad": "x" * 3_000_000}).encode()
    standin = StandIn(pending_polls=0, result=lambda rid: (200, big))
    limits = Limits(max_response_bytes=1_000_000)
    async with serve(standin), client(standin, limits=limits) as c:
        started = time.monotonic()
        with pytest.raises(ResponseTooLargeError):
            await c.generate("big", timeout=10)
        assert standin.count("response") == 1
        assert time.monotonic() - started < 2


async def test_tasks_are_timed_with_their_size_class() -> None:
    from nanobanana_async import GenerationRequest

    async with serve(StandIn(pending_polls=10_000)) as standin, client(standin) as c:
        job = await c.submit(GenerationRequest("big", image_size="4K"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_ignore, job.result(cancel_on_abandon=False))
            while c.stats.in_flight < 1:
                await anyio.sleep(0.01)
            stream = c.stream([GenerationRequest("small", image_size="1K"), "default size"])

            async def consume() -> None:
                async for _ in stream:
                    pass  # pragma: no cover - nothing finishes

            tg.start_soon(consume)
            while c.stats.in_flight < 3:
                await anyio.sleep(0.01)
            classes = sorted(e.size_class or "" for e in c._runtime.scheduler.entries())
            assert classes == ["1K", "4K", "default"]
            await stream.aclose()
            tg.cancel_scope.cancel()
