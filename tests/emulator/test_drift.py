"""Service-time drift: a step change in the emulator's latency at a time after its start."""

from __future__ import annotations

import random

import anyio
import pytest

from nanobanana_async.emulator import EmulatorConfig, EmulatorStats, ServiceTime
from nanobanana_async.emulator.engine import Engine

pytestmark = pytest.mark.anyio


def test_parse_and_sample_a_step_change() -> None:
    spec = ServiceTime.parse("lognormal:20,0.5@600*3")
    assert spec == ServiceTime.lognormal(20.0, 0.5).drifting(at=600.0, factor=3.0)
    assert ServiceTime.parse("fixed:2") == ServiceTime.fixed(2.0)  # no drift: as before
    step = ServiceTime.fixed(2.0).drifting(at=10.0, factor=3.0)
    rng = random.Random(0)
    assert step.sample(rng) == 2.0
    assert step.sample(rng, 9.99) == 2.0
    assert step.sample(rng, 10.0) == 6.0
    # The same draws with and without drift before the step: the stream is not shifted.
    a, b = random.Random(5), random.Random(5)
    drifting = ServiceTime.lognormal(20.0, 0.5).drifting(at=1.0, factor=0.5)
    plain = ServiceTime.lognormal(20.0, 0.5)
    assert [drifting.sample(a, 0.5) for _ in range(3)] == [plain.sample(b) for _ in range(3)]
    assert drifting.sample(a, 2.0) == pytest.approx(0.5 * plain.sample(b))


@pytest.mark.parametrize(
    "text", ["lognormal:20,0.5@600", "lognormal:20,0.5@x*3", "fixed:2@1*y", "gamma:1@1*2"]
)
def test_bad_drift_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad service time"):
        ServiceTime.parse(text)


async def test_tasks_created_after_the_step_take_longer() -> None:
    # 1 s of service at a 1/100 time scale; the step (x3) comes 5 unscaled seconds = 50 ms in.
    config = EmulatorConfig(
        service_time=ServiceTime.fixed(1.0).drifting(at=5.0, factor=3.0), time_scale=0.01
    )
    engine = Engine(config, EmulatorStats())
    try:
        before = engine.create("nano_banana_pro", prompt="before")
        await anyio.sleep(0.06)
        after = engine.create("nano_banana_pro", prompt="after", image_size="4K")
    finally:
        engine.close()
    assert before.service_time == pytest.approx(0.01)
    assert after.service_time == pytest.approx(0.03 * 2.5)  # the size factor still applies
