"""Live updates of one task: fed by the scheduler's polls, no extra requests."""

from __future__ import annotations

import anyio
import pytest
from aiohttp import web

from nanobanana_async import Client, PollPolicy, TaskState, TaskStatus

from .standin import StandIn, serve

pytestmark = pytest.mark.anyio
POLL = PollPolicy(initial_delay=0.01, factor=1.0, max_interval=0.02, jitter=0.0)
SCRIPT = [
    {"status": "IN_QUEUE", "queue_position": 2},
    {"status": "IN_QUEUE", "queue_position": 2},  # unchanged: not an update
    {"status": "IN_QUEUE", "queue_position": 1},
    {"status": "IN_PROGRESS", "progress": 0.5, "logs": [{"message": "denoising"}]},
    {
        "status": "IN_PROGRESS",
        "progress": 0.9,
        "logs": [{"message": "denoising"}, {"message": "upscaling"}],
    },
]


def scripted() -> StandIn:
    standin = StandIn(pending_polls=len(SCRIPT))

    async def response(request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        standin._hit("response", rid)
        n = standin.hits[("response", rid)]
        if n <= len(SCRIPT):
            return web.json_response({**SCRIPT[n - 1], "request_id": rid}, status=202)
        out = {
            "request_id": rid,
            "outputs": [{"type": "image", "url": "https://cdn.example/x.png"}],
        }
        return web.json_response(out)

    standin.response = response  # type: ignore[method-assign]
    return standin


async def test_job_updates_yield_each_change_then_the_final_status() -> None:
    standin = scripted()
    async with serve(standin), Client("k", base_url=standin.base_url, poll=POLL) as client:
        job = await client.submit("a banana")
        seen: list[TaskStatus] = []
        async with job.updates() as updates:
            async for status in updates:
                seen.append(status)
        positions = [s.queue_position for s in seen if s.state is TaskState.IN_QUEUE]
        assert positions[-2:] == [2, 1]  # the repeated position 2 was not reported twice
        progress = [s.progress for s in seen if s.state is TaskState.IN_PROGRESS]
        assert progress == [0.5, 0.9]
        assert [log.message for log in seen[-2].logs] == ["denoising", "upscaling"]
        assert seen[-1].state is TaskState.SUCCEEDED
        result = await job.result()  # at once: the updates' polls already fetched it
        assert result.images and standin.count("response") == len(SCRIPT) + 1
        assert standin.count("status") == 0  # no extra requests


async def test_generate_on_update_and_a_raising_callback() -> None:
    standin = scripted()
    async with serve(standin), Client("k", base_url=standin.base_url, poll=POLL) as client:
        states: list[TaskState] = []
        result = await client.generate("a", on_update=lambda s: states.append(s.state))
        assert result.images and TaskState.IN_PROGRESS in states and TaskState.IN_QUEUE in states

        def broken(status: TaskStatus) -> None:
            raise RuntimeError("callback bug")

        result = await client.generate("b", on_update=broken)  # logged, the wait goes on
        assert result.images


async def test_leaving_updates_early_stops_polling_and_cancels_nothing() -> None:
    standin = StandIn(pending_polls=10_000)
    async with serve(standin), Client("k", base_url=standin.base_url, poll=POLL) as client:
        job = await client.submit("long")
        async with job.updates() as updates:
            async for _ in updates:
                while standin.count("response") < 3:  # being polled while followed
                    await anyio.sleep(0.01)
                break
        assert client.stats.in_flight == 0
        polls = standin.count("response")
        await anyio.sleep(0.1)
        assert standin.count("response") == polls
        assert standin.count("cancel") == 0
