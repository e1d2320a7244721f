"""An opt-in fal-compatible front (TLS, fal's route layout) over the emulator's own queue.

It shares the engine, stats, auth, rate limit and fault stream of the main API, so a peer client
that speaks fal's queue protocol (such as PyPI's ``fal-client``) can be benchmarked on the same
tasks and counters as the SDK. Routes (``{app}`` is ``{owner}/{alias}``, e.g.
``fal-ai/nano-banana-pro``; the alias, ``-`` read as ``_``, must be a configured model):

- ``POST /{app}`` → ``{"request_id", "response_url", "status_url", "cancel_url", ...}``
- ``GET /{app}/requests/{id}/status`` → 202 while pending, 200 once COMPLETED
- ``GET /{app}/requests/{id}`` → ``{"images": [...], "description"}`` (400 + ``detail`` on failure)
- ``PUT /{app}/requests/{id}/cancel``
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import wire
from .app import Service
from .engine import Task
from .images import dimensions
from .validate import validate_create

if TYPE_CHECKING:
    from .server import Emulator

__all__ = ["FalFront", "server_ssl_context", "start_fal_front", "write_tls_files"]

_APP = "/{owner}/{alias}"
_TASK = _APP + "/requests/{rid}"


class FalFront:
    """Request handlers in fal's queue layout over an existing emulator `Service`."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.url = ""  # https://host:port, set once the site is bound

    def app(self) -> web.Application:
        """The aiohttp application with fal's queue routes."""
        app = web.Application()
        # The router tries resources in order: the hot polling route goes first.
        app.router.add_get(_TASK + "/status", self.status)
        app.router.add_post(_APP, self.create)
        app.router.add_get(_TASK, self.result)
        app.router.add_put(_TASK + "/cancel", self.cancel)
        return app

    # -- shared preamble -------------------------------------------------------------------------

    def _model(self, request: web.Request) -> str | None:
        model = request.match_info["alias"].replace("-", "_")
        return model if model in self.service.config.models else None

    async def _enter(
        self, request: web.Request, route: str
    ) -> tuple[web.StreamResponse | None, str | None, str, str]:
        """Admission as on the main API: (early reply or None, fault, reply id, engine model)."""
        svc = self.service
        # Same counters, key, bucket and fault stream as the main API: one service, two faces.
        early, fault, rid = svc._admit(request, route)
        if early is not None:
            return early, fault, rid, ""
        if fault == "stall":
            await asyncio.sleep(svc.config.faults.stall_seconds)
        elif fault == "reset":
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response(status=500), fault, rid, ""  # never reaches the client
        model = self._model(request)
        if model is None:
            reply = svc._reply(404, wire.detail("Application not found"), rid)
            return svc._finish(reply, fault), fault, rid, ""
        return None, fault, rid, model

    def _lookup(self, request: web.Request, model: str) -> Task | None:
        task = self.service.engine.get(request.match_info["rid"])
        if task is None or task.model != model:
            return None
        return task

    def _task_url(self, request: web.Request, task: Task) -> str:
        info = request.match_info
        return f"{self.url}/{info['owner']}/{info['alias']}/requests/{task.request_id}"

    # -- routes ----------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /{owner}/{alias}: validate, charge a credit, enqueue."""
        early, fault, rid, model = await self._enter(request, "create")
        if early is not None:
            return early
        svc = self.service
        params = validate_create(await request.read())
        if isinstance(params, list):
            return svc._finish(svc._reply(422, {"detail": params}, rid), fault)
        if not svc.engine.spend_credit():
            svc.stats.credits_rejected += 1
            refusal = {"detail": "Insufficient credits", "error_type": "insufficient_credits"}
            return svc._finish(svc._reply(402, refusal, rid), fault)
        task = svc.accept(model, params)
        if fault == "lost_create_response":
            svc.stats.lost_create_ids.append(task.request_id)
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response(status=500)
        url = self._task_url(request, task)
        body = {
            "request_id": task.request_id,
            "response_url": url,
            "status_url": url + "/status",
            "cancel_url": url + "/cancel",
            "queue_position": svc.engine.queue_position(task) if task.state == "IN_QUEUE" else 0,
        }
        return svc._finish(svc._reply(200, body, rid), fault)

    async def status(self, request: web.Request) -> web.StreamResponse:
        """GET /{owner}/{alias}/requests/{id}/status: 202 while pending, 200 when done."""
        early, fault, rid, model = await self._enter(request, "status")
        if early is not None:
            return early
        svc = self.service
        task = self._lookup(request, model)
        if task is None:
            return svc._finish(svc._reply(404, wire.detail(), rid), fault)
        svc.stats.status_polls[task.request_id] += 1
        with_logs = request.query.get("logs", "").lower() in ("1", "true")
        body = _status_body(task, svc, self._task_url(request, task), with_logs)
        return svc._finish(svc._reply(200 if task.done else 202, body, rid), fault)

    async def result(self, request: web.Request) -> web.StreamResponse:
        """GET /{owner}/{alias}/requests/{id}: the result, 202 + status while pending."""
        early, fault, rid, model = await self._enter(request, "result")
        if early is not None:
            return early
        svc = self.service
        task = self._lookup(request, model)
        if task is None:
            return svc._finish(svc._reply(404, wire.detail(), rid), fault)
        svc.stats.result_polls[task.request_id] += 1
        if not task.done:
            body = _status_body(task, svc, self._task_url(request, task), False)
            return svc._finish(svc._reply(202, body, rid), fault)
        if task.error_type is not None:
            # fal-client reads `detail` as the message and `error_type` from an error body.
            body = {"detail": task.error, "error_type": task.error_type}
            return svc._finish(svc._reply(400, body, rid), fault)
        images: list[dict[str, Any]] = []
        if task.has_image:
            width, height = dimensions(task.image_size, task.aspect_ratio)
            images.append(
                {
                    "url": f"{svc.cdn_url}/files/{task.request_id}/0.png",
                    "content_type": "image/png",
                    "file_name": f"{task.request_id}_0.png",
                    "file_size": len(await svc._png(task)),
                    "width": width,
                    "height": height,
                }
            )
        description = f"Here is your image for: {task.prompt[:80]}"
        if task.no_image:
            description = wire.REFUSAL_TEXT
        body = {"images": images, "description": description if "Text" in task.modalities else ""}
        return svc._finish(svc._reply(200, body, rid), fault)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        """PUT /{owner}/{alias}/requests/{id}/cancel."""
        early, fault, rid, model = await self._enter(request, "cancel")
        if early is not None:
            return early
        svc = self.service
        return svc._finish(svc.cancel_reply(self._lookup(request, model), rid), fault)


