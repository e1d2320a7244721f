"""Deterministic PNG outputs: sizes from aspect ratio and size, fast encoding, a bounded cache."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib
from collections import OrderedDict

__all__ = ["ImageKey", "ImageStore", "dimensions", "encode_png"]

LONG_SIDE = {"1K": 1024, "2K": 2048, "4K": 4096}
ImageKey = tuple[str, int, int]  # (prompt digest, width, height)


def dimensions(image_size: str | None, aspect_ratio: str | None) -> tuple[int, int]:
    """Output (width, height): the long side from the size, the short side from the ratio, /8."""
    long_side = LONG_SIDE.get(image_size or "1K", 1024)
    a, _, b = (aspect_ratio or "1:1").partition(":")
    rw, rh = int(a), int(b)
    if rw >= rh:
        return long_side, max(8, round(long_side * rh / rw / 8) * 8)
    return max(8, round(long_side * rw / rh / 8) * 8), long_side


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(seed_text: str, width: int, height: int) -> bytes:
    """An RGB PNG whose colours derive from `seed_text`; same inputs give the same bytes.

    Rows repeat within horizontal bands, so deflate finds a match one row back and a 4K image
    compresses in tens of milliseconds instead of seconds.
    """
    palette = hashlib.sha256(seed_text.encode()).digest()
    r0, g0, b0, dr, dg, db = palette[:6]
    ramp = bytearray(width * 3)
    for x in range(width):
        t = x * 256 // width
        ramp[3 * x] = (r0 + t * (dr | 1) // 64) & 0xFF
        ramp[3 * x + 1] = (g0 + t * (dg | 1) // 64) & 0xFF
        ramp[3 * x + 2] = (b0 + t * (db | 1) // 64) & 0xFF
    bands = 8
    rows = []
    for k in range(bands):
        shift = (k * 3 * width // bands) // 3 * 3
        rows.append(b"\x00" + bytes(ramp[shift:] + ramp[:shift]))
    comp = zlib.compressobj(1)
    parts = []
    for y in range(height):
        parts.append(comp.compress(rows[y * bands // height]))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", ihdr),
            _chunk(b"tEXt", b"Software\x00nanobanana_async emulator"),
            _chunk(b"IDAT", b"".join(parts)),
            _chunk(b"IEND", b""),
        )
    )


PALETTES = 16


def image_key(prompt: str, width: int, height: int) -> ImageKey:
    """The cache key of the image a prompt produces at this size.

    Prompts map onto one of ``PALETTES`` colour schemes, so that a batch of thousands of tasks
    encodes a few dozen distinct PNGs instead of one per task: the emulator must never be the
    bottleneck of the client it is measuring.
    """
    variant = hashlib.sha256(prompt.encode()).digest()[0] % PALETTES
    return f"palette-{variant}", width, height


class ImageStore:
    """Encodes PNGs in a worker thread, once per key, and keeps the most recent ones in memory."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._cache: OrderedDict[ImageKey, bytes] = OrderedDict()
        self._pending: dict[ImageKey, asyncio.Future[bytes]] = {}

    def cached(self, key: ImageKey) -> bytes | None:
        """The PNG for `key` if it is in memory."""
        data = self._cache.get(key)
        if data is not None:
            self._cache.move_to_end(key)
        return data

    def prepare(self, key: ImageKey) -> asyncio.Future[bytes] | None:
        """Start encoding `key` in a thread unless cached or already underway."""
        if key in self._cache:
            return None
        fut = self._pending.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(None, encode_png, key[0], key[1], key[2])
            self._pending[key] = fut
            fut.add_done_callback(lambda f: self._store(key, f))
        return fut

    async def get(self, key: ImageKey) -> bytes:
        """The PNG for `key`, encoding it off the event loop when needed."""
        data = self.cached(key)
        if data is not None:
            return data
        fut = self.prepare(key)
        if fut is None:  # pragma: no cover - prepare only returns None when cached
            return self._cache[key]
        return await asyncio.shield(fut)

    async def aclose(self) -> None:
        """Wait for encodings still running in threads, so none outlives the event loop."""
        pending = list(self._pending.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _store(self, key: ImageKey, fut: asyncio.Future[bytes]) -> None:
        self._pending.pop(key, None)
        if fut.cancelled() or fut.exception() is not None:
            return
        data = fut.result()
        self._cache[key] = data
        self._bytes += len(data)
        while self._bytes > self._max_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._bytes -= len(old)
