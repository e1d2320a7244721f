"""A hostile API server: every route answers what a test chooses, and the SDK must stay sane.

Only ``NanoBananaError`` subclasses may come out of the public calls, never with the API key in
them; the client (its poll scheduler above all) must keep working for well-behaved tasks after a
hostile answer; the key must never travel to another origin; output names must never escape the
download directory.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanobanana_async import (
    Client,
    GenerationResult,
    Limits,
    NanoBananaError,
    PollPolicy,
    ProtocolError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    SubmissionUnknownError,
    Timeout,
)
from nanobanana_async.download import Downloader

pytestmark = pytest.mark.anyio

KEY = "sk-HOSTILE-" + secrets.token_hex(12)
CAP = 64 * 1024
ROUTES = ("create", "status", "result", "cancel")
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\0" * 64

POLL = PollPolicy(initial_delay=0.005, factor=1.5, max_interval=0.02, jitter=0.1, max_errors=3)
RETRY = RetryPolicy(
    max_attempts=3,
    initial_backoff=0.001,
    max_backoff=0.005,
    max_retry_after=0.2,
    max_rate_limited=2,
)
TIMEOUT = Timeout(connect=1, read=1, deadline=3, cancel=1)


@attrs.define
class Reply:
    """What the fake server answers: raw bytes go out as they are, anything else as JSON."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = attrs.field(factory=dict)
    content_type: str | None = "application/json"
    truncate: bool = False
    chunked: bool = False


@attrs.frozen
class Seen:
    method: str
    path: str
    authorization: str | None


class FakeApi:
    """The queue API on one origin: good for prompts/ids starting "good", hostile for "bad"."""

    def __init__(self) -> None:
        self.origin = ""
        self.hostile: dict[str, Reply | Callable[[str], Reply]] = {}
        self.seen: list[Seen] = []
        self.count = 0

    def urls(self, rid: str) -> dict[str, str]:
        base = f"{self.origin}/model/v1/queue/nano_banana_pro/requests/{rid}"
        return {
            "status_url": f"{base}/status",
            "response_url": f"{base}/response",
            "cancel_url": f"{base}/cancel",
        }

    def good(self, route: str, rid: str, prompt: str) -> Reply:
        if route == "create":
            self.count += 1
            new = f"{prompt.split()[0] if prompt else 'good'}-{self.count}"
            return Reply(body={"request_id": new, **self.urls(new), "queue_position": 0})
        if route == "status":
            return Reply(body={"status": "COMPLETED", "request_id": rid})
        if route == "cancel":
            return Reply(202, {"status": "CANCELLATION_REQUESTED"})
        output = {
            "type": "image",
            "url": f"{self.origin}/cdn/{rid}.png",
            "content_type": "image/png",
        }
        return Reply(body={"request_id": rid, "outputs": [output]})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, request.headers.get("Authorization")))
        parts = request.path.split("/")
        route, rid, prompt = None, "", ""
        if request.method == "POST" and len(parts) == 5 and parts[1:4] == ["model", "v1", "queue"]:
            route = "create"
            try:
                prompt = str((await request.json()).get("prompt", ""))
            except ValueError:
                prompt = ""
        elif len(parts) == 8 and parts[5] == "requests":
            rid = parts[6]
            route = {
                ("GET", "status"): "status",
                ("GET", "response"): "result",
                ("PUT", "cancel"): "cancel",
            }.get((request.method, parts[7]))
        if route is None:
            return web.json_response({"detail": "no such route"}, status=404)
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response(
                {"error": {"code": "UNAUTHORIZED", "message": "no"}}, status=401
            )
        bad = prompt.startswith("bad") or rid.startswith("bad")
        rule = self.hostile.get(route) if bad else None
        if rule is None:
            reply = self.good(route, rid, prompt)
        else:
            reply = rule(rid) if callable(rule) else rule
        return await send(request, reply)


