import os
import sqlite3
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from nanobanana_async.journal import (
    ItemState,
    Journal,
    JournalFile,
    JournalMismatchError,
    JournalStateError,
)

pytestmark = pytest.mark.anyio

ROOT = str(Path(__file__).resolve().parents[1])


def body(i: int) -> dict[str, Any]:
    return {"prompt": f"a banana number {i} — ünïcode", "num_images": 1, "aspect_ratio": "1:1"}


def raw_rows(path: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(path)  # a separate connection, as another process would have
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_round_trip_through_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    output = {"url": "https://cdn.example/x.png", "content_type": "image/png", "width": 8}
    async with await Journal.open(path) as j:
        await j.record_intent(0, body(0))
        await j.record_submitted(0, "req-0")
        await j.record_outcome(0, ItemState.SUCCEEDED, outputs=[output])
        await j.record_file(0, 0, "out/0-0.png", 123, "ab" * 32)
        await j.record_intent(1, body(1))
        await j.record_submitted(1, "req-1")
        await j.record_outcome(1, ItemState.FAILED, error_type="content_policy", error_message="no")
        await j.record_intent(2, body(2))
    async with await Journal.open(path) as j2:
        items = await j2.load()
    assert sorted(items) == [0, 1, 2]
    done = items[0]
    assert done.state is ItemState.SUCCEEDED and done.request_id == "req-0"
    assert done.key == Journal.key_for(body(0)) and done.request == body(0)
    assert done.outputs == (output,)
    assert done.files == (JournalFile(0, "out/0-0.png", 123, "ab" * 32),)
    assert done.updated_at == pytest.approx(time.time(), abs=60)
    failed = items[1]
    assert (failed.state, failed.error_type, failed.error_message) == (
        ItemState.FAILED,
        "content_policy",
        "no",
    )
    assert failed.outputs == () and failed.files == ()
    assert items[2].state is ItemState.PENDING and items[2].request_id is None


def test_key_is_canonical() -> None:
    a = Journal.key_for({"b": 1, "a": [1, 2], "c": "é"})
    assert a == Journal.key_for({"c": "é", "a": [1, 2], "b": 1})
    assert a != Journal.key_for({"b": 1, "a": [2, 1], "c": "é"})
    assert len(a) == 64


async def test_intent_and_submitted_are_durable_on_return(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with await Journal.open(path) as j:
        await j.record_intent(7, body(7))
        assert raw_rows(path, "SELECT idx, state, request_id FROM items") == [(7, "pending", None)]
        await j.record_submitted(7, "req-7")
        assert raw_rows(path, "SELECT idx, state, request_id FROM items") == [
            (7, "submitted", "req-7")
        ]
        assert raw_rows(path, "PRAGMA journal_mode") == [("wal",)]
        assert raw_rows(path, "SELECT schema_version FROM meta") == [(2,)]


CRASHER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from nanobanana_async.journal import Journal

    async def main():
        j = await Journal.open(sys.argv[1])
        for i in range(50):
            await j.record_intent(i, {"prompt": f"p{i}"})
        await asyncio.gather(*(j.record_submitted(i, f"req-{i}") for i in range(30)))
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
async def test_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = await anyio.run_process([sys.executable, "-c", CRASHER, str(path)], check=False, env=env)
    assert proc.returncode == -9, proc.stderr.decode()
    assert (tmp_path / "j.sqlite-wal").exists()  # really killed: no clean checkpoint-on-close
    async with await Journal.open(path) as j:
        items = await j.load()
        report = await j.report()
    states = [items[i].state for i in range(50)]
    assert states == [ItemState.SUBMITTED] * 30 + [ItemState.PENDING] * 20
    assert [items[i].request_id for i in range(30)] == [f"req-{i}" for i in range(30)]
    assert items[49].key == Journal.key_for({"prompt": "p49"})
    assert report.unknown == tuple(range(30, 50))
    assert report.counts["pending"] == 20 and report.counts["submitted"] == 30


async def test_group_commit(tmp_path: Path) -> None:
    n = 1000
    async with await Journal.open(tmp_path / "j.sqlite") as j:
        before = j.commits
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(j.record_intent, i, body(i))
        elapsed = time.perf_counter() - start
        commits = j.commits - before
        report = await j.report()
    print(f"group commit: {n} concurrent intents -> {commits} commits in {elapsed * 1000:.0f} ms")
    assert report.counts["pending"] == n
    assert 1 <= commits < 100
    assert elapsed < 3.0


async def test_mismatch_names_the_index(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with await Journal.open(path) as j:
        await j.record_intent(3, body(3))
        await j.record_intent(4, body(4))
    async with await Journal.open(path) as j:
        with pytest.raises(JournalMismatchError, match=r"\b4\b") as info:
            await j.record_intent(4, body(99))
        assert info.value.index == 4
        # The failed call spoils neither the item nor the journal.
        assert (await j.load())[4].key == Journal.key_for(body(4))
        await j.record_intent(5, body(5))


async def test_transitions(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path / "j.sqlite") as j:
        await j.record_intent(0, body(0))
        # A PENDING create may have reached the service: re-sending it could pay twice.
        with pytest.raises(JournalStateError, match="pending"):
            await j.record_intent(0, body(0))
        await j.record_unknown(0, "connection reset after send")
        item = (await j.load())[0]
        assert (item.state, item.error_message) == (
            ItemState.UNKNOWN,
            "connection reset after send",
        )
        await j.record_intent(0, body(0))  # explicit resubmit
        item = (await j.load())[0]
        assert (item.state, item.error_message) == (ItemState.PENDING, None)

        await j.record_intent(1, body(1))
        await j.record_rejected(1, "validation_error", "bad aspect ratio")
        item = (await j.load())[1]
        assert (item.state, item.error_type) == (ItemState.REJECTED, "validation_error")
        await j.record_intent(1, body(1))
        await j.record_submitted(1, "req-1")
        await j.record_submitted(1, "req-1")  # idempotent
        with pytest.raises(JournalStateError, match="req-1"):
            await j.record_submitted(1, "req-other")
        with pytest.raises(JournalStateError, match="submitted"):
            await j.record_intent(1, body(1))
        with pytest.raises(JournalStateError, match="submitted"):
            await j.record_rejected(1, None, "too late")
        with pytest.raises(ValueError, match="final"):
            await j.record_outcome(1, ItemState.SUBMITTED)
        await j.record_outcome(1, ItemState.CANCELLED)
        with pytest.raises(JournalStateError, match="no intent"):
            await j.record_submitted(9, "req-9")
        with pytest.raises(JournalStateError, match="no intent"):
            await j.record_file(9, 0, "x", 1, "00")
        with pytest.raises(JournalStateError, match="pending"):
            await j.record_outcome(0, ItemState.SUCCEEDED)
        items = await j.load()
        assert [items[i].state for i in (0, 1)] == [ItemState.PENDING, ItemState.CANCELLED]


async def test_report_and_report_sync(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with await Journal.open(path) as j:
        for i in range(6):
            await j.record_intent(i, body(i))
        for i in range(4):
            await j.record_submitted(i, f"req-{i}")
        await j.record_outcome(0, ItemState.SUCCEEDED)
        await j.record_outcome(1, ItemState.FAILED, error_type="x", error_message="y")
        await j.record_unknown(4, "timeout")
        report = await j.report()
        assert report.total == 6
        assert report.request_ids == ("req-0", "req-1", "req-2", "req-3")
        assert report.unknown == (4, 5)
        assert {k: v for k, v in report.counts.items() if v} == {
            "succeeded": 1,
            "failed": 1,
            "submitted": 2,
            "unknown": 1,
            "pending": 1,
        }
        assert set(report.counts) == {s.value for s in ItemState}
        # While this journal is open (another process in the CLI's case):
        assert Journal.report_sync(path) == report
    before = path.read_bytes()
    assert Journal.report_sync(path) == report  # after a clean close too (no -wal / -shm)
    assert path.read_bytes() == before
    with pytest.raises(FileNotFoundError):
        Journal.report_sync(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()


async def test_cancelled_awaiter_still_commits(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    async with await Journal.open(path) as j:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await j.record_intent(0, body(0))
        assert scope.cancelled_caught
        with anyio.move_on_after(0):
            await j.record_intent(1, body(1))

        async def cancel_after(scope: anyio.CancelScope, checkpoints: int) -> None:
            for _ in range(checkpoints):
                await anyio.lowlevel.checkpoint()
            scope.cancel()

        async def cancel_midway(i: int) -> None:
            with anyio.CancelScope() as inner:
                tg.start_soon(cancel_after, inner, i % 3)
                await j.record_intent(i, body(i))

        async with anyio.create_task_group() as tg:
            for i in range(2, 50):
                tg.start_soon(cancel_midway, i)
        # FIFO: this runs after every cancelled write, which therefore all committed.
        items = await j.load()
        assert sorted(items) == list(range(50))
        assert all(item.state is ItemState.PENDING for item in items.values())
        await j.record_submitted(0, "req-0")
    assert raw_rows(path, "SELECT COUNT(*) FROM items") == [(50,)]


async def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path / "j.sqlite")
    await j.record_intent(0, body(0))
    await j.aclose()
    await j.aclose()
    assert not j._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        await j.record_intent(1, body(1))


async def test_open_failure_is_reported(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.Error):
        await Journal.open(tmp_path / "no-such-dir" / "j.sqlite")


async def test_a_version_1_journal_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE meta (schema_version INTEGER NOT NULL, created_at REAL NOT NULL);
        INSERT INTO meta VALUES (1, 0);
        CREATE TABLE items (
            idx INTEGER PRIMARY KEY, key TEXT NOT NULL, state TEXT NOT NULL, request_id TEXT,
            request_json TEXT NOT NULL, error_type TEXT, error_message TEXT,
            outputs_json TEXT NOT NULL DEFAULT '[]', updated_at REAL NOT NULL);
        CREATE TABLE files (
            idx INTEGER NOT NULL REFERENCES items (idx), output_index INTEGER NOT NULL,
            path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
            PRIMARY KEY (idx, output_index));
        INSERT INTO items VALUES (0, 'k', 'submitted', 'req-0', '{"prompt":"p"}', NULL, NULL, '[]', 0);
        """
    )
    conn.close()
    async with await Journal.open(path) as j:
        items = await j.load()
        assert items[0].request_id == "req-0" and items[0].attempts == 1
        assert items[0].prior_ids == ()
    assert raw_rows(path, "SELECT schema_version FROM meta") == [(2,)]


async def test_a_retry_keeps_every_paid_id_and_counts_attempts(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path / "r.db") as j:
        await j.record_intent(3, {"prompt": "p"})
        await j.record_submitted(3, "req-a")
        with pytest.raises(JournalStateError):
            await j.record_retry(3, "req-other")  # not the id on record
        await j.record_retry(3, "req-a")
        item = (await j.load())[3]
        assert (item.state, item.request_id, item.attempts, item.prior_ids) == (
            ItemState.PENDING,
            None,
            2,
            ("req-a",),
        )
        await j.record_submitted(3, "req-b")
        report = await j.report()
        assert report.request_ids == ("req-a", "req-b")  # the record of spend keeps both
        with pytest.raises(JournalStateError):
            await j.record_retry(3, "req-a")
