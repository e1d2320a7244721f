"""Shared helpers for the emulator tests: a thin plain-aiohttp client (never the SDK)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest

from nanobanana_async.emulator import Emulator

MODEL = "nano_banana_pro"
Factory = Callable[..., Emulator]


class Reply:
    """Status, headers and raw body of one HTTP exchange."""

    def __init__(self, status: int, headers: Any, raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.raw[:300]!r})"


class Api:
    """Raw HTTP calls against one emulator."""

    def __init__(self, session: aiohttp.ClientSession, emu: Emulator) -> None:
        self.session = session
        self.emu = emu
        self.auth = {"Authorization": f"Bearer {emu.api_key}"}

    def url(self, rid: str, leaf: str, model: str = MODEL) -> str:
        return f"{self.emu.base_url}/v1/queue/{model}/requests/{rid}/{leaf}"

    async def call(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> Reply:
        hdrs = self.auth if headers is None else headers
        async with self.session.request(method, url, headers=hdrs, **kw) as resp:
            return Reply(resp.status, resp.headers, await resp.read())

    async def create(self, body: Any = None, *, model: str = MODEL, **kw: Any) -> Reply:
        if body is None:
            body = {"prompt": "a banana"}
        url = f"{self.emu.base_url}/v1/queue/{model}"
        return await self.call("POST", url, json=body, **kw)

    async def create_id(self, body: Any = None, **kw: Any) -> str:
        reply = await self.create(body, **kw)
        assert reply.status == 200, reply
        rid: str = reply.json["request_id"]
        return rid

    async def status(self, rid: str, **kw: Any) -> Reply:
        return await self.call("GET", self.url(rid, "status"), **kw)

    async def result(self, rid: str, **kw: Any) -> Reply:
        return await self.call("GET", self.url(rid, "response"), **kw)

    async def cancel(self, rid: str, **kw: Any) -> Reply:
        return await self.call("PUT", self.url(rid, "cancel"), **kw)

    async def wait_done(self, rid: str, *, timeout: float = 5.0) -> Reply:
        with anyio.fail_after(timeout):
            while True:
                reply = await self.status(rid)
                if reply.status == 200 and reply.json["status"] == "COMPLETED":
                    return reply
                await anyio.sleep(0.005)


ApiFactory = Callable[[Emulator], Api]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def api_factory(
    session: aiohttp.ClientSession,
) -> ApiFactory:
    return lambda emu: Api(session, emu)


@pytest.fixture
async def api(nanobanana_emulator: Emulator, session: aiohttp.ClientSession) -> Api:
    return Api(session, nanobanana_emulator)
