"""The API key never leaks: not in logs, errors, reprs, the journal, nor to any other origin."""

from __future__ import annotations

import logging
import pathlib
import secrets
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
import pytest

from nanobanana_async import (
    AuthenticationError,
    Client,
    NanoBananaError,
    RetryPolicy,
    TaskFailedError,
)
from nanobanana_async.download import Downloader
from nanobanana_async.emulator import Emulator, Faults, Variants

from ..helpers import FAST_POLL, client_for

pytestmark = pytest.mark.anyio

_ALPHABET = string.ascii_letters + string.digits
KEY = "sk-SECRET-" + "".join(secrets.choice(_ALPHABET) for _ in range(20))
WRONG_KEY = "sk-WRONGKEY-" + "".join(secrets.choice(_ALPHABET) for _ in range(20))
SECRETS = (KEY, WRONG_KEY, KEY.removeprefix("sk-SECRET-"), WRONG_KEY.removeprefix("sk-WRONGKEY-"))


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def walk(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its cause/context chain and any grouped sub-exceptions."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        stack.extend(getattr(e, "exceptions", ()))


def journal_files(journal: pathlib.Path) -> tuple[set[str], bytes]:
    """The names and concatenated bytes of the journal's files (database, -wal, -shm...)."""
    files = [p for p in journal.parent.iterdir() if p.name.startswith(journal.name)]
    return {p.name for p in files}, b"".join(p.read_bytes() for p in files)


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, str]]]:
    """Every request any aiohttp client session sends: (url, headers as sent by the caller)."""
    sent: list[tuple[str, dict[str, str]]] = []
    original = aiohttp.ClientSession._request

    async def spy(self: aiohttp.ClientSession, method: str, url: Any, **kw: Any) -> Any:
        headers = {**dict(self.headers), **dict(kw.get("headers") or {})}
        sent.append((str(url), headers))
        return await original(self, method, url, **kw)

    monkeypatch.setattr(aiohttp.ClientSession, "_request", spy)
    return sent


