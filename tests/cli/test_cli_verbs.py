"""The CLI's one-task verbs (`status`, `result`, `cancel`) against a stand-in, and `batch --detach`.

The verbs run in-process (``main([...])``) while the stand-in serves from a thread of its own;
``--detach`` runs `batch` as a real process against a standalone emulator and interrupts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanobanana_async.cli import _single, main
from nanobanana_async.journal import Journal

from ..scripted import POLL, Scripted, body
from ..standin import serve
from .test_cli_crash import Service, prompts, service, start_batch, wait_for

__all__ = ["service"]  # the fixture, shared with the CLI crash tests


@contextlib.contextmanager
def running(standin: Scripted) -> Iterator[Scripted]:
    """Serve the stand-in on an event loop in a thread (the CLI runs its own loop)."""
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve_until_stopped() -> None:
        async with serve(standin):
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve_until_stopped(),))
    thread.start()
    try:
        assert ready.wait(10), "the stand-in did not start"
        yield standin
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@pytest.fixture(autouse=True)
def fast_client(monkeypatch: pytest.MonkeyPatch) -> None:
    original = _single.client_kwargs

    def with_fast_polls(args: Any) -> dict[str, Any]:
        return {**original(args), "poll": POLL}

    monkeypatch.setattr(_single, "client_kwargs", with_fast_polls)
    monkeypatch.setenv("NANOBANANA_API_KEY", "k")


def run(s: Scripted, *argv: str) -> list[str]:
    return [*argv, "--base-url", s.base_url]


def test_status_prints_the_state_and_queue_position(capsys: pytest.CaptureFixture[str]) -> None:
    class Queued(Scripted):
        async def status(self, request: Any) -> Any:
            from aiohttp import web

            self._hit("status", request.match_info["rid"])
            return web.json_response({"status": "IN_QUEUE", "queue_position": 4})

    with running(Queued()) as s:
        assert main(run(s, "status", "req_9")) == 0
        assert capsys.readouterr().out == "req_9: IN_QUEUE (queue position 4)\n"
        assert main(run(s, "status", "req_9", "--json")) == 0
        data = json.loads(capsys.readouterr().out)
        assert (data["state"], data["queue_position"]) == ("IN_QUEUE", 4)
        assert s.count("status", "req_9") == 2
        assert s.requests() == 2  # one request each, nothing else


def test_status_of_a_failed_task_prints_its_error(capsys: pytest.CaptureFixture[str]) -> None:
    class Failed(Scripted):
        async def status(self, request: Any) -> Any:
            from aiohttp import web

            self._hit("status", request.match_info["rid"])
            failure = {"status": "COMPLETED", "error": "nope", "error_type": "CONTENT_BLOCKED"}
            return web.json_response(failure)

    with running(Failed()) as s:
        assert main(run(s, "status", "req_3")) == 0
        assert capsys.readouterr().out.splitlines() == [
            "req_3: FAILED",
            "  CONTENT_BLOCKED: nope",
        ]


def test_result_waits_and_prints_the_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    with running(Scripted(pending_polls=2)) as s:
        assert main(run(s, "result", "req_7", "--json")) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["request_id"] == "req_7"
        assert [o["url"] for o in data["outputs"]] == ["https://cdn.example/x.png"]
        assert s.count("response", "req_7") == 3
        assert s.count("cancel") == 0
        assert main(run(s, "result", "req_8")) == 0
        assert "https://cdn.example/x.png" in capsys.readouterr().out


def test_result_of_a_failed_task_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    failure = {"status": "COMPLETED", "error": "nope", "error_type": "CONTENT_BLOCKED"}
    with running(Scripted(pending_polls=0, result=lambda rid: (200, body(failure)))) as s:
        assert main(run(s, "result", "req_1")) == 1
        err = capsys.readouterr().err
        assert "TaskFailedError" in err and "CONTENT_BLOCKED" in err and "nope" in err
        assert s.count("response", "req_1") == 1 and s.count("cancel") == 0


def test_result_of_an_unknown_id_exits_1_with_not_found(
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = {"detail": "Request not found"}
    with running(Scripted(pending_polls=0, poll_reply=lambda rid, n: (404, missing, {}))) as s:
        assert main(run(s, "result", "req_404")) == 1
        assert "NotFoundError" in capsys.readouterr().err
        assert s.count("response", "req_404") == 1


def test_cancel_says_requested_or_already_finished(capsys: pytest.CaptureFixture[str]) -> None:
    with running(Scripted(pending_polls=0)) as s:
        assert main(run(s, "cancel", "req_5")) == 0
        assert capsys.readouterr().out == "req_5: cancel requested\n"
        s.finished.add("req_6")
        assert main(run(s, "cancel", "req_6", "--json")) == 0
        assert json.loads(capsys.readouterr().out) == {"request_id": "req_6", "cancelled": False}
        assert s.count("cancel") == 2 and s.requests() == 2


def test_batch_detach_leaves_tasks_running_and_a_rerun_reattaches(
    service: Service, tmp_path: Path
) -> None:
    src, out = prompts(tmp_path / "input.txt", 4), tmp_path / "out"
    journal = out / "journal.sqlite"
    first = start_batch(service, src, out, "--detach", "--max-in-flight", "4")
    wait_for(journal, lambda r: r.counts["submitted"] == 4)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=15)
    assert first.returncode == 130, stderr
    stats = service.stats()
    assert stats["cancels"] == 0 and stats["creates"] == 4  # nothing cancelled on the service

    second = start_batch(service, src, out)
    _, stderr = second.communicate(timeout=30)
    assert second.returncode == 0, stderr
    stats = service.stats()
    assert stats["creates"] == 4 and stats["duplicate_creates"] == 0 and stats["cancels"] == 0
    assert Journal.report_sync(journal).counts["succeeded"] == 4
    assert len(list(out.glob("*.png"))) == 4
