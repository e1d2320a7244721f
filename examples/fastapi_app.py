"""A FastAPI backend: one shared Client for the whole app, opened and closed by the lifespan.

    NANOBANANA_API_KEY=... uvicorn examples.fastapi_app:app

``NANOBANANA_BASE_URL`` points it elsewhere (e.g. at ``nanobanana-async emulator``). A request
whose HTTP client disconnects stops waiting, and its task is cancelled on the service.
"""

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

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

T = TypeVar("T")
# How long one HTTP request may wait for its image; the task is cancelled remotely after it.
GENERATE_TIMEOUT = float(os.environ.get("GENERATE_TIMEOUT", "120"))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The key and base URL come from NANOBANANA_API_KEY / NANOBANANA_BASE_URL.
    async with Client() as client:
        app.state.client = client
        yield
    # Leaving the block cancels, on the service, the tasks that requests still wait on.


app = FastAPI(lifespan=lifespan)


class GenerateBody(BaseModel):
    prompt: str
    aspect_ratio: str | None = None
    image_size: str | None = None


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


async def unless_disconnected(request: Request, job: Awaitable[T]) -> T:
    """Await ``job``, but cancel it if the HTTP client goes away first.

    Cancelling ``client.generate`` stops the wait and cancels the task on the service.
    """
    task = asyncio.ensure_future(job)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise HTTPException(499, "client disconnected")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # the remote cancel is sent


@app.post("/generate")
async def generate(body: GenerateBody, request: Request) -> dict[str, object]:
    client: Client = request.app.state.client
    try:
        req = GenerationRequest(
            body.prompt, aspect_ratio=body.aspect_ratio, image_size=body.image_size
        )
        result = await unless_disconnected(request, client.generate(req, timeout=GENERATE_TIMEOUT))
    except NanoBananaError as exc:
        raise HTTPException(http_status(exc), str(exc)) from None
    return {
        "request_id": result.request_id,
        "images": [image.url for image in result.images],
        "text": result.text,
    }


@app.post("/generate/events")
async def generate_events(body: GenerateBody, request: Request) -> StreamingResponse:
    """The task's progress as server-sent events (``status`` ...), then ``result`` or ``error``.

    A browser reads it with ``fetch`` + a stream reader (or EventSource on a GET variant).
    The updates come from the SDK's own polls: following a task costs no extra requests.
    """
    client: Client = request.app.state.client
    try:
        req = GenerationRequest(
            body.prompt, aspect_ratio=body.aspect_ratio, image_size=body.image_size
        )
        job = await client.submit(req)
    except NanoBananaError as exc:
        raise HTTPException(http_status(exc), str(exc)) from None

    def event(name: str, data: dict[str, object]) -> str:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n"

    async def stream() -> AsyncIterator[str]:
        async with job.updates() as updates:
            async for status in updates:
                yield event(
                    "status",
                    {
                        "state": status.state.value,
                        "queue_position": status.queue_position,
                        "progress": status.progress,
                        "logs": [log.message for log in status.logs],
                    },
                )
        try:
            result = await job.result(timeout=GENERATE_TIMEOUT)
        except NanoBananaError as exc:
            yield event("error", {"status": http_status(exc), "message": str(exc)})
            return
        images = [image.url for image in result.images]
        yield event("result", {"request_id": result.request_id, "images": images})

    return StreamingResponse(stream(), media_type="text/event-stream")


@app.get("/health")
async def health(request: Request) -> dict[str, object]:
    client: Client = request.app.state.client
    return {"status": "ok", "in_flight": client.stats.in_flight}
