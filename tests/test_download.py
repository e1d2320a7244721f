"""Downloads: streamed to disk, no API key on the wire, capped, atomic, retried, path-safe."""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import struct
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import anyio
import pytest
from aiohttp import web

from nanobanana_async import (
    Client,
    ClientStateError,
    GenerationRequest,
    GenerationResult,
    ImageSize,
    Output,
    RetryPolicy,
)
from nanobanana_async.download import DownloadedFile, Downloader, DownloadError, safe_filename
from nanobanana_async.emulator import Emulator

from .helpers import client_for

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.02)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def tree(root: pathlib.Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """A throwaway HTTP server answering every GET with ``handler``; yields its origin."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def generate(emu: Emulator, *sizes: ImageSize) -> list[GenerationResult]:
    async with client_for(emu) as client:
        results: dict[int, GenerationResult] = {}

        async def one(i: int, size: ImageSize) -> None:
            results[i] = await client.generate(
                GenerationRequest(f"download {i}", image_size=size), timeout=10
            )

        async with anyio.create_task_group() as tg:
            for i, size in enumerate(sizes):
                tg.start_soon(one, i, size)
    return [results[i] for i in range(len(sizes))]


async def test_downloads_valid_pngs_without_the_key(
    nanobanana_emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    emu = nanobanana_emulator
    results = await generate(emu, ImageSize.SIZE_1K, ImageSize.SIZE_1K, ImageSize.SIZE_4K)
    before = emu.stats.cdn_requests
    out = tmp_path / "new" / "dir"
    async with client_for(emu) as client:
        downloader = Downloader(client, out, max_concurrent=2)
        saved: list[DownloadedFile] = []
        for n, result in enumerate(results):
            saved += await downloader.download(result, stem=f"{n:05d}_{result.request_id}")
        again = await downloader.download(results[0], stem=f"00000_{results[0].request_id}")
    assert emu.stats.cdn_requests == before + 4
    assert emu.stats.cdn_auth_rejected == 0
    for file, result in zip(saved, results, strict=True):
        (image,) = result.images
        data = file.path.read_bytes()
        assert file.path.parent == out.resolve() and file.path.suffix == ".png"
        assert png_size(data) == (image.width, image.height)
        assert file.size == len(data) == image.file_size
        assert file.sha256 == hashlib.sha256(data).hexdigest()
        assert file.content_type == "image/png" and file.output_index == 0
    assert max(png_size(f.path.read_bytes())[0] for f in saved) == 4096
    assert again == saved[:1]  # idempotent: same file, same digest
    assert sorted(os.listdir(out)) == sorted(f.path.name for f in saved)


async def test_4k_download_is_streamed(
    nanobanana_emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    small, big = await generate(nanobanana_emulator, ImageSize.SIZE_1K, ImageSize.SIZE_4K)
    (image,) = big.images
    assert image.file_size is not None and image.file_size > 1_000_000
    async with client_for(nanobanana_emulator) as client:
        downloader = Downloader(client, tmp_path, chunk_size=64 * 1024)
        await downloader.download(small, stem="warm")  # imports and worker threads, untraced
        tracemalloc.start()
        try:
            (file,) = await downloader.download(big, stem="big")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert file.size == image.file_size
    # aiohttp itself may buffer several hundred KB from the socket; the body is never held whole.
    assert peak < image.file_size * 0.9, (peak, image.file_size)


async def test_large_body_memory_stays_bounded(tmp_path: pathlib.Path) -> None:
    size, block = 24 * 1024 * 1024, b"\x89" * 65536

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = size
        await resp.prepare(request)
        for _ in range(size // len(block)):
            await resp.write(block)
        await resp.write_eof()
        return resp

    async with serve(big) as origin, Client("k", base_url=origin + "/model") as client:
        downloader = Downloader(client, tmp_path)
        output = Output(type="image", url=origin + "/big.png", file_size=size)
        await downloader.download_output(output, output_index=0, stem="warm")
        tracemalloc.start()
        try:
            file = await downloader.download_output(output, output_index=1, stem="big")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert file.size == size == file.path.stat().st_size
    assert peak < size / 8, peak


HOSTILE = [
    "../../evil.png",
    "/etc/passwd",
    "a\x00b.png",
    "CON.png",
    "..",
    "x" * 1000 + ".png",
    "evil.png ",
    "sub\\dir.png",
    "C:\\Windows\\evil.png",
    "evil.png\n",
    "evil.exe",
    None,
]


@pytest.mark.parametrize("server_name", HOSTILE)
@pytest.mark.parametrize("stem", ["00042_mmsu_abc", "../../x", "CON", ".hidden", "a/b\\c", ""])
def test_safe_filename_table(server_name: str | None, stem: str) -> None:
    name = safe_filename(stem, 3, server_name=server_name, content_type=None)
    assert name == os.path.basename(name) and "/" not in name and "\\" not in name
    assert all(c.isalnum() or c in "._-" for c in name), name
    assert not name.startswith(".") and not name.endswith((".", " "))
    assert len(name) <= 120
    assert name.split(".")[0].upper() not in {"CON", "NUL", "PRN", "AUX", "COM1", "LPT1"}
    assert "_3." in name
    assert name.endswith(".png") == (server_name is not None and ".png" in server_name)


def test_safe_filename_extensions() -> None:
    f = safe_filename
    assert (
        f("00042_mmsu_abc", 0, server_name=None, content_type="image/png") == "00042_mmsu_abc_0.png"
    )
    assert f("s", 1, server_name="x.png", content_type="image/jpeg; q=1") == "s_1.jpg"
    assert f("s", 0, server_name="x.WEBP", content_type="application/octet-stream") == "s_0.webp"
    assert f("s", 0, server_name="x.sh", content_type="text/html") == "s_0.bin"
    assert f("CON.tar", 0, server_name=None, content_type="image/gif") == "_CON.tar_0.gif"
    assert len(f("y" * 500, 12, server_name=None, content_type="image/png")) == 120
    with pytest.raises(ValueError):
        f("s", -1, server_name=None, content_type=None)


async def test_hostile_server_name_stays_inside_out_dir(
    nanobanana_emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    (result,) = await generate(nanobanana_emulator, ImageSize.SIZE_1K)
    real = result.images[0]
    hostile = Output(type="image", url=real.url, file_name="../../evil.png")
    out = tmp_path / "a" / "b" / "out"
    parents = [tmp_path.parent, tmp_path.parent.parent]
    listed = [sorted(os.listdir(p)) for p in parents]
    async with client_for(nanobanana_emulator) as client:
        file = await Downloader(client, out).download_output(hostile, output_index=0, stem="run")
    assert file.path == out.resolve() / "run_0.png"
    assert tree(tmp_path) == {"a", "a/b", "a/b/out", "a/b/out/run_0.png"}
    assert [sorted(os.listdir(p)) for p in parents] == listed


async def test_size_cap_and_truncation_leave_nothing(
    nanobanana_emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    (result,) = await generate(nanobanana_emulator, ImageSize.SIZE_1K)
    real = result.images[0]
    assert real.file_size is not None
    async with client_for(nanobanana_emulator) as client:
        capped = Downloader(client, tmp_path, max_bytes=1000)
        undeclared = Output(type="image", url=real.url)  # only Content-Length can stop it
        with pytest.raises(DownloadError, match="cap"):
            await capped.download_output(undeclared, output_index=0, stem="s")
        with pytest.raises(DownloadError, match="cap"):  # declared too big: no request at all
            await capped.download(result, stem="s")
        longer = Output(type="image", url=real.url, file_size=real.file_size + 10)
        with pytest.raises(DownloadError, match="declared"):
            await Downloader(client, tmp_path).download_output(longer, output_index=0, stem="s")
    assert os.listdir(tmp_path) == []


async def test_streamed_cap_without_content_length(tmp_path: pathlib.Path) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(20):
            await resp.write(b"\0" * 10_000)
        await resp.write_eof()
        return resp

    async with serve(chunked) as origin, Client("k", base_url=origin + "/model") as client:
        downloader = Downloader(client, tmp_path, max_bytes=50_000, chunk_size=4096)
        with pytest.raises(DownloadError, match="body exceeds"):
            await downloader.download_output(
                Output(type="image", url=origin + "/f.png"), output_index=0, stem="s"
            )
    assert os.listdir(tmp_path) == []


async def test_wrong_content_type_and_bad_schemes(
    nanobanana_emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    stats_url = nanobanana_emulator.base_url.removesuffix("/model") + "/_emulator/stats?x=1"
    async with client_for(nanobanana_emulator) as client:
        downloader = Downloader(client, tmp_path)
        with pytest.raises(DownloadError, match="content type application/json") as info:
            await downloader.download_output(
                Output(type="image", url=stats_url), output_index=0, stem="s"
            )
        assert info.value.url.endswith("/_emulator/stats") and "?" not in str(info.value)
    assert Downloader._headers() == {}
    # Scheme checks happen before any request: this client was never even opened.
    idle = Downloader(Client("k", base_url="http://127.0.0.1:9"), tmp_path)
    for url in ("file:///etc/passwd", "ftp://host/x.png", "http:///x.png", "javascript:x", ""):
        with pytest.raises(DownloadError, match="http"):
            await idle.download_output(Output(type="image", url=url), output_index=0, stem="s")
    with pytest.raises(ClientStateError):
        await idle.download_output(
            Output(type="image", url="http://127.0.0.1:9/x.png"), output_index=0, stem="s"
        )
    assert os.listdir(tmp_path) == []


async def test_transient_failures_are_retried_without_auth_or_leaks(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = b"\x89PNG\r\n\x1a\n" + os.urandom(300_000)
    seen: list[tuple[str, str | None]] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, request.headers.get("Authorization")))
        if request.path == "/gone.png":
            return web.Response(status=404)
        if len(seen) <= 2:
            return web.Response(status=503, headers={"Retry-After": "0"} if len(seen) == 2 else {})
        return web.Response(body=body, content_type="image/png")

    caplog.set_level(logging.DEBUG, logger="nanobanana_async")
    # The download URL is on the API origin itself: even there the key must not be sent.
    async with serve(flaky) as origin, Client("sk-secret", base_url=origin + "/model") as client:
        downloader = Downloader(client, tmp_path, retry=FAST)
        url = origin + "/x.png?sig=TOPSECRET"
        file = await downloader.download_output(
            Output(type="image", url=url, file_name="x.png"), output_index=0, stem="s"
        )
        assert len(seen) == 3
        with pytest.raises(DownloadError, match="HTTP 404") as info:
            await downloader.download_output(
                Output(type="image", url=origin + "/gone.png?sig=TOPSECRET"),
                output_index=1,
                stem="s",
            )
    assert len(seen) == 4  # a 404 is not retried
    assert all(auth is None for _, auth in seen)
    assert file.path.read_bytes() == body and file.sha256 == hashlib.sha256(body).hexdigest()
    assert info.value.status == 404 and "TOPSECRET" not in str(info.value)
    assert "retrying download" in caplog.text and "TOPSECRET" not in caplog.text
    assert os.listdir(tmp_path) == ["s_0.png"]


async def test_download_skips_text_and_keeps_order(tmp_path: pathlib.Path) -> None:
    async def by_path(request: web.Request) -> web.StreamResponse:
        return web.Response(body=request.path.encode() * 100, content_type="image/webp")

    async with serve(by_path) as origin, Client("k", base_url=origin + "/model") as client:
        outputs = (
            Output(type="text", text="hello"),
            Output(type="image", url=origin + "/one"),
            Output(type="image", url=origin + "/two", content_type="image/gif"),
        )
        result = GenerationResult(request_id="r", outputs=outputs)
        files = await Downloader(client, tmp_path).download(result, stem="00001_r")
    assert [(f.output_index, f.path.name) for f in files] == [
        (1, "00001_r_1.webp"),
        (2, "00001_r_2.gif"),
    ]
    assert files[1].path.read_bytes() == b"/two" * 100


async def test_cancellation_mid_download_leaves_no_temp_file(tmp_path: pathlib.Path) -> None:
    release, midway = anyio.Event(), anyio.Event()

    async def stalls(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = 1_000_000
        await resp.prepare(request)
        await resp.write(b"\0" * 100_000)
        await anyio.sleep(0.2)  # lets the client write part of it to its temp file
        midway.set()
        await release.wait()
        return resp

    async with serve(stalls) as origin, Client("k", base_url=origin + "/model") as client:
        downloader = Downloader(client, tmp_path, chunk_size=1024)
        output = Output(type="image", url=origin + "/slow.png")
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(downloader.download_output, output, output_index=0, stem="s"))
            with anyio.fail_after(5):
                await midway.wait()
            assert any(".part-" in n for n in os.listdir(tmp_path))
            tg.cancel_scope.cancel()
        release.set()
    assert os.listdir(tmp_path) == []
