"""The ``nanobanana-async`` command.

Exit codes: 0 success, 1 some items (or the task) failed, 2 usage or input error, 3 a batch
whose items all succeeded but skipped bad input lines, 4 a batch stopped before the end (the
account cannot go on, or ``--max-creates``; a rerun resumes), 130 interrupted (SIGINT/SIGTERM).
``demo`` counts its one intentionally blocked prompt as expected, so a demo run exits 0 when
only that item failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .._version import __version__

__all__ = ["main"]

_EPILOG = (
    "exit codes: 0 ok, 1 some items failed, 2 usage or input error, 3 bad input lines were "
    "skipped, 4 stopped (no credits, key refused, long rate-limit hold, or --max-creates "
    "reached; rerun to resume), 130 interrupted. "
    "The API key comes from NANOBANANA_API_KEY or --api-key-file and is never printed."
)


def _service_flags(p: argparse.ArgumentParser, *, emulator: bool) -> None:
    p.add_argument("--base-url", help="API base URL (default: NANOBANANA_BASE_URL or the service)")
    p.add_argument("--api-key-file", help="file holding the API key (else NANOBANANA_API_KEY)")
    p.add_argument("--model", help="model id (default nano_banana_pro)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    if emulator:
        p.add_argument(
            "--emulator", action="store_true", help="run against an in-process emulator (no key)"
        )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanobanana-async",
        description="Generate images with the Nano Banana Pro queue API (or its local emulator).",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="log the SDK's DEBUG messages to stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "emulator", help="run the local emulator of the service in the foreground", add_help=False
    )

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="run ~24 bundled prompts on an in-process emulator (no key, no network)",
        description="Run the bundled prompts against an in-process emulator, download the "
        "images and write report.json. One prompt is blocked on purpose; the demo exits 0 when "
        "only that one failed.",
    )
    p.add_argument("--out", default="nanobanana-demo", help="output directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser(
        "batch",
        parents=[common],
        help="run every request of a JSONL or text file, resumably",
        description="Run a batch from INPUT (JSONL with the wire's field names, or one prompt "
        "per line), download the images into --out, and journal everything so that a rerun "
        "resumes without paying twice.",
        epilog=_EPILOG,
    )
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--journal", help="journal file (default OUT/journal.sqlite)")
    p.add_argument("--max-in-flight", type=_positive_int, default=64)
    p.add_argument("--submit-rate", type=_positive_float, default=None, help="creates per second")
    p.add_argument(
        "--resubmit-unknown",
        action="store_true",
        help="create again items whose earlier create is ambiguous (may pay twice)",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="on Ctrl-C leave remote tasks running; the next run re-attaches to them",
    )
    p.add_argument(
        "--max-creates",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="spending cap: send at most N creates, counting earlier runs with this journal; "
        "when reached the batch stops (exit 4) and a rerun with a higher cap resumes",
    )
    p.add_argument("--strict", action="store_true", help="any bad line fails before sending")
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="run only the request lines at positions I modulo N (0 <= I < N), with their own "
        "journal and report (default names end in .shard-I-of-N); e.g. "
        "--shard $JOB_COMPLETION_INDEX/4",
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        help="share the account's rate budget with every other client through this Redis "
        "(redis://host:6379/0; needs the redis extra)",
    )
    _service_flags(p, emulator=True)

    p = sub.add_parser("generate", parents=[common], help="run one task and save its images")
    p.add_argument("prompt", metavar="PROMPT")
    p.add_argument("--aspect-ratio")
    p.add_argument("--image-size", choices=["1K", "2K", "4K"])
    p.add_argument("--image-url", action="append", help="reference image URL (repeatable)")
    p.add_argument("--text", action="store_true", help="ask for a text part too")
    p.add_argument("--out", required=True, help="output directory")
    _service_flags(p, emulator=True)

    for name, text in (
        ("status", "print a task's status"),
        ("result", "wait for a task and print (or save) its outputs"),
        ("cancel", "ask the service to cancel a task"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("id", metavar="ID")
        if name == "result":
            p.add_argument("--out", help="save the outputs into this directory")
        _service_flags(p, emulator=False)

    p = sub.add_parser(
        "report",
        parents=[common],
        help="summarise batch journals (several: the shards of one batch, merged)",
    )
    p.add_argument("journal", metavar="JOURNAL", nargs="+")
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _logging(verbose: bool) -> None:
    logger = logging.getLogger("nanobanana_async")
    if not verbose:
        # The command reports what matters itself, on one line; without a handler, Python's
        # last-resort handler would also print the SDK's warnings and errors on stderr.
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def _run(args: argparse.Namespace) -> int:
    from . import _commands as commands
    from . import _single as single

    if args.command in ("report", "demo", "batch"):
        sync = {
            "report": single.report_command,
            "demo": commands.demo_command,
            "batch": commands.batch_command,
        }
        return sync[args.command](args)
    table: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
        "generate": single.generate_command,
        "status": single.status_command,
        "result": single.result_command,
        "cancel": single.cancel_command,
    }
    return asyncio.run(table[args.command](args))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "emulator":
        from ..emulator._cli import main as emulator_main

        code: int = emulator_main(args[1:])
        return code
    parser = _parser()
    parsed = parser.parse_args(args)
    if parsed.command is None:
        parser.print_help()
        return 0
    _logging(parsed.verbose)
    from ..errors import NanoBananaError, ValidationError
    from ._commands import UsageError

    try:
        return _run(parsed)
    except UsageError as exc:
        print(f"nanobanana-async {parsed.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"nanobanana-async {parsed.command}: error: {exc}", file=sys.stderr)
        return 2
    except NanoBananaError as exc:
        print(f"nanobanana-async {parsed.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a signal before the handlers were installed
        print("interrupted", file=sys.stderr)
        return 130
