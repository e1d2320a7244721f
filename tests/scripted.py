"""A stand-in (``tests/standin.py``, written from API.md) with a few more answers a test scripts.

- ``create_replies``: the next creates answer these ``(status, body, headers)`` first.
- ``create_delay``: each create takes this long; ``max_creates_at_once`` records the overlap.
- ``pending``: the response route's answers while the task runs (status-shaped bodies with
  HTTP 202), one per poll, the last repeated ``pending_polls`` times in all.
- ``poll_reply(rid, n)``: may answer the n-th poll (0-based) of a task instead, as a ``Reply``.
- a cancel after the task's result was served answers ``400 ALREADY_COMPLETED``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import anyio
from aiohttp import web

from nanobanana_async import Client, PollPolicy, RetryPolicy, Timeout

from .standin import StandIn

POLL = PollPolicy(initial_delay=0.01, factor=1.0, max_interval=0.02, jitter=0.0)
Reply = tuple[int, Any, Mapping[str, str]]


class Scripted(StandIn):
    def __init__(
        self,
        *,
        pending_polls: int = 1,
        result: Callable[[str], tuple[int, bytes]] | None = None,
        create_replies: list[Reply] | None = None,
        create_delay: float = 0.0,
        pending: list[dict[str, Any]] | None = None,
        poll_reply: Callable[[str, int], Reply | None] | None = None,
    ) -> None:
        super().__init__(pending_polls=pending_polls, result=result)
        self.create_replies = list(create_replies or [])
        self.create_delay = create_delay
        self.pending = pending or [{"status": "IN_PROGRESS"}]
        self.creates_at_once = 0
        self.max_creates_at_once = 0
        self.finished: set[str] = set()
        self.poll_reply = poll_reply
        self.poll_times: list[float] = []

    async def create(self, request: web.Request) -> web.Response:
        self.creates_at_once += 1
        self.max_creates_at_once = max(self.max_creates_at_once, self.creates_at_once)
        try:
            if self.create_delay:
                await anyio.sleep(self.create_delay)
            if self.create_replies:
                status, body, headers = self.create_replies.pop(0)
                self._hit("create", f"refused-{status}")
                await request.read()
                return web.json_response(body, status=status, headers=dict(headers))
            return await super().create(request)
        finally:
            self.creates_at_once -= 1

    async def response(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        polls = self.hits[("response", rid)]  # before this one
        self.poll_times.append(anyio.current_time())
        scripted = self.poll_reply(rid, polls) if self.poll_reply is not None else None
        if scripted is not None:
            self._hit("response", rid)
            status, value, headers = scripted
            return web.json_response(value, status=status, headers=dict(headers))
        if rid not in self.cancelled and polls < self.pending_polls:
            self._hit("response", rid)
            body = {"request_id": rid, **self.pending[min(polls, len(self.pending) - 1)]}
            return web.json_response(body, status=202)
        resp = await super().response(request)
        if resp.status < 300 or rid in self.cancelled:
            self.finished.add(rid)
        return resp

    async def cancel(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        if rid in self.finished:
            self._hit("cancel", rid)
            return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
        return await super().cancel(request)

    def requests(self) -> int:
        return sum(self.hits.values())


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def client_for(standin: StandIn, **kwargs: Any) -> Client:
    kwargs.setdefault("poll", POLL)
    kwargs.setdefault("retry", RetryPolicy(max_attempts=2, initial_backoff=0.01))
    kwargs.setdefault("timeout", Timeout(connect=2, read=2, deadline=5, cancel=1, close=1))
    return Client("k", base_url=standin.base_url, **kwargs)
