"""The standalone command and its argument parsing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from nanobanana_async.emulator import Faults, ServiceTime, TaskFaults, Variants
from nanobanana_async.emulator._cli import _parser, build_config


def test_build_config_from_arguments() -> None:
    args = _parser().parse_args(
        [
            "--port",
            "0",
            "--workers",
            "3",
            "--service-time",
            "uniform:1,3",
            "--time-scale",
            "0.5",
            "--seed",
            "9",
            "--rate-limit",
            "5",
            "--credits",
            "10",
            "--retention",
            "60",
            "--fault",
            "error_503=0.1",
            "--fault",
            "reset=0.02",
            "--fault-routes",
            "status,result",
            "--task-fault",
            "content_blocked=0.05",
            "--variant",
            "lowercase_status",
            "--variant",
            "id_field",
            "--api-key",
            "k",
        ]
    )
    cfg = build_config(args)
    assert cfg.port == 0 and cfg.workers == 3 and cfg.api_key == "k"
    assert cfg.service_time == ServiceTime.uniform(1, 3)
    assert cfg.time_scale == 0.5 and cfg.seed == 9 and cfg.rate_limit == 5.0
    assert cfg.credits == 10 and cfg.retention == 60
    assert cfg.faults == Faults(error_503=0.1, reset=0.02, routes=frozenset({"status", "result"}))
    assert cfg.task_faults == TaskFaults(content_blocked=0.05)
    assert cfg.variants == Variants(lowercase_status=True, id_field=True)


def test_build_config_outcome_knobs() -> None:
    default = build_config(_parser().parse_args([]))
    assert default.revoke_after_creates is None and default.deterministic_ids is False
    args = _parser().parse_args(
        [
            "--credits",
            "5",
            "--revoke-after-creates",
            "3",
            "--deterministic-ids",
            "--task-fault",
            "no_image=0.25",
            "--variant",
            "failure_with_outputs",
        ]
    )
    cfg = build_config(args)
    assert cfg.credits == 5 and cfg.revoke_after_creates == 3 and cfg.deterministic_ids
    assert cfg.task_faults == TaskFaults(no_image=0.25)
    assert cfg.variants == Variants(failure_with_outputs=True)


def test_revoke_after_zero_creates_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    from nanobanana_async.emulator._cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--revoke-after-creates", "0"])
    assert exc.value.code == 2
    assert "revoke_after_creates" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["fixed", "uniform:3", "lognormal:0,1", "gamma:1", "fixed:x"])
def test_bad_service_time(text: str) -> None:
    with pytest.raises(ValueError, match="service time"):
        ServiceTime.parse(text)


def test_unknown_fault_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    from nanobanana_async.emulator._cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--fault", "meteor=1"])
    assert exc.value.code == 2
    assert "unknown fault" in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_standalone_serves_then_exits_cleanly(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nanobanana_async.emulator",
            "--port",
            "0",
            "--api-key",
            "k1",
            "--service-time",
            "fixed:0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        fields = dict(part.split("=", 1) for part in line.split())
        base_url = fields["base_url"]
        assert fields["api_key"] == "k1" and fields["cdn_url"].startswith("http://127.0.0.1:")
        req = urllib.request.Request(
            f"{base_url}/v1/queue/nano_banana_pro",
            data=json.dumps({"prompt": "cli"}).encode(),
            headers={"Authorization": "Key k1", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
            assert json.load(resp)["request_id"].startswith("mmsu_")
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
