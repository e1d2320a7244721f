"""Shared helpers for tests that run the SDK against the emulator."""

from __future__ import annotations

from typing import Any

from nanobanana_async import Client, PollPolicy, RetryPolicy, Timeout
from nanobanana_async.emulator import Emulator

FAST_POLL = PollPolicy(initial_delay=0.01, factor=1.5, max_interval=0.05, jitter=0.1)
FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


def client_for(emu: Emulator, **kwargs: Any) -> Client:
    """A client pointed at the emulator, with fast polling and retries unless overridden."""
    kwargs.setdefault("poll", FAST_POLL)
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("timeout", Timeout(connect=2, read=2, deadline=10, cancel=2))
    return Client(emu.api_key, base_url=emu.base_url, **kwargs)


def sdk_tasks() -> set[object]:
    """The running asyncio tasks that run SDK code (not the emulator's, not the test's).

    Task wrappers (anyio's) hide the real coroutine, so the chain of awaited coroutines is
    walked and a task counts when any frame on it is in the SDK package.
    """
    import asyncio
    import os

    import nanobanana_async

    root = os.path.dirname(nanobanana_async.__file__)
    emulator = os.path.join(root, "emulator")
    found: set[object] = set()
    for task in asyncio.all_tasks():
        awaited: object = task.get_coro()
        for _ in range(50):
            code = getattr(awaited, "cr_code", None) or getattr(awaited, "ag_code", None)
            if code is None:
                break
            name = code.co_filename
            if name.startswith(root) and not name.startswith(emulator):
                found.add(task)
                break
            awaited = getattr(awaited, "cr_await", None)
    return found
