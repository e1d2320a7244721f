"""Transport decisions a mutation run found unpinned: origins and default ports, what the hooks
and the log say about retries, 429 accounting, and the errors of an ambiguous create.
"""

from __future__ import annotations

import logging

import pytest

from nanobanana_async import (
    Client,
    HttpEvent,
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
