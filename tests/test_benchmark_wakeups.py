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


def test_burst_cpu_is_split_into_a_fixed_part_and_a_part_per_ready_socket() -> None:
    # Four bursts (each starts with a select that slept >= 30 ms), the last one open: three
    # measured, of 2, 4 and 6 ready sockets costing 1 + 0.5 ms each (thread CPU at select entry).
    calls: list[tuple[float, float, int]] = []
    cpu: list[float] = []
    spent = 0.0
    for start, ready in ((1.0, 2), (2.0, 4), (3.0, 6), (4.0, 1)):
        calls.append((start, 0.5, 0))
        cpu.append(spent)
        for i in range(ready):
            calls.append((start + 0.001 * (i + 1), 0.0005, 1))
            cpu.append(spent + 0.001 + 0.0005 * i)
        spent += 0.001 + 0.0005 * ready
    cost = wakeups._burst_cost(calls, cpu)
    assert cost["fixed_ms"] == pytest.approx(1.0)
    assert cost["per_ready_ms"] == pytest.approx(0.5)
    assert cost["median_ready"] == 4
    assert cost["median_cpu_ms"] == pytest.approx(3.0)


def test_burst_cost_needs_bursts_of_different_sizes() -> None:
    calls = [(float(t), 0.5, 2) for t in range(5)]
    assert wakeups._burst_cost(calls, [0.001 * t for t in range(5)]) == {}
