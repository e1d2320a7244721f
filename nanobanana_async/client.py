"""Deprecated module: import from ``nanobanana_async`` instead (kept as an alias until 1.0)."""

from __future__ import annotations

import warnings
from typing import Any

from . import _client as _new

__all__: list[str] = []


def __getattr__(name: str) -> Any:
    value = getattr(_new, name)
    warnings.warn(
        f"nanobanana_async.client.{name} is deprecated; import it from nanobanana_async",
        DeprecationWarning,
        stacklevel=2,
    )
    return value
