"""The model's shortcuts for event-loop cost decide exactly what the plain computation decides.

``_Fit.evaluate`` remembers its results per fit (plan searches and K calibrations ask for the
same schedule again), and the per-poll paths use ``_clip`` instead of ``min``/``max``.
"""

from __future__ import annotations

import math
import random

import pytest

from nanobanana_async._polling import _model
from nanobanana_async._polling._model import CompletionModel


def _model_fed(seed: int) -> CompletionModel:
    rng = random.Random(seed)
    model = CompletionModel(min_samples=20)
    now = 0.0
    for i in range(300):
        duration = rng.lognormvariate(math.log(20.0), 0.5) * (3.0 if i >= 200 else 1.0)
        after = max(0.0, duration - rng.uniform(0.0, 2.0))
        now += rng.uniform(0.0, 1.0)
        model.observe_interval(after, duration, size_class=rng.choice(("1K", "4K")), now=now)
    return model


def _decisions(model: CompletionModel) -> list[float]:
    out: list[float] = []
    for target, lo, hi in ((1.0, 0.25, 10.0), (0.25, 0.0625, 2.5), (3.0, 0.0, math.inf)):
        k = model.k_for_target_delay(target, min_interval=lo, max_interval=hi)
        out.append(k)
        for size_class in ("1K", "4K", None):
            for last in (0.0, 1.0, 7.0, 30.0, 200.0):
                out.append(
                    model.next_poll(
                        last, k=k, min_interval=lo, max_interval=hi, size_class=size_class
                    )
                )
    return out


@pytest.mark.parametrize("seed", range(3))
def test_remembered_evaluations_decide_like_computed_ones(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    remembered = _decisions(_model_fed(seed))
    assert _model_fed(seed).changes > 0  # the 3x step was caught: fits after a change too
    monkeypatch.setattr(_model._Fit, "evaluate", _model._Fit._evaluate)
    assert _decisions(_model_fed(seed)) == remembered


def test_remembered_evaluations_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_model, "_EVALUATED_KEPT", 8)
    fit = _model._Fit(math.log(5.0), 0.5)
    for i in range(30):
        k = 1.0 + 0.1 * i
        plan = fit.plan(k, 0.0625, 2.5)
        assert fit.evaluate(k, plan, 0.0625) == fit._evaluate(k, plan, 0.0625)
        assert len(fit._evaluated) <= 8


@pytest.mark.parametrize(
    ("x", "lo", "hi"),
    [(0.5, 0.0, 1.0), (-1.0, 0.0, 1.0), (2.0, 0.0, 1.0), (0.5, 1.0, 0.25), (1.0, 1.0, 1.0)],
)
def test_clip_is_min_of_max(x: float, lo: float, hi: float) -> None:
    assert _model._clip(x, lo, hi) == min(max(x, lo), hi)
