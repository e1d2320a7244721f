"""An aiohttp backend: one shared Client for the whole app, opened and closed by ``cleanup_ctx``.

    NANOBANANA_API_KEY=... python examples/aiohttp_app.py

``NANOBANANA_BASE_URL`` points it elsewhere (e.g. at ``nanobanana-async emulator``). With
``handler_cancellation=True`` a request whose HTTP client disconnects is cancelled, and so is its
task on the service.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from aiohttp import web

from nanobanana_async import (
    APIStatusError,
    Client,
    GenerationRequest,
    NanoBananaError,
    TaskCancelledError,
    TaskFailedError,
    TimeoutError,
    ValidationError,
)

CLIENT = web.AppKey("client", Client)
# How long one HTTP request may wait for its image; the task is cancelled remotely after it.
GENERATE_TIMEOUT = float(os.environ.get("GENERATE_TIMEOUT", "120"))


async def client_ctx(app: web.Application) -> AsyncIterator[None]:
    # The key and base URL come from NANOBANANA_API_KEY / NANOBANANA_BASE_URL.
    async with Client() as client:
        app[CLIENT] = client
        yield
    # Leaving the block cancels, on the service, the tasks that requests still wait on.


def http_status(exc: NanoBananaError) -> int:
    """The HTTP status this backend answers for an SDK error."""
    if isinstance(exc, (ValidationError, TaskFailedError)):
        return 422  # bad input, or the model refused it (e.g. CONTENT_BLOCKED)
    if isinstance(exc, TimeoutError):
        return 504
    if isinstance(exc, TaskCancelledError):
        return 409
    if isinstance(exc, APIStatusError) and exc.status_code in (401, 402, 403):
        return 500  # our key or account is wrong: not the caller's fault
    return 502  # the service is unavailable, rate limited, or the create is ambiguous


async def generate(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    body = await request.json()
    try:
        req = GenerationRequest(
            body.get("prompt"),
            aspect_ratio=body.get("aspect_ratio"),
            image_size=body.get("image_size"),
        )
        result = await client.generate(req, timeout=GENERATE_TIMEOUT)
    except NanoBananaError as exc:
        return web.json_response({"detail": str(exc)}, status=http_status(exc))
    return web.json_response(
        {
            "request_id": result.request_id,
            "images": [image.url for image in result.images],
            "text": result.text,
        }
    )


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "in_flight": request.app[CLIENT].stats.in_flight})


def make_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_post("/generate", generate)
    app.router.add_get("/health", health)
    return app


if __name__ == "__main__":
    # handler_cancellation: a disconnect cancels the handler, hence the generate() it awaits.
    web.run_app(make_app(), port=int(os.environ.get("PORT", "8080")), handler_cancellation=True)
