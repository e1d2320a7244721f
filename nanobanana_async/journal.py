"""Durable per-item journal of a batch, so that a crash never pays twice nor loses a paid result.

The intent to create an item is committed *before* its create POST is sent and the request id *as
soon as* the create answers; an intent without an id is an ambiguous create, never silently redone.
One writer thread owns the SQLite connection and commits in groups; each call returns only once its
own write is committed. Usage: ``async with await Journal.open(path) as journal: ...``
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence, Set
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs

from .errors import JournalMismatchError, JournalStateError

__all__ = [
    "ItemState",
    "Journal",
    "JournalFile",
    "JournalItem",
    "JournalMismatchError",
    "JournalReport",
    "JournalStateError",
]

T = TypeVar("T")

SCHEMA_VERSION = 2  # 2: attempts and prior_ids (task retries); 1 is migrated on open
_MAX_GROUP = 512  # ops per transaction: bounds the latency of the last waiter of a group
_MAX_QUEUED = 4096  # backpressure: callers wait for a slot instead of growing memory unboundedly
_CLOSE_TIMEOUT = 30.0
_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS meta (schema_version INTEGER NOT NULL, created_at REAL NOT NULL);
INSERT INTO meta SELECT {SCHEMA_VERSION}, (julianday('now') - 2440587.5) * 86400.0
    WHERE NOT EXISTS (SELECT 1 FROM meta);
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY, key TEXT NOT NULL, state TEXT NOT NULL, request_id TEXT,
    request_json TEXT NOT NULL, error_type TEXT, error_message TEXT,
    outputs_json TEXT NOT NULL DEFAULT '[]', updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1, prior_ids TEXT NOT NULL DEFAULT '[]');
CREATE INDEX IF NOT EXISTS items_request_id ON items (request_id);
CREATE TABLE IF NOT EXISTS files (
    idx INTEGER NOT NULL REFERENCES items (idx), output_index INTEGER NOT NULL,
    path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (idx, output_index));
COMMIT;
"""


class ItemState(str, enum.Enum):
    """Journal state of one input item."""

    PENDING = "pending"  # intent recorded, create not answered (yet)
    SUBMITTED = "submitted"  # has a request id
    UNKNOWN = "unknown"  # create ambiguous: the task may exist and be billed
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"  # create certainly not processed (or bad input): safe to resubmit


_TERMINAL = frozenset({ItemState.SUCCEEDED, ItemState.FAILED, ItemState.CANCELLED})


@attrs.frozen
class JournalFile:
    """A downloaded output stored locally, with its checksum."""

    output_index: int
    path: str
    size: int
    sha256: str


@attrs.frozen
class JournalItem:
    """Everything recorded about one input item."""

    index: int
    key: str
    state: ItemState
    request_id: str | None
    request: dict[str, Any]
    error_type: str | None
    error_message: str | None
    outputs: tuple[dict[str, Any], ...]
    files: tuple[JournalFile, ...]
    updated_at: float
    attempts: int = 1  # creates sent for this item (task retries add one each)
    prior_ids: tuple[str, ...] = ()  # request ids of earlier attempts, oldest first


@attrs.frozen
class JournalReport:
    """Spend summary: counts by state value, every recorded request id, ambiguous indices."""

    counts: Mapping[str, int]
    request_ids: tuple[str, ...]
    unknown: tuple[int, ...]  # UNKNOWN, or PENDING (in flight or interrupted): may be billed
    total: int


def _canonical(body: Mapping[str, Any]) -> str:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _move(conn: sqlite3.Connection, index: int, allowed: Set[ItemState], **values: Any) -> None:
    what = values.get("state", "a file")
    row = conn.execute("SELECT state, request_id FROM items WHERE idx = ?", (index,)).fetchone()
    if row is None:
        raise JournalStateError(f"journal item {index}: no intent recorded, cannot record {what}")
    if ItemState(row[0]) not in allowed:
        raise JournalStateError(f"journal item {index} is {row[0]}, cannot record {what}")
    if row[1] is not None and values.get("request_id", row[1]) != row[1]:
        # Overwriting would drop an id from the record of spend.
        raise JournalStateError(f"journal item {index} already has request id {row[1]}")
    sets = "".join(f"{name} = ?, " for name in values)
    args = (*values.values(), time.time(), index)
    conn.execute(f"UPDATE items SET {sets}updated_at = ? WHERE idx = ?", args)