@pytest.mark.nanobanana_emulator(api_key=KEY)
async def test_key_never_leaks(
    nanobanana_emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    tmp_path: pathlib.Path,
    wire: list[tuple[str, dict[str, str]]],
) -> None:
    emu = nanobanana_emulator
    assert emu.api_key == KEY
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records
    errors: list[BaseException] = []
    reprs: list[str] = []
    journal = tmp_path / "journal.sqlite"

    async def expect_error(coro: Any) -> None:
        try:
            await coro
        except Exception as exc:  # noqa: BLE001 - every exception is collected and checked
            errors.append(exc)
        else:
            raise AssertionError("expected an error")

    retry = RetryPolicy(max_attempts=6, initial_backoff=0.01, max_backoff=0.02, max_retry_after=1)
    async with client_for(emu, retry=retry) as client:
        reprs.append(repr(client))
        result = await client.generate("hygiene one", timeout=10)
        job = await client.submit("hygiene two")
        reprs += [repr(job), repr(await job.status()), repr(result), repr(client.stats)]
        await expect_error(client.generate("a [blocked] prompt", timeout=10))
        assert isinstance(errors[-1], TaskFailedError)
        # retries: transient 5xx and 429s on the polling and status routes
        emu.reconfigure(
            faults=Faults(
                error_502=0.3,
                rate_limited_429=0.2,
                malformed_json=0.1,
                retry_after_seconds=0.01,
                routes=frozenset({"status", "result"}),
            )
        )
        for i in range(3):
            await client.generate(f"retried {i}", timeout=10)
            try:
                await job.status()
            except NanoBananaError as exc:
                errors.append(exc)
        emu.reconfigure(
            faults=Faults(error_500=1.0, routes=frozenset({"create"}))
        )  # an ambiguous create: SubmissionUnknownError carries the request body
        await expect_error(client.submit("unknown create"))
        emu.reconfigure(faults=Faults())
        await expect_error(client.status("mmsu_no_such_task"))
        await expect_error(client.cancel("mmsu_no_such_task"))
        files = await Downloader(client, tmp_path / "out").download(result, stem="hygiene")
        assert files and files[0].path.is_file()
        stream = client.stream(["journaled a", "journaled [blocked] b"], journal=journal)
        reprs.append(repr(stream))
        outcomes = [o async for o in stream]
        reprs += [repr(o) for o in outcomes]
        errors += [o.error for o in outcomes if o.error is not None]
        assert sorted(o.ok for o in outcomes) == [False, True]
        reprs.append(repr(client))
    reprs.append(repr(client))

    async with Client(WRONG_KEY, base_url=emu.base_url) as wrong:
        await expect_error(wrong.submit("wrong key"))
        await expect_error(wrong.generate("wrong key", timeout=5))
        reprs.append(repr(wrong))
    assert isinstance(errors[-1], AuthenticationError)

    # errors: str, repr, and every attribute that carries text
    assert len(errors) >= 7
    for error in errors:
        for e in walk(error):
            texts = [str(e), repr(e), *(repr(v) for v in vars(e).values())]
            assert not [leaks(t) for t in texts if leaks(t)], type(e).__name__
    assert not [r for r in reprs if leaks(r)]
    # logs: message, raw args, exception text
    assert len(caplog.records) > 20
    for record in caplog.records:
        assert not leaks(record.getMessage()), record.getMessage()
        assert not leaks(repr(record.args)) and not leaks(str(record.msg))
        assert not leaks(record.exc_text or "")
    assert not leaks(caplog.text)
    # the journal, WAL included
    names, data = journal_files(journal)
    assert "journal.sqlite" in names and b"journaled a" in data
    for secret in SECRETS:
        assert secret.encode() not in data
    # the wire: the key goes to the API origin only; the CDN saw no Authorization header
    api = urlsplit(emu.base_url).netloc
    with_auth = [urlsplit(url).netloc for url, headers in wire if "Authorization" in headers]
    assert with_auth and set(with_auth) == {api}
    cdn = [url for url, _ in wire if urlsplit(url).netloc != api]
    assert cdn and all(KEY not in url for url, _ in wire)
    assert emu.stats.cdn_requests > 0 and emu.stats.cdn_auth_rejected == 0


@pytest.mark.nanobanana_emulator(api_key=KEY, variants=Variants(foreign_urls=True))
async def test_foreign_task_urls_never_get_the_key(
    nanobanana_emulator: Emulator, wire: list[tuple[str, dict[str, str]]]
) -> None:
    emu = nanobanana_emulator
    async with client_for(emu) as client:
        result = await client.generate("foreign", timeout=10)
        job = await client.submit("foreign two")
        await job.status()
        await job.cancel()
    assert result.images
    api = urlsplit(emu.base_url).netloc
    assert {urlsplit(url).netloc for url, h in wire if "Authorization" in h} == {api}
    assert len(wire) >= 5


@pytest.mark.nanobanana_emulator(api_key=KEY)
async def test_key_file_is_read_once(
    nanobanana_emulator: Emulator, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = nanobanana_emulator
    path = tmp_path / "key.txt"
    path.write_text(KEY + "\n")
    reads: list[pathlib.Path] = []
    original = pathlib.Path.read_text

    def counting(self: pathlib.Path, *args: Any, **kw: Any) -> str:
        if self == path:
            reads.append(self)
        return original(self, *args, **kw)

    monkeypatch.setattr(pathlib.Path, "read_text", counting)
    client = Client(api_key_file=path, base_url=emu.base_url, poll=FAST_POLL)
    assert len(reads) == 1
    path.write_text(WRONG_KEY)  # a later change is not picked up: the key in use stays put
    async with client:
        with anyio.fail_after(10):
            result = await client.generate("from a key file", timeout=5)
    assert result.images and len(reads) == 1
    assert not leaks(repr(client)) and emu.stats.creates == 1
