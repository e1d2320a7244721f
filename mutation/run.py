"""On-demand mutation check of the SDK's core (not run in CI: it takes tens of minutes).

    python mutation/run.py                 # sample every 5th mutant, write mutation/report.md
    python mutation/run.py --every 1       # every mutant (hours on two cores)
    python mutation/run.py --rev <commit>  # measure another commit (e.g. before new tests)
    python mutation/run.py --report-only   # re-read the last run's results, rewrite the report

It never touches this working tree: it clones the repository (``--rev``, default HEAD, the
committed state only) into ``--workdir`` (default ``/tmp/nanobanana-mutation``), makes a venv
there, installs the package with mutmut, and runs mutmut in the clone. mutmut rewrites source
files, which is why it must never run in a shared working tree.

What is mutated: ``MODULES`` below; of ``_transport.py`` only the functions that decide retries,
timeouts, auth and origins (``TRANSPORT_FUNCTIONS``). mutmut mutates function bodies only, not
module-level constants (e.g. ``_entry._ALLOWED``: ``tests/polling/test_entry.py`` pins that table
directly). Each mutant runs only the tests that reached its function during a clean run, drawn
from ``TESTS`` (the per-mutant selection is kept narrow for a two-core machine), without the few
soak-style tests in ``SLOW_TESTS``.

Sampling is deterministic: per module, the mutants sorted by name, every k-th from the first.
The score counts killed + timed out over the sampled mutants that are not listed in
``mutation/equivalents.toml`` (each entry there has the reason why the mutant cannot be
killed); a survivor or a mutant no selected test reaches counts against it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the venv this runs in is 3.11+
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MUTMUT = "mutmut==3.8.1"

MODULES = [
    "nanobanana_async/_http/_wire.py",
    "nanobanana_async/_http/_retry.py",
    "nanobanana_async/_http/_pacer.py",
    "nanobanana_async/_http/_transport.py",
    "nanobanana_async/_polling/_scheduler.py",
    "nanobanana_async/_polling/_entry.py",
    "nanobanana_async/_batch/_engine.py",
]
# The retry/auth/origin decisions of the transport (not session plumbing, logging, body reads).
TRANSPORT_FUNCTIONS = {
    "x_origin_of",
    "xǁTransportǁtask_url",
    "xǁTransportǁis_api_origin",
    "xǁTransportǁrequest",
    "xǁTransportǁ_with_retries",
    "xǁTransportǁ_send",
    "x__as_create_error",
}
TESTS = ["tests/polling", "tests/http", "tests/batch", "tests/test_runtime.py"]
SLOW_TESTS = [
    "tests/batch/test_engine.py::test_two_thousand_tasks_within_in_flight_limit",
    "tests/batch/test_engine.py::test_429_storm_every_item_finishes",
    "tests/test_runtime.py::test_close_with_many_tasks_on_a_stalling_cancel_route_is_bounded",
    "tests/batch/test_resume.py::test_lost_create_response_is_unknown_until_told",
    "tests/batch/test_abort.py::test_credits_run_out_then_top_up_resumes_with_no_duplicate",
    "tests/http/test_timeouts.py::test_body_trickling_past_deadline_times_out_the_poll_path",
]
DETECTED = {"killed", "timeout", "segfault"}
TIMEOUT_MULTIPLIER = 3
ALSO_COPY = ["docs", "examples", "README.md", "mkdocs.yml"]


def module_of(name: str) -> str:
    """``nanobanana_async._http._retry.xǁRetryPolicyǁdelay__mutmut_3`` -> the module path."""
    dotted = name.split(".x")[0] if ".xǁ" in name or ".x_" in name else name.rsplit(".", 1)[0]
    return dotted.replace(".", "/") + ".py"


def function_of(name: str) -> str:
    return name.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]


def in_scope(name: str) -> bool:
    module = module_of(name)
    if module not in MODULES:
        return False
    return not module.endswith("_transport.py") or function_of(name) in TRANSPORT_FUNCTIONS


def sample(names: list[str], every: int) -> list[str]:
    by_module: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_module[module_of(name)].append(name)
    chosen: list[str] = []
    for module in sorted(by_module):
        ordered = sorted(by_module[module], key=_sort_key)
        step = 1 if len(ordered) <= 60 else every  # small modules: every mutant
        chosen += ordered[::step]
    return chosen


def _sort_key(name: str) -> tuple[str, int]:
    base, _, n = name.rpartition("__mutmut_")
    return base, int(n) if n.isdigit() else 0


def sh(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd)[:300], flush=True)
    subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, check=True)


def prepare(work: Path, rev: str) -> tuple[Path, Path]:
    """A fresh clone at ``rev`` with mutmut's config, and a venv with the package installed."""
    src, venv = work / "src", work / "venv"
    if src.exists():
        shutil.rmtree(src)
    sh("git", "clone", "--quiet", REPO, src)
    sh("git", "-c", "advice.detachedHead=false", "checkout", "--quiet", rev, cwd=src)
    python = venv / "bin" / "python"
    if not python.exists():
        sh(sys.executable, "-m", "venv", venv)
    sh(python, "-m", "pip", "install", "--quiet", "-e", f"{src}[dev]", MUTMUT)
    configure(src)
    return src, python


