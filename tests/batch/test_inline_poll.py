"""The batch's hot path: a first poll due at once is sent by the submit worker itself.

Against the stand-in written from API.md: what reaches the server when the stream is abandoned
while those polls are on the wire, and that instant tasks cost exactly two requests each.
"""

from __future__ import annotations

import anyio
import pytest

from nanobanana_async import Client, Limits, PollPolicy

from ..standin import StandIn, serve

pytestmark = pytest.mark.anyio

INSTANT = PollPolicy(
    initial_delay=0.0, factor=1.0, max_interval=0.01, jitter=0.0, target_delay=None
)


def client(standin: StandIn) -> Client:
    return Client("k", base_url=standin.base_url, poll=INSTANT)


async def test_instant_tasks_cost_one_create_and_one_get_each() -> None:
    async with serve(StandIn(pending_polls=0)) as standin, client(standin) as c:
        outcomes = [o async for o in c.stream([f"p{i}" for i in range(40)], max_in_flight=8)]
        assert sorted(o.index for o in outcomes) == list(range(40))
        assert all(o.ok for o in outcomes)
        assert standin.count("create") == 40 and standin.count("response") == 40
        assert c.stats.in_flight == 0 and c.stats.polls_sent == 40


async def test_abandoning_during_first_polls_cancels_those_tasks_on_the_service() -> None:
    async with serve(StandIn(stall_response=True)) as standin, client(standin) as c:
        stream = c.stream([f"p{i}" for i in range(3)], max_in_flight=3)
        got = []

        async def consume() -> None:  # drives the batch; gets no outcome before the close
            got.extend([o async for o in stream])

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            with anyio.fail_after(5):
                while standin.count("response") < 3:  # every first poll is on the wire
                    await anyio.sleep(0.01)
            await stream.aclose()
            tg.cancel_scope.cancel()
        assert got == []
        ids = {rid for route, rid in standin.log if route == "create"}
        assert len(ids) == 3
        assert {rid for route, rid in standin.log if route == "cancel"} == ids
        assert c.stats.in_flight == 0
        polls = standin.count("response")
        await anyio.sleep(0.1)
        assert standin.count("response") == polls  # nothing polls them any more


async def test_a_full_poll_limit_hands_first_polls_to_the_scheduler() -> None:
    limits = Limits(max_concurrent_polls=1, max_concurrent_creates=4)
    async with (
        serve(StandIn(pending_polls=1)) as standin,
        Client("k", base_url=standin.base_url, poll=INSTANT, limits=limits) as c,
    ):
        outcomes = [o async for o in c.stream([f"p{i}" for i in range(12)], max_in_flight=6)]
        assert len(outcomes) == 12 and all(o.ok for o in outcomes)
        assert standin.count("response") == 24  # one pending answer, then the result, each
