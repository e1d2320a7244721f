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
