"""Timeouts and oversized bodies on every path, against stand-in servers written here.

The stand-ins are raw asyncio socket servers (not the project's emulator): each test decides byte
by byte what the "service" sends, so a stall after the headers, a body trickling in past the
deadline or a 40 MB answer are exact. Built from the spec (docs: /work/shared/spec/API.md).
On Python 3.10 ``asyncio.TimeoutError`` is not ``builtins.TimeoutError``: these tests are the
ones that catch a timeout escaping untyped there.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import pathlib
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from nanobanana_async import (
    Client,
    ConnectError,
    DownloadError,
    DownloadTimeoutError,
    HttpEvent,
    Limits,
    PollPolicy,
    ProtocolError,
    RequestTimeoutError,
    ResponseTooLargeError,
    RetryPolicy,
    SubmissionUnknownError,
    Timeout,
    TimeoutError,
    TransportError,
)
from nanobanana_async.download import Downloader
from nanobanana_async.models import Output

pytestmark = pytest.mark.anyio

MODEL_PATH = "/model/v1/queue/nano_banana_pro"
FAST_RETRY = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)
FAST_POLL = PollPolicy(initial_delay=0.01, max_interval=0.05, jitter=0.1, max_errors=2)
BIG = 40 * 1024 * 1024


class Exchange:
    """One request as the stand-in saw it, and the stream to answer it on."""

    def __init__(self, server: StandIn, writer: asyncio.StreamWriter, body: bytes) -> None:
        self.server = server
        self.writer = writer
        self.body = body

    def head(self, status: int = 200, **headers: str | int) -> None:
        lines = [f"HTTP/1.1 {status} X"] + [
            f"{k.replace('_', '-')}: {v}" for k, v in headers.items()
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def json(self, payload: object, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.head(status, Content_Type="application/json", Content_Length=len(body))
        self.writer.write(body)
        await self.writer.drain()

    async def stall(self, content_type: str = "application/json") -> None:
        """Headers (a 100-byte body announced), then nothing until the test ends."""
        self.head(200, Content_Type=content_type, Content_Length=100)
        await self.writer.drain()
        await self.server.released.wait()
        raise ConnectionResetError  # never finish the body: drop the connection

    async def silent(self) -> None:
        """Read the request, answer nothing (not even headers) until the test ends."""
        await self.server.released.wait()
        raise ConnectionResetError

    async def trickle(self, content_type: str = "application/json") -> None:
        """Headers, then one byte every 50 ms (never idle long enough for a read timeout)."""
        self.head(200, Content_Type=content_type, Content_Length=10_000)
        for _ in range(10_000):
            self.writer.write(b" ")
            await self.writer.drain()
            await asyncio.sleep(0.05)

    async def huge(self, *, declared: bool) -> None:
        """A 40 MB body, with its Content-Length or chunked (size unknown until read)."""
        piece = b"x" * (1024 * 1024)
        if declared:
            self.head(200, Content_Type="application/json", Content_Length=BIG)
            for _ in range(BIG // len(piece)):
                self.writer.write(piece)
                await self.writer.drain()
            return
        self.head(200, Content_Type="application/json", Transfer_Encoding="chunked")
        for _ in range(BIG // len(piece)):
            self.writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await self.writer.drain()
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()


Route = Callable[[Exchange], Awaitable[None]]


async def _created(ex: Exchange) -> None:
    await ex.json({"request_id": "req-1", "status": "IN_QUEUE", "queue_position": 0})


async def _running(ex: Exchange) -> None:
    await ex.json({"status": "IN_PROGRESS", "request_id": "req-1"})


async def _not_done(ex: Exchange) -> None:
    await ex.json({"status": "IN_PROGRESS", "request_id": "req-1"}, status=202)


async def _cancelled(ex: Exchange) -> None:
    await ex.json({"status": "CANCELLATION_REQUESTED"}, status=202)


class StandIn:
    """A raw HTTP/1.1 server on 127.0.0.1: routes by action, counts what it was asked."""

    def __init__(self, **routes: Route) -> None:
        self.routes: dict[str, Route] = {
            "create": _created,
            "status": _running,
            "result": _not_done,
            "cancel": _cancelled,
            "cdn": _not_done,
        }
        self.routes.update(routes)
        self.seen: list[str] = []
        self.released = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/model"

    async def __aenter__(self) -> StandIn:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.released.set()
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @staticmethod
    def _route(method: str, path: str) -> str:
        if not path.startswith(MODEL_PATH):
            return "cdn"
        if method == "POST" and path == MODEL_PATH:
            return "create"
        for suffix, name in (("/status", "status"), ("/response", "result"), ("/cancel", "cancel")):
            if path.endswith(suffix):
                return name
        return "unknown"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *header_lines = head.split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in header_lines if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                route = self._route(method, target.split("?", 1)[0])
                self.seen.append(route)
                await self.routes.get(route, _not_done)(Exchange(self, writer, body))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


def client_for(server: StandIn, **kwargs: Any) -> Client:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("poll", FAST_POLL)
    return Client(api_key="k", base_url=server.base_url, **kwargs)


def test_the_deprecated_alias_is_the_same_class() -> None:
    assert TimeoutError is RequestTimeoutError
    assert issubclass(RequestTimeoutError, TransportError)
    assert issubclass(RequestTimeoutError, builtins.TimeoutError)
    assert issubclass(ResponseTooLargeError, ProtocolError)


# -- (a) a read that stalls after the headers -----------------------------------------------


async def test_body_stalled_past_read_timeout_is_a_request_timeout() -> None:
    async with StandIn(status=Exchange.stall) as server:
        events: list[HttpEvent] = []
        timeout = Timeout(connect=1, read=0.2, deadline=5)
        async with client_for(server, timeout=timeout, hooks=[events.append]) as client:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError) as info:
                await client.status("req-1")
            elapsed = time.monotonic() - started
    assert isinstance(info.value, builtins.TimeoutError)
    assert elapsed < 2  # the read timeout fired, twice, long before the 5 s deadline
    assert server.seen.count("status") == 2  # a GET: retried once, then given up
    assert [e.status for e in events] == [200, 200] and all(e.error for e in events)


async def test_a_server_that_never_answers_times_out_each_poll_at_read() -> None:
    # The poll path has no deadline scope of its own: the per-attempt read timer is what ends
    # a poll whose answer never comes (no headers at all).
    async with StandIn(result=Exchange.silent) as server:
        timeout = Timeout(connect=1, read=0.3, deadline=30, cancel=0.5)
        async with client_for(server, timeout=timeout) as client:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                await client.generate("never answered")
            elapsed = time.monotonic() - started
    assert server.seen.count("result") == 2  # max_errors=2: two polls, each cut at 0.3 s
    assert 0.5 < elapsed < 2


async def test_a_create_never_answered_times_out_at_read_and_is_not_resent() -> None:
    async with StandIn(create=Exchange.silent) as server:
        timeout = Timeout(connect=1, read=0.3, deadline=30)
        retry = RetryPolicy(max_attempts=4, initial_backoff=0.01)
        async with client_for(server, timeout=timeout, retry=retry) as client:
            started = time.monotonic()
            with pytest.raises(SubmissionUnknownError):
                await client.submit("pay once")
            elapsed = time.monotonic() - started
    assert server.seen == ["create"]  # sent once, never again
    assert 0.25 < elapsed < 1.5


async def test_read_bounds_the_attempt_as_a_whole_even_when_bytes_keep_coming() -> None:
    # Documented on Timeout: ``read`` is one timer per attempt, not the longest gap between
    # packets, so a body trickling in steadily (a byte every 50 ms) is cut off at ``read``,
    # long before the deadline.
    async with StandIn(status=Exchange.trickle) as server:
        timeout = Timeout(connect=1, read=0.3, deadline=4)
        async with client_for(server, timeout=timeout) as client:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                await client.status("req-1")
            elapsed = time.monotonic() - started
    assert server.seen.count("status") == 2  # a GET: retried once, then given up
    assert 0.5 < elapsed < 2


# -- (b) a body that trickles in past the call's deadline -----------------------------------


async def test_body_trickling_past_deadline_times_out_status() -> None:
    async with StandIn(status=Exchange.trickle) as server:
        timeout = Timeout(connect=1, read=1, deadline=0.4)
        async with client_for(server, timeout=timeout) as client:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                await client.status("req-1")
            elapsed = time.monotonic() - started
    assert 0.35 < elapsed < 1.5


async def test_body_trickling_past_deadline_times_out_the_poll_path() -> None:
    async with StandIn(result=Exchange.trickle) as server:
        timeout = Timeout(connect=1, read=1, deadline=0.4, cancel=0.5)
        async with client_for(server, timeout=timeout) as client:
            started = time.monotonic()
            # The scheduler retries a failed poll (max_errors=2), then fails the task with the
            # last error: a typed timeout, not "unexpected error while polling".
            with pytest.raises(RequestTimeoutError):
                await client.generate("slow body")
            job = await client.submit("slow body again")
            with pytest.raises(RequestTimeoutError):
                await job.result()
            elapsed = time.monotonic() - started
    assert server.seen.count("create") == 2
    assert server.seen.count("result") == 4  # two polls per task
    assert elapsed < 3


async def test_the_deadline_counts_the_first_attempt_when_a_retry_stalls() -> None:
    # The first attempt runs without a deadline scope of its own (the session's total timeout
    # bounds it); the retries after it get what is left of the deadline, not a fresh one.
    attempts = 0

    async def slow_503_then_stall(ex: Exchange) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await asyncio.sleep(0.3)
            await ex.json({"error": "busy"}, status=503)
        else:
            await ex.stall()

    async with StandIn(status=slow_503_then_stall) as server:
        timeout = Timeout(connect=1, read=5, deadline=0.6)
        retry = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
        async with client_for(server, timeout=timeout, retry=retry) as client:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                await client.status("req-1")
            elapsed = time.monotonic() - started
    assert server.seen.count("status") == 2
    assert 0.55 < elapsed < 0.85  # 0.6 s in all, not 0.3 s plus a fresh 0.6 s


# -- (c) a connection that is never accepted ------------------------------------------------


@contextlib.contextmanager
def unaccepting_port() -> Any:
    """A listening socket whose accept queue is full: new connections hang in SYN_SENT."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_timeout_is_a_request_timeout_not_a_connect_error() -> None:
    # Documented: ConnectError is "could not connect" (refused); a connect that does not finish
    # in Timeout.connect is a RequestTimeoutError ("a connect timeout").
    with unaccepting_port() as port:
        timeout = Timeout(connect=0.2, read=1, deadline=5)
        async with Client(
            api_key="k",
            base_url=f"http://127.0.0.1:{port}/model",
            timeout=timeout,
            retry=FAST_RETRY,
        ) as client:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError) as info:
                await client.status("req-1")
            elapsed = time.monotonic() - started
            assert client.stats.requests_sent == 2
    assert not isinstance(info.value, ConnectError)
    assert "Timeout" in str(info.value)  # names aiohttp's connection timeout
    assert elapsed < 2


