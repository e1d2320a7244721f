"""Happy paths of every API route and every state transition."""

from __future__ import annotations

import re

import anyio
import pytest

from nanobanana_async.emulator import Emulator, ServiceTime

from .conftest import MODEL, Api, ApiFactory, Factory

pytestmark = pytest.mark.anyio


async def test_create_returns_id_urls_and_position(api: Api) -> None:
    reply = await api.create({"prompt": "a banana"})
    assert reply.status == 200
    body = reply.json
    rid = body["request_id"]
    assert re.fullmatch(r"mmsu_[0-9a-z]{26}", rid)
    assert body["status_url"] == api.url(rid, "status")
    assert body["response_url"] == api.url(rid, "response")
    assert body["cancel_url"] == api.url(rid, "cancel")
    assert body["queue_position"] == 0
    assert set(body) == {"request_id", "status_url", "response_url", "cancel_url", "queue_position"}
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["X-Request-Id"].startswith("req_")


async def test_every_api_reply_has_a_request_id_header(api: Api) -> None:
    replies = [
        await api.create(),
        await api.create({}),
        await api.status("nope"),
        await api.result("nope"),
        await api.cancel("nope"),
        await api.status("nope", headers={}),
    ]
    ids = {r.headers["X-Request-Id"] for r in replies}
    assert len(ids) == len(replies)


async def test_lifecycle_queue_progress_completed(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(
        workers=1, service_time=ServiceTime.fixed(0.6), time_scale=1.0
    ) as emu:
        api: Api = api_factory(emu)
        first = await api.create_id()
        second_reply = await api.create({"prompt": "second"})
        second = second_reply.json["request_id"]
        third = (await api.create({"prompt": "third"})).json
        assert second_reply.json["queue_position"] == 0
        assert third["queue_position"] == 1

        running = (await api.status(first)).json
        assert running["status"] == "IN_PROGRESS"
        assert 0.0 <= running["progress"] <= 1.0
        assert "logs" in running and running["logs"] is None
        assert running["response_url"] == api.url(first, "response")

        queued = (await api.status(third["request_id"])).json
        assert queued == {
            "status": "IN_QUEUE",
            "request_id": third["request_id"],
            "queue_position": 1,
            "response_url": api.url(third["request_id"], "response"),
            "logs": None,
        }
        pending = await api.result(first)
        assert pending.status == 202
        assert pending.json["status"] == "IN_PROGRESS"

        await anyio.sleep(0.35)
        late = (await api.status(first)).json
        assert late["status"] == "IN_PROGRESS"
        assert late["progress"] >= 0.5
        assert late["logs"][0]["message"] and late["logs"][0]["timestamp"]

        done = (await api.wait_done(first)).json
        assert done["status"] == "COMPLETED"
        assert "error" not in done and "error_type" not in done
        assert done["logs"] is None
        assert done["metrics"]["inference_time"] == pytest.approx(0.6, abs=0.15)
        # The queue moved: second runs, third is next.
        assert (await api.status(second)).json["status"] == "IN_PROGRESS"
        assert (await api.status(third["request_id"])).json["queue_position"] == 0
        record = emu.stats.tasks[first]
        assert record.state == "COMPLETED"
        assert record.submitted_at <= record.started_at <= record.completed_at


async def test_result_success_body(api: Api, nanobanana_emulator: Emulator) -> None:
    rid = await api.create_id({"prompt": "a red fox", "aspect_ratio": "16:9", "image_size": "2K"})
    await api.wait_done(rid)
    reply = await api.result(rid)
    assert reply.status == 200
    body = reply.json
    assert body["request_id"] == rid
    assert body["metadata"] == {"prompt": "a red fox"}
    image, text = body["outputs"]
    size = image.pop("file_size")
    assert image == {
        "type": "image",
        "url": f"{nanobanana_emulator.cdn_url}/files/{rid}/0.png",
        "content_type": "image/png",
        "file_name": f"{rid}_0.png",
        "width": 2048,
        "height": 1152,
    }
    assert text["type"] == "text" and "a red fox" in text["text"]
    # file_size is what the CDN serves: a PNG of that many bytes.
    assert type(size) is int and size > 0
    async with api.session.get(image["url"]) as resp:
        assert resp.status == 200
        data = await resp.read()
    assert len(data) == size
    assert data.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    ("modalities", "types"),
    [
        (None, ["image", "text"]),
        (["Image"], ["image"]),
        (["Text"], ["text"]),
        (["Image", "Text"], ["image", "text"]),
    ],
)
async def test_outputs_follow_modalities(
    api: Api, modalities: list[str] | None, types: list[str]
) -> None:
    body: dict[str, object] = {"prompt": "p"}
    if modalities is not None:
        body["response_modalities"] = modalities
    rid = await api.create_id(body)
    await api.wait_done(rid)
    outputs = (await api.result(rid)).json["outputs"]
    assert [o["type"] for o in outputs] == types


async def test_instant_service_time_completes_at_once(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(service_time=ServiceTime.fixed(0)) as emu:
        api: Api = api_factory(emu)
        rids = [await api.create_id({"prompt": f"p{i}"}) for i in range(20)]
        for rid in rids:
            assert (await api.status(rid)).json["status"] == "COMPLETED"
        assert emu.stats.max_unfinished == 1


async def test_model_path_must_match_the_task(api: Api) -> None:
    rid = await api.create_id()
    reply = await api.call("GET", api.url(rid, "status", model="nano_banana"))
    assert reply.status == 404
    assert reply.json == {"detail": "Request not found"}
    assert (await api.status(rid)).status == 200
    assert MODEL in api.url(rid, "status")
