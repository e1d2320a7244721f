"""`batch` when the account cannot go on (credits, key) or hits --max-creates; then resume.

The CLI runs in-process (``main``) against a standalone emulator process, which outlives each
run, so a rerun after a top-up meets the same service and its create counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanobanana_async import PollPolicy
from nanobanana_async.cli import _commands as _cli_commands
from nanobanana_async.cli import main
from nanobanana_async.cli._summary import EXIT_STOPPED
from nanobanana_async.journal import Journal

EMULATOR = (sys.executable, "-m", "nanobanana_async.emulator")
FAST_POLL = PollPolicy(initial_delay=0.05, max_interval=0.1, min_interval=0.01)


class Service:
    def __init__(self, line: str) -> None:
        fields = dict(part.split("=", 1) for part in line.split())
        self.base_url = fields["base_url"]
        self.api_key = fields["api_key"]
        self.api_root = self.base_url.rsplit("/model", 1)[0]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.api_root}/_emulator/stats", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def control(self, route: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"{self.api_root}/_emulator/{route}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200


@contextlib.contextmanager
def emulator(*flags: str) -> Iterator[Service]:
    argv = [*EMULATOR, "--port", "0", "--workers", "50", "--service-time", "fixed:0.05", *flags]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield Service(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    original = _cli_commands.client_kwargs

    def kwargs(args: Any) -> dict[str, Any]:
        return {**original(args), "poll": FAST_POLL}

    monkeypatch.setattr(_cli_commands, "client_kwargs", kwargs)
    monkeypatch.delenv("NANOBANANA_BASE_URL", raising=False)


def prompts(path: Path, n: int) -> Path:
    path.write_text("".join(f"a banana that costs a credit, number {i}\n" for i in range(n)))
    return path


def batch(
    service: Service, monkeypatch: pytest.MonkeyPatch, src: Path, out: Path, *extra: str
) -> int:
    monkeypatch.setenv("NANOBANANA_API_KEY", service.api_key)
    return main(["batch", str(src), "--out", str(out), "--base-url", service.base_url, *extra])


def stop_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("stopped:")]


def report_text(journal: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["report", str(journal)]) == 0
    return capsys.readouterr().out


def test_credits_run_out_exit_4_one_line_then_top_up_resumes_without_paying_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = prompts(tmp_path / "in.txt", 40), tmp_path / "out"
    journal = out / "journal.sqlite"
    with emulator("--credits", "10") as service:
        # Paced creates: every line is read (and its intent journaled) long before its create
        # may go out, so the lines still waiting when the credits run out are never sent.
        code = batch(service, monkeypatch, src, out, "--submit-rate", "40")
        captured = capsys.readouterr()
        assert code == EXIT_STOPPED == 4, captured.err
        [line] = stop_lines(captured.err)
        assert line.startswith("stopped: the account has no credits left (HTTP 402")
        assert line.endswith("top up and rerun the same command to resume")
        assert service.stats()["creates"] == 10

        # The summary: every paid task delivered and downloaded; the rest counted as not sent.
        report = json.loads((out / "report.json").read_text())
        assert report["exit_code"] == 4
        assert report["stopped"]["cause"] == "InsufficientCreditsError"
        totals = report["totals"]
        assert totals["succeeded"] == 10 and len(list(out.glob("*.png"))) == 10
        refused = totals["failed"]  # creates already in the air when the first 402 came
        assert refused >= 1
        assert totals["not_sent"] == 40 - 10 - refused > 0
        assert "not sent (stopped)" in captured.out

        # The journal: paid items succeeded, never-sent ones "not sent" (not "failed").
        text = report_text(journal, capsys)
        assert "not sent" in text and "failed" not in text
        assert "nothing billed" in text
        assert main(["report", str(journal), "--json"]) == 0
        counts = json.loads(capsys.readouterr().out)
        assert counts["counts"]["succeeded"] == 10
        assert counts["counts"]["failed"] == 0
        assert 0 < counts["not_sent"] <= counts["counts"]["rejected"]

        service.control("credits", {"add": 100})
        code = batch(service, monkeypatch, src, out, "--json")
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert stop_lines(captured.err) == []
        summary = json.loads(captured.out)
        assert summary["totals"]["succeeded"] == 40 and summary["totals"]["resumed"] == 10
        assert summary["stopped"] is None
        stats = service.stats()
        assert stats["creates"] == 40 and stats["duplicate_creates"] == 0
        assert max(stats["creates_by_body"].values()) == 1
    assert len(list(out.glob("*.png"))) == 40
    assert Journal.report_sync(journal).counts["succeeded"] == 40


def test_a_revoked_key_stops_the_batch_with_exit_4_and_a_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = prompts(tmp_path / "in.txt", 20), tmp_path / "out"
    with emulator("--revoke-after-creates", "5") as service:
        code = batch(service, monkeypatch, src, out, "--max-in-flight", "2")
        captured = capsys.readouterr()
        assert code == 4, captured.err
        [line] = stop_lines(captured.err)
        assert line.startswith("stopped: the service refused the API key (HTTP 401")
        assert "check the API key" in line and line.endswith("rerun the same command to resume")
        assert "Bearer" not in captured.err and service.api_key not in line

        service.control("key", {"revoked": False})
        code = batch(service, monkeypatch, src, out, "--max-in-flight", "2")
        captured = capsys.readouterr()
        # Tasks created before the revoke keep their ids (a refused poll settles nothing): the
        # rerun re-attaches to them and creates the rest, nothing twice.
        assert code == 0, captured.err
        stats = service.stats()
        assert stats["creates"] == 20 and stats["duplicate_creates"] == 0
        assert max(stats["creates_by_body"].values()) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["totals"]["items"] == 20 and report["totals"]["not_sent"] is None


def test_max_creates_caps_then_a_higher_cap_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = prompts(tmp_path / "in.txt", 15), tmp_path / "out"
    with emulator() as service:
        code = batch(service, monkeypatch, src, out, "--max-creates", "6")
        captured = capsys.readouterr()
        assert code == 4, captured.err
        [line] = stop_lines(captured.err)
        assert line.startswith("stopped: --max-creates 6 reached")
        assert line.endswith("rerun with a higher --max-creates to resume")
        assert service.stats()["creates"] == 6
        report = json.loads((out / "report.json").read_text())
        assert report["totals"]["succeeded"] == 6 and report["totals"]["not_sent"] == 9
        assert report["stopped"]["cause"] is None

        # The same cap again: earlier creates count, so nothing more is created.
        assert batch(service, monkeypatch, src, out, "--max-creates", "6") == 4
        assert len(stop_lines(capsys.readouterr().err)) == 1
        assert service.stats()["creates"] == 6

        assert batch(service, monkeypatch, src, out, "--max-creates", "15") == 0
        capsys.readouterr()
        stats = service.stats()
        assert stats["creates"] == 15 and max(stats["creates_by_body"].values()) == 1
    assert len(list(out.glob("*.png"))) == 15


def test_max_creates_must_be_a_non_negative_integer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = prompts(tmp_path / "in.txt", 1)
    with pytest.raises(SystemExit) as exc:
        main(["batch", str(src), "--out", str(tmp_path / "o"), "--emulator", "--max-creates", "-1"])
    assert exc.value.code == 2
    assert "--max-creates" in capsys.readouterr().err


def test_as_a_process_the_stop_is_one_line_on_stderr(tmp_path: Path) -> None:
    src, out = prompts(tmp_path / "in.txt", 8), tmp_path / "out"
    with emulator("--credits", "3") as service:
        env = {**os.environ, "NANOBANANA_API_KEY": service.api_key}
        env.pop("NANOBANANA_BASE_URL", None)
        argv = [sys.executable, "-m", "nanobanana_async", "batch", str(src), "--out", str(out)]
        argv += ["--base-url", service.base_url, "--json", "--max-in-flight", "1"]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    # Only the command's own line: no SDK log record, no traceback.
    [line] = proc.stderr.splitlines()
    assert line.startswith("stopped: the account has no credits left (HTTP 402")
    summary = json.loads(proc.stdout)
    assert summary["exit_code"] == 4 and summary["stopped"]["message"] == line
    assert summary["totals"]["succeeded"] == 3


def test_result_by_id_of_a_task_without_an_image_shows_the_finish_reason_and_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from nanobanana_async import Client
    from nanobanana_async.emulator.wire import REFUSAL_TEXT

    with emulator() as service:

        async def create() -> str:
            async with Client(service.api_key, base_url=service.base_url) as client:
                job = await client.submit("[no-image] a banana")
                return job.request_id

        request_id = asyncio.run(create())
        monkeypatch.setenv("NANOBANANA_API_KEY", service.api_key)
        # By id the request is unknown (it may have been text-only): shown, not failed.
        assert main(["result", request_id, "--base-url", service.base_url]) == 0
    text = capsys.readouterr().out
    assert request_id in text and "no image (finish reason: SAFETY)" in text
    assert REFUSAL_TEXT in text