async def send(request: web.Request, reply: Reply) -> web.StreamResponse:
    body = reply.body
    if isinstance(body, str):
        data = body.encode("utf-8", "surrogatepass")
    elif isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()
    headers = dict(reply.headers)
    if reply.content_type is not None:
        headers.setdefault("Content-Type", reply.content_type)
    if reply.truncate:
        resp = web.StreamResponse(status=reply.status, headers=headers)
        resp.content_length = len(data) + 1000
        await resp.prepare(request)
        await resp.write(data)
        assert request.transport is not None
        request.transport.close()
        return resp
    if reply.chunked:
        resp = web.StreamResponse(status=reply.status, headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(data), 16384):
            await resp.write(data[i : i + 16384])
        await resp.write_eof()
        return resp
    return web.Response(status=reply.status, body=data, headers=headers)


class OtherOrigin:
    """A second origin (a CDN, or an attacker): records every request and its headers."""

    def __init__(self) -> None:
        self.origin = ""
        self.seen: list[Seen] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, request.headers.get("Authorization")))
        if request.path.startswith("/cdn/"):
            return web.Response(body=PNG, content_type="image/png")
        return web.json_response({"status": "COMPLETED", "request_id": "stolen"})


@asynccontextmanager
async def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def servers() -> AsyncIterator[tuple[FakeApi, OtherOrigin]]:
    api, other = FakeApi(), OtherOrigin()
    async with serve(api.handle) as a, serve(other.handle) as b:
        api.origin, other.origin = a, b
        yield api, other


def make_client(api: FakeApi, **kw: Any) -> Client:
    kw.setdefault("poll", POLL)
    kw.setdefault("retry", RETRY)
    kw.setdefault("timeout", TIMEOUT)
    kw.setdefault("limits", Limits(max_response_bytes=CAP))
    return Client(KEY, base_url=api.origin + "/model", **kw)


async def call(client: Client, route: str, how: str = "", wait: float = 1.5) -> object:
    """Drive ``route`` through the public API; return its value or the exception it raised.

    ``wait`` is the result routes' own timeout; the whole call is cut off well after it.
    """
    try:
        with anyio.fail_after(wait + 6.5):
            if route == "create":
                return await client.submit("bad create")
            if route == "status":
                return await client.status("bad-1")
            if route == "cancel":
                return await client.cancel("bad-1")
            if how == "generate":
                return await client.generate("bad generate", timeout=wait)
            if how == "job":
                job = await client.submit("bad job")
                return await job.result(timeout=wait)
            return await client.result("bad-1", timeout=wait)
    except Exception as exc:  # noqa: BLE001 - the type is what is checked
        return exc


def check_error(value: object) -> None:
    """A raised exception must be an SDK error, and no exception text may carry the key."""
    if isinstance(value, BaseException):
        assert isinstance(value, NanoBananaError), f"{type(value).__name__}: {value!r}"[:500]
        chain: BaseException | None = value
        while chain is not None:
            assert KEY not in str(chain) and KEY not in repr(chain)
            chain = chain.__cause__ or chain.__context__


async def assert_still_works(client: Client) -> None:
    """A well-behaved task on the same client still completes, promptly."""
    with anyio.fail_after(5):
        result = await client.generate("good after", timeout=4)
    assert result.request_id.startswith("good") and result.images


def gzip_bomb() -> bytes:
    return gzip.compress(b'{"status": "' + b"A" * (CAP * 64) + b'"}', compresslevel=9)


