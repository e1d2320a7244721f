"""The HTTP face of the emulator: API routes with auth, rate limit and faults; the CDN origin.

Result route of a task that stopped without success (a task fault or a cancellation): HTTP 400 with
`{"request_id", "status": "COMPLETED", "error", "error_type"}`; API.md leaves this undocumented and
tells clients to treat any body carrying `error`/`error_type` as the failure. The
`failure_with_outputs` variant answers 200 instead and adds `"outputs": []`.

A revoked key (`Service.revoke_key`, or `revoke_after_creates`) gets the gateway's 401 on every API
route; `/_emulator/*` and the CDN are not behind the key. Control routes for a standalone emulator:
`POST /_emulator/credits {"add": N}` and `POST /_emulator/key {"revoked": true|false}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from typing import Any

from aiohttp import web

from . import wire
from .config import EmulatorConfig
from .engine import Engine, Task
from .gate import FaultPicker, TokenBuckets
from .images import ImageStore, dimensions, image_key
from .stats import EmulatorStats
from .validate import CreateParams, validate_create

__all__ = ["Service"]

_JSON = "application/json"
_CHUNK = 64 * 1024
_ERROR_FAULTS = {"error_500": 500, "error_502": 502, "error_503": 503, "error_504": 504}
_ERROR_TEXT = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_REVOKED_MESSAGE = "API key has been revoked"
_CREDITS_BODY = {
    "status": {"code": 402, "message": "Insufficient credits", "error_code": 40201},
    "data": None,
}


def _dump(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class Service:
    """Request handlers over one engine; `config` is swapped in place by `Emulator.reconfigure`."""

    def __init__(self, config: EmulatorConfig, stats: EmulatorStats) -> None:
        self.config = config
        self.stats = stats
        self.engine = Engine(config, stats)
        self.engine.on_complete = self._on_complete
        self.images = ImageStore()
        self.base_url = ""
        self.cdn_url = ""
        self._buckets = TokenBuckets()
        self._faults = FaultPicker(config.seed)
        self._reply_counter = 0
        self._auth_ok = self._auth_values(config.api_key)
        self.key_revoked = False
        # Creates still to accept before `revoke_after_creates` revokes the key (None: not armed).
        self._revoke_countdown = config.revoke_after_creates

    def reconfigure(self, config: EmulatorConfig) -> None:
        """Adopt a new configuration for every later request."""
        if config.revoke_after_creates != self.config.revoke_after_creates:
            self._revoke_countdown = config.revoke_after_creates
        self.config = config
        self._auth_ok = self._auth_values(config.api_key)
        self.engine.reconfigure(config)

    def arm_revocation(self) -> None:
        """Start counting `revoke_after_creates` afresh (it fires once per arming)."""
        self._revoke_countdown = self.config.revoke_after_creates

    def revoke_key(self) -> None:
        """From now on every API route answers 401 to the (otherwise valid) key."""
        self.key_revoked = True

    def restore_key(self) -> None:
        """Accept the key again (`revoke_after_creates` fires once, it does not re-revoke)."""
        self.key_revoked = False

    @staticmethod
    def _auth_values(key: str) -> frozenset[str]:
        return frozenset({f"Bearer {key}", f"Key {key}"})

    # -- applications ----------------------------------------------------------------------------

    def api_app(self) -> web.Application:
        """The API origin: queue routes under /model plus the unauthenticated /_emulator/stats."""
        app = web.Application()
        q = "/model/v1/queue/{model}"
        # The router tries resources in order: the hot polling route goes first.
        app.router.add_get(q + "/requests/{rid}/status", self.status)
        app.router.add_post(q, self.create)
        app.router.add_get(q + "/requests/{rid}/response", self.result)
        app.router.add_put(q + "/requests/{rid}/cancel", self.cancel)
        app.router.add_get("/_emulator/stats", self.stats_route)
        app.router.add_post("/_emulator/credits", self.credits_route)
        app.router.add_post("/_emulator/key", self.key_route)
        return app

    def cdn_app(self) -> web.Application:
        """The CDN origin serving output files without (and refusing) authorization."""
        app = web.Application()
        app.router.add_get("/files/{rid}/{name}", self.cdn_file)
        return app

    # -- shared preamble -------------------------------------------------------------------------

    def _reply(self, status: int, body: Any, rid: str, **headers: str) -> web.Response:
        headers["X-Request-Id"] = rid
        headers["Content-Type"] = _JSON
        return web.Response(status=status, body=_dump(body), headers=headers)

    def _admit(
        self, request: web.Request, route: str
    ) -> tuple[web.Response | None, str | None, str]:
        """Count, authenticate, rate-limit and draw a fault: (early reply, fault, reply id)."""
        stats = self.stats
        stats.requests += 1
        self._reply_counter += 1
        rid = f"req_{self.config.seed:x}_{self._reply_counter:010x}"
        cfg = self.config
        auth = request.headers.get("Authorization")
        if auth not in self._auth_ok:
            msg = "Missing Authorization header" if auth is None else "Invalid API key"
            return self._reply(401, wire.gateway_error("UNAUTHORIZED", msg, rid), rid), None, rid
        if self.key_revoked:
            body = wire.gateway_error("UNAUTHORIZED", _REVOKED_MESSAGE, rid)
            return self._reply(401, body, rid), None, rid
        if cfg.rate_limit is not None:
            wait = self._buckets.take(cfg.api_key, cfg.rate_limit, cfg.rate_burst)
            if wait > 0:
                return self._too_many(rid, wait), None, rid
        fault = self._faults.pick(cfg.faults, route)
        if fault is None:
            return None, None, rid
        stats.faults[fault] += 1
        status = _ERROR_FAULTS.get(fault)
        if status is not None:
            body = {"detail": _ERROR_TEXT[status]}
            if status == 503:
                headers = _retry_headers(cfg.faults.retry_after_seconds)
                return self._reply(status, body, rid, **headers), fault, rid
            return self._reply(status, body, rid), fault, rid
        if fault == "rate_limited_429":
            return self._too_many(rid, cfg.faults.retry_after_seconds), fault, rid
        return None, fault, rid

    def accept(self, model: str, params: CreateParams) -> Task:
        """Queue a validated create and count it (also per body, to catch duplicate creates)."""
        task = self.engine.create(
            model,
            prompt=params.prompt,
            image_size=params.image_size,
            aspect_ratio=params.aspect_ratio,
            modalities=params.modalities,
        )
        self.stats.creates += 1
        self.stats.creates_by_body[hashlib.sha256(params.canonical.encode()).hexdigest()] += 1
        if self._revoke_countdown is not None:
            self._revoke_countdown -= 1
            if self._revoke_countdown <= 0:
                self._revoke_countdown = None
                self.revoke_key()  # this create still succeeds; the next request does not
        return task

    def _too_many(self, rid: str, wait: float) -> web.Response:
        self.stats.rate_limited += 1
        body = wire.gateway_error("RATE_LIMIT_EXCEEDED", "Rate limit exceeded", rid)
        return self._reply(429, body, rid, **_retry_headers(wait))

    async def _enter(
        self, request: web.Request, route: str
    ) -> tuple[web.StreamResponse | None, str | None, str]:
        """Everything before the route proper: (early reply or None, fault, reply id)."""
        early, fault, rid = self._admit(request, route)
        if early is not None:
            return early, fault, rid
        if fault == "stall":
            await asyncio.sleep(self.config.faults.stall_seconds)
        elif fault == "reset":
            self._drop(request)
            return web.Response(status=500), fault, rid  # never reaches the client
        if request.match_info["model"] not in self.config.models:
            body = wire.detail("Model not allowed for this user")
            return self._finish(self._reply(403, body, rid), fault), fault, rid
        return None, fault, rid

    @staticmethod
    def _drop(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    def _finish(self, resp: web.Response, fault: str | None) -> web.Response:
        if fault == "malformed_json":
            body = resp.body
            assert isinstance(body, bytes)
            # A cut-off document: valid prefix, invalid JSON, honest content type.
            resp = web.Response(
                status=200, body=body[: max(1, len(body) // 2)], headers=resp.headers
            )
        return resp

    def _lookup(self, request: web.Request) -> Task | None:
        task = self.engine.get(request.match_info["rid"])
        if task is None or task.model != request.match_info["model"]:
            return None
        return task

    # -- API routes ------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/queue/{model}: validate, charge a credit, enqueue."""
        early, fault, rid = await self._enter(request, "create")
        if early is not None:
            return early
        raw = await request.read()
        params = validate_create(raw)
        if isinstance(params, list):
            return self._finish(self._reply(422, {"detail": params}, rid), fault)
        if not self.engine.spend_credit():
            self.stats.credits_rejected += 1
            return self._finish(self._reply(402, _CREDITS_BODY, rid), fault)
        task = self.accept(request.match_info["model"], params)
        if fault == "lost_create_response":
            self.stats.lost_create_ids.append(task.request_id)
            self._drop(request)
            return web.Response(status=500)
        position = self.engine.queue_position(task) if task.state == "IN_QUEUE" else 0
        body = wire.create_body(task, position, self.config.variants, self.base_url)
        return self._finish(self._reply(200, body, rid), fault)

    async def status(self, request: web.Request) -> web.StreamResponse:
        """GET .../requests/{id}/status."""
        early, fault, rid = await self._enter(request, "status")
        if early is not None:
            return early
        task = self._lookup(request)
        if task is None:
            return self._finish(self._reply(404, wire.detail(), rid), fault)
        self.stats.status_polls[task.request_id] += 1
        v = self.config.variants
        body = wire.status_body(task, self.engine, v, self.base_url)
        code = 202 if v.status_202 and not task.done else 200
        return self._finish(self._reply(code, body, rid), fault)

    async def result(self, request: web.Request) -> web.StreamResponse:
        """GET .../requests/{id}/response: 202 while pending, 200 outputs, 400 (or 200) failure."""
        early, fault, rid = await self._enter(request, "result")
        if early is not None:
            return early
        task = self._lookup(request)
        if task is None:
            return self._finish(self._reply(404, wire.detail(), rid), fault)
        self.stats.result_polls[task.request_id] += 1
        v = self.config.variants
        if not task.done:
            body = wire.status_body(task, self.engine, v, self.base_url)
            code = 200 if v.no_202_result else 202
            return self._finish(self._reply(code, body, rid), fault)
        if task.error_type is not None:
            code = 200 if v.failure_with_outputs else 400
            return self._finish(self._reply(code, wire.failure_body(task, v), rid), fault)
        size = len(await self._png(task)) if task.has_image else None
        body = wire.success_body(task, self.cdn_url, size)
        return self._finish(self._reply(200, body, rid), fault)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        """PUT .../requests/{id}/cancel."""
        early, fault, rid = await self._enter(request, "cancel")
        if early is not None:
            return early
        return self._finish(self.cancel_reply(self._lookup(request), rid), fault)

    def cancel_reply(self, task: Task | None, rid: str) -> web.Response:
        """Cancel ``task`` (if any) and answer 202, 400 ALREADY_COMPLETED or 404 NOT_FOUND."""
        outcome = "unknown" if task is None else self.engine.cancel(task.request_id)
        if outcome == "accepted":
            self.stats.cancels += 1
            return self._reply(202, {"status": "CANCELLATION_REQUESTED"}, rid)
        if outcome == "completed":
            return self._reply(400, {"status": "ALREADY_COMPLETED"}, rid)
        return self._reply(404, {"status": "NOT_FOUND"}, rid)

    async def stats_route(self, request: web.Request) -> web.StreamResponse:
        """GET /_emulator/stats: the counters as JSON (`?tasks=1` adds per-task records)."""
        body = self.stats.to_dict(tasks=request.query.get("tasks") in ("1", "true"))
        body["queued"] = self.engine.queued
        body["running"] = self.engine.running
        body["credits_left"] = self.engine.credits_left
        body["key_revoked"] = self.key_revoked
        return web.Response(body=_dump(body), content_type=_JSON)

    async def credits_route(self, request: web.Request) -> web.StreamResponse:
        """POST /_emulator/credits `{"add": N}`: top up; answers `{"credits_left": ...}`."""
        n = (await _control_body(request)).get("add")
        if not isinstance(n, int) or isinstance(n, bool):
            return _control_error('expected {"add": N} with an integer N')
        try:
            left = self.engine.add_credits(n)
        except ValueError as exc:
            return _control_error(str(exc))
        return web.Response(body=_dump({"credits_left": left}), content_type=_JSON)

    async def key_route(self, request: web.Request) -> web.StreamResponse:
        """POST /_emulator/key `{"revoked": true|false}`: revoke or restore the key."""
        revoked = (await _control_body(request)).get("revoked")
        if not isinstance(revoked, bool):
            return _control_error('expected {"revoked": true} or {"revoked": false}')
        if revoked:
            self.revoke_key()
        else:
            self.restore_key()
        return web.Response(body=_dump({"key_revoked": self.key_revoked}), content_type=_JSON)

    # -- outputs ---------------------------------------------------------------------------------

    def _key(self, task: Task) -> tuple[str, int, int]:
        width, height = dimensions(task.image_size, task.aspect_ratio)
        return image_key(task.prompt, width, height)

    def _on_complete(self, task: Task) -> None:
        # Encode at completion, in a thread, so the result route answers without waiting.
        if task.has_image:
            self.images.prepare(self._key(task))

    async def _png(self, task: Task) -> bytes:
        return await self.images.get(self._key(task))

    async def cdn_file(self, request: web.Request) -> web.StreamResponse:
        """GET /files/{id}/0.png on the CDN origin; 400 if an Authorization header came along."""
        self.stats.cdn_requests += 1
        if "Authorization" in request.headers:
            self.stats.cdn_auth_rejected += 1
            body = {"detail": "Authorization header not allowed"}
            return web.Response(status=400, body=_dump(body), content_type=_JSON)
        task = self.engine.get(request.match_info["rid"])
        ok = task is not None and task.has_image and request.match_info["name"] == "0.png"
        if task is None or not ok:
            return web.Response(
                status=404, body=_dump(wire.detail("Not found")), content_type=_JSON
            )
        data = await self._png(task)
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = len(data)
        await resp.prepare(request)
        view = memoryview(data)
        for start in range(0, len(data), _CHUNK):
            await resp.write(view[start : start + _CHUNK])
        await resp.write_eof()
        return resp


async def _control_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _control_error(message: str) -> web.Response:
    return web.Response(status=400, body=_dump(wire.detail(message)), content_type=_JSON)


def _retry_headers(wait: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds (as HTTP has it) plus the exact ``retry-after-ms``."""
    return {
        "Retry-After": str(max(1, math.ceil(wait))),
        "retry-after-ms": str(max(1, round(wait * 1000))),
    }
