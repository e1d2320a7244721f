"""Small value objects that configure a client: timeouts and resource limits."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUT", "Limits", "Timeout"]


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Timeout:
    """Timeouts in seconds: ``connect`` and ``read`` per attempt, ``deadline`` per call.

    The deadline bounds a whole API call, retries and their waits included. ``cancel`` bounds
    each cancel request sent when a wait is abandoned or the client closes; ``close`` bounds all
    of that cleanup together (cancels go out concurrently; what is not confirmed by then is
    logged and left to finish on the service), so closing never hangs on a stalled service.
    """

    connect: float = attrs.field(default=10.0, validator=_positive)
    read: float = attrs.field(default=30.0, validator=_positive)
    deadline: float = attrs.field(default=120.0, validator=_positive)
    cancel: float = attrs.field(default=5.0, validator=_positive)
    close: float = attrs.field(default=10.0, validator=_positive)


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds on what one client does at once.

    ``max_connections``: the aiohttp connection pool. ``max_concurrent_polls`` and
    ``max_concurrent_creates``: requests of each kind in the air. ``max_response_bytes``: a
    larger API response body is a ``ProtocolError`` (downloads have their own cap).
    ``keepalive_timeout``: seconds an idle pooled connection is kept.
    """

    max_connections: int = attrs.field(default=64, validator=_positive)
    max_concurrent_polls: int = attrs.field(default=32, validator=_positive)
    max_concurrent_creates: int = attrs.field(default=16, validator=_positive)
    max_response_bytes: int = attrs.field(default=8 * 1024 * 1024, validator=_positive)
    keepalive_timeout: float = attrs.field(default=30.0, validator=_positive)


DEFAULT_TIMEOUT = Timeout()
DEFAULT_LIMITS = Limits()
