"""The examples in examples/ run against the emulator and produce real results."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from nanobanana_async.emulator import Emulator

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def emulator_env(nanobanana_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv("NANOBANANA_API_KEY", nanobanana_emulator.api_key)
    monkeypatch.setenv("NANOBANANA_BASE_URL", nanobanana_emulator.base_url)
    monkeypatch.setenv("GENERATE_TIMEOUT", "20")
    return nanobanana_emulator


@pytest.mark.timeout(90)
def test_batch_job_with_emulator(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [sys.executable, str(EXAMPLES / "batch_job.py"), "--emulator", "--json"]
    proc = subprocess.run(
        [*argv, "--count", "5", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["succeeded"] == 5 and summary["failed"] == 0
    assert len(summary["files"]) == 5
    for name in summary["files"]:
        assert Path(name).read_bytes().startswith(PNG_MAGIC)
    assert (out / "journal.sqlite").is_file()


def test_batch_job_text_input_in_process(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red banana\n\na blue banana\n", encoding="utf-8")
    module = load("batch_job")
    code = module.main([str(prompts), "--emulator", "--out", str(tmp_path / "out")])
    assert code == 0
    images = sorted((tmp_path / "out" / "images").iterdir())
    assert [p.name for p in images] == ["00000_0.png", "00001_0.png"]


async def test_fastapi_app(emulator_env: Emulator) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    app = load("fastapi_app").app
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            health = await http.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            resp = await http.post("/generate", json={"prompt": "a banana", "aspect_ratio": "16:9"})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["request_id"] in emulator_env.stats.tasks
            assert body["images"] and body["images"][0].startswith("http://")
            blocked = await http.post("/generate", json={"prompt": "a [blocked] banana"})
            assert blocked.status_code == 422 and "CONTENT_BLOCKED" in blocked.text
            bad = await http.post("/generate", json={"prompt": "x", "aspect_ratio": "7:5"})
            assert bad.status_code == 422 and "aspect_ratio" in bad.text
            events = await http.post("/generate/events", json={"prompt": "a banana"})
            assert events.status_code == 200
            assert events.headers["content-type"].startswith("text/event-stream")
            parsed = [
                (
                    block.split("\n")[0].removeprefix("event: "),
                    json.loads(block.split("data: ", 1)[1]),
                )
                for block in events.text.strip().split("\n\n")
            ]
            names = [name for name, _ in parsed]
            assert names[-1] == "result" and names[:-1] and set(names[:-1]) == {"status"}
            assert parsed[-2][1]["state"] == "SUCCEEDED"
            assert parsed[-1][1]["request_id"] in emulator_env.stats.tasks
            refused = await http.post("/generate/events", json={"prompt": "a [blocked] banana"})
            assert refused.text.rstrip().split("\n\n")[-1].startswith("event: error")


async def test_aiohttp_app(emulator_env: Emulator) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    app = load("aiohttp_app").make_app()
    async with TestClient(TestServer(app)) as http:
        health = await http.get("/health")
        assert health.status == 200 and (await health.json())["status"] == "ok"
        resp = await http.post("/generate", json={"prompt": "a banana"})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["request_id"] in emulator_env.stats.tasks
        assert body["images"] and body["images"][0].startswith("http://")
        image = await http.session.get(body["images"][0])
        assert (await image.read()).startswith(PNG_MAGIC)
        blocked = await http.post("/generate", json={"prompt": "a [blocked] banana"})
        assert blocked.status == 422 and "CONTENT_BLOCKED" in await blocked.text()