# -- (d) a create that times out ------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["stall", "trickle"])
async def test_create_timing_out_is_submission_unknown(behaviour: str) -> None:
    route = Exchange.stall if behaviour == "stall" else Exchange.trickle
    async with StandIn(create=route) as server:
        timeout = Timeout(connect=1, read=0.2 if behaviour == "stall" else 1, deadline=0.4)
        retry = RetryPolicy(max_attempts=4, initial_backoff=0.01)
        async with client_for(server, timeout=timeout, retry=retry) as client:
            with pytest.raises(SubmissionUnknownError) as info:
                await client.submit("pay once")
    assert info.value.request_body == {"prompt": "pay once"}
    assert "may have been created" in str(info.value)
    assert server.seen == ["create"]  # sent once, never again


# -- (e) a body larger than Limits.max_response_bytes ---------------------------------------


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_oversized_body_fails_fast_without_retry(declared: bool) -> None:
    async def huge(ex: Exchange) -> None:
        await ex.huge(declared=declared)

    async with StandIn(status=huge) as server:
        retry = RetryPolicy(max_attempts=4, initial_backoff=0.01)
        limits = Limits(max_response_bytes=1024 * 1024)
        async with client_for(server, retry=retry, limits=limits) as client:
            started = time.monotonic()
            with pytest.raises(ResponseTooLargeError, match="cap") as info:
                await client.status("req-1")
            elapsed = time.monotonic() - started
    assert server.seen.count("status") == 1  # retrying cannot make it smaller
    assert info.value.limit == 1024 * 1024
    assert info.value.size == (BIG if declared else None)
    assert isinstance(info.value, ProtocolError)
    assert elapsed < 2


# -- the downloader's timeouts --------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["stall", "trickle"])
async def test_download_timeout_is_a_typed_timeout(behaviour: str, tmp_path: pathlib.Path) -> None:
    async def cdn(ex: Exchange) -> None:
        if behaviour == "stall":
            await ex.stall("image/png")
        else:
            await ex.trickle("image/png")

    async with StandIn(cdn=cdn) as server, client_for(server) as client:
        downloader = Downloader(client, tmp_path, timeout=0.3, retry=FAST_RETRY)
        output = Output(type="image", url=f"http://127.0.0.1:{server.port}/cdn/a.png")
        with pytest.raises(DownloadTimeoutError) as info:
            await downloader.download_output(output, output_index=0, stem="a")
    assert isinstance(info.value, DownloadError) and isinstance(info.value, RequestTimeoutError)
    assert info.value.retryable
    assert server.seen.count("cdn") == 2  # a timeout is transient: retried once
    assert not [p async for p in anyio.Path(tmp_path).iterdir()]  # no partial file left behind
