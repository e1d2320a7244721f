"""``python -m benchmarks NAME [--quick]``: run one benchmark, or ``all`` of them in turn."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from . import overhead, peers, polling, profile, ratelimit, report, scale, web_backend

BENCHMARKS: dict[str, Callable[[list[str] | None], Any]] = {
    "overhead": overhead.main,
    "polling": polling.main,
    "scale": scale.main,
    "ratelimit": ratelimit.main,
    "peers": peers.main,
    "web_backend": web_backend.main,
}


def main(argv: list[str]) -> int:
    """Dispatch to the named benchmark; ``all`` runs each with the same flags."""
    if argv and argv[0] == "report":
        report.main([])
        return 0
    if argv and argv[0] == "profile":  # a diagnostic: prints, saves nothing
        profile.main(argv[1:])
        return 0
    if not argv or argv[0] not in {*BENCHMARKS, "all"}:
        print(
            f"usage: python -m benchmarks {{{','.join([*BENCHMARKS, 'all', 'profile'])}}} [--quick]"
        )
        return 2
    name, rest = argv[0], argv[1:]
    for key, run in BENCHMARKS.items():
        if name in (key, "all"):
            run(rest)
            print()
    # docs/benchmarks.md from whatever results exist; a quick run only prints its page (the
    # committed figures and plots stay as they are)
    report.main(["--quick"] if "--quick" in rest else [])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
