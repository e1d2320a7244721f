"""Pytest plugin: fixtures that run the local emulator for a test (registered via `pytest11`).

`nanobanana_emulator` yields a running emulator with fast defaults (tasks take about 20 ms); mark a
test with `@pytest.mark.nanobanana_emulator(workers=2, ...)` to change its configuration.
`nanobanana_emulator_factory(**config)` returns an `Emulator` to use as `async with` for custom
setups.
The fixtures need the anyio plugin with the asyncio backend (`@pytest.mark.anyio`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from nanobanana_async.emulator import Emulator, EmulatorConfig, ServiceTime

__all__ = [
    "FAST_DEFAULTS",
    "nanobanana_emulator",
    "nanobanana_emulator_factory",
    "pytest_configure",
]

# 2 s of nominal service time at 1/100 scale: tasks finish in ~20 ms yet still pass through states.
FAST_DEFAULTS: dict[str, Any] = {"service_time": ServiceTime.fixed(2.0), "time_scale": 0.01}


def pytest_configure(config: pytest.Config) -> None:
    """Register the `nanobanana_emulator` marker."""
    config.addinivalue_line(
        "markers",
        "nanobanana_emulator(**config): EmulatorConfig fields for the nanobanana_emulator fixture",
    )


def _make(overrides: dict[str, Any]) -> Emulator:
    return Emulator(EmulatorConfig(**{**FAST_DEFAULTS, **overrides}))


@pytest.fixture
def nanobanana_emulator_factory() -> Callable[..., Emulator]:
    """A factory: `async with nanobanana_emulator_factory(workers=2) as emu:` (fast defaults)."""

    def factory(**config: Any) -> Emulator:
        return _make(config)

    return factory


@pytest.fixture
async def nanobanana_emulator(
    request: pytest.FixtureRequest, anyio_backend: Any
) -> AsyncIterator[Emulator]:
    """A running emulator with fast defaults, overridable by the `nanobanana_emulator` marker."""
    marker = request.node.get_closest_marker("nanobanana_emulator")
    overrides = dict(marker.kwargs) if marker is not None else {}
    async with _make(overrides) as emu:
        yield emu