def configure(src: Path) -> None:
    """Write mutmut's settings into the clone's pyproject (replacing any earlier ones)."""
    config = [
        "",
        "[tool.mutmut]",
        'source_paths = ["nanobanana_async"]',
        f"only_mutate = {json.dumps(MODULES)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(TESTS)}",
        "pytest_add_cli_args = "
        + json.dumps(
            ["-p", "no:cacheprovider", "-x", "-q"] + [f"--deselect={t}" for t in SLOW_TESTS]
        ),
        # A mutant that hangs a test is a timeout (detected): give up on it after 3x the
        # clean run's time of its tests, not mutmut's default 15x.
        f"timeout_multiplier = {TIMEOUT_MULTIPLIER}",
        # Tests that read the docs and examples (snippets run as programs) need them beside.
        f"also_copy = {json.dumps(ALSO_COPY)}",
        "",
    ]
    pyproject = src / "pyproject.toml"
    text = pyproject.read_text().split("\n[tool.mutmut]\n")[0].rstrip("\n") + "\n"
    pyproject.write_text(text + "\n".join(config))


GENERATE = """
from mutmut.__main__ import create_mutants
from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths
copy_src_dir(); copy_also_copy_files(); setup_source_paths(); create_mutants(2)
"""


def all_mutants(src: Path) -> list[str]:
    names: list[str] = []
    for meta in sorted((src / "mutants").rglob("*.py.meta")):
        names += json.loads(meta.read_text())["exit_code_by_key"]
    return names


def results(src: Path) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for meta in sorted((src / "mutants").rglob("*.py.meta")):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def diff(python: Path, src: Path, name: str) -> str:
    proc = subprocess.run(
        [str(python), "-m", "mutmut", "show", name], cwd=src, capture_output=True, text=True
    )
    lines = proc.stdout.splitlines()
    return "\n".join(
        line for line in lines if line.startswith(("-", "+")) and line[:3] not in ("---", "+++")
    )


def status_of(code: int | None) -> str:
    statuses = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests"}
    statuses.update({None: "not checked", 34: "skipped", 37: "caught by type check"})
    statuses.update({c: "timeout" for c in (-24, 24, 152, 255, 36)})
    statuses.update({-11: "segfault", -9: "segfault"})
    return statuses.get(code, "suspicious")


