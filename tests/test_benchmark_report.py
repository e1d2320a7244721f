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
