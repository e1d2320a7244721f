"""The documentation covers the public API, and the site builds cleanly."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nanobanana_async

ROOT = Path(__file__).resolve().parent.parent
API_PAGES = ROOT / "docs" / "api"


def api_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(API_PAGES.glob("*.md")))


@pytest.mark.parametrize("name", [n for n in nanobanana_async.__all__ if n != "__version__"])
def test_public_name_has_a_docstring(name: str) -> None:
    obj = getattr(nanobanana_async, name)
    assert (inspect.getdoc(obj) or "").strip(), f"{name} has no docstring"


@pytest.mark.parametrize("name", nanobanana_async.__all__)
def test_public_name_is_in_the_api_reference(name: str) -> None:
    if name == "__version__":
        assert "nanobanana_async.__version__" in api_text()
    else:
        assert re.search(rf"^::: nanobanana_async\.{name}$", api_text(), re.M), name


def test_emulator_names_are_in_the_api_reference() -> None:
    from nanobanana_async import emulator

    for name in emulator.__all__:
        assert f"::: nanobanana_async.emulator.{name}\n" in api_text(), name


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in (ROOT / "docs").rglob("*.md"):
        assert page.relative_to(ROOT / "docs").as_posix() in config, page


@pytest.mark.timeout(90)
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("material")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "client" / "index.html").is_file()