def _intent(conn: sqlite3.Connection, index: int, key: str, request_json: str) -> None:
    row = conn.execute("SELECT key FROM items WHERE idx = ?", (index,)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO items (idx, key, state, request_json, updated_at) VALUES (?, ?, ?, ?, ?)",
            (index, key, ItemState.PENDING.value, request_json, time.time()),
        )
    elif row[0] != key:
        raise JournalMismatchError(index)
    else:
        # Only a create known not to exist may be re-sent; re-sending a PENDING one may pay twice.
        allowed = {ItemState.REJECTED, ItemState.UNKNOWN}
        _move(conn, index, allowed, state="pending", error_type=None, error_message=None)


def _file(conn: sqlite3.Connection, index: int, file: JournalFile) -> None:
    _move(conn, index, set(ItemState))
    conn.execute(
        "INSERT OR REPLACE INTO files (idx, output_index, path, size, sha256)"
        " VALUES (?, ?, ?, ?, ?)",
        (index, *attrs.astuple(file)),
    )


def _load(conn: sqlite3.Connection) -> dict[int, JournalItem]:
    files: dict[int, list[JournalFile]] = {}
    for idx, *rest in conn.execute("SELECT * FROM files ORDER BY idx, output_index"):
        files.setdefault(idx, []).append(JournalFile(*rest))
    result = {}
    for i, key, state, rid, req, et, em, out, at, attempts, prior in conn.execute(
        "SELECT idx, key, state, request_id, request_json, error_type, error_message,"
        " outputs_json, updated_at, attempts, prior_ids FROM items ORDER BY idx"
    ):
        args = (ItemState(state), rid, json.loads(req), et, em, tuple(json.loads(out)))
        files_of = tuple(files.get(i, ()))
        result[i] = JournalItem(i, key, *args, files_of, at, attempts, tuple(json.loads(prior)))
    return result


def _retry(conn: sqlite3.Connection, index: int, request_id: str) -> None:
    """SUBMITTED -> PENDING for another attempt; the old id moves to ``prior_ids``."""
    row = conn.execute(
        "SELECT state, request_id, prior_ids FROM items WHERE idx = ?", (index,)
    ).fetchone()
    if row is None or ItemState(row[0]) is not ItemState.SUBMITTED or row[1] != request_id:
        state = "missing" if row is None else f"{row[0]} with id {row[1]}"
        raise JournalStateError(f"journal item {index} is {state}, cannot record a retry")
    prior = json.dumps([*json.loads(row[2]), request_id])
    conn.execute(
        "UPDATE items SET state = 'pending', request_id = NULL, attempts = attempts + 1,"
        " prior_ids = ?, error_type = NULL, error_message = NULL, updated_at = ? WHERE idx = ?",
        (prior, time.time(), index),
    )


