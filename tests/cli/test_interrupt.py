"""The CLI's signal handlers in-process: real signals, a stand-in for ``os._exit``."""

from __future__ import annotations

import os
import signal
import sys

import anyio
import pytest

from nanobanana_async.cli._batch import EXIT_INTERRUPTED, Interrupt

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.mark.anyio
async def test_first_signal_cancels_the_scope_second_exits_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exits: list[int] = []
    exited = anyio.Event()

    def exit_process(code: int) -> None:
        exits.append(code)
        exited.set()

    interrupt = Interrupt(abandon_note="resume with `x`", exit_process=exit_process)
    with interrupt.installed() as scope:
        with scope:
            os.kill(os.getpid(), signal.SIGTERM)
            await anyio.sleep(5)  # cancelled by the handler
        assert scope.cancelled_caught and interrupt.signal == "SIGTERM" and not exits
        # The cleanup that follows is still covered: a second signal does not wait for it.
        os.kill(os.getpid(), signal.SIGINT)
        with anyio.fail_after(5):
            await exited.wait()
    assert exits == [EXIT_INTERRUPTED]
    assert capsys.readouterr().err.splitlines() == [
        "SIGINT again: exiting without waiting for cleanup; resume with `x`"
    ]