def report(src: Path, python: Path, chosen: list[str], every: int, rev: str, out: Path) -> str:
    codes = results(src)
    equivalents = tomllib.loads((HERE / "equivalents.toml").read_text()).get("equivalent", {})
    rows = []
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    open_lines: list[str] = []
    equivalent_lines: list[str] = []
    for name in chosen:
        status = status_of(codes.get(name))
        module = module_of(name)
        if name in equivalents and status not in DETECTED:
            per_module[module]["equivalent"] += 1
            equivalent_lines.append(f"- `{name}`: {equivalents[name]}")
            continue
        per_module[module][status] += 1
        if status == "not checked":
            open_lines += [f"- `{name}` (not checked: the run stopped before it)"]
        elif status not in DETECTED:
            open_lines += [
                f"#### `{name}` ({status})",
                "",
                "```diff",
                diff(python, src, name),
                "```",
                "",
            ]
    total: Counter[str] = Counter()
    for module in sorted(per_module):
        c = per_module[module]
        total.update(c)
        rows.append(_row(module.removeprefix("nanobanana_async/"), c))
    rows.append(_row("**all**", total))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=src, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# Mutation check",
        "",
        f"Generated by `python mutation/run.py --every {every}` on commit `{commit}` "
        f"({time.strftime('%Y-%m-%d')}), mutmut 3.8.1. Sample: every {every}th mutant per "
        "module (modules with at most 60 mutants: every one), in a fixed order. "
        "Score = (killed + timeout) ÷ (sampled − equivalent).",
        "",
        "| module | sampled | killed | timeout | survived | no tests | equivalent | score |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## Equivalent mutants (cannot change behaviour)",
        "",
        *(equivalent_lines or ["None in this sample."]),
        "",
        "## Not killed",
        "",
        *(open_lines or ["None."]),
    ]
    text = "\n".join(lines).rstrip() + "\n"
    out.write_text(text)
    return text


def _row(label: str, c: Counter[str]) -> str:
    sampled = sum(c.values())
    detected = c["killed"] + c["timeout"] + c["segfault"]
    scored = sampled - c["equivalent"]
    score = f"{100 * detected / scored:.1f}%" if scored else "n/a"
    undetected = c["survived"] + c["suspicious"] + c["not checked"] + c["skipped"]
    return (
        f"| {label} | {sampled} | {c['killed']} | {c['timeout']} | {undetected} | "
        f"{c['no tests']} | {c['equivalent']} | {score} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=5, help="sample every k-th mutant")
    parser.add_argument("--rev", default="HEAD", help="commit to measure (committed state)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nanobanana-mutation"))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, default=HERE / "report.md")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--resume", action="store_true", help="run only the sampled mutants not yet checked"
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="with --resume: move the clone to --rev first (new tests) and run again every "
        "sampled mutant not killed yet (a killed one stays killed when tests are only added)",
    )
    args = parser.parse_args(argv)
    rev = subprocess.run(
        ["git", "rev-parse", args.rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    work = args.workdir.resolve()
    src, python = work / "src", work / "venv" / "bin" / "python"
    chosen_file = work / "chosen.txt"
    if not args.report_only:
        if args.resume:
            if args.update:
                sh("git", "fetch", "--quiet", REPO, cwd=src)
                sh("git", "-c", "advice.detachedHead=false", "checkout", "--quiet", rev, cwd=src)
            configure(src)
            done = results(src)
            again = {None} if not args.update else {None, 0, 5, 33}
            chosen = [n for n in chosen_file.read_text().split() if done.get(n) in again]
        else:
            work.mkdir(parents=True, exist_ok=True)
            src, python = prepare(work, rev)
            sh(python, "-c", GENERATE, cwd=src)
            chosen = sample([n for n in all_mutants(src) if in_scope(n)], args.every)
            chosen_file.write_text("\n".join(chosen) + "\n")
        print(f"{len(chosen)} mutants to run", flush=True)
        started = time.monotonic()
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(
            [str(python), "-m", "mutmut", "run", "--max-children", str(args.jobs), *chosen],
            cwd=src,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        print(f"mutmut exited {proc.returncode} after {time.monotonic() - started:.0f} s")
    chosen = chosen_file.read_text().split()
    print(report(src, python, chosen, args.every, rev, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
