"""Network settings: proxy, trust_env, ssl, headers, connector; loopback only.

A forward proxy written here (CONNECT tunnels and absolute-URI requests) records every request
head it reads; the emulator's two origins are served here too, the API over TLS with a trustme
CA, each recording the headers it receives.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
import pytest
from aiohttp import web

from nanobanana_async import Client, ConnectError, ValidationError
from nanobanana_async.download import Downloader
from nanobanana_async.emulator import Emulator, EmulatorConfig
from nanobanana_async.testing import FAST_DEFAULTS

from ..helpers import client_for

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


# -- a forward proxy ------------------------------------------------------------------------


class ForwardProxy:
    """CONNECT tunnels and plain absolute-URI requests; records what it can read."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.clear = bytearray()  # every byte read outside a tunnel (heads and plain bodies)
        self.tunnelled = bytearray()  # client-to-server bytes inside CONNECT tunnels
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.requests]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.clear += head
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            self.requests.append((method, target, headers))
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                self._writers.add(up_writer)
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await asyncio.gather(
                    self._pipe(reader, up_writer, self.tunnelled),
                    self._pipe(up_reader, writer, None),
                )
                return
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.clear += body
            url = urlsplit(target)
            assert url.hostname and url.port, target  # absolute-form: scheme://host:port/path
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
            self._writers.add(up_writer)
            path = url.path + (f"?{url.query}" if url.query else "")
            kept = [
                f"{name}: {value}"
                for name, value in headers.items()
                if not name.startswith("proxy-") and name != "connection"
            ]
            forwarded = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close"])
            up_writer.write(forwarded.encode("latin-1") + b"\r\n\r\n" + body)
            await up_writer.drain()
            writer.write(await up_reader.read())  # until the server closes: one exchange
            await writer.drain()
            up_writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray | None
    ) -> None:
        try:
            while data := await reader.read(65536):
                if record is not None:
                    record += data
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


# -- the emulator's origins, served here ----------------------------------------------------


class Origins:
    """The emulator's API (over TLS unless ``tls=False``) and CDN; both record request headers."""

    def __init__(self, ca: Any, *, api_host: str, cdn_host: str = "127.0.0.1", tls: bool = True):
        self.emulator = Emulator(EmulatorConfig(**FAST_DEFAULTS))
        self.api_seen: list[dict[str, str]] = []
        self.cdn_seen: list[dict[str, str]] = []
        self._ca = ca
        self._api_host = api_host
        self._cdn_host = cdn_host
        self._tls = tls
        self.base_url = ""

    @property
    def api_key(self) -> str:
        return self.emulator.api_key

    async def _serve(
        self, app: web.Application, seen: list[dict[str, str]], context: ssl.SSLContext | None
    ) -> int:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            # A header sent twice shows as its values joined: tests can tell.
            seen.append({k.lower(): ", ".join(request.headers.getall(k)) for k in request.headers})
            response: web.StreamResponse = await handler(request)
            return response

        app.middlewares.append(record)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
        await runner.setup()
        self.emulator._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        return int(runner.addresses[0][1])

    async def __aenter__(self) -> Origins:
        service = self.emulator._service
        context = None
        if self._tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        api_port = await self._serve(service.api_app(), self.api_seen, context)
        cdn_port = await self._serve(service.cdn_app(), self.cdn_seen, None)
        scheme = "https" if self._tls else "http"
        self.base_url = f"{scheme}://{self._api_host}:{api_port}/model"
        service.base_url = self.emulator.base_url = self.base_url
        service.cdn_url = self.emulator.cdn_url = f"http://{self._cdn_host}:{cdn_port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.emulator.close()


@pytest.fixture
def ca() -> Any:
    return trustme.CA()


