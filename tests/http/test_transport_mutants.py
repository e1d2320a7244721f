"""Transport decisions a mutation run found unpinned: origins and default ports, what the hooks
and the log say about retries, 429 accounting, and the errors of an ambiguous create.
"""

from __future__ import annotations

import logging

import anyio
import pytest
from aiohttp import web

from nanobanana_async import (
    APIStatusError,
    Client,
    HttpEvent,
    Limits,
    NotFoundError,
    ResponseTooLargeError,
    RetryPolicy,
    SubmissionUnknownError,
    Timeout,
)
from nanobanana_async._http._transport import Transport, origin_of

from ..scripted import Scripted, client_for
from ..standin import serve

pytestmark = pytest.mark.anyio

RATE_LIMITED = {"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "slow"}}


def _transport(base_url: str) -> Transport:
    return Client("k", base_url=base_url)._runtime.transport


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://API.example/model", ("http", "api.example", 80)),
        ("HTTPS://api.example/x", ("https", "api.example", 443)),
        ("https://api.example:8443/x", ("https", "api.example", 8443)),
        ("ftp://api.example/x", ("ftp", "api.example", None)),
        ("/relative/path", ("", "", None)),
        ("http://[::1", ("", "", None)),
    ],
)
def test_origin_of_makes_default_ports_explicit(
    url: str, origin: tuple[str, str, int | None]
) -> None:
    assert origin_of(url) == origin


def test_the_api_origin_is_the_same_scheme_host_and_port_whatever_the_spelling() -> None:
    t = _transport("http://api.example/model")
    assert t.is_api_origin("http://api.example/model/v1/queue/x")
    assert t.is_api_origin("http://API.EXAMPLE:80/elsewhere")
    assert not t.is_api_origin("https://api.example/model/v1")  # another scheme
    assert not t.is_api_origin("http://api.example:8080/model/v1")
    assert not t.is_api_origin("/model/v1/queue/x")  # no host: no origin at all
    s = _transport("https://api.example:443/model")
    assert s.is_api_origin("https://api.example/model/v1")


def test_a_task_url_on_another_origin_is_rebuilt_from_the_id_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = _transport("http://api.example/model")
    own = "http://api.example/model/v1/queue/nano_banana_pro/requests/r1/status"
    assert t.task_url("r1", "status", own) == own
    with caplog.at_level(logging.WARNING, logger="nanobanana_async"):
        url = t.task_url("r 1", "status", "http://other.example/steal")
        t.task_url("r2", "cancel", "http://other.example/steal")
    assert url == "http://api.example/model/v1/queue/nano_banana_pro/requests/r%201/status"
    assert (
        t.task_url("r/2", "") == "http://api.example/model/v1/queue/nano_banana_pro/requests/r%2F2"
    )
    assert caplog.messages == [
        "ignoring a task URL on another origin (other.example); building URLs from the request id"
    ]


async def test_hooks_see_each_attempt_of_a_retried_create(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[HttpEvent] = []
    busy = (503, {"detail": "busy"}, {"Retry-After": "0"})
    standin = Scripted(create_replies=[busy])
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01)
    async with serve(standin) as s, client_for(s, retry=retry, hooks=[events.append]) as c:
        with caplog.at_level(logging.DEBUG, logger="nanobanana_async"):
            await c.submit("busy")
    creates = [e for e in events if e.method == "POST"]
    assert [(e.attempt, e.status, e.error) for e in creates] == [(1, 503, None), (2, 200, None)]
    assert all(e.path == "/model/v1/queue/nano_banana_pro" for e in creates)
    assert all(0 <= e.elapsed < 5 for e in creates)
    assert any(
        m.startswith("retrying POST create in 0.00 s after HTTP 503") for m in caplog.messages
    )


async def test_a_429_on_a_poll_is_counted_once() -> None:
    def once(rid: str, n: int) -> tuple[int, object, dict[str, str]] | None:
        return (429, RATE_LIMITED, {"Retry-After": "0.01"}) if n == 0 else None

    async with serve(Scripted(pending_polls=0, poll_reply=once)) as s, client_for(s) as c:
        await c.generate("limited", timeout=5)
        assert c.stats.rate_limited == 1
        assert c.stats.requests_sent == 3 == s.requests()