def _status_body(task: Task, svc: Service, url: str, with_logs: bool) -> dict[str, Any]:
    """fal's status document: IN_QUEUE needs `queue_position`, the others a `logs` key."""
    body: dict[str, Any] = {
        "status": task.state,
        "request_id": task.request_id,
        "response_url": url,
        "status_url": url + "/status",
        "cancel_url": url + "/cancel",
    }
    if task.state == "IN_QUEUE":
        body["queue_position"] = svc.engine.queue_position(task)
    elif task.state == "IN_PROGRESS":
        # fal sends logs only when asked (`?logs=1`); fal-client's get() never asks.
        logs = wire.status_body(task, svc.engine, svc.config.variants, "")["logs"]
        body["logs"] = logs if with_logs else None
    else:
        body["logs"] = None
        body["metrics"] = {"inference_time": round(task.inference_time or 0.0, 4)}
        if task.error_type is not None:
            body["error"] = task.error
            body["error_type"] = task.error_type
    return body


def write_tls_files(cert_dir: str | Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """Make a throwaway CA and a server certificate for `host` with trustme: (ca, cert, key)."""
    import trustme  # a dev/bench dependency, needed only when the front is asked for

    out = Path(cert_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    identities = {host, "127.0.0.1", "localhost"}
    server = ca.issue_cert(*sorted(identities))
    ca_path, cert_path, key_path = out / "ca.pem", out / "server.pem", out / "server.key"
    ca.cert_pem.write_to_path(str(ca_path))
    server.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    return ca_path, cert_path, key_path


def server_ssl_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server-side TLS context for the front."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def start_fal_front(
    emulator: Emulator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None,
) -> tuple[web.AppRunner, int]:
    """Serve the fal front for a started `emulator`; the caller cleans up the returned runner."""
    # Emulator keeps its Service private and exposes no hook; sharing that object is the point.
    front = FalFront(emulator._service)
    # access_log=None: logging every poll would cost more than answering it.
    runner = web.AppRunner(front.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1])
    scheme = "http" if ssl_context is None else "https"
    shown = f"[{host}]" if ":" in host else host
    front.url = f"{scheme}://{shown}:{bound}"
    return runner, bound
