"""`python -m nanobanana_async.emulator`: run the emulator in the foreground until a signal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import attrs

from .config import FAULT_KINDS, EmulatorConfig, Faults, ServiceTime, TaskFaults, Variants
from .server import Emulator

__all__ = ["build_config", "main"]

_TASK_FAULTS = tuple(a.name for a in attrs.fields(TaskFaults))
_VARIANTS = tuple(a.name for a in attrs.fields(Variants))


def _assignment(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number in {text!r}") from None


def _service_time(text: str) -> ServiceTime:
    try:
        return ServiceTime.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nanobanana-async emulator",
        description="Run a local emulator of the Nano Banana Pro queue API.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="API port (0 = any free port)")
    p.add_argument("--cdn-port", type=int, default=0, help="CDN port for output files (0 = any)")
    p.add_argument("--api-key", default="emulator-key")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument(
        "--service-time",
        type=_service_time,
        default=ServiceTime.fixed(2.0),
        help="fixed:S | uniform:LO,HI | lognormal:MEDIAN,SIGMA (seconds); a suffix @AT*FACTOR "
        "makes tasks created from AT s after the start FACTOR times slower",
    )
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--deterministic-ids",
        action="store_true",
        help="request ids depend on --seed alone (default: unique across restarts)",
    )
    p.add_argument("--rate-limit", type=float, default=None, help="requests/s per key")
    p.add_argument("--rate-burst", type=int, default=10)
    p.add_argument(
        "--credits",
        type=int,
        default=None,
        help="creates payable before creates answer 402 (top up: POST /_emulator/credits)",
    )
    p.add_argument(
        "--revoke-after-creates",
        type=int,
        default=None,
        metavar="N",
        help="revoke the key (401 everywhere) once N creates were accepted "
        "(restore: POST /_emulator/key)",
    )
    p.add_argument("--retention", type=float, default=3600.0)
    p.add_argument(
        "--fault",
        type=_assignment,
        action="append",
        default=[],
        help=f"KIND=PROBABILITY, KIND in {', '.join(FAULT_KINDS)}; also "
        "retry_after_seconds=S, stall_seconds=S",
    )
    p.add_argument(
        "--fault-routes",
        default=None,
        help="comma-separated routes faults apply to (create,status,result,cancel)",
    )
    p.add_argument(
        "--task-fault",
        type=_assignment,
        action="append",
        default=[],
        help=f"KIND=PROBABILITY, KIND in {', '.join(_TASK_FAULTS)} (no_image: success with a "
        "text refusal and no image; a prompt with [no-image] always does that)",
    )
    p.add_argument("--variant", action="append", default=[], choices=_VARIANTS)
    fal = p.add_argument_group("fal-compatible front (opt-in, TLS)")
    fal.add_argument(
        "--fal-tls",
        metavar="CERT_DIR",
        default=None,
        help="serve fal's queue routes over TLS with a fresh trustme CA written to CERT_DIR/ca.pem",
    )
    fal.add_argument("--fal-port", type=int, default=0, help="fal front port (0 = any free port)")
    fal.add_argument("--fal-cert", default=None, help="certificate chain PEM (with --fal-key)")
    fal.add_argument("--fal-key", default=None, help="server private key PEM (with --fal-cert)")
    return p


@attrs.frozen
class _FalOptions:
    cert: str
    key: str
    ca: str | None
    port: int


def _fal_options(args: argparse.Namespace, host: str) -> _FalOptions | None:
    """The fal front's TLS files, written first when --fal-tls asks for a fresh CA."""
    if (args.fal_cert is None) != (args.fal_key is None):
        raise ValueError("--fal-cert and --fal-key go together")
    if args.fal_cert is not None:
        return _FalOptions(args.fal_cert, args.fal_key, None, args.fal_port)
    if args.fal_tls is None:
        return None
    from .fal_front import write_tls_files  # trustme is only needed when the front is asked for

    ca, cert, key = write_tls_files(args.fal_tls, host)
    return _FalOptions(str(cert), str(key), str(ca), args.fal_port)


def build_config(args: argparse.Namespace) -> EmulatorConfig:
    """The EmulatorConfig the parsed command line describes (ValueError on bad names)."""
    fault_names = {a.name for a in attrs.fields(Faults)} - {"routes"}
    faults: dict[str, object] = {}
    for name, value in args.fault:
        if name not in fault_names:
            raise ValueError(f"unknown fault {name!r}; choose from {sorted(fault_names)}")
        faults[name] = value
    if args.fault_routes:
        faults["routes"] = frozenset(r.strip() for r in args.fault_routes.split(",") if r.strip())
    task_faults = {}
    for name, value in args.task_fault:
        if name not in _TASK_FAULTS:
            raise ValueError(f"unknown task fault {name!r}; choose from {list(_TASK_FAULTS)}")
        task_faults[name] = value
    return EmulatorConfig(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        cdn_port=args.cdn_port,
        workers=args.workers,
        service_time=args.service_time,
        time_scale=args.time_scale,
        seed=args.seed,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        credits=args.credits,
        revoke_after_creates=args.revoke_after_creates,
        deterministic_ids=args.deterministic_ids,
        retention=args.retention,
        faults=Faults(**faults),  # type: ignore[arg-type]
        task_faults=TaskFaults(**task_faults),
        variants=Variants(**dict.fromkeys(args.variant, True)),
    )


async def _serve(config: EmulatorConfig, fal: _FalOptions | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no loop signal handlers
            loop.add_signal_handler(sig, stop.set)
    async with Emulator(config) as emu:
        line = f"base_url={emu.base_url} api_key={emu.api_key} cdn_url={emu.cdn_url}"
        runner = None
        if fal is not None:
            from .fal_front import server_ssl_context, start_fal_front

            ctx = server_ssl_context(fal.cert, fal.key)
            runner, port = await start_fal_front(
                emu, host=config.host, port=fal.port, ssl_context=ctx
            )
            host = f"[{config.host}]" if ":" in config.host else config.host
            # Appended to the same line: readers parse key=value pairs from the first line only.
            line += f" fal_url=https://{host}:{port}"
            if fal.ca is not None:
                line += f" fal_ca={fal.ca}"
        try:
            # One parseable line first: scripts and tests read the base URL from it.
            print(line, flush=True)
            await stop.wait()
        finally:
            if runner is not None:
                await runner.cleanup()
    print("emulator stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, run the emulator until SIGINT/SIGTERM, and return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = build_config(args)
        fal = _fal_options(args, config.host)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve(config, fal))
    except KeyboardInterrupt:  # a second Ctrl-C before the handler was installed
        return 0
    except OSError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 1
    return 0
