"""Saving task outputs to disk: streamed, capped, checksummed, atomic, and never with the API key.

Output URLs point at a CDN on another origin, often with a signed token in the query string, so a
download carries no Authorization header and no error or log line ever shows a query string.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pathlib
import re
import secrets
from functools import partial
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import anyio
import attrs

from ._http._retry import RetryPolicy
from .errors import (
    ClientStateError,
    DownloadError,
    DownloadTimeoutError,
    NanoBananaError,
    _redact_url,
    parse_retry_after,
)
from .models import GenerationResult, Output

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["DownloadError", "DownloadedFile", "Downloader", "safe_filename"]

logger = logging.getLogger("nanobanana_async")

MAX_NAME_CHARS = 120
_IMAGE_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp", "gif": ".gif"}
_KNOWN_EXTENSIONS = frozenset(
    {*_IMAGE_EXTENSIONS, "avif", "bmp", "tif", "tiff", "heic", "mp4", "mov"}
)
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
# Windows refuses these as the part before the first dot, whatever the extension.
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(10)}
)
_READ_BLOCK = 1024 * 1024


_PART = re.compile(r"\..+\.part-[0-9a-f]{12}")


@attrs.frozen
class DownloadedFile:
    """One output saved to disk, with its size and SHA-256 hex digest."""

    output_index: int
    path: pathlib.Path
    size: int
    sha256: str
    content_type: str | None


def _mime(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def _extension(server_name: str | None, content_type: str | None) -> str:
    major, _, minor = (_mime(content_type) or "").partition("/")
    if major == "image" and minor in _IMAGE_EXTENSIONS:
        return _IMAGE_EXTENSIONS[minor]
    if server_name:
        # Only a whitelisted suffix of the server's name is ever used, never the name itself.
        base = re.split(r"[\\/]", server_name)[-1]
        base = "".join(ch for ch in base if ch.isprintable()).rstrip(". ")
        _, dot, suffix = base.rpartition(".")
        if dot and suffix.lower() in _KNOWN_EXTENSIONS:
            return "." + suffix.lower()
    return ".bin"


def safe_filename(
    stem: str, output_index: int, *, server_name: str | None, content_type: str | None
) -> str:
    """A plain, portable file name: ``{sanitised stem}_{output_index}{extension}``."""
    if output_index < 0:
        raise ValueError(f"output_index must be >= 0, got {output_index!r}")
    suffix = f"_{output_index}{_extension(server_name, content_type)}"
    clean = _UNSAFE_CHARS.sub("_", stem).lstrip(".") or "output"
    if clean.split(".", 1)[0].upper() in _RESERVED:
        clean = "_" + clean
    return clean[: MAX_NAME_CHARS - len(suffix)] + suffix


def _create(path: pathlib.Path) -> IO[bytes]:
    return open(path, "xb")  # exclusive: never reuses someone else's temp file


def _write_and_sync(fh: IO[bytes], data: bytes | bytearray) -> None:
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()  # before the rename, which Windows refuses on an open file


def _sha256_of(path: pathlib.Path, size: int) -> str | None:
    """The digest of an existing regular file of ``size`` bytes, else None."""
    try:
        if not path.is_file() or path.stat().st_size != size:
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(_READ_BLOCK):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


class Downloader:
    """Streams outputs to disk: bounded concurrency, no auth header, size cap, atomic, checksums."""

    def __init__(
        self,
        client: Client,
        out_dir: str | os.PathLike[str],
        *,
        max_concurrent: int = 8,
        max_bytes: int = 256 * 1024 * 1024,
        retry: RetryPolicy | None = None,
        timeout: float = 300.0,
        allowed_types: tuple[str, ...] = ("image/",),
        chunk_size: int = 256 * 1024,
    ) -> None:
        for name, value in (("max_concurrent", max_concurrent), ("max_bytes", max_bytes)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        if chunk_size < 1 or not timeout > 0:
            raise ValueError("chunk_size and timeout must be positive")
        self._client = client
        self.out_dir = pathlib.Path(out_dir)
        self.max_bytes = max_bytes
        self.retry = retry if retry is not None else client._runtime.retry
        self.timeout = timeout
        self.allowed_types = tuple(t.lower() for t in allowed_types)
        self.chunk_size = chunk_size
        self._limiter = anyio.CapacityLimiter(max_concurrent)

    def _session(self, url: str) -> tuple[aiohttp.ClientSession, dict[str, Any]]:
        """The client's download session and the keyword arguments this download passes.

        That session shares the client's connector (so its ``ssl`` and pool) and applies its
        ``trust_env``; it carries neither the key nor the client's ``headers=``, which go to
        the API origin only. An explicit ``proxy=`` is passed per request.
        """
        runtime = self._client._runtime
        try:
            return runtime.download_session(), runtime.transport.download_proxy(url)
        except (RuntimeError, ClientStateError):
            raise ClientStateError("downloads need an open Client") from None

    @staticmethod
    def _headers() -> dict[str, str]:
        # Empty on purpose: the API key must never reach a CDN (nor whatever it redirects to).
        return {}

    async def download(self, result: GenerationResult, *, stem: str) -> list[DownloadedFile]:
        """Save every output that has a URL, concurrently; the files come back in output order."""
        wanted = [(i, o) for i, o in enumerate(result.outputs) if o.url and o.type != "text"]
        saved: dict[int, DownloadedFile] = {}
        failures: list[NanoBananaError] = []

        async def one(index: int, output: Output, scope: anyio.CancelScope) -> None:
            try:
                saved[index] = await self.download_output(output, output_index=index, stem=stem)
            except NanoBananaError as exc:
                # Raise the first error itself rather than an ExceptionGroup of it.
                failures.append(exc)
                scope.cancel()

        async with anyio.create_task_group() as tg:
            for index, output in wanted:
                tg.start_soon(one, index, output, tg.cancel_scope)
        if failures:
            raise failures[0]
        return [saved[i] for i, _ in wanted]

    async def download_output(
        self, output: Output, *, output_index: int, stem: str
    ) -> DownloadedFile:
        """Save one output, retrying transient failures from scratch; returns the saved file."""
        url = output.url or ""
        if not _redact_url(url).startswith(("http://", "https://")) or not urlsplit(url).hostname:
            raise DownloadError(url, "not an absolute http(s) URL")
        if output.file_size is not None and output.file_size > self.max_bytes:
            raise DownloadError(url, f"declared size exceeds the {self.max_bytes}-byte cap")
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._limiter:  # not held while backing off
                    return await self._attempt(url, output, output_index, stem)
            except DownloadError as exc:
                wait = self._wait_before_retry(exc, attempt)
                if wait is None:
                    raise
                logger.debug("retrying download of %s in %.2f s: %s", exc.url, wait, exc)
            await anyio.sleep(wait)

    def _wait_before_retry(self, error: DownloadError, attempt: int) -> float | None:
        if not error.retryable or attempt >= self.retry.max_attempts:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.retry.max_retry_after else None
        return self.retry.backoff(attempt)

    async def _attempt(
        self, url: str, output: Output, output_index: int, stem: str
    ) -> DownloadedFile:
        try:
            await anyio.to_thread.run_sync(partial(self.out_dir.mkdir, parents=True, exist_ok=True))
        except OSError as exc:
            raise DownloadError(url, f"cannot create {self.out_dir}: {exc.strerror}") from None
        session, proxy = self._session(url)
        try:
            async with session.get(
                url,
                headers=self._headers(),
                allow_redirects=True,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                **proxy,
            ) as resp:
                content_type = self._check_response(url, resp)
                kind = output.content_type or content_type
                name = safe_filename(
                    stem, output_index, server_name=output.file_name, content_type=kind
                )
                final = self._final_path(url, name)
                path, size, digest = await self._save(url, resp, final, output.file_size)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            # Before ClientError: aiohttp's timeouts are both; on 3.10 asyncio's is not the builtin.
            reason = f"timed out ({type(exc).__name__})"
            raise DownloadTimeoutError(url, reason, retryable=True) from None
        except aiohttp.ClientError as exc:
            # Resets and cut-short bodies may pass; a bad URL or redirect loop will not.
            transient = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
            retry = isinstance(exc, transient)
            raise DownloadError(url, type(exc).__name__, retryable=retry) from None
        return DownloadedFile(output_index, path, size, digest, content_type)

    def _check_response(self, url: str, resp: aiohttp.ClientResponse) -> str | None:
        """Refuse a bad status, an oversize length or a disallowed type; return the type."""
        if resp.status != 200:
            raise DownloadError(
                url,
                f"HTTP {resp.status}",
                status=resp.status,
                retryable=resp.status in self.retry.retry_statuses,
                retry_after=parse_retry_after(resp.headers),
            )
        if resp.content_length is not None and resp.content_length > self.max_bytes:
            raise DownloadError(
                url, f"{resp.content_length} bytes exceed the {self.max_bytes}-byte cap"
            )
        mime = _mime(resp.headers.get("Content-Type"))
        if mime is None or not mime.startswith(self.allowed_types):
            raise DownloadError(url, f"content type {mime or 'missing'} is not allowed")
        return mime

    async def remove_stale_parts(self) -> int:
        """Delete temporary files a killed earlier run left in the output folder; returns how many.

        Only names of the form this class writes (``.<name>.part-<hex>``) are touched; call it
        when no other process downloads into the same folder.
        """

        def sweep() -> int:
            if not self.out_dir.is_dir():
                return 0
            removed = 0
            for path in self.out_dir.glob(".*.part-*"):
                if _PART.fullmatch(path.name) and path.is_file():
                    path.unlink(missing_ok=True)
                    removed += 1
            return removed

        return await anyio.to_thread.run_sync(sweep)

    def _final_path(self, url: str, name: str) -> pathlib.Path:
        root = self.out_dir.resolve()
        final = root / name
        if final.resolve().parent != root or name in ("", ".", ".."):
            raise DownloadError(url, f"refusing to write outside {self.out_dir}")
        return final

    async def _save(
        self,
        url: str,
        resp: aiohttp.ClientResponse,
        final: pathlib.Path,
        declared_size: int | None,
    ) -> tuple[pathlib.Path, int, str]:
        """Stream the body to a temp file beside ``final``, then rename it into place."""
        temp = final.with_name(f".{final.name}.part-{secrets.token_hex(6)}")
        digest = hashlib.sha256()
        size = 0
        fh: IO[bytes] | None = None
        renamed = False
        try:
            fh = await anyio.to_thread.run_sync(_create, temp)
            buffer = bytearray()
            async for chunk in resp.content.iter_chunked(self.chunk_size):
                size += len(chunk)
                if size > self.max_bytes:
                    raise DownloadError(url, f"body exceeds the {self.max_bytes}-byte cap")
                digest.update(chunk)
                buffer += chunk
                # Batch small network reads so that each thread hop writes about chunk_size bytes.
                if len(buffer) >= self.chunk_size:
                    await anyio.to_thread.run_sync(fh.write, buffer)
                    buffer.clear()
            await anyio.to_thread.run_sync(_write_and_sync, fh, buffer)
            if declared_size is not None and size != declared_size:
                raise DownloadError(url, f"got {size} bytes, the output declared {declared_size}")
            hexdigest = digest.hexdigest()
            if await anyio.to_thread.run_sync(_sha256_of, final, size) != hexdigest:
                await anyio.to_thread.run_sync(os.replace, temp, final)
                renamed = True
            return final, size, hexdigest
        except OSError as exc:
            if isinstance(exc, (aiohttp.ClientError, TimeoutError)):
                raise  # a network error or a timeout (an OSError on 3.11+): _attempt classifies it
            raise DownloadError(url, f"cannot write {final}: {exc.strerror}") from None
        finally:
            with anyio.CancelScope(shield=True):
                if fh is not None:
                    await anyio.to_thread.run_sync(fh.close)
                if not renamed:
                    await anyio.to_thread.run_sync(partial(temp.unlink, missing_ok=True))
