"""TaskEntry's phase machine: ``move`` is the only transition and it follows one table."""

from __future__ import annotations

import itertools

import pytest

from nanobanana_async._polling._entry import Phase, TaskEntry
from nanobanana_async.models import Ticket

ALLOWED = {
    (Phase.QUEUED, Phase.POLLING),
    (Phase.QUEUED, Phase.FINISHED),
    (Phase.QUEUED, Phase.ABANDONED),
    (Phase.POLLING, Phase.QUEUED),
    (Phase.POLLING, Phase.FINISHED),
    (Phase.POLLING, Phase.ABANDONED),
}
ALL_PAIRS = list(itertools.product(Phase, Phase))
FORBIDDEN = [pair for pair in ALL_PAIRS if pair not in ALLOWED]


def entry_in(phase: Phase) -> TaskEntry:
    """A fresh entry brought to ``phase`` through allowed moves only."""
    entry = TaskEntry(Ticket("r1"), "http://api/q/requests/r1/response", 0.0)
    path = {
        Phase.QUEUED: [],
        Phase.POLLING: [Phase.POLLING],
        Phase.FINISHED: [Phase.FINISHED],
        Phase.ABANDONED: [Phase.ABANDONED],
    }[phase]
    for step in path:
        assert entry.move(step)
    assert entry.phase is phase
    return entry


def test_a_new_entry_is_queued_and_live() -> None:
    entry = TaskEntry(Ticket("r1"), "u", 5.0)
    assert entry.phase is Phase.QUEUED
    assert entry.generation == 0
    assert entry.live
    assert not entry.done
    assert entry.request_id == "r1"


def test_the_table_covers_every_pair() -> None:
    assert len(ALLOWED) + len(FORBIDDEN) == len(Phase) ** 2 == 16
    assert len(FORBIDDEN) == 10


@pytest.mark.parametrize(("src", "dst"), sorted(ALLOWED, key=str), ids=str)
def test_allowed_move_changes_phase_and_bumps_generation(src: Phase, dst: Phase) -> None:
    entry = entry_in(src)
    before = entry.generation
    assert entry.move(dst) is True
    assert entry.phase is dst
    assert entry.generation == before + 1


@pytest.mark.parametrize(("src", "dst"), sorted(FORBIDDEN, key=str), ids=str)
def test_forbidden_move_changes_nothing(src: Phase, dst: Phase) -> None:
    entry = entry_in(src)
    before = entry.generation
    assert entry.move(dst) is False
    assert entry.phase is src
    assert entry.generation == before


def test_self_moves_are_forbidden_even_for_live_phases() -> None:
    # QUEUED -> QUEUED would let a stale requeue push the entry twice.
    for phase in (Phase.QUEUED, Phase.POLLING):
        entry = entry_in(phase)
        assert not entry.move(phase)


def test_generation_counts_every_move() -> None:
    entry = entry_in(Phase.QUEUED)
    for n in range(1, 6):
        assert entry.move(Phase.POLLING)
        assert entry.move(Phase.QUEUED)
        assert entry.generation == 2 * n
    assert entry.move(Phase.FINISHED)
    assert entry.generation == 11


@pytest.mark.parametrize("final", [Phase.FINISHED, Phase.ABANDONED])
def test_final_phases_are_final(final: Phase) -> None:
    for via in (Phase.QUEUED, Phase.POLLING):
        entry = entry_in(via)
        assert entry.move(final)
        generation = entry.generation
        for target in Phase:
            assert not entry.move(target)
        assert entry.phase is final
        assert entry.generation == generation
        assert not entry.live


@pytest.mark.parametrize(
    ("phase", "live", "done"),
    [
        (Phase.QUEUED, True, False),
        (Phase.POLLING, True, False),
        (Phase.FINISHED, False, True),
        (Phase.ABANDONED, False, False),
    ],
)
def test_live_and_done(phase: Phase, live: bool, done: bool) -> None:
    entry = entry_in(phase)
    assert entry.live is live
    assert entry.done is done


def test_wanted_follows_waiters_and_listeners() -> None:
    entry = entry_in(Phase.QUEUED)
    assert not entry.wanted
    entry.waiters = 1
    assert entry.wanted
    entry.waiters = 0
    assert not entry.wanted
    entry.listeners.append(lambda e: None)
    assert entry.wanted
    entry.listeners.clear()
    assert not entry.wanted
    # Observers watch progress; they do not keep a task wanted.
    entry.observers.append(lambda e, s: None)
    assert not entry.wanted


def test_entries_do_not_share_listener_lists() -> None:
    a, b = entry_in(Phase.QUEUED), entry_in(Phase.QUEUED)
    a.listeners.append(lambda e: None)
    assert b.listeners == []
    assert a != b  # identity, not value, equality (eq=False): heap ties never compare fields
