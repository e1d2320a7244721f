"""The pytest plugin's fixtures and marker."""

from __future__ import annotations

import time

import pytest

from nanobanana_async.emulator import Emulator, TaskFaults, Variants

from .conftest import Api, Factory

pytestmark = pytest.mark.anyio


async def test_fixture_is_running_and_fast(nanobanana_emulator: Emulator, api: Api) -> None:
    assert nanobanana_emulator.base_url.startswith("http://127.0.0.1:")
    assert nanobanana_emulator.base_url.endswith("/model")
    start = time.monotonic()
    rid = await api.create_id()
    await api.wait_done(rid)
    assert time.monotonic() - start < 1.0
    assert nanobanana_emulator.config.time_scale == 0.01


@pytest.mark.nanobanana_emulator(workers=3, api_key="marked")
async def test_marker_configures_the_fixture(nanobanana_emulator: Emulator) -> None:
    assert nanobanana_emulator.config.workers == 3
    assert nanobanana_emulator.api_key == "marked"


async def test_factory_builds_independent_emulators(nanobanana_emulator_factory: Factory) -> None:
    async with (
        nanobanana_emulator_factory(seed=1) as one,
        nanobanana_emulator_factory(seed=2) as two,
    ):
        assert one.base_url != two.base_url
        assert one.cdn_url != two.cdn_url
        assert (one.config.seed, two.config.seed) == (1, 2)
        assert one.config.time_scale == 0.01


@pytest.mark.nanobanana_emulator(
    credits=2,
    revoke_after_creates=5,
    deterministic_ids=True,
    task_faults=TaskFaults(no_image=0.5),
    variants=Variants(failure_with_outputs=True),
)
async def test_marker_takes_the_outcome_knobs(nanobanana_emulator: Emulator) -> None:
    cfg = nanobanana_emulator.config
    assert nanobanana_emulator.credits_left == 2 and cfg.revoke_after_creates == 5
    assert cfg.deterministic_ids and cfg.task_faults.no_image == 0.5
    assert cfg.variants.failure_with_outputs and not nanobanana_emulator.key_revoked