async def test_a_create_past_its_deadline_is_unknown_and_keeps_its_body() -> None:
    timeout = Timeout(connect=1, read=5, deadline=0.3, cancel=1, close=1)
    # The answer never comes in time: the read is cut by the session's total timeout.
    async with serve(Scripted(create_delay=2.0)) as s, client_for(s, timeout=timeout) as c:
        with pytest.raises(SubmissionUnknownError) as caught:
            await c.submit("slow")
        assert caught.value.request_body == {"prompt": "slow"}
    # Safe retries (503 + Retry-After) that run past the call's deadline: the deadline ends it.
    busy = [(503, {"detail": "busy"}, {"Retry-After": "0.2"})] * 5
    retry = RetryPolicy(max_attempts=10, max_retry_after=60)
    async with (
        serve(Scripted(create_replies=busy)) as s,
        client_for(s, timeout=timeout, retry=retry) as c,
    ):
        with pytest.raises(SubmissionUnknownError) as caught:
            await c.submit("busy")
        assert caught.value.request_body == {"prompt": "busy"}
        assert "create exceeded its 0.3 s deadline" in str(caught.value)
        assert s.count("create") == 2


async def test_an_ambiguous_create_says_so_and_keeps_the_cause() -> None:
    standin = Scripted(create_replies=[(502, {"detail": "bad gateway"}, {})])
    async with serve(standin) as s, client_for(s) as c:
        with pytest.raises(SubmissionUnknownError) as caught:
            await c.submit("maybe")
        assert str(caught.value).startswith("create failed ambiguously (HTTP 502")
        assert caught.value.request_body == {"prompt": "maybe"}
        assert s.count("create") == 1


class _StatusRoute(Scripted):
    """A stand-in whose status route answers from a script (then IN_PROGRESS)."""

    def __init__(self, *replies: tuple[int, object, dict[str, str]]) -> None:
        super().__init__()
        self.replies = list(replies)

    async def status(self, request: web.Request) -> web.Response:
        self._hit("status", request.match_info["rid"])
        self.poll_times.append(anyio.current_time())
        if self.replies:
            status, value, headers = self.replies.pop(0)
            return web.json_response(value, status=status, headers=headers)
        return web.json_response({"status": "IN_PROGRESS"})


async def test_a_300_is_an_error_not_an_answer() -> None:
    standin = _StatusRoute((300, {"status": "IN_QUEUE"}, {}))
    async with serve(standin) as s, client_for(s, retry=RetryPolicy(max_attempts=1)) as c:
        with pytest.raises(APIStatusError) as caught:
            await c.status("r1")
        assert caught.value.status_code == 300


async def test_an_error_reply_keeps_the_services_message() -> None:
    standin = _StatusRoute((404, {"detail": "Request not found"}, {}))
    async with serve(standin) as s, client_for(s) as c:
        with pytest.raises(NotFoundError, match="Request not found"):
            await c.status("r404")


async def test_a_retried_get_waits_what_retry_after_asks() -> None:
    standin = _StatusRoute((503, {"detail": "busy"}, {"Retry-After": "0.3"}))
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.01)
    async with serve(standin) as s, client_for(s, retry=retry) as c:
        status = await c.status("r2")
        assert status.state.value == "IN_PROGRESS"
        assert s.count("status") == 2
        assert s.poll_times[1] - s.poll_times[0] >= 0.3


async def test_hooks_name_the_error_of_a_failed_exchange() -> None:
    events: list[HttpEvent] = []
    big = (200, {"status": "IN_PROGRESS", "pad": "x" * 5000}, {})
    limits = Limits(max_response_bytes=1000)
    retry = RetryPolicy(max_attempts=1)
    async with (
        serve(_StatusRoute(big)) as s,
        client_for(s, hooks=[events.append], limits=limits, retry=retry) as c,
    ):
        with pytest.raises(ResponseTooLargeError):
            await c.status("r3")
    async with (
        serve(Scripted(create_delay=2.0)) as s,
        client_for(
            s,
            hooks=[events.append],
            retry=retry,
            timeout=Timeout(connect=1, read=0.2, deadline=5, cancel=1, close=1),
        ) as c,
    ):
        with pytest.raises(SubmissionUnknownError):
            await c.submit("slow")
    first, second = events
    assert (first.method, first.status, first.error) == ("GET", 200, "ResponseTooLargeError")
    assert (second.method, second.status) == ("POST", None)
    assert second.error is not None and second.error.endswith("TimeoutError")  # aiohttp's class
