"""The ``batch`` and ``demo`` commands: wire a client (real or emulated) to the batch engine."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from collections.abc import Iterable
from contextlib import AsyncExitStack
from importlib import resources
from pathlib import Path
from typing import Any

from .._client import Client
from .._http._wire import parse_request
from .._polling._policy import PollPolicy
from ..journal import Journal, JournalMismatchError
from ..models import GenerationRequest
from ._batch import Interrupt, RunOptions, RunResult, run_batch
from ._input import BadLine, Shard, count_candidates, read_requests
from ._summary import EXIT_USAGE, finish
from ._ui import Progress

__all__ = ["UsageError", "batch_command", "client_kwargs", "demo_command", "emulator_config"]

# The emulator runs at a tenth of real time, so polls are scaled down to match.
EMULATOR_POLL = PollPolicy(
    initial_delay=1.0, max_interval=2.0, min_interval=0.05, target_delay=0.25, min_samples=8
)


class UsageError(Exception):
    """A command-line or input error: reported on one line, exit code 2."""


def emulator_config(workers: int = 8) -> Any:
    """The in-process emulator's configuration: realistic timings at a tenth of real time."""
    from ..emulator import EmulatorConfig, ServiceTime

    return EmulatorConfig(
        service_time=ServiceTime.lognormal(20.0, 0.5), time_scale=0.1, workers=workers
    )


