"""Sharded batches: ``batch --shard I/N`` and ``report`` merging the shards' journals."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from benchmarks._harness import StandaloneEmulator
from nanobanana_async.cli import _commands as _cli_commands
from nanobanana_async.cli import main
from nanobanana_async.cli._input import Shard, read_requests
from nanobanana_async.emulator import Emulator, EmulatorConfig, ServiceTime
from nanobanana_async.journal import Journal

from ..helpers import client_for
from ..redis_server import RedisServer


@pytest.fixture(autouse=True)
def fast_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    def config(workers: int = 8) -> EmulatorConfig:
        return EmulatorConfig(
            service_time=ServiceTime.lognormal(20.0, 0.5), time_scale=0.01, workers=workers
        )

    monkeypatch.setattr(_cli_commands, "emulator_config", config)
    monkeypatch.setattr(
        _cli_commands,
        "EMULATOR_POLL",
        _cli_commands.PollPolicy(initial_delay=0.05, max_interval=0.1, min_interval=0.01),
    )
    monkeypatch.delenv("NANOBANANA_API_KEY", raising=False)


def prompts(path: Path, n: int) -> Path:
    lines = ["# a batch", ""] + [f"prompt {i}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_shard_takes_the_positions_i_modulo_n_and_a_bad_line_belongs_to_one_shard(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"prompt": f"p{i}"}) for i in range(7)]
    lines[4] = '{"prompt": "bad", "aspect_ratio": "7:5"}'
    src.write_text("# header\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    seen: dict[int, str] = {}
    bad_by_shard = []
    for i in range(3):
        positions: list[int] = []
        bad: list[object] = []
        got = list(read_requests(src, bad.append, shard=Shard(i, 3), positions=positions))
        assert all(p % 3 == i for p in positions)
        seen.update({p: r.prompt for p, r in zip(positions, got, strict=True)})
        bad_by_shard.append(len(bad))
    assert seen == {p: f"p{p}" for p in range(7) if p != 4}
    assert bad_by_shard == [0, 1, 0]  # position 4 is shard 1's, and only its


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1/0", "x", "1", "1/2/3"])
def test_a_bad_shard_is_a_usage_error(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = prompts(tmp_path / "in.txt", 3)
    code = main(["batch", str(src), "--out", str(tmp_path / "o"), "--emulator", f"--shard={text}"])
    assert code == 2
    assert "--shard" in capsys.readouterr().err
    assert Shard.parse("2/3") == Shard(2, 3) and str(Shard(2, 3)) == "2/3"


def test_shards_share_an_out_dir_each_with_its_journal_and_report_merged_by_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = prompts(tmp_path / "in.txt", 10)
    out = tmp_path / "out"
    for i in range(3):
        assert main(["batch", str(src), "--out", str(out), "--emulator", "--shard", f"{i}/3"]) == 0
    capsys.readouterr()
    journals = [out / f"journal.shard-{i}-of-3.sqlite" for i in range(3)]
    indices: list[int] = []
    for i in range(3):
        report = json.loads((out / f"report.shard-{i}-of-3.json").read_text())
        assert report["shard"] == f"{i}/3" and report["journal"] == str(journals[i])
        items = report["items"]
        # Item numbers are positions in the whole input, the same on every machine.
        assert [item["index"] for item in items] == list(range(i, 10, 3))
        assert all(item["prompt"] == f"prompt {item['index']}" for item in items)
        for item in items:
            assert item["files"] and item["files"][0]["path"].startswith(f"{item['index']:05d}_")
        indices += [item["index"] for item in items]
    assert sorted(indices) == list(range(10))
    assert not (out / "report.json").exists() and not (out / "journal.sqlite").exists()

    assert main(["report", *map(str, journals), "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert merged["counts"]["succeeded"] == 10 and merged["total"] == 10
    assert len(set(merged["request_ids"])) == 10
    assert [j["total"] for j in merged["journals"]] == [4, 3, 3]
    assert merged["unknown"] == [] and merged["not_sent"] == 0

    assert main(["report", *map(str, journals)]) == 0
    text = capsys.readouterr().out
    assert "3 journals" in text and "request ids (10)" in text

    # A rerun of one shard resumes from its own journal: nothing is created again.
    assert main(["batch", str(src), "--out", str(out), "--emulator", "--shard", "1/3"]) == 0
    report = json.loads((out / "report.shard-1-of-3.json").read_text())
    assert [i["index"] for i in report["items"]] == [1, 4, 7]
    assert all(i["resumed"] for i in report["items"])


@pytest.mark.anyio
async def test_merged_report_names_each_journal_of_its_unknown_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [tmp_path / "a.sqlite", tmp_path / "b.sqlite"]
    async with await Journal.open(paths[0]) as journal:
        await journal.record_intent(0, {"prompt": "x"})
        await journal.record_submitted(0, "req-a0")
    async with await Journal.open(paths[1]) as journal:
        await journal.record_intent(0, {"prompt": "y"})
        await journal.record_submitted(0, "req-b0")
        await journal.record_intent(1, {"prompt": "z"})  # sent, no answer: may be billed
    assert main(["report", *map(str, paths)]) == 0
    text = capsys.readouterr().out
    assert (
        "by journal" in text and f"{paths[1]}: items 1" in text and str(paths[0]) + ":" not in text
    )
    assert main(["report", *map(str, paths), "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert merged["unknown"] == [{"journal": str(paths[1]), "index": 1}]
    assert merged["request_ids"] == ["req-a0", "req-b0"]
    # One journal: the report it always printed.
    assert main(["report", str(paths[1]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unknown"] == [1]


@pytest.mark.anyio
async def test_the_library_way_islice_per_shard_and_one_journal_each(tmp_path: Path) -> None:
    # What docs/guides/scaling.md shows: shard i of n is islice(requests, i, None, n), and
    # its item k is item i + k*n of the whole batch.
    requests = [f"prompt {p}" for p in range(7)]
    n = 3
    config = EmulatorConfig(service_time=ServiceTime.fixed(0.01))
    async with Emulator(config) as emu:
        for i in range(n):
            journal = tmp_path / f"journal.shard-{i}-of-{n}.sqlite"
            async with client_for(emu) as client:
                mine = islice(requests, i, None, n)
                async for outcome in client.stream(mine, journal=journal):
                    position = i + outcome.index * n
                    assert outcome.request is not None
                    assert outcome.request.prompt == requests[position]
        stats = emu.stats.to_dict()
    assert sum(stats["creates_by_body"].values()) == 7
    assert stats["duplicate_creates"] == 0


def test_shards_with_redis_share_one_budget_against_a_limited_service(
    tmp_path: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--rate-limit", "40", "--rate-burst", "4", "--service-time", "fixed:0.05"]
    src = prompts(tmp_path / "in.txt", 12)
    out = tmp_path / "out"
    with StandaloneEmulator(args) as emu:
        monkeypatch.setenv("NANOBANANA_API_KEY", emu.api_key)
        for i in range(2):
            argv = ["batch", str(src), "--out", str(out), "--base-url", emu.base_url]
            argv += ["--shard", f"{i}/2", "--redis", redis_server.url, "--json"]
            assert main(argv) == 0
        stats = emu.stats()
    capsys.readouterr()
    assert stats["duplicate_creates"] == 0 and sum(stats["creates_by_body"].values()) == 12
    merged = [out / f"journal.shard-{i}-of-2.sqlite" for i in range(2)]
    assert main(["report", *map(str, merged), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["succeeded"] == 12
    # The budget lives in Redis under a hash of the account, never the key itself.
    import redis

    keys = redis.Redis.from_url(redis_server.url).keys("*")
    assert len(keys) == 1 and b"nanobanana-async:pace:" in keys[0]
    assert emu.api_key.encode() not in keys[0]
