"""A batch job: stream prompts through one client, journal every item, save every image.

    python examples/batch_job.py --emulator --out out/       # no key: an in-process emulator
    NANOBANANA_API_KEY=... python examples/batch_job.py --out out/ prompts.txt

The input is a text file with one prompt per line (without it, ``--count`` generated prompts).
Against the real service the journal (``OUT/journal.sqlite``) makes a rerun resume: finished
items are replayed, submitted ones re-attached, and nothing is paid for twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio

from nanobanana_async import Client, GenerationRequest, NanoBananaError, Outcome, PollPolicy
from nanobanana_async.download import Downloader
from nanobanana_async.journal import Journal


def read_prompts(path: Path | None, count: int) -> Iterator[GenerationRequest]:
    """The batch input, read lazily: the stream pulls the next item only when a slot is free."""
    if path is None:
        for i in range(count):
            yield GenerationRequest(f"a banana, style {i}", aspect_ratio="1:1")
        return
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield GenerationRequest(line.strip())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    journal_path = out / "journal.sqlite"
    summary: dict[str, Any] = {"succeeded": 0, "failed": 0, "resumed": 0, "files": []}

    async with AsyncExitStack() as stack:
        if args.emulator:
            from nanobanana_async.emulator import Emulator, EmulatorConfig, ServiceTime

            # Realistic timings (median 20 s) at 1/100 of real time, and polling to match.
            config = EmulatorConfig(service_time=ServiceTime.lognormal(20.0, 0.5), time_scale=0.01)
            emu = await stack.enter_async_context(Emulator(config))
            poll = PollPolicy(initial_delay=0.1, max_interval=0.5, min_interval=0.02)
            client = Client(emu.api_key, base_url=emu.base_url, poll=poll)
        else:
            client = Client()  # NANOBANANA_API_KEY, NANOBANANA_BASE_URL
        await stack.enter_async_context(client)
        journal = await stack.enter_async_context(await Journal.open(journal_path))
        downloader = Downloader(client, out / "images")

        async def save(outcome: Outcome) -> None:
            try:
                files = await downloader.download(outcome.unwrap(), stem=f"{outcome.index:05d}")
            except NanoBananaError as exc:  # DownloadError: the task's result is still journaled
                print(f"item {outcome.index}: {exc}", file=sys.stderr)
                return
            for file in files:
                await journal.record_file(
                    outcome.index, file.output_index, str(file.path), file.size, file.sha256
                )
                summary["files"].append(str(file.path))

        requests = read_prompts(Path(args.input) if args.input else None, args.count)
        async with (
            anyio.create_task_group() as downloads,
            client.stream(requests, max_in_flight=args.max_in_flight, journal=journal) as outcomes,
        ):
            async for outcome in outcomes:
                summary["resumed"] += outcome.resumed
                if outcome.ok:
                    summary["succeeded"] += 1
                    downloads.start_soon(save, outcome)  # downloads overlap the batch
                else:
                    summary["failed"] += 1
                    print(f"item {outcome.index} failed: {outcome.error}", file=sys.stderr)

        stats = client.stats
        summary["requests_sent"] = stats.requests_sent
        summary["polls_per_task"] = stats.polls_per_task
        summary["journal"] = str(journal_path)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", help="text file, one prompt per line")
    parser.add_argument("--out", default="batch-out", help="output directory")
    parser.add_argument("--count", type=int, default=12, help="prompts to make without INPUT")
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--emulator", action="store_true", help="run on an in-process emulator")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.emulator:
        # Emulated tasks die with the process: an old journal would point at nothing.
        for suffix in ("", "-wal", "-shm"):
            Path(f"{out / 'journal.sqlite'}{suffix}").unlink(missing_ok=True)
    summary = asyncio.run(run(args))
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['succeeded']} succeeded, {summary['failed']} failed "
            f"({summary['resumed']} replayed from the journal); "
            f"{len(summary['files'])} files in {Path(args.out) / 'images'}; "
            f"{summary['requests_sent']} requests sent"
        )
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