def client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Client options from --api-key-file/--base-url/--model (the key is read by the Client)."""
    key_file = getattr(args, "api_key_file", None)
    if key_file is None and not os.environ.get("NANOBANANA_API_KEY", "").strip():
        raise UsageError(
            "no API key: set NANOBANANA_API_KEY or pass --api-key-file FILE "
            "(or --emulator to run against the local emulator)"
        )
    kwargs: dict[str, Any] = {"api_key_file": key_file, "base_url": args.base_url}
    if getattr(args, "model", None):
        kwargs["model"] = args.model
    return kwargs


async def _execute(
    args: argparse.Namespace,
    *,
    use_emulator: bool,
    journal_path: Path,
    requests: Iterable[GenerationRequest],
    opts: RunOptions,
    progress: Progress,
) -> RunResult:
    interrupt = Interrupt(progress, abandon_note=_abandon_note(args, use_emulator, journal_path))
    # Installed around the cleanup too: a second signal while the client closes exits at once.
    with interrupt.installed():
        async with AsyncExitStack() as stack:
            if use_emulator:
                from ..emulator import Emulator

                emu = await stack.enter_async_context(Emulator(emulator_config()))
                client = Client(
                    emu.api_key,
                    base_url=emu.base_url,
                    poll=EMULATOR_POLL,
                    cancel_on_abandon=not opts.detach,
                )
            else:
                client = Client(
                    **client_kwargs(args),
                    cancel_on_abandon=not opts.detach,
                    rate_limit=getattr(args, "redis", None),
                )
            journal = await Journal.open(journal_path)
            stack.push_async_callback(journal.aclose)
            await stack.enter_async_context(client)
            return await run_batch(client, journal, requests, opts, progress, interrupt)
    raise AssertionError("unreachable")  # pragma: no cover - mypy cannot see the return above


def _abandon_note(args: argparse.Namespace, use_emulator: bool, journal_path: Path) -> str:
    """What a second Ctrl-C says: what may still run, and how to resume."""
    if use_emulator:
        return "the in-process emulator and its tasks end with this process"
    command = _command_line()
    if not getattr(args, "journal", None):
        command += f" --journal {shlex.quote(str(journal_path))}"
    report = f"nanobanana-async report {shlex.quote(str(journal_path))}"
    return (
        "remote tasks may still be running; "
        f"resume with `{command}` (re-attaches to them, creates nothing twice) "
        f"or stop one with `nanobanana-async cancel <id>` (ids: `{report}`)"
    )


def _command_line() -> str:
    argv = [a for a in sys.argv[1:]]
    return "nanobanana-async " + " ".join(shlex.quote(a) for a in argv)


def batch_command(args: argparse.Namespace) -> int:
    """``batch INPUT --out DIR``: run a journaled batch and download every output."""
    path = Path(args.input)
    if not path.is_file():
        raise UsageError(f"no input file {path}")
    shard = _shard(args)
    if not args.emulator:
        client_kwargs(args)  # fail on a missing key before touching anything
    if args.redis and args.emulator:
        raise UsageError("--redis shares a real account's rate budget; not with --emulator")
    if args.strict:
        bad: list[BadLine] = []
        for _ in read_requests(path, bad.append, shard=shard):
            pass
        if bad:
            for line in bad:
                print(f"{path}:{line}", file=sys.stderr)
            print(f"{len(bad)} bad line(s); nothing was sent (--strict)", file=sys.stderr)
            return EXIT_USAGE
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Each shard has its own journal and report (shards may share --out).
    suffix = f".{shard.label}" if shard is not None else ""
    journal_path = Path(args.journal) if args.journal else out_dir / f"journal{suffix}.sqlite"
    positions: list[int] | None = [] if shard is not None else None
    opts = RunOptions(
        out_dir,
        max_in_flight=args.max_in_flight,
        submit_rate=args.submit_rate,
        resubmit_unknown=args.resubmit_unknown,
        detach=args.detach,
        max_creates=args.max_creates,
        positions=positions,
    )
    expected = count_candidates(path, shard)
    progress = Progress(total=expected, enabled=not args.json)
    bad_lines: list[BadLine] = []

    def on_bad(line: BadLine) -> None:
        bad_lines.append(line)
        progress.skipped()
        progress.note(f"{path}:{line} (skipped)")

    try:
        with progress:
            result = asyncio.run(
                _execute(
                    args,
                    use_emulator=args.emulator,
                    journal_path=journal_path,
                    requests=read_requests(path, on_bad, shard=shard, positions=positions),
                    opts=opts,
                    progress=progress,
                )
            )
    except JournalMismatchError as exc:
        raise UsageError(f"{exc} (journal {journal_path}; use another --journal)") from None
    result.bad_lines = bad_lines
    return finish(
        result,
        out_dir=out_dir,
        journal=journal_path,
        title="batch",
        as_json=args.json,
        command=_command_line(),
        detach=args.detach,
        expected=expected,
        max_creates=args.max_creates,
        report_name=f"report{suffix}.json",
        shard=str(shard) if shard is not None else None,
    )


def _shard(args: argparse.Namespace) -> Shard | None:
    if args.shard is None:
        return None
    try:
        return Shard.parse(args.shard)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def demo_requests() -> list[GenerationRequest]:
    """The bundled demo prompts (varied ratios and sizes; one is blocked on purpose)."""
    text = resources.files("nanobanana_async").joinpath("demo_prompts.jsonl").read_text("utf-8")
    return [parse_request(json.loads(line)) for line in text.splitlines() if line.strip()]


def demo_command(args: argparse.Namespace) -> int:
    """``demo``: the bundled prompts against an in-process emulator, no key, no network."""
    requests = demo_requests()
    blocked = {i for i, r in enumerate(requests) if "[blocked]" in r.prompt}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    journal_path = out_dir / "journal.sqlite"
    # The emulator's tasks die with this process, so an old journal could only point at them.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{journal_path}{suffix}").unlink(missing_ok=True)
    progress = Progress(total=len(requests), enabled=not args.json, label="demo")
    with progress:
        result = asyncio.run(
            _execute(
                args,
                use_emulator=True,
                journal_path=journal_path,
                requests=requests,
                opts=RunOptions(out_dir),
                progress=progress,
            )
        )
    code = finish(
        result,
        out_dir=out_dir,
        journal=journal_path,
        title="demo summary",
        as_json=args.json,
        command=_command_line(),
        expected_failures=blocked,
        expected=len(requests),
        resume="rerun the demo",
    )
    if not args.json and not result.interrupted and result.stopped is None:
        print(f"item(s) {sorted(blocked)} failed on purpose ([blocked] prompt): exit code {code}")
    return code