DEPTH = 100_000
HOSTILE: dict[str, Reply] = {
    "not-json": Reply(body=b"<html>502 Bad Gateway</html>", content_type="text/html"),
    "empty": Reply(body=b""),
    "json-null": Reply(body=None),
    "json-list": Reply(body=[1, 2, 3]),
    "json-string": Reply(body='"COMPLETED"'),
    "json-number": Reply(body=b"1e308"),
    "huge-int-text": Reply(body=b'{"request_id": "bad-9", "queue_position": 1' + b"0" * 400 + b"}"),
    "int-too-long": Reply(body=b'{"status": "IN_QUEUE", "queue_position": 1' + b"0" * 5000 + b"}"),
    "huge-floats": Reply(
        body=b'{"status": "IN_PROGRESS", "request_id": "bad-1", "progress": 1e999, '
        b'"queue_position": 1e308, "metrics": {"inference_time": -1e999}}'
    ),
    "nan-everywhere": Reply(
        body=b'{"status": "COMPLETED", "request_id": "bad-1", "queue_position": NaN, '
        b'"outputs": [{"type": "image", "width": NaN, "file_size": Infinity}]}'
    ),
    "deep-brackets": Reply(body=b"[" * DEPTH),
    "deep-valid": Reply(body=b'{"status": ' + b"[" * DEPTH + b"]" * DEPTH + b"}"),
    "wrong-types": Reply(
        body={
            "request_id": ["x"],
            "status": 7,
            "queue_position": "first",
            "error": {"code": [], "message": {}},
            "logs": "nope",
            "outputs": {"type": "image"},
        }
    ),
    "status-wrong-type": Reply(body={"status": {"COMPLETED": True}, "request_id": "bad-1"}),
    "outputs-wrong-type": Reply(body={"request_id": "bad-1", "outputs": "image.png"}),
    "outputs-bad-items": Reply(
        body={"request_id": "bad-1", "outputs": [1, None, {"type": ["image"], "width": "wide"}]}
    ),
    "output-fields-wrong": Reply(
        body={"request_id": 5, "outputs": [{"url": 3, "file_size": {"a": 1}, "height": []}]}
    ),
    "huge-string": Reply(body={"status": "COMPLETED", "error": "x" * (CAP - 100)}),
    "lone-surrogate-id": Reply(body='{"request_id": "bad\\ud800", "status": "IN_QUEUE"}'),
    "unknown-status": Reply(body={"status": "EXPLODED", "request_id": "bad-1"}),
    "wrong-content-type": Reply(body=b"\x89PNG\r\n\x1a\n", content_type="image/png"),
    "invalid-utf8": Reply(body=b'{"status": "\xff\xfe"}'),
    "truncated": Reply(body=b'{"status": "IN_QUEUE", "request_id": "bad-1", "log', truncate=True),
    "over-cap-declared": Reply(body=b" " * (CAP * 3) + b"{}"),
    "over-cap-chunked": Reply(body=b" " * (CAP * 3) + b"{}", chunked=True),
    "gzip-bomb": Reply(body=gzip_bomb(), headers={"Content-Encoding": "gzip"}),
    "bad-gzip": Reply(body=b"not gzip at all", headers={"Content-Encoding": "gzip"}),
    "status-299": Reply(299, {"detail": "odd"}),
    "status-418": Reply(418, {"detail": "teapot"}),
    "status-499": Reply(499, b""),
    "status-599": Reply(599, {"error": {"code": "X", "message": "y"}}),
    "status-301": Reply(301, b"", headers={"Location": "http://127.0.0.1:9/x"}),
    "error-with-key-echo": Reply(401, {"error": {"code": "UNAUTHORIZED", "message": "bad key"}}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("route", ROUTES)
async def test_hostile_reply_only_raises_sdk_errors(
    servers: tuple[FakeApi, OtherOrigin], route: str, name: str
) -> None:
    api, _ = servers
    api.hostile[route] = HOSTILE[name]
    async with make_client(api) as client:
        value = await call(client, route)
        check_error(value)
        api.hostile.clear()
        await assert_still_works(client)
    if name in ("over-cap-declared", "over-cap-chunked", "gzip-bomb") and route != "result":
        assert isinstance(value, NanoBananaError)
        cause = value.__cause__ if isinstance(value, SubmissionUnknownError) else value
        assert isinstance(cause, ProtocolError) and "cap" in str(cause)
    if name == "status-299" and route == "cancel":
        assert value is True  # any 2xx is accepted


@pytest.mark.parametrize("how", ["result", "generate", "job"])
@pytest.mark.parametrize("name", ["deep-valid", "gzip-bomb", "wrong-types", "status-599"])
async def test_hostile_result_through_every_waiter(
    servers: tuple[FakeApi, OtherOrigin], how: str, name: str
) -> None:
    api, _ = servers
    api.hostile["result"] = HOSTILE[name]
    async with make_client(api) as client:
        value = await call(client, "result", how)
        assert isinstance(value, NanoBananaError)
        check_error(value)
        api.hostile.clear()
        await assert_still_works(client)


def _nested(depth: int, shape: str) -> bytes:
    deep = b"[" * depth + b"]" * depth
    return {
        "list": deep,
        "error_type": b'{"status": "COMPLETED", "error_type": ' + deep + b"}",
        "message": b'{"status": "COMPLETED", "error": {"message": ' + deep + b"}}",
        "outputs": b'{"outputs": [' + deep + b"]}",
        "request_id": b'{"request_id": ' + deep + b"}",
    }[shape].replace(b"[" * 2, b"[[", 1)


def _undecodable(value: object) -> bool:
    text = str(value) + str(getattr(value, "__cause__", ""))
    return "not valid JSON" in text


async def test_nesting_at_the_recursion_limit(servers: tuple[FakeApi, OtherOrigin]) -> None:
    """Bodies just below the decoder's depth limit must not blow up later (str, repr, dumps).

    The decoder's limit depends on the stack depth where each route decodes, so it is found by
    bisection per route, then the few depths just below it are tried with several shapes.
    """
    api, _ = servers
    async with make_client(api) as client:
        for route in ("create", "status", "result"):
            lo, hi = 10, sys.getrecursionlimit() + 50  # lo decodes, hi does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                api.hostile[route] = Reply(body=_nested(mid, "list"))
                value = await call(client, route)
                check_error(value)
                lo, hi = (lo, mid) if _undecodable(value) else (mid, hi)
            assert lo > 100
            for depth in range(lo - 12, lo + 2):
                for shape in ("list", "error_type", "message", "outputs", "request_id"):
                    api.hostile[route] = Reply(body=_nested(depth, shape))
                    check_error(await call(client, route))
        api.hostile.clear()
        await assert_still_works(client)


ABSURD_RETRY_AFTER = [
    "1e12",
    "-5",
    "nan",
    "inf",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Fri, 01 Jan 2100 00:00:00 GMT",
    "soon",
    "",
    "1e400",
    "0x10",
]
# Values that parse to a wait beyond RETRY.max_retry_after; every other one counts as absent.
BEYOND_THE_CAP = {"1e12", "Fri, 01 Jan 2100 00:00:00 GMT"}
# The server's answer ends these calls in milliseconds (RETRY's backoff is at most 5 ms, its
# Retry-After cap 0.2 s). FAST leaves seconds for a stalled CI machine (0.58 s seen once under
# a 0.5 s bound) and stays far below every timeout the calls run under (PATIENT, PATIENT_WAIT),
# so a call that ended by timing out cannot pass for one that ended on the server's answer.
FAST = 2.0
PATIENT = Timeout(connect=8, read=8, deadline=10, cancel=8)
PATIENT_WAIT = 8.0


def expected_error(route: str, status: int, value: str) -> type[NanoBananaError]:
    """What each call must end with, at once.

    A wait beyond the cap ends the retries with the server's own error. Without a usable
    Retry-After, a 429 is waited out (briefly: RETRY's backoff) and then raised; a 503 on a
    create may have been processed, so it becomes SubmissionUnknownError (never re-sent).
    """
    if status == 429:
        return RateLimitError
    if route == "create" and value not in BEYOND_THE_CAP:
        return SubmissionUnknownError
    return ServerError


@pytest.mark.parametrize("value", ABSURD_RETRY_AFTER)
@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("route", ROUTES)
async def test_absurd_retry_after(
    servers: tuple[FakeApi, OtherOrigin], route: str, status: int, value: str
) -> None:
    api, _ = servers
    api.hostile[route] = Reply(
        status, {"error": {"code": "SLOW", "message": "down"}}, headers={"Retry-After": value}
    )
    async with make_client(api, timeout=PATIENT) as client:
        started = time.monotonic()
        error = await call(client, route, wait=PATIENT_WAIT)
        elapsed = time.monotonic() - started
        check_error(error)
        assert type(error) is expected_error(route, status, value), repr(error)
        assert elapsed < FAST, f"took {elapsed:.2f} s on Retry-After {value!r}: {error!r}"
        api.hostile.clear()
        started = time.monotonic()
        await assert_still_works(client)
        assert time.monotonic() - started < FAST  # no client-wide hold of 1e12 s
    if isinstance(error, SubmissionUnknownError):
        error = error.__cause__
        assert isinstance(error, ServerError)
    assert isinstance(error, (RateLimitError, ServerError))
    after = error.retry_after
    if value in BEYOND_THE_CAP:
        assert after is not None and after > RETRY.max_retry_after
    else:
        assert after is None


# -- other origins -----------------------------------------------------------------------------


def foreign_urls(api: FakeApi, other: OtherOrigin, rid: str) -> list[dict[str, str]]:
    o_host_port = other.origin.removeprefix("http://")
    a_host_port = api.origin.removeprefix("http://")
    path = f"/model/v1/queue/nano_banana_pro/requests/{rid}"
    variants = [
        f"{other.origin}{path}",
        f"http://{a_host_port}@{o_host_port}{path}",
        f"http://{o_host_port}/model/v1/queue/x?u={api.origin}",
        f"//{o_host_port}{path}",
        f"https://{a_host_port}{path}",
        "http://[::1" + path,
        f"http://{a_host_port.split(':')[0]}:notaport{path}",
        f"http://{a_host_port.split(':')[0]}:99999{path}",
        "http://a\uff03b" + path,
        f"{other.origin.upper()}{path}",
    ]
    return [
        {"status_url": v + "/status", "response_url": v + "/response", "cancel_url": v + "/cancel"}
        for v in variants
    ]


async def test_server_urls_on_other_origins_never_get_the_key(
    servers: tuple[FakeApi, OtherOrigin],
) -> None:
    api, other = servers
    n = len(foreign_urls(api, other, "x"))
    async with make_client(api) as client:
        for i in range(n):

            def create(_: str, i: int = i) -> Reply:
                api.count += 1
                rid = f"good-{api.count}"
                return Reply(body={"request_id": rid, **foreign_urls(api, other, rid)[i]})

            api.hostile["create"] = create
            job = await client.submit("bad but foreign")
            values = [await job.status(), await job.result(timeout=3), await job.cancel()]
            assert values[1].request_id == job.request_id  # type: ignore[union-attr]
            outcomes = [o async for o in client.stream(["bad s1", "bad s2"])]
            assert len(outcomes) == 2 and all(o.ok for o in outcomes)
        api.hostile.clear()
        await assert_still_works(client)
    assert not [s for s in other.seen if s.authorization is not None]
    assert not [s for s in other.seen if not s.path.startswith("/cdn/")]
    assert any(s.path.endswith("/status") and s.authorization for s in api.seen)


async def test_redirect_to_other_origin_is_not_followed(
    servers: tuple[FakeApi, OtherOrigin],
) -> None:
    api, other = servers
    for route in ROUTES:
        api.hostile[route] = Reply(307, b"", headers={"Location": f"{other.origin}/steal"})
    async with make_client(api) as client:
        for route in ROUTES:
            value = await call(client, route)
            check_error(value)
            assert isinstance(value, NanoBananaError)
    assert other.seen == []


async def test_downloads_from_the_cdn_carry_no_key(
    servers: tuple[FakeApi, OtherOrigin], tmp_path: pathlib.Path
) -> None:
    api, other = servers
    out = tmp_path / "out"
    api.hostile["result"] = lambda rid: Reply(
        body={"request_id": rid, "outputs": [{"type": "image", "url": f"{other.origin}/cdn/a.png"}]}
    )
    async with make_client(api) as client:
        result = await client.generate("bad cdn", timeout=3)
        files = await Downloader(client, out).download(result, stem="cdn")
    assert [f.path.parent for f in files] == [out.resolve()]
    assert other.seen and all(s.authorization is None for s in other.seen)


def tree(root: pathlib.Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


HOSTILE_NAMES = [
    "../../escape.png",
    "/etc/passwd",
    "/tmp/abs.png",
    "..",
    ".",
    "",
    "a\x00b.png",
    "CON",
    "con.png",
    "NUL.txt",
    "COM1.jpg",
    "LPT9",
    "..\\..\\win.png",
    "C:\\Windows\\x.png",
    "\u202egnp.exe",
    "x/" * 300 + "deep.png",
    "y" * 5000 + ".png",
    ".bashrc",
    "~/.ssh/authorized_keys",
    "\ud800.png",
]


async def test_hostile_output_file_names_stay_in_the_out_dir(
    servers: tuple[FakeApi, OtherOrigin], tmp_path: pathlib.Path
) -> None:
    api, other = servers
    work = tmp_path / "work"
    out = work / "out"
    outputs = [
        {
            "type": "image",
            "url": f"{other.origin}/cdn/{i}.png",
            "file_name": name,
            "content_type": "image/png",
        }
        for i, name in enumerate(HOSTILE_NAMES)
    ]
    api.hostile["result"] = lambda rid: Reply(body={"request_id": rid, "outputs": outputs})
    parent_before = sorted(os.listdir(tmp_path.parent))
    async with make_client(api) as client:
        result = await client.generate("bad names", timeout=3)
        assert len(result.outputs) == len(HOSTILE_NAMES)
        for stem in ("run", "../../up", "/abs", "CON", "a\x00b"):
            files = await Downloader(client, out).download(result, stem=stem)
            assert len(files) == len(HOSTILE_NAMES)
            assert all(f.path.parent == out.resolve() for f in files)
            assert all(f.path.is_file() and f.size == len(PNG) for f in files)
    created = tree(tmp_path)
    assert {c for c in created if not c.startswith(os.path.join("work", "out", ""))} == {
        "work",
        os.path.join("work", "out"),
    }
    assert all((tmp_path / c).parent == out for c in created if c.count(os.sep) == 2)
    assert sorted(os.listdir(tmp_path.parent)) == parent_before
    assert len(list(out.iterdir())) == 5 * len(HOSTILE_NAMES)


async def test_stream_yields_one_outcome_per_hostile_item(
    servers: tuple[FakeApi, OtherOrigin],
) -> None:
    api, _ = servers
    kinds = ["deep-valid", "gzip-bomb", "wrong-types", "status-599", "truncated", "not-json"]
    prompts = [f"bad {k}" for k in kinds] + ["good one", "good two"]

    def result(rid: str) -> Reply:
        n = int(rid.rsplit("-", 1)[1])
        return HOSTILE[kinds[(n - 1) % len(kinds)]]

    api.hostile["result"] = result
    async with make_client(api) as client:
        with anyio.fail_after(15):
            outcomes = [o async for o in client.stream(prompts, max_in_flight=3)]
        assert sorted(o.index for o in outcomes) == list(range(len(prompts)))
        for o in outcomes:
            check_error(o.error)
            assert (o.error is None) == prompts[o.index].startswith("good")
            assert o.ok == (o.error is None)
        mapped = await client.map(prompts, return_exceptions=True)
        assert len(mapped) == len(prompts)
        assert [isinstance(m, GenerationResult) for m in mapped] == [
            p.startswith("good") for p in prompts
        ]
        api.hostile.clear()
        await assert_still_works(client)


# -- property-based: arbitrary JSON of the wrong shapes on every route -------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["COMPLETED", "completed", "IN_QUEUE", "FAILED", "CANCELED", "image", ""])
)
json_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "status",
    "request_id",
    "id",
    "queue_position",
    "progress",
    "logs",
    "error",
    "error_type",
    "provider_error",
    "metrics",
    "response_url",
    "status_url",
    "cancel_url",
    "outputs",
    "images",
    "metadata",
    "detail",
    "text",
    "url",
    "type",
    "file_size",
    "width",
]
outputs = st.lists(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6), max_size=3)
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values | outputs, max_size=8) | json_values
statuses = st.sampled_from(
    [200, 201, 202, 299, 400, 401, 402, 403, 404, 409, 418, 422, 429, 499, 500, 502, 503, 504, 599]
)
retry_after = st.sampled_from(
    ["1e12", "-5", "nan", "0", "0.001", "x", "Fri, 01 Jan 2100 00:00:00 GMT"]
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(ROUTES),
    status=statuses,
    body=bodies,
    retry=st.none() | retry_after,
    content_type=st.sampled_from(["application/json", "text/plain", None]),
)
async def test_fuzzed_bodies_only_raise_sdk_errors(
    servers: tuple[FakeApi, OtherOrigin],
    route: str,
    status: int,
    body: Any,
    retry: str | None,
    content_type: str | None,
) -> None:
    api, _ = servers
    headers = {"Retry-After": retry} if retry is not None else {}
    api.hostile = {route: Reply(status, json.dumps(body), headers, content_type)}
    async with make_client(api) as client:
        check_error(await call(client, route, "generate" if route == "result" else ""))
        api.hostile = {}
        await assert_still_works(client)


