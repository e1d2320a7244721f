"""Batches with a journal: resume without paying twice, report ambiguous creates, replay results."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from nanobanana_async import SubmissionUnknownError, TaskFailedError
from nanobanana_async.emulator import Emulator, EmulatorConfig, Faults, ServiceTime
from nanobanana_async.journal import ItemState, Journal, JournalMismatchError

from ..helpers import client_for

pytestmark = pytest.mark.anyio


def prompts(n: int) -> list[str]:
    return [f"resumable {i}" if i != 3 else f"[blocked] {i}" for i in range(n)]


async def test_interrupted_batch_resumes_without_new_creates(tmp_path: Path) -> None:
    journal = tmp_path / "batch.sqlite"
    config = EmulatorConfig(service_time=ServiceTime.fixed(0.6), time_scale=1.0, workers=100)
    async with Emulator(config) as emu:
        async with client_for(emu) as client:
            # First run: interrupted once everything is submitted; remote tasks are kept.
            stream = client.stream(prompts(12), journal=journal, cancel_on_abandon=False)
            with anyio.move_on_after(0.3):
                async for _ in stream:
                    pass
            await stream.aclose()
        assert emu.stats.creates == 12 and emu.stats.cancels == 0
        report = Journal.report_sync(journal)
        assert report.counts["submitted"] == 12 and len(report.request_ids) == 12

        async with client_for(emu) as client:
            outcomes = {o.index: o async for o in client.stream(prompts(12), journal=journal)}
        assert emu.stats.creates == 12  # re-attached by id: nothing created twice
        assert emu.stats.duplicate_creates == 0
        assert sorted(outcomes) == list(range(12))
        assert isinstance(outcomes[3].error, TaskFailedError)
        assert all(o.ok for i, o in outcomes.items() if i != 3)
        assert {o.request_id for o in outcomes.values()} == set(report.request_ids)

        # Third run: everything is finished, so it is replayed from the journal alone.
        requests_before = emu.stats.requests
        async with client_for(emu) as client:
            replayed = {o.index: o async for o in client.stream(prompts(12), journal=journal)}
        assert emu.stats.requests == requests_before
        assert all(o.resumed for o in replayed.values())
        assert replayed[0].result is not None and replayed[0].result.images[0].url is not None
        assert replayed[0].result.images == outcomes[0].result.images  # type: ignore[union-attr]
        assert isinstance(replayed[3].error, TaskFailedError)
        assert replayed[3].error.error_type == "CONTENT_BLOCKED"
    final = Journal.report_sync(journal)
    assert final.counts["succeeded"] == 11 and final.counts["failed"] == 1


async def test_lost_create_response_is_unknown_until_told(tmp_path: Path) -> None:
    journal = tmp_path / "lost.sqlite"
    faults = Faults(lost_create_response=1.0, routes=frozenset({"create"}))
    async with Emulator(EmulatorConfig(faults=faults)) as emu:
        async with client_for(emu) as client:
            (first,) = [o async for o in client.stream(["paid but unseen"], journal=journal)]
        assert isinstance(first.error, SubmissionUnknownError)
        assert emu.stats.creates == 1 and len(emu.stats.lost_create_ids) == 1
        assert Journal.report_sync(journal).unknown == (0,)

        emu.reconfigure(faults=Faults())
        async with client_for(emu) as client:
            (again,) = [o async for o in client.stream(["paid but unseen"], journal=journal)]
        assert isinstance(again.error, SubmissionUnknownError)
        assert "resubmit_unknown" in str(again.error)
        assert emu.stats.creates == 1  # never re-created unasked

        async with client_for(emu) as client:
            (forced,) = [
                o
                async for o in client.stream(
                    ["paid but unseen"], journal=journal, resubmit_unknown=True
                )
            ]
        assert forced.ok and emu.stats.creates == 2
    async with await Journal.open(journal) as j:
        items = await j.load()
    assert items[0].state is ItemState.SUCCEEDED
    assert items[0].request_id == forced.request_id


async def test_journal_of_other_input_is_refused(
    tmp_path: Path, nanobanana_emulator: Emulator
) -> None:
    journal = tmp_path / "other.sqlite"
    async with client_for(nanobanana_emulator) as client:
        async for _ in client.stream(["a", "b"], journal=journal):
            pass
        with pytest.raises(JournalMismatchError):
            async for _ in client.stream(["a", "something else"], journal=journal):
                pass
    assert nanobanana_emulator.stats.creates == 2


async def test_unknown_pending_intent_after_crash(
    tmp_path: Path, nanobanana_emulator: Emulator
) -> None:
    path = tmp_path / "crash.sqlite"
    async with await Journal.open(path) as journal:
        # What a crash between "intent recorded" and "create answered" leaves behind.
        await journal.record_intent(0, {"prompt": "maybe sent"})
    async with client_for(nanobanana_emulator) as client:
        (outcome,) = [o async for o in client.stream(["maybe sent"], journal=path)]
    assert isinstance(outcome.error, SubmissionUnknownError)
    assert nanobanana_emulator.stats.creates == 0
    assert Journal.report_sync(path).counts["unknown"] == 1
