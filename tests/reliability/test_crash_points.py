"""SIGKILL a journaled `batch` at several points, resume: nothing paid twice, every file whole."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from nanobanana_async.journal import Journal

from ..cli.test_cli_crash import Service, journal_files, prompts, service, start_batch, wait_for

__all__ = ["service"]  # the fixture, shared with the CLI crash tests

ITEMS = 30


def _ids(journal: Path) -> dict[int, str]:
    conn = sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT idx, request_id FROM items WHERE request_id IS NOT NULL")
        return {idx: rid for idx, rid in rows.fetchall()}
    finally:
        conn.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("point", ["submission", "download"])
def test_kill_then_resume(point: str, service: Service, tmp_path: Path) -> None:
    src, out = prompts(tmp_path / "input.txt", ITEMS), tmp_path / "out"
    journal = out / "journal.sqlite"
    first = start_batch(service, src, out, "--submit-rate", "10")
    if point == "submission":
        wait_for(journal, lambda r: 5 <= r.counts["submitted"] + r.counts["pending"] < ITEMS)
    else:
        wait_for(journal, lambda r: r.counts["succeeded"] >= 3, timeout=20)
        assert Journal.report_sync(journal).counts["submitted"] > 0  # still mid-batch
    first.kill()
    first.wait(timeout=5)
    known = _ids(journal)  # creates whose id was recorded before the kill

    second = start_batch(service, src, out)
    _, stderr = second.communicate(timeout=40)
    stats = service.stats()
    assert stats["duplicate_creates"] == 0  # nothing paid twice
    files = journal_files(journal)
    for index in known:  # every accepted task ends with its file, whole
        path, sha = files[index]
        assert Path(path).parent == out.resolve()
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
    assert _ids(journal).items() >= known.items()  # ids are never rewritten
    assert not [p for p in out.iterdir() if ".part-" in p.name]  # no half file left behind
    report = Journal.report_sync(journal)
    # Only items killed between "intent recorded" and "create answered" may be unknown; they
    # are reported, not redone. Everything else finished on the rerun.
    assert set(report.unknown) <= set(range(ITEMS)) - set(known)
    assert report.counts["succeeded"] + len(report.unknown) == ITEMS
    # Exit 1 only when something is left unknown; otherwise every item succeeded: exit 0.
    assert second.returncode == (1 if report.unknown else 0), stderr
    if report.unknown:
        third = start_batch(service, src, out, "--resubmit-unknown")
        third.communicate(timeout=40)
        assert third.returncode == 0
        assert Journal.report_sync(journal).counts["succeeded"] == ITEMS
        # Resubmitting unknown items is the user's explicit choice: at most one extra each.
        assert service.stats()["duplicate_creates"] <= len(report.unknown)