def _report(conn: sqlite3.Connection) -> JournalReport:
    counts = {state.value: 0 for state in ItemState}
    counts.update(conn.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
    ids = conn.execute("SELECT prior_ids, request_id FROM items ORDER BY idx")
    unknown = conn.execute(
        "SELECT idx FROM items WHERE state IN ('pending', 'unknown') ORDER BY idx"
    ).fetchall()
    # Every id ever paid for, earlier attempts of a retried task included.
    request_ids = tuple(
        rid for prior, last in ids for rid in (*json.loads(prior), last) if rid is not None
    )
    return JournalReport(counts, request_ids, tuple(r[0] for r in unknown), sum(counts.values()))


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot put journal {path} in WAL mode (got {mode})")
        # FULL: in WAL mode NORMAL may lose the last commits on power loss, and a lost intent is
        # exactly the double payment the journal exists to prevent. Group commit pays for it.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(_SCHEMA)
        version = conn.execute("SELECT MAX(schema_version) FROM meta").fetchone()[0]
        if version == 1:
            _migrate_from_1(conn)
            version = SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"journal {path} has unsupported schema version {version}")
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate_from_1(conn: sqlite3.Connection) -> None:
    """Version 1 journals gain the task-retry columns (every item had one attempt)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
    conn.execute("BEGIN IMMEDIATE")
    try:
        if "attempts" not in columns:
            conn.execute("ALTER TABLE items ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1")
        if "prior_ids" not in columns:
            conn.execute("ALTER TABLE items ADD COLUMN prior_ids TEXT NOT NULL DEFAULT '[]'")
        conn.execute("UPDATE meta SET schema_version = ?", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@attrs.define
class _Op:
    fn: Callable[[sqlite3.Connection], Any] | None  # None asks the writer to close
    future: asyncio.Future[Any]
    slotted: bool = True  # holds one of the queue slots
    value: Any = None
    error: BaseException | None = None


class Journal:
    """Durable per-item record of a batch in SQLite (WAL), written off the event loop."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(_MAX_QUEUED)
        self._queue: queue.Queue[_Op] = queue.Queue(_MAX_QUEUED + 2)
        self._thread = threading.Thread(target=self._run, name="nanobanana-journal", daemon=True)
        self._ready: asyncio.Future[Any] = self._loop.create_future()
        self._closed: asyncio.Future[Any] | None = None
        self._commits = 0

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Journal:
        """Open or create a journal; use as ``async with await Journal.open(path) as journal``."""
        self = cls(os.fspath(path))
        self._thread.start()
        try:
            await self._ready
        except BaseException:
            self._queue.put_nowait(_Op(None, self._loop.create_future(), slotted=False))
            raise
        return self

    @property
    def commits(self) -> int:
        """Number of transactions committed so far (one per group of queued calls)."""
        return self._commits

    @staticmethod
    def key_for(request_body: Mapping[str, Any]) -> str:
        """SHA-256 (hex) of the canonical JSON of a wire request body."""
        return hashlib.sha256(_canonical(request_body).encode()).hexdigest()

    async def load(self) -> dict[int, JournalItem]:
        """Everything recorded, by index, for resuming a batch."""
        return await self._call(_load)

    async def record_intent(self, index: int, request_body: Mapping[str, Any]) -> None:
        """Durably record the intent to create item ``index``; call before sending the create."""
        request_json = _canonical(request_body)
        key = hashlib.sha256(request_json.encode()).hexdigest()
        await self._call(lambda conn: _intent(conn, index, key, request_json))

    async def record_submitted(self, index: int, request_id: str) -> None:
        """Durably record the request id the create answered with."""
        allowed = {ItemState.PENDING, ItemState.UNKNOWN, ItemState.SUBMITTED}
        await self._move(index, allowed, state="submitted", request_id=request_id)

    async def record_retry(self, index: int, request_id: str) -> None:
        """Durably record that item ``index`` (now ``request_id``) will be created again; call
        before sending that create. The item is PENDING again until the new id is recorded."""
        await self._call(lambda conn: _retry(conn, index, request_id))

    async def record_unknown(self, index: int, message: str) -> None:
        """Record that the create's outcome is ambiguous: the task may exist and be billed."""
        allowed = {ItemState.PENDING, ItemState.UNKNOWN}
        await self._move(index, allowed, state="unknown", error_type=None, error_message=message)

    async def record_rejected(self, index: int, error_type: str | None, message: str) -> None:
        """Record that the create was certainly not processed (safe to resubmit)."""
        allowed = {ItemState.PENDING, ItemState.UNKNOWN, ItemState.REJECTED}
        await self._move(
            index, allowed, state="rejected", error_type=error_type, error_message=message
        )

    async def record_outcome(
        self,
        index: int,
        state: ItemState,
        *,
        error_type: str | None = None,
        error_message: str | None = None,
        outputs: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Record the final state of a submitted task and its wire-shaped outputs."""
        if state not in _TERMINAL:
            raise ValueError(f"record_outcome needs a final state, not {state!r}")
        outputs_json = json.dumps([dict(o) for o in outputs], ensure_ascii=False, allow_nan=False)
        values = {"error_type": error_type, "error_message": error_message}
        allowed = {ItemState.SUBMITTED, *_TERMINAL}
        await self._move(index, allowed, state=state.value, outputs_json=outputs_json, **values)

    async def record_file(
        self, index: int, output_index: int, path: str, size: int, sha256: str
    ) -> None:
        """Record a downloaded output file with its size and SHA-256."""
        file = JournalFile(output_index, path, size, sha256)
        await self._call(lambda conn: _file(conn, index, file))

    async def report(self) -> JournalReport:
        """Counts by state, every request id recorded and the ambiguous indices."""
        return await self._call(_report)

    @staticmethod
    def report_sync(path: str | os.PathLike[str]) -> JournalReport:
        """Read-only report of a journal file, safe while another process is writing it."""
        file = Path(path).resolve()
        if not file.is_file():  # mode=ro would fail later and less clearly
            raise FileNotFoundError(f"no journal at {file}")
        conn = sqlite3.connect(f"{file.as_uri()}?mode=ro", uri=True, timeout=10.0)
        conn.isolation_level = None
        try:
            conn.execute("BEGIN")  # one snapshot for all the queries
            return _report(conn)
        finally:
            conn.close()

    async def aclose(self) -> None:
        """Flush queued writes, close the connection and stop the writer thread (idempotent)."""
        if self._closed is None:
            self._closed = self._loop.create_future()
            self._queue.put_nowait(_Op(None, self._closed, slotted=False))
        # Shielded: a cancelled aclose still lets the writer flush and close.
        await asyncio.wait_for(asyncio.shield(self._closed), _CLOSE_TIMEOUT)
        self._thread.join(timeout=1.0)  # the writer's last act was to wake us: near-instant

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _move(self, index: int, allowed: Set[ItemState], **values: Any) -> None:
        await self._call(lambda conn: _move(conn, index, allowed, **values))

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed is None:
            await self._slots.acquire()
            if self._closed is not None:  # closed while we waited for a slot
                self._slots.release()
        if self._closed is not None:
            raise RuntimeError("journal is closed")
        future = self._loop.create_future()
        # Enqueued before the first await: a caller cancelled from here on still gets its write.
        self._queue.put_nowait(_Op(fn, future))
        return cast(T, await future)

    def _wake(self, ops: list[_Op]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to wake
            self._loop.call_soon_threadsafe(self._deliver, ops)

    def _deliver(self, ops: list[_Op]) -> None:
        for op in ops:
            if op.slotted:
                self._slots.release()
            if op.future.done():  # the awaiter was cancelled; its write happened regardless
                continue
            if op.error is not None:
                op.future.set_exception(op.error)
            else:
                op.future.set_result(op.value)

    def _run(self) -> None:
        ready = _Op(None, self._ready, slotted=False)
        try:
            conn = _connect(self.path)
        except Exception as exc:  # noqa: BLE001 - delivered to open()
            ready.error = exc
            self._wake([ready])
            return
        self._wake([ready])
        closer: _Op | None = None
        while closer is None:
            group = [self._queue.get()]
            # Single consumer: a non-empty queue cannot be emptied under us.
            while len(group) < _MAX_GROUP and group[-1].fn is not None and not self._queue.empty():
                group.append(self._queue.get_nowait())
            if group[-1].fn is None:
                closer = group.pop()
            if group:
                self._commit(conn, group)
                self._wake(group)
        try:
            conn.close()
        except sqlite3.Error as exc:
            closer.error = exc
        self._wake([closer])

    def _commit(self, conn: sqlite3.Connection, group: list[_Op]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in group:
                assert op.fn is not None
                # A savepoint per op: one op's error (e.g. a mismatch) spares the rest of the group.
                conn.execute("SAVEPOINT op")
                try:
                    op.value = op.fn(conn)
                except Exception as exc:  # noqa: BLE001 - delivered to that op's awaiter
                    op.error = exc
                    conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
            self._commits += 1
        except Exception as exc:  # noqa: BLE001 - nothing of the group is durable: all waiters fail
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for op in group:
                op.value, op.error = None, exc
