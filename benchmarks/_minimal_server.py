"""A minimal queue service for measuring client overhead: every task is done at create time.

It answers the create with an id and the response route with a small finished result, with
as little work per request as aiohttp allows, so that the client (not this server) is what a
benchmark measures. Run in its own process: ``python -m benchmarks._minimal_server`` prints
``base_url=http://127.0.0.1:PORT/model`` on its first line. With ``--pending N`` the response
route first answers 202 "in progress" N times per task: what a poll costs while a task runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Hashable
from typing import TypeVar

from aiohttp import web

Key = TypeVar("Key", bound=Hashable)

_ids = itertools.count()
_RESULT_HEAD = b'{"request_id":"'
_RESULT_TAIL = json.dumps(
    {"outputs": [{"type": "image", "url": "https://cdn.example/x.png"}], "metadata": {}}
).encode()[1:]


async def create(request: web.Request) -> web.Response:
    await request.read()
    rid = f"r{next(_ids)}"
    return web.Response(body=b'{"request_id":"%s"}' % rid.encode(), content_type="application/json")


_PENDING = 0  # 202 answers per task before its result (``--pending``)
_polls: dict[bytes, int] = {}  # pending answers given so far, per task still running


def still_pending(polls: dict[Key, int], key: Key, pending: int) -> bool:
    """Count one poll of ``key``: True for its first ``pending``; then its count is dropped."""
    seen = polls.get(key, 0)
    if seen < pending:
        polls[key] = seen + 1
        return True
    polls.pop(key, None)
    return False


async def response(request: web.Request) -> web.Response:
    rid = request.match_info["rid"].encode()
    if _PENDING and still_pending(_polls, rid, _PENDING):
        body = b'{"status":"IN_PROGRESS","request_id":"%s"}' % rid
        return web.Response(body=body, status=202, content_type="application/json")
    body = _RESULT_HEAD + rid + b'",' + _RESULT_TAIL
    return web.Response(body=body, content_type="application/json")


async def cancel(request: web.Request) -> web.Response:
    return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)


def app() -> web.Application:
    """The four routes a task needs (status answers like a finished task)."""
    application = web.Application()
    prefix = "/model/v1/queue/{model}"
    application.router.add_post(prefix, create)
    application.router.add_get(prefix + "/requests/{rid}/response", response)
    application.router.add_get(prefix + "/requests/{rid}/status", response)
    application.router.add_put(prefix + "/requests/{rid}/cancel", cancel)
    return application


async def _serve() -> None:
    runner = web.AppRunner(app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"base_url=http://127.0.0.1:{port}/model api_key=minimal", flush=True)
    import asyncio

    await asyncio.Event().wait()


if __name__ == "__main__":
    import asyncio

    parser = argparse.ArgumentParser(prog="benchmarks._minimal_server")
    parser.add_argument("--pending", type=int, default=0, help="202 answers per task first")
    _PENDING = parser.parse_args().pending
    try:
        asyncio.run(_serve())
    except KeyboardInterrupt:
        sys.exit(0)
