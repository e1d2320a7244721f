"""The benchmarks page states met/missed from the figures, and labels quick runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report


def _ratelimit(share: float, utilisation: float = 1.0) -> dict[str, Any]:
    run = {"rate_limit": 50.0, "utilisation": utilisation, "share_429": share}
    return {"runs": [run]}


def test_each_target_is_judged_from_its_figure() -> None:
    [useful, share] = report.checks("ratelimit", _ratelimit(0.08))
    assert (useful.met, share.met) == (True, False)
    assert share.shown == "8.00%" and share.verdict == "**MISSED**"
    [useful, share] = report.checks("ratelimit", _ratelimit(0.02, utilisation=0.89))
    assert (useful.met, share.met) == (False, True)  # the limits themselves are met
    scale = {"sizes": [
        {"in_flight": 100, "rss_mb": 40.0, "cpu_per_poll_ratio": 1.0},
        {"in_flight": 10000, "rss_mb": 151.0, "cpu_per_poll_ratio": 1.3},
    ]}  # fmt: skip
    assert [c.met for c in report.checks("scale", scale)] == [False, True]
    assert report.checks("peers", {}) == []  # no target stated


def test_polling_adaptive_near_optimum_and_fixed_intervals_farther() -> None:
    def policy(ratio: float) -> dict[str, Any]:
        return {
            "ratio_to_optimum": ratio,
            "polls_per_task": {"median": 1.0},
            "mean_delay_s": {"median": 1.0},
        }

    data = {"policies": {"default": policy(1.05), "fixed 1 s": policy(1.2)}}
    assert [c.met for c in report.checks("polling", data)] == [True, True]
    data = {"policies": {"default": policy(1.12), "fixed 1 s": policy(1.1)}}
    assert [c.met for c in report.checks("polling", data)] == [False, False]


def test_the_page_lists_every_miss_and_labels_quick_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "quick").mkdir()
    data = {"machine": {"date": "d"}, "quick": True, "runs": [
        {"rate_limit": 50.0, "tasks": 1, "utilisation": 1.0, "share_429": 0.08,
         "share_429_steady": 0.0, "settle_s": 1, "learned_rate": 50.0, "duplicate_creates": 0},
    ]}  # fmt: skip
    (tmp_path / "quick" / "ratelimit.json").write_text(json.dumps(data))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    page = report.render(quick=True)
    assert "**1 of 2 targets missed:**" in page
    assert "- P4: overall 429 share (R = 50 req/s) ≤ 2.00% — measured 8.00%" in page
    assert page.count(report.QUICK_NOTE) == 2  # at the top, and on the section itself
    assert "_Not run yet: `python -m benchmarks overhead`._" in page


def _peer_run(cpu_s: float, requests: int) -> dict[str, Any]:
    return {
        "client_cpu_s": cpu_s,
        "requests": requests,
        "cpu_ms_per_request": 1000 * cpu_s / requests,
    }


def _peers_data(sdk_cpu: float, gather_cpu: float) -> dict[str, Any]:
    """A real-time P5 result as peers.run returns it (one repeat, no fal-client)."""
    from benchmarks import peers

    def summary(cpu: float, requests: int) -> dict[str, Any]:
        run = {**_peer_run(cpu, requests), "wall_s": 120.0, "requests_per_task": requests / 200,
               "client_peak_rss_mb": 40.0, "emulator_cpu_s": 1.0, "mean_delay_s": 1.0,
               "p95_delay_s": 2.0}  # fmt: skip
        out: dict[str, Any] = {k: {"median": v, "min": v, "max": v} for k, v in run.items()}
        return {**out, "ok": [200], "runs": [run]}

    sdk, gather = summary(sdk_cpu, 2000), summary(gather_cpu, 2000)
    return {
        "scale": 1.0, "tasks": 200, "concurrency": 50, "real_time": True,
        "poll_intervals_real_s": {"sdk": "adaptive", "gather": 3.0},
        "sdk_over_gather_cpu_per_request": peers.cpu_ratio(sdk["runs"], gather["runs"]),
        "peers": {"sdk": sdk, "gather": gather}, "skipped": {"fal-client": "not installed"},
    }  # fmt: skip


def test_real_time_peers_judge_cpu_per_request_against_the_gather_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [check] = report.checks("peers_realtime", _peers_data(1.89, 0.46))
    assert (check.met, check.shown) == (False, "4.11×")
    assert check.target == "real time: SDK ÷ gather client CPU per request ≤ 1.20×"
    [check] = report.checks("peers_realtime", _peers_data(0.55, 0.46))
    assert (check.met, check.shown) == (True, "1.20×")
    # Results saved before the ratio was: computed from the runs; no gather run: not measured.
    data = _peers_data(0.92, 0.46)
    del data["sdk_over_gather_cpu_per_request"]
    assert report.checks("peers_realtime", data)[0].shown == "2.00×"
    del data["peers"]["gather"]
    assert report.checks("peers_realtime", data)[0].met is None
    # The page: the real-time table next to the scaled one, with CPU per request and the ratio.
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    monkeypatch.setattr(report, "plots", lambda results: {})  # writes no docs/img
    assert "_Not run yet: `python -m benchmarks peers --real-time`._" in report.render()
    (tmp_path / "peers_realtime.json").write_text(json.dumps(_peers_data(1.89, 0.46)))
    page = report.render()
    section = page[page.index("## P5 (real time)") :]
    assert "| CPU ms/req |" in section and "| 0.945 " in section and "| 0.23 " in section
    assert "Client CPU per request, SDK ÷ gather: **4.11×**" in section
    assert "- P5: real time: SDK ÷ gather client CPU per request ≤ 1.20× — measured 4.11×" in page


def test_real_time_peers_show_wake_ups_and_the_sdk_on_the_gather_schedule() -> None:
    from benchmarks import peers

    old = _peers_data(0.55, 0.46)
    text = peers.report(old)
    # Saved before wake-ups were counted: the column says so; no sdk-fixed run: no line for it.
    assert "| wake-ups/req |" in text and "| — " in text
    assert "sdk-fixed" not in text
    data = _peers_data(0.55, 0.46)
    data["peers"]["gather"]["wakeups_per_request"] = {"median": 0.1, "min": 0.1, "max": 0.1}
    data["peers"]["sdk"]["wakeups_per_request"] = {"median": 0.24, "min": 0.24, "max": 0.24}
    fixed = _peers_data(0.5, 0.46)["peers"]["sdk"]
    data["peers"]["sdk-fixed"] = fixed
    data["poll_intervals_real_s"]["sdk-fixed"] = 3.0
    data["sdk_fixed_over_gather_cpu_per_request"] = peers.cpu_ratio(
        fixed["runs"], data["peers"]["gather"]["runs"]
    )
    text = peers.report(data)
    assert "| 0.24 " in text and "| 0.1 " in text
    assert "(sdk-fixed: every 3 s, no learning) ÷ gather: **1.09×**" in text
    # Runs saved without their task count: no per-task line; with it, paired by repeat.
    assert "per task" not in text
    data["peers"]["sdk"]["runs"][0]["tasks"] = 200
    data["peers"]["gather"]["runs"][0]["tasks"] = 100
    text = peers.report(data)
    assert "Client CPU per task, SDK ÷ gather: **0.60×** (0.60–0.60)" in text
    [row] = [line for line in text.splitlines() if line.startswith("| sdk-fixed ")]
    assert "| 3 s (=3) " in row


def test_learning_targets_count_at_the_top_of_the_page() -> None:
    results = Path(report.__file__).parent / "results" / "polling_learn.json"
    data = json.loads(results.read_text())
    found = report.checks("polling_learn", data)
    assert found and all(c.section == "P6" for c in found)
    first = next(k for k in data["short_tasks"] if k.startswith("censored"))
    data["short_tasks"][first]["delay_vs_fixed"] = 1.01
    missed = [c for c in report.checks("polling_learn", data) if c.met is False]
    assert len(missed) == 1 and missed[0].target.startswith("(a)")
    assert "1.0100" in missed[0].shown


def test_real_time_peers_show_the_collector_apart() -> None:
    from benchmarks import peers

    data = _peers_data(0.55, 0.46)
    text = peers.report(data)
    # Saved before GC pauses were timed: the column says so and there is no line for them.
    assert "| CPU ms/req | of which GC |" in text and "outside garbage collection" not in text
    sdk, gather = data["peers"]["sdk"], data["peers"]["gather"]
    sdk["runs"][0]["gc_ms_per_request"] = 0.05  # 0.275 ms/req: 0.225 outside
    gather["runs"][0]["gc_ms_per_request"] = 0.03  # 0.23 ms/req: 0.2 outside
    sdk["gc_ms_per_request"] = {"median": 0.05, "min": 0.05, "max": 0.05}
    text = peers.report(data)
    assert "outside garbage collection, SDK ÷ gather: **1.12×** (1.12–1.12)" in text
    [row] = [line for line in text.splitlines() if line.startswith("| sdk ")]
    assert "| 0.05 " in row


def test_gc_pauses_count_only_while_on_and_by_generation() -> None:
    import gc

    from benchmarks import peers
    from benchmarks._harness import GcPauses

    pauses = GcPauses(on=False)
    gc.callbacks.append(pauses.on_gc)
    try:
        gc.collect()  # before the window: not counted
        assert pauses.count == [0, 0, 0] and pauses.total == 0
        pauses.restart()
        gc.collect()
        gc.collect(0)
    finally:
        gc.callbacks.remove(pauses.on_gc)
    assert pauses.count[0] == 1 and pauses.count[2] == 1 and len(pauses.full_pauses) == 1
    assert 0 < pauses.full_pauses[0] <= pauses.total < 5
    # The peers' worker starts its count with the measured window, not at import.
    peers._GC.count[2] = 7
    peers._mark()
    assert peers._GC.on and peers._GC.count == [0, 0, 0]
    peers._GC.on = False


@pytest.mark.anyio
async def test_the_minimal_server_answers_pending_polls_before_the_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiohttp
    from aiohttp.test_utils import TestServer

    from benchmarks import _minimal_server

    monkeypatch.setattr(_minimal_server, "_PENDING", 2)
    async with TestServer(_minimal_server.app()) as server, aiohttp.ClientSession() as session:
        base = str(server.make_url("/model/v1/queue/m"))
        async with session.post(base, json={}) as r:
            rid = (await r.json())["request_id"]
        seen = []
        for _ in range(3):  # a client stops at the result (the server keeps no finished ids)
            async with session.get(f"{base}/requests/{rid}/response") as r:
                seen.append((r.status, (await r.json()).get("status")))
    assert seen == [(202, "IN_PROGRESS"), (202, "IN_PROGRESS"), (200, None)]
    assert not _minimal_server._polls  # a finished task's counter is dropped


def test_overhead_reports_the_pending_poll_part_when_measured() -> None:
    from benchmarks import overhead

    one = {"median": 1.0, "min": 1.0, "max": 1.0}
    data: dict[str, Any] = {
        "tasks": 10, "concurrency": 4, "workers": 2, "ratio": one,
        "plain_tasks_per_s": one, "sdk_tasks_per_s": one, "plain_cpu_us_per_task": one,
        "sdk_cpu_us_per_task": one, "default_policy_tasks_per_s": 1.0,
    }  # fmt: skip
    assert "Polls of running tasks" not in overhead.report(data)
    data["pending"] = {
        "polls_pending": 8, "tasks": 5,
        "plain_cpu_us_per_request": {"median": 80.0, "min": 80.0, "max": 80.0},
        "sdk_cpu_us_per_request": {"median": 100.0, "min": 100.0, "max": 100.0},
        "ratio": {"median": 1.25, "min": 1.2, "max": 1.3},
    }  # fmt: skip
    text = overhead.report(data)
    assert "202 8 times per task" in text and "80 µs per request for plain" in text
    assert "100 µs for the SDK: **1.25×** (1.20–1.30) of plain" in text
