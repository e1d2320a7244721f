"""The command line, run in-process against the embedded emulator (sped up for the tests)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from nanobanana_async import __version__
from nanobanana_async.cli import _commands as _cli_commands
from nanobanana_async.cli import main
from nanobanana_async.emulator import EmulatorConfig, ServiceTime
from nanobanana_async.journal import Journal

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def fast_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    def config(workers: int = 8) -> EmulatorConfig:
        return EmulatorConfig(
            service_time=ServiceTime.lognormal(20.0, 0.5), time_scale=0.01, workers=workers
        )

    monkeypatch.setattr(_cli_commands, "emulator_config", config)
    monkeypatch.setattr("nanobanana_async.cli._single.emulator_config", config, raising=True)
    monkeypatch.setattr(
        _cli_commands,
        "EMULATOR_POLL",
        _cli_commands.PollPolicy(initial_delay=0.05, max_interval=0.1, min_interval=0.01),
    )
    monkeypatch.delenv("NANOBANANA_API_KEY", raising=False)


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pngs(out: Path) -> list[Path]:
    return sorted(out.glob("*.png"))


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out
    for argv in (["--help"], ["batch", "--help"], ["demo", "--help"], ["report", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "usage: nanobanana-async" in capsys.readouterr().out
    assert main([]) == 0


def test_emulator_help_names_the_service_time_drift(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["emulator", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "lognormal:MEDIAN,SIGMA" in out and "@AT*FACTOR" in out


def test_demo_downloads_reports_and_keeps_the_key_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "requests per task" in text and "latency p50" in text
    report = json.loads((out / "report.json").read_text())
    items = report["items"]
    assert len(items) == 24
    failed = [i for i in items if i["state"] != "succeeded"]
    assert len(failed) == 1 and "[blocked]" in failed[0]["prompt"]
    assert failed[0]["error_type"] == "CONTENT_BLOCKED"
    files = pngs(out)
    assert len(files) == 23
    for item in items:
        for f in item["files"]:
            data = (out / f["path"]).read_bytes()
            assert data.startswith(PNG) and hashlib.sha256(data).hexdigest() == f["sha256"]
    assert report["totals"]["requests_per_task"] > 0
    assert report["client_stats"]["requests_sent"] == report["totals"]["requests_sent"]
    for path in (out / "report.json", out / "journal.sqlite"):
        data = path.read_bytes()
        assert b"emulator-key" not in data and b"Bearer" not in data


def test_batch_jsonl_skips_a_bad_line_names_the_allowed_values_and_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(
        tmp_path / "in.jsonl",
        "# a comment",
        '{"prompt": "one", "aspect_ratio": "16:9"}',
        '{"prompt": "bad", "aspect_ratio": "7:5"}',
        "",
        '{"prompt": "two", "image_size": "2K"}',
    )
    out = tmp_path / "out"
    # Every request read succeeded, but a line was skipped: not a clean run.
    assert main(["batch", str(src), "--out", str(out), "--emulator"]) == 3
    captured = capsys.readouterr()
    [note] = [line for line in captured.err.splitlines() if "line 3" in line]
    assert "aspect_ratio: not an allowed value (got '7:5')" in note
    assert "allowed: 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9" in note
    assert "skipped line 3: aspect_ratio" in captured.out  # repeated in the summary
    names = [p.name for p in pngs(out)]
    # Item indices count valid lines only, so a rerun maps the same indices.
    assert [n[:5] for n in names] == ["00000", "00001"]
    report = json.loads((out / "report.json").read_text())
    assert report["bad_lines"][0]["line"] == 3
    assert report["bad_lines"][0]["field"] == "aspect_ratio"
    assert report["bad_lines"][0]["allowed"].startswith("1:1, 2:3")
    assert report["exit_code"] == 3


def test_mostly_bad_input_is_never_a_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(
        tmp_path / "in.jsonl",
        '{"prompt": "the only good one"}',
        '{"prompt": "a", "aspect_ratio": "7:5"}',
        '{"prompt": "b", "image_size": "8K"}',
        '{"prompt": "c", "colour": "red"}',
        '{"prompt": ""}',
        "not json at all",
        '{"prompt": "e", "response_modalities": ["Video"]}',
    )
    out = tmp_path / "out"
    assert main(["batch", str(src), "--out", str(out), "--emulator", "--json"]) == 3
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["exit_code"] == 3
    assert summary["totals"]["succeeded"] == 1 and summary["totals"]["bad_lines"] == 6
    for allowed in (
        "allowed: 1K, 2K, 4K",
        "allowed: prompt, image_urls, aspect_ratio, image_size, response_modalities",
        "allowed: 1 to 2500 characters",
        "allowed: Text, Image",
    ):
        assert allowed in captured.err
    assert "line 6: json: not valid JSON" in captured.err

    # A failed item as well: 1 (some items failed) comes before 3.
    src = write(tmp_path / "mixed.txt", "[blocked] no", '{"prompt": "x", "image_size": "8K"}')
    assert main(["batch", str(src), "--out", str(tmp_path / "o2"), "--emulator"]) == 1


def test_strict_fails_before_sending_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing may be sent with --strict and a bad line")

    monkeypatch.setattr(_cli_commands, "_execute", no_run)
    src = write(tmp_path / "in.txt", "fine prompt", '{"prompt": "x", "image_size": "8K"}')
    code = main(["batch", str(src), "--out", str(tmp_path / "o"), "--emulator", "--strict"])
    assert code == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "image_size" in err


def test_plain_text_batch_partial_failure_json_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path / "prompts.txt", "a red banana", "[blocked] nope", "a blue banana")
    out = tmp_path / "out"
    assert main(["batch", str(src), "--out", str(out), "--emulator", "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["totals"]["succeeded"] == 2 and summary["totals"]["failed"] == 1
    assert summary["failures"][0]["index"] == 1
    assert summary["failures"][0]["error_type"] == "CONTENT_BLOCKED"
    assert len(pngs(out)) == 2

    assert main(["report", str(out / "journal.sqlite")]) == 0
    text = capsys.readouterr().out
    assert "succeeded" in text and "failed" in text
    assert main(["report", str(out / "journal.sqlite"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["succeeded"] == 2 and report["counts"]["failed"] == 1
    assert len(report["request_ids"]) == 3

    # A rerun replays the journal: nothing is downloaded again (same files, same mtimes).
    before = {p: p.stat().st_mtime_ns for p in pngs(out)}
    assert main(["batch", str(src), "--out", str(out), "--emulator", "--json"]) == 1
    again = json.loads(capsys.readouterr().out)
    assert again["totals"]["resumed"] == 3 and again["totals"]["requests_sent"] == 0
    assert {p: p.stat().st_mtime_ns for p in pngs(out)} == before


def test_missing_key_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path / "in.txt", "a prompt")
    assert main(["batch", str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "NANOBANANA_API_KEY" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_hostile_file_names_stay_inside_out_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nanobanana_async.emulator import wire

    original = wire.success_body

    def hostile(*args: Any, **kwargs: Any) -> dict[str, Any]:
        body = original(*args, **kwargs)
        for output in body["outputs"]:
            if output["type"] == "image":
                output["file_name"] = "../../escaped/../../evil.sh"
                output["content_type"] = None
        return body

    monkeypatch.setattr(wire, "success_body", hostile)
    src = write(tmp_path / "in.txt", "one", "two")
    out = tmp_path / "deep" / "out"
    assert main(["batch", str(src), "--out", str(out), "--emulator"]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    outside = [p for p in written if p.parent != out and p != src]
    assert outside == []
    assert len(pngs(out)) == 2 and not list(out.glob("*.sh"))


def test_without_rich_plain_output_and_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    src = write(tmp_path / "in.txt", "a prompt")
    assert main(["batch", str(src), "--out", str(tmp_path / "o"), "--emulator"]) == 0
    captured = capsys.readouterr()
    assert "install nanobanana-async[cli]" in captured.err
    assert "done" in captured.out and "requests per task" in captured.out


def test_generate_with_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g"
    code = main(
        [
            "generate",
            "a banana",
            "--aspect-ratio",
            "16:9",
            "--text",
            "--out",
            str(out),
            "--emulator",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    (png,) = pngs(out)
    assert str(png) in text and "Here is your image" in text
    assert png.read_bytes().startswith(PNG)


def test_generate_without_an_image_prints_the_refusal_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nanobanana_async.emulator.wire import REFUSAL_TEXT

    out = tmp_path / "g"
    argv = ["generate", "[no-image] a banana", "--text", "--out", str(out), "--emulator"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert REFUSAL_TEXT in captured.out and "finish reason: SAFETY" in captured.out
    [line] = captured.err.strip().splitlines()
    assert "generate: task " in line and "without an image (finish reason: SAFETY)" in line
    assert pngs(out) == []

    assert main([*argv, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["error_type"] == "NO_IMAGE" and document["finish_reason"] == "SAFETY"
    assert document["text"] == REFUSAL_TEXT and document["files"] == []


def test_report_lists_unknown_items_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    path = tmp_path / "j.sqlite"

    async def make() -> None:
        async with await Journal.open(path) as journal:
            await journal.record_intent(0, {"prompt": "a"})
            await journal.record_submitted(0, "req-0")
            await journal.record_intent(1, {"prompt": "b"})

    asyncio.run(make())
    assert main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    assert "req-0" in text and "--resubmit-unknown" in text and "items 1" in text