@pytest.fixture
def tls(ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(autouse=True)
def no_ambient_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    async with ForwardProxy() as server:
        yield server


def origins_client(origins: Origins, **kwargs: Any) -> Client:
    return client_for(origins.emulator, **kwargs)  # its base_url is the one served here


async def generate_and_download(client: Client, tmp_path: Path) -> None:
    result = await client.generate("a banana in a proxy", timeout=20)
    files = await Downloader(client, tmp_path).download(result, stem="out")
    assert files and files[0].path.read_bytes().startswith(b"\x89PNG")


def key_in(blob: bytes | bytearray, key: str) -> bool:
    return key.encode() in blob or base64.b64encode(key.encode()) in blob


# -- validation -----------------------------------------------------------------------------

HTTPS = "https://api.example/model"


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"proxy": "socks5://proxy.internal:1080"}, "proxy", "http:// or https://"),
        ({"proxy": "proxy.internal:3128"}, "proxy", "http:// or https://"),
        ({"proxy": "http://"}, "proxy", "http:// or https://"),
        ({"proxy": "http://proxy.internal:3128/path?q=1"}, "proxy", "host and port"),
        ({"proxy": 3128}, "proxy", "http:// or https://"),
        ({"headers": {"Authorization": "Bearer other"}}, "headers", "set by the SDK"),
        ({"headers": {"host": "evil.example"}}, "headers", "set by the SDK"),
        ({"headers": {"Content-Length": "5"}}, "headers", "set by the SDK"),
        ({"headers": {"Proxy-Authorization": "x"}}, "headers", "set by the SDK"),
        ({"headers": {"X-Trace": "a\r\nX-Injected: 1"}}, "headers", "CR, LF"),
        ({"headers": {"X-Trace": 5}}, "headers", "str value"),
        ({"headers": {"bad name": "x"}}, "headers", "header name"),
        ({"headers": ["X-Trace", "1"]}, "headers", "mapping"),
        ({"ssl": "yes"}, "ssl", "ssl.SSLContext, True"),
        ({"ssl": None}, "ssl", "ssl.SSLContext, True"),
        ({"connector": "tcp"}, "connector", "aiohttp.BaseConnector"),
        ({"trust_env": "1"}, "trust_env", "True or False"),
        ({"tracing": "on"}, "tracing", "True or False"),
    ],
)
def test_network_settings_are_validated_before_any_request(
    kwargs: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as info:
        Client("k", base_url=HTTPS, **kwargs)
    assert info.value.field == field
    assert words in str(info.value)


def test_a_header_value_is_never_shown_in_the_error() -> None:
    with pytest.raises(ValidationError) as info:
        Client("k", base_url=HTTPS, headers={"X-Gateway-Key": "s3cret\n"})
    assert "s3cret" not in str(info.value) and "X-Gateway-Key" in str(info.value)


def test_proxy_credentials_are_redacted_in_errors() -> None:
    with pytest.raises(ValidationError) as info:
        Client("k", base_url=HTTPS, proxy="socks5://alice:hunter2@proxy.internal:1080")
    assert "hunter2" not in str(info.value) and "***@proxy.internal" in str(info.value)


def test_a_proxy_with_an_http_api_is_refused() -> None:
    """An http:// API through a proxy would hand it the key in clear: refused, not warned."""
    with pytest.raises(ValidationError) as info:
        Client("k", base_url="http://api.internal/model", proxy="http://proxy.internal:3128")
    assert info.value.field == "proxy" and "in clear" in str(info.value)


async def test_ssl_with_a_user_connector_is_refused(tls: ssl.SSLContext) -> None:
    connector = aiohttp.TCPConnector()
    try:
        with pytest.raises(ValidationError) as info:
            Client("k", base_url=HTTPS, ssl=tls, connector=connector)
        assert info.value.field == "ssl" and "TCPConnector(ssl=" in str(info.value)
    finally:
        await connector.close()


async def test_a_closed_connector_is_refused() -> None:
    connector = aiohttp.TCPConnector()
    await connector.close()
    with pytest.raises(ValidationError, match="connector: is closed"):
        Client("k", base_url=HTTPS, connector=connector)


# -- proxy ----------------------------------------------------------------------------------


# The plain-http download through an authenticating proxy needs aiohttp's proxy_auth (its
# proxy_headers go on CONNECTs only), which aiohttp 3.14 deprecates.
@pytest.mark.filterwarnings("ignore:The 'proxy_auth' parameter:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")
async def test_https_api_through_a_proxy_shows_it_only_a_connect_tunnel(
    ca: Any, tls: ssl.SSLContext, proxy: ForwardProxy, tmp_path: Path
) -> None:
    authed = proxy.url.replace("http://", "http://alice:hunter2@")
    async with Origins(ca, api_host="127.0.0.1") as origins:
        async with origins_client(origins, proxy=authed, ssl=tls) as client:
            await generate_and_download(client, tmp_path)
        api = urlsplit(origins.base_url).netloc
        api_requests = [r for r in proxy.requests if api in r[1]]
        assert api_requests and {m for m, _, _ in api_requests} == {"CONNECT"}
        assert all(target == api for _, target, _ in api_requests)
        # The proxy's own credentials, from the proxy URL, on every request to the proxy...
        expected = "Basic " + base64.b64encode(b"alice:hunter2").decode()
        assert {h.get("proxy-authorization") for _, _, h in proxy.requests} == {expected}
        # ...and never the API key, in any form, in anything the proxy could read.
        assert not any("authorization" in h for _, _, h in proxy.requests)
        assert not key_in(proxy.clear, origins.api_key)
        assert not key_in(proxy.tunnelled, origins.api_key)  # TLS: nothing readable
        # The download (plain http CDN) went through the proxy too, with no key.
        cdn = [r for r in proxy.requests if r[0] == "GET"]
        assert cdn and all(target.startswith(origins.emulator.cdn_url) for _, target, _ in cdn)
        assert len(origins.cdn_seen) == len(cdn)
        assert len(origins.api_seen) >= 2  # create + poll(s), all through the tunnel


async def test_without_proxy_settings_the_environment_is_ignored(
    ca: Any, tls: ssl.SSLContext, proxy: ForwardProxy, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    async with (
        Origins(ca, api_host="127.0.0.1") as origins,
        origins_client(origins, ssl=tls) as client,
    ):
        await generate_and_download(client, tmp_path)
    assert proxy.requests == []


async def test_trust_env_routes_by_https_proxy_and_no_proxy(
    ca: Any, tls: ssl.SSLContext, proxy: ForwardProxy, tmp_path: Path, monkeypatch: Any
) -> None:
    """The API (https://localhost) and the CDN (http://127.0.0.1) are routed separately."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    async with Origins(ca, api_host="localhost") as origins:
        api = urlsplit(origins.base_url).netloc
        # 1. Both through the proxy: the API by CONNECT, the CDN as absolute-URI GETs.
        async with origins_client(origins, trust_env=True, ssl=tls) as client:
            await generate_and_download(client, tmp_path / "1")
        assert {t for m, t, _ in proxy.requests if m == "CONNECT"} == {api}
        gets = [t for m, t, _ in proxy.requests if m == "GET"]
        assert gets and all(t.startswith(origins.emulator.cdn_url) for t in gets)
        assert not key_in(proxy.clear, origins.api_key)
        # 2. NO_PROXY names the API host: the API goes direct, the CDN still through the proxy.
        proxy.requests.clear()
        monkeypatch.setenv("NO_PROXY", "localhost")
        async with origins_client(origins, trust_env=True, ssl=tls) as client:
            await generate_and_download(client, tmp_path / "2")
        assert "CONNECT" not in proxy.methods() and "GET" in proxy.methods()
        # 3. NO_PROXY names the CDN host too: nothing through the proxy.
        proxy.requests.clear()
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        async with origins_client(origins, trust_env=True, ssl=tls) as client:
            await generate_and_download(client, tmp_path / "3")
        assert proxy.requests == []


async def test_trust_env_refuses_an_environment_proxy_for_an_http_api(
    nanobanana_emulator: Emulator, proxy: ForwardProxy, monkeypatch: Any
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    client = client_for(nanobanana_emulator, trust_env=True)
    with pytest.raises(ValidationError) as info:
        async with client:
            pass
    assert info.value.field == "trust_env" and "NO_PROXY" in str(info.value)
    assert proxy.requests == [] and nanobanana_emulator.stats.requests == 0
    # Excluding the API host from proxying makes the same setup work.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with client_for(nanobanana_emulator, trust_env=True) as client:
        await client.generate("a banana", timeout=20)
    assert proxy.requests == []


# -- TLS ------------------------------------------------------------------------------------


async def test_ssl_context_is_used_and_default_verification_refuses_an_unknown_ca(
    ca: Any, tls: ssl.SSLContext, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Origins(ca, api_host="127.0.0.1") as origins:
        async with origins_client(origins) as client:
            with pytest.raises(ConnectError):
                await client.generate("a banana", timeout=20)
        async with origins_client(origins, ssl=tls) as client:
            await generate_and_download(client, tmp_path)
        with caplog.at_level(logging.WARNING, logger="nanobanana_async"):
            async with origins_client(origins, ssl=False) as client:
                await client.generate("a banana", timeout=20)
        assert "verification is off" in caplog.text


# -- headers --------------------------------------------------------------------------------


async def test_custom_headers_reach_the_api_and_never_the_cdn(ca: Any, tmp_path: Path) -> None:
    headers = {
        "X-Request-Source": "thumbnails",
        "X-Gateway-Key": "gw-secret",
        "accept": "*/*",
        "user-agent": "thumbnailer/2.1",
    }
    async with Origins(ca, api_host="127.0.0.1", tls=False) as origins:
        async with origins_client(origins, headers=headers) as client:
            await generate_and_download(client, tmp_path)
        assert origins.api_seen and origins.cdn_seen
        for seen in origins.api_seen:
            assert seen["x-request-source"] == "thumbnails"
            assert seen["x-gateway-key"] == "gw-secret"
            assert seen["accept"] == "*/*"  # replaces the default, not sent twice
            assert seen["user-agent"] == "thumbnailer/2.1"  # likewise
            assert seen["authorization"] == f"Bearer {origins.api_key}"
        for seen in origins.cdn_seen:
            assert not {"x-request-source", "x-gateway-key", "authorization"} & seen.keys()
            assert seen["user-agent"].startswith("nanobanana-async/")


# -- connector ------------------------------------------------------------------------------


class CountingConnector(aiohttp.TCPConnector):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connects = 0

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        self.connects += 1
        return await super().connect(req, traces, timeout)


async def test_a_user_connector_is_used_and_left_open(
    nanobanana_emulator: Emulator, tmp_path: Path
) -> None:
    connector = CountingConnector(limit=3)
    try:
        for run in range(2):  # the second client reuses the connector the first left open
            async with client_for(nanobanana_emulator, connector=connector) as client:
                await generate_and_download(client, tmp_path / str(run))
            assert not connector.closed
        assert connector.connects >= 4  # creates, polls and downloads of both clients
    finally:
        await connector.close()


# -- the hot path ---------------------------------------------------------------------------


async def test_nothing_configured_means_nothing_added_per_request(
    nanobanana_emulator: Emulator,
) -> None:
    """Settings are resolved in open(): unconfigured, requests call the session directly."""
    async with client_for(nanobanana_emulator) as client:
        transport = client._runtime.transport
        assert transport._http == transport._session.request  # no proxy wrapper
        assert type(transport).__name__ == "Transport"  # no tracing subclass
        assert transport.download_proxy("https://cdn.example/a.png") == {}
    async with client_for(nanobanana_emulator, trust_env=True) as client:
        transport = client._runtime.transport
        assert transport._http == transport._session.request  # no proxy in this environment


# -- the deploying guide ----------------------------------------------------------------------


def guide_snippets() -> list[str]:
    text = (ROOT / "docs" / "guides" / "deploying.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


@pytest.mark.timeout(90)
async def test_the_deploying_guide_snippets_run(
    nanobanana_emulator: Emulator, ca: Any, tmp_path: Path
) -> None:
    """Every python block of docs/guides/deploying.md, in order, as one program.

    The files the TLS snippets load are made here with trustme; ``main()``, if the page
    defines one, runs against the emulator (key and URL from the environment).
    """
    pytest.importorskip("opentelemetry.sdk")
    blocks = guide_snippets()
    assert len(blocks) >= 4
    ca.cert_pem.write_to_path(str(tmp_path / "corp-ca.pem"))
    cert = ca.issue_cert("client@example.com")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    runner = "\n\nif 'main' in globals():\n    import asyncio\n    asyncio.run(main())\n"
    script = tmp_path / "guide.py"
    script.write_text("\n\n".join(blocks) + runner, encoding="utf-8")
    env = {
        "NANOBANANA_API_KEY": nanobanana_emulator.api_key,
        "NANOBANANA_BASE_URL": nanobanana_emulator.base_url,
        "PATH": "",
    }
    with anyio.fail_after(80):
        proc = await anyio.run_process(
            [sys.executable, str(script)], cwd=tmp_path, env=env, check=False
        )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = proc.stdout.decode()
    assert re.search(r"^generated \S+ 1 image\(s\)$", out, re.M), out[-2000:]
    assert '"POST /v1/queue/{model}"' in out  # the console exporter printed the create's span
    assert nanobanana_emulator.stats.creates == 1
