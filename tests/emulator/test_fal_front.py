"""The opt-in fal-compatible front: fal's route layout over TLS, sharing the emulator's queue."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from nanobanana_async.emulator import Emulator, EmulatorConfig, ServiceTime
from nanobanana_async.emulator.fal_front import (
    server_ssl_context,
    start_fal_front,
    write_tls_files,
)

pytestmark = pytest.mark.anyio

APP = "fal-ai/nano-banana-pro"


class Front:
    """A running emulator, its fal front's URL, and a TLS-trusting aiohttp session."""

    def __init__(self, emu: Emulator, url: str, ca: Path, session: aiohttp.ClientSession) -> None:
        self.emu = emu
        self.url = url
        self.ca = ca
        self.session = session
        self.auth = {"Authorization": f"Key {emu.api_key}"}

    async def call(self, method: str, url: str, **kw: Any) -> tuple[int, Any]:
        kw.setdefault("headers", self.auth)
        async with self.session.request(method, url, **kw) as resp:
            return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[Front]:
    ca, cert, key = write_tls_files(tmp_path)
    config = EmulatorConfig(port=0, workers=1, service_time=ServiceTime.fixed(0.4))
    async with Emulator(config) as emu:
        runner, port = await start_fal_front(
            emu, host="127.0.0.1", port=0, ssl_context=server_ssl_context(cert, key)
        )
        try:
            client_ctx = ssl.create_default_context(cafile=str(ca))
            connector = aiohttp.TCPConnector(ssl=client_ctx)
            async with aiohttp.ClientSession(connector=connector) as session:
                yield Front(emu, f"https://127.0.0.1:{port}", ca, session)
        finally:
            await runner.cleanup()


async def test_create_status_result_cancel(front: Front) -> None:
    status, body = await front.call("POST", f"{front.url}/{APP}", json={"prompt": "a banana"})
    assert status == 200
    rid = body["request_id"]
    base = f"{front.url}/{APP}/requests/{rid}"
    assert body["response_url"] == base
    assert body["status_url"] == base + "/status"
    assert body["cancel_url"] == base + "/cancel"

    # A second task waits behind the single worker: IN_QUEUE must carry queue_position.
    _, queued = await front.call("POST", f"{front.url}/{APP}", json={"prompt": "second"})
    status, doc = await front.call("GET", queued["status_url"])
    assert (status, doc["status"], doc["queue_position"]) == (202, "IN_QUEUE", 0)

    status, doc = await front.call("GET", base + "/status")
    assert status == 202
    assert doc["status"] == "IN_PROGRESS"
    assert "logs" in doc

    with anyio.fail_after(5):
        while True:
            status, doc = await front.call("GET", base + "/status")
            if doc["status"] == "COMPLETED":
                break
            assert status == 202
            await anyio.sleep(0.02)
    assert status == 200
    assert "logs" in doc
    assert "error" not in doc

    status, result = await front.call("GET", base)
    assert status == 200
    image = result["images"][0]
    assert {"url", "width", "height", "content_type"} <= image.keys()
    assert (image["width"], image["height"], image["content_type"]) == (1024, 1024, "image/png")

    status, doc = await front.call("PUT", queued["cancel_url"])
    assert (status, doc["status"]) == (202, "CANCELLATION_REQUESTED")
    status, doc = await front.call("PUT", base + "/cancel")
    assert (status, doc["status"]) == (400, "ALREADY_COMPLETED")
    status, doc = await front.call("GET", queued["response_url"])
    assert (status, doc["error_type"]) == (400, "CANCELED")

    # The same counters as the main API.
    stats = front.emu.stats
    assert stats.creates == 2
    assert stats.status_polls[rid] >= 3
    assert stats.result_polls[rid] == 1
    assert stats.cancels == 1


async def test_auth_and_unknown_app(front: Front) -> None:
    status, _ = await front.call("POST", f"{front.url}/{APP}", json={"prompt": "x"}, headers={})
    assert status == 401
    status, _ = await front.call("GET", f"{front.url}/{APP}/requests/nope/status")
    assert status == 404
    status, _ = await front.call("POST", f"{front.url}/fal-ai/flux-dev", json={"prompt": "x"})
    assert status == 404


_FAL_SCRIPT = """
import asyncio, json, fal_client

async def main():
    client = fal_client.AsyncClient()
    handles = [await client.submit("fal-ai/nano-banana-pro", arguments={"prompt": f"p{i}"})
               for i in range(3)]
    results = await asyncio.gather(*(h.get(interval=0.05) for h in handles))
    print(json.dumps([[h.request_id, r] for h, r in zip(handles, results)]))

asyncio.run(main())
"""


@pytest.mark.skipif(importlib.util.find_spec("fal_client") is None, reason="needs fal-client")
async def test_real_fal_client_submit_and_get(front: Front) -> None:
    host = front.url.removeprefix("https://")
    env = dict(
        os.environ,
        FAL_QUEUE_RUN_HOST=host,
        FAL_RUN_HOST=host,
        FAL_KEY=front.emu.api_key,
        SSL_CERT_FILE=str(front.ca),
    )
    # A subprocess: fal-client reads its hosts at import time, and this loop must keep serving.
    with anyio.fail_after(60):
        proc = await anyio.run_process([sys.executable, "-c", _FAL_SCRIPT], env=env, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    pairs = json.loads(proc.stdout)
    assert len(pairs) == 3
    for rid, result in pairs:
        assert result["images"][0]["width"] == 1024
        assert front.emu.stats.result_polls[rid] == 1
        assert front.emu.stats.status_polls[rid] >= 1


def test_standalone_flag_appends_fal_url_to_the_first_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "nanobanana_async.emulator", "--port", "0"]
    proc = subprocess.Popen([*cmd, "--fal-tls", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        assert fields["base_url"].startswith("http://127.0.0.1:")
        assert fields["fal_url"].startswith("https://127.0.0.1:")
        assert Path(fields["fal_ca"]) == tmp_path / "ca.pem"
        assert (tmp_path / "ca.pem").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
