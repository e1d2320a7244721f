"""`batch` as a real process against a standalone emulator: SIGKILL and Ctrl-C, then resume."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nanobanana_async.journal import Journal, JournalReport

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
EMULATOR = (sys.executable, "-m", "nanobanana_async.emulator")


class Service:
    def __init__(self, proc: subprocess.Popen[str], line: str) -> None:
        fields = dict(part.split("=", 1) for part in line.split())
        self.proc = proc
        self.base_url = fields["base_url"]
        self.api_key = fields["api_key"]
        self.api_root = self.base_url.rsplit("/model", 1)[0]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.api_root}/_emulator/stats", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data


@contextlib.contextmanager
def emulator(*flags: str) -> Iterator[Service]:
    proc = subprocess.Popen(
        [*EMULATOR, "--port", "0", "--workers", "50", *flags], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        yield Service(proc, proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def service() -> Iterator[Service]:
    with emulator("--service-time", "fixed:1.5") as svc:
        yield svc


@pytest.fixture
def hung_cancels() -> Iterator[Service]:
    """Tasks that outlive the test, and a service that never answers a cancel.

    Cleanup after Ctrl-C then waits for the cancels until the client's cancel timeout (5 s).
    """
    flags = ("--service-time", "fixed:120", "--fault-routes", "cancel")
    with emulator(*flags, "--fault", "stall=1", "--fault", "stall_seconds=120") as svc:
        yield svc


def start_batch(service: Service, src: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NANOBANANA_API_KEY": service.api_key}
    env.pop("NANOBANANA_BASE_URL", None)
    argv = [sys.executable, "-m", "nanobanana_async", "batch", str(src), "--out", str(out)]
    return subprocess.Popen(
        [*argv, "--base-url", service.base_url, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(journal: Path, ready: Callable[[JournalReport], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready(Journal.report_sync(journal)):
                return
        except (FileNotFoundError, sqlite3.Error):
            pass
        time.sleep(0.05)
    raise AssertionError("the journal never reached the expected state")


def journal_files(journal: Path) -> dict[int, tuple[str, str]]:
    conn = sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT idx, path, sha256 FROM files").fetchall()
    finally:
        conn.close()
    return {idx: (path, sha) for idx, path, sha in rows}


def prompts(path: Path, n: int) -> Path:
    path.write_text("".join(f"crash-safe banana number {i}\n" for i in range(n)))
    return path


def test_sigkill_then_rerun_creates_nothing_twice(service: Service, tmp_path: Path) -> None:
    src, out = prompts(tmp_path / "input.txt", 30), tmp_path / "out"
    journal = out / "journal.sqlite"
    first = start_batch(service, src, out)
    # Killed once every create has its id recorded, long before the 1.5 s tasks finish.
    wait_for(journal, lambda r: r.counts["submitted"] == 30)
    first.kill()
    first.wait(timeout=5)
    assert service.stats()["creates"] == 30

    second = start_batch(service, src, out)
    _, stderr = second.communicate(timeout=30)
    assert second.returncode == 0, stderr
    stats = service.stats()
    assert stats["creates"] == 30 and stats["duplicate_creates"] == 0
    assert all(count == 1 for count in stats["creates_by_body"].values())
    files = journal_files(journal)
    assert sorted(files) == list(range(30))
    for path, sha in files.values():
        assert Path(path).parent == out.resolve()
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
    assert not [p for p in out.iterdir() if ".part-" in p.name]
    assert Journal.report_sync(journal).counts["succeeded"] == 30


def test_ctrl_c_cancels_running_tasks_and_a_rerun_finishes_the_rest(
    service: Service, tmp_path: Path
) -> None:
    src, out = prompts(tmp_path / "input.txt", 12), tmp_path / "out"
    journal = out / "journal.sqlite"
    first = start_batch(service, src, out, "--max-in-flight", "4")
    wait_for(journal, lambda r: r.counts["submitted"] == 4)
    first.send_signal(signal.SIGINT)
    stdout, stderr = first.communicate(timeout=15)
    assert first.returncode == 130, stderr
    assert "rerun" in stdout and "interrupted" in stdout
    stats = service.stats()
    assert stats["cancels"] >= 4 and stats["creates"] == 4

    second = start_batch(service, src, out, "--json", "--max-in-flight", "4")
    stdout, stderr = second.communicate(timeout=30)
    summary = json.loads(stdout)
    # The cancelled tasks stay cancelled (they are re-attached, never paid for twice).
    assert second.returncode == 1, stderr
    assert summary["totals"]["items"] == 12
    assert summary["totals"]["succeeded"] == 8
    assert {f["state"] for f in summary["failures"]} == {"cancelled"}
    assert service.stats()["creates"] == 12 and service.stats()["duplicate_creates"] == 0
    assert len(list(out.glob("*.png"))) == 8


def test_second_ctrl_c_exits_at_once_without_waiting_for_the_cancels(
    hung_cancels: Service, tmp_path: Path
) -> None:
    src, out = prompts(tmp_path / "input.txt", 8), tmp_path / "out"
    journal = out / "journal.sqlite"
    proc = start_batch(hung_cancels, src, out, "--max-in-flight", "4")
    try:
        wait_for(journal, lambda r: r.counts["submitted"] == 4)
        proc.send_signal(signal.SIGINT)
        # The first Ctrl-C cancels the 4 running tasks; the service holds every cancel request.
        deadline = time.monotonic() + 10
        while hung_cancels.stats()["faults"].get("stall", 0) < 4:
            assert time.monotonic() < deadline, "the cancels never reached the service"
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, "the first Ctrl-C should still be cleaning up"

        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=10)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert took < 2.0, f"the second Ctrl-C took {took:.2f} s to exit"
    [line] = [x for x in stderr.splitlines() if x.startswith("SIGINT again")]
    assert "remote tasks may still be running" in line
    assert f"--journal {journal}" in line and "nanobanana-async cancel <id>" in line
    assert "interrupted" not in stdout  # no summary: nothing was waited for

    # What the journal had committed is still there: a rerun re-attaches to these tasks.
    report = Journal.report_sync(journal)
    assert report.counts["submitted"] == 4
    assert hung_cancels.stats()["creates"] == 4