HOSTILE_IDS = [
    "bad\ud800",
    "bad/../../../etc",
    "bad?x=1#frag",
    "bad\x00nul",
    "bad " + "x" * 20000,
    "bad%2F..%2F",
    "bad\n\rX-Injected: 1",
    "bad\u202e",
]


@pytest.mark.parametrize("rid", HOSTILE_IDS)
async def test_hostile_request_ids(servers: tuple[FakeApi, OtherOrigin], rid: str) -> None:
    api, _ = servers
    api.hostile["create"] = Reply(body={"request_id": rid})
    async with make_client(api) as client:
        job = await call_coro(client.submit("bad id"))
        if isinstance(job, BaseException):
            # An id no URL can carry: the task may exist, so the create is reported as unknown.
            assert isinstance(job, SubmissionUnknownError)
            assert isinstance(job.__cause__, ProtocolError)
            assert any(ord(c) < 32 or 0xD800 <= ord(c) < 0xE000 for c in rid)
        else:
            assert job.request_id == rid  # type: ignore[attr-defined]
            for value in [
                await call_coro(job.status()),  # type: ignore[attr-defined]
                await call_coro(job.result(timeout=2)),  # type: ignore[attr-defined]
                await call_coro(job.cancel()),  # type: ignore[attr-defined]
            ]:
                check_error(value)
        outcomes = [o async for o in client.stream(["bad a", "good b"])]
        assert sorted(o.index for o in outcomes) == [0, 1]
        for o in outcomes:
            check_error(o.error)
        api.hostile.clear()
        await assert_still_works(client)
    assert all("X-Injected" not in s.path for s in api.seen)


async def call_coro(coro: Awaitable[object]) -> object:
    try:
        with anyio.fail_after(5):
            return await coro
    except Exception as exc:  # noqa: BLE001 - the type is what is checked
        return exc
