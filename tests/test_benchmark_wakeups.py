"""The wake-up probe's grouping of loop wake-ups into poll bursts (``benchmarks/wakeups.py``)."""

from __future__ import annotations

import pytest

from benchmarks import wakeups


def test_wake_ups_closer_than_the_gap_form_one_burst() -> None:
    # (returned at, waited, ready): a timer wake-up (nothing ready) then responses 2 and 12 ms
    # later; a second burst 0.5 s on, started by a socket; a select that did not sleep is no
    # wake-up at all.
    calls = [
        (10.000, 0.40, 0),
        (10.002, 0.002, 3),
        (10.0021, 0.0, 2),
        (10.014, 0.011, 5),
        (10.514, 0.49, 1),
        (10.520, 0.005, 4),
    ]
    b = wakeups._bursts(calls)
    assert b["bursts"] == 2
    assert b["wakes_per_burst"] == pytest.approx(5 / 2)
    assert b["started_by_timer"] == pytest.approx(0.5)
    assert b["median_gap_s"] == pytest.approx(0.5)
    assert b["bursts_per_s"] == pytest.approx(2 / 0.514)


def test_too_few_bursts_say_so() -> None:
    assert wakeups._bursts([(1.0, 0.5, 0), (1.01, 0.001, 2)]) == {"bursts": 1}
