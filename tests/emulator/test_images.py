"""PNG outputs and the CDN origin."""

from __future__ import annotations

import struct
import time
import zlib

import anyio
import anyio.lowlevel
import pytest

from nanobanana_async.emulator import ServiceTime
from nanobanana_async.emulator.images import dimensions, encode_png

from .conftest import Api, ApiFactory, Factory

pytestmark = pytest.mark.anyio


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """Walk the chunks, check CRCs, and inflate the image data: (width, height, raw scanlines)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload)
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", payload[:10])
            assert (depth, colour) == (8, 2)
        elif kind == b"IDAT":
            idat += payload
        pos += 12 + length
    assert kind == b"IEND"
    return width, height, zlib.decompress(idat)


@pytest.mark.parametrize(
    ("size", "ratio", "expected"),
    [
        (None, None, (1024, 1024)),
        ("1K", "16:9", (1024, 576)),
        ("2K", "9:16", (1152, 2048)),
        ("4K", "21:9", (4096, 1752)),
        ("2K", "4:5", (1640, 2048)),
        ("1K", "3:2", (1024, 680)),
    ],
)
def test_dimensions(size: str | None, ratio: str | None, expected: tuple[int, int]) -> None:
    assert dimensions(size, ratio) == expected
    assert expected[0] % 8 == 0 and expected[1] % 8 == 0


def test_png_decodes_and_is_deterministic() -> None:
    data = encode_png("seed", 64, 40)
    width, height, raw = decode_png(data)
    assert (width, height) == (64, 40)
    assert len(raw) == height * (1 + 3 * width)
    assert all(raw[y * (1 + 3 * width)] == 0 for y in range(height))  # filter byte "None"
    assert encode_png("seed", 64, 40) == data != encode_png("other", 64, 40)


def test_4k_encoding_is_fast() -> None:
    start = time.perf_counter()
    encode_png("fast", 4096, 2304)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("size", "ratio"), [("1K", "16:9"), ("2K", "3:4"), (None, None), ("1K", "21:9")]
)
async def test_downloaded_png_matches_result(api: Api, size: str | None, ratio: str | None) -> None:
    body = {
        "prompt": "sunset",
        **({"image_size": size} if size else {}),
        **({"aspect_ratio": ratio} if ratio else {}),
    }
    rid = await api.create_id(body)
    await api.wait_done(rid)
    image = (await api.result(rid)).json["outputs"][0]
    async with api.session.get(image["url"]) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/png"
        data = await resp.read()
    assert len(data) == image["file_size"]
    width, height, raw = decode_png(data)
    assert (width, height) == (image["width"], image["height"]) == dimensions(size, ratio)
    assert len(raw) == height * (1 + 3 * width)


async def test_cdn_rejects_authorization(api: Api) -> None:
    rid = await api.create_id()
    await api.wait_done(rid)
    url = (await api.result(rid)).json["outputs"][0]["url"]
    api_requests = api.emu.stats.requests
    for headers in ({"Authorization": f"Bearer {api.emu.api_key}"}, {"Authorization": "x"}):
        async with api.session.get(url, headers=headers) as resp:
            assert resp.status == 400
            assert await resp.json() == {"detail": "Authorization header not allowed"}
    async with api.session.get(url) as resp:
        assert resp.status == 200
    async with api.session.get(url.replace("/0.png", "/1.png")) as resp:
        assert resp.status == 404
    async with api.session.get(f"{api.emu.cdn_url}/files/unknown/0.png") as resp:
        assert resp.status == 404
    assert api.emu.stats.cdn_requests == 5
    assert api.emu.stats.cdn_auth_rejected == 2
    assert api.emu.stats.requests == api_requests  # CDN traffic is not API traffic


async def test_no_file_for_failed_or_pending_tasks(api: Api) -> None:
    rid = await api.create_id({"prompt": "[blocked]"})
    pending = await api.create_id({"prompt": "p"})
    async with api.session.get(f"{api.emu.cdn_url}/files/{pending}/0.png") as resp:
        assert resp.status == 404
    await api.wait_done(rid)
    async with api.session.get(f"{api.emu.cdn_url}/files/{rid}/0.png") as resp:
        assert resp.status == 404


async def test_4k_download_does_not_stall_status(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(service_time=ServiceTime.fixed(0)) as emu:
        api = api_factory(emu)
        rid = await api.create_id({"prompt": "big", "image_size": "4K", "aspect_ratio": "16:9"})
        other = await api.create_id({"prompt": "x"})
        latencies: list[float] = []
        sizes: list[int] = []

        async def download() -> None:
            result = (await api.result(rid)).json["outputs"][0]
            async with api.session.get(result["url"]) as resp:
                total = 0
                async for chunk in resp.content.iter_chunked(16 * 1024):
                    total += len(chunk)
                    await anyio.lowlevel.checkpoint()  # a slow reader
                sizes.extend([total, result["file_size"]])

        async def poll() -> None:
            for _ in range(30):
                start = time.perf_counter()
                assert (await api.status(other)).status == 200
                latencies.append(time.perf_counter() - start)

        async with anyio.create_task_group() as tg:
            tg.start_soon(download)
            tg.start_soon(poll)
        assert sizes[0] == sizes[1] > 100_000
        assert max(latencies) < 0.2
