"""Completion-time streams fed to the model in its unit tests."""

from __future__ import annotations

import math
import random

from nanobanana_async._polling._model import CompletionModel


def steady(
    tasks: int, *, median: float = 20.0, sigma: float = 0.5, seed: int = 4
) -> tuple[CompletionModel, random.Random]:
    """A default model after ``tasks`` lognormal completions, and the generator to go on with."""
    rng = random.Random(seed)
    model = CompletionModel()
    observe(model, rng, tasks, median=median, sigma=sigma)
    return model, rng


def observe(
    model: CompletionModel, rng: random.Random, tasks: int, *, median: float, sigma: float = 0.5
) -> None:
    """``tasks`` more lognormal(``median``, ``sigma``) completions."""
    for _ in range(tasks):
        model.observe(rng.lognormvariate(math.log(median), sigma))
