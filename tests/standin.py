"""A small stand-in for the queue service, written from ``API.md`` (not from the emulator).

Each task answers ``202`` IN_PROGRESS on its response route for ``pending_polls`` polls, then the
``result`` body (an image output by default). Every request is counted per route and request id,
so tests can assert exactly what the SDK sent. ``stall_cancel`` makes the cancel route hang,
``stall_response`` the response route.
"""

from __future__ import annotations

import collections
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from aiohttp import web

MODEL = "nano_banana_pro"
IMAGE = {"type": "image", "url": "https://cdn.example/x.png", "content_type": "image/png"}


class StandIn:
    """The service's four routes, scripted per test."""

    def __init__(
        self,
        *,
        pending_polls: int = 1,
        result: Callable[[str], tuple[int, bytes]] | None = None,
        stall_cancel: bool = False,
        stall_response: bool = False,
    ) -> None:
        self.pending_polls = pending_polls
        self.result = result or (lambda rid: (200, _json({"request_id": rid, "outputs": [IMAGE]})))
        self.stall_cancel = stall_cancel
        self.stall_response = stall_response
        self.hits: collections.Counter[tuple[str, str]] = collections.Counter()
        self.log: list[tuple[str, str]] = []
        self.cancelled: set[str] = set()
        self._ids = itertools.count(1)
        self.base_url = ""

    def count(self, route: str, request_id: str | None = None) -> int:
        """Requests on ``route`` (create/status/response/cancel), for one id or all."""
        if request_id is not None:
            return self.hits[(route, request_id)]
        return sum(n for (r, _), n in self.hits.items() if r == route)

    def _hit(self, route: str, rid: str) -> None:
        self.hits[(route, rid)] += 1
        self.log.append((route, rid))

    async def create(self, request: web.Request) -> web.Response:
        rid = f"req_{next(self._ids)}"
        self._hit("create", rid)
        await request.read()
        return web.json_response({"request_id": rid, "status": "IN_QUEUE", "queue_position": 0})

    async def response(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        self._hit("response", rid)
        if self.stall_response:
            await anyio.sleep_forever()
        if rid in self.cancelled:
            body = {"status": "COMPLETED", "error": "cancelled", "error_type": "CANCELED"}
            return web.json_response(body)
        if self.hits[("response", rid)] <= self.pending_polls:
            return web.json_response({"status": "IN_PROGRESS", "request_id": rid}, status=202)
        status, body = self.result(rid)
        return web.Response(status=status, body=body, content_type="application/json")

    async def status(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        self._hit("status", rid)
        return web.json_response({"status": "IN_PROGRESS", "request_id": rid})

    async def cancel(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        self._hit("cancel", rid)
        if self.stall_cancel:
            await anyio.sleep_forever()
        self.cancelled.add(rid)
        return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


@asynccontextmanager
async def serve(standin: StandIn) -> AsyncIterator[StandIn]:
    """Run the stand-in on a free loopback port; ``standin.base_url`` is set inside."""
    app = web.Application()
    prefix = f"/model/v1/queue/{MODEL}"
    app.router.add_post(prefix, standin.create)
    app.router.add_get(prefix + "/requests/{rid}/response", standin.response)
    app.router.add_get(prefix + "/requests/{rid}/status", standin.status)
    app.router.add_put(prefix + "/requests/{rid}/cancel", standin.cancel)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    standin.base_url = f"http://127.0.0.1:{port}/model"
    try:
        yield standin
    finally:
        await runner.cleanup()
