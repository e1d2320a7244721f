"""Error bodies: auth, model, unknown ids, validation, credits, rate limit, cancel, retention."""

from __future__ import annotations

from typing import Any

import aiohttp
import anyio
import pytest

from nanobanana_async.emulator import Emulator, ServiceTime

from .conftest import Api, ApiFactory, Factory

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing"),
        ({"Authorization": "Bearer wrong"}, "Invalid"),
        ({"Authorization": "emulator-key"}, "Invalid"),
        ({"Authorization": "Basic emulator-key"}, "Invalid"),
    ],
)
async def test_unauthorized_on_every_route(api: Api, headers: dict[str, str], message: str) -> None:
    rid = await api.create_id()
    for reply in (
        await api.create(headers=headers),
        await api.status(rid, headers=headers),
        await api.result(rid, headers=headers),
        await api.cancel(rid, headers=headers),
    ):
        assert reply.status == 401
        body = reply.json
        assert body["error"]["code"] == "UNAUTHORIZED"
        assert message in body["error"]["message"]
        assert body["request_id"] == reply.headers["X-Request-Id"]
    assert api.emu.stats.requests == 5 and api.emu.stats.creates == 1


@pytest.mark.parametrize("scheme", ["Bearer", "Key"])
async def test_both_auth_schemes(api: Api, scheme: str) -> None:
    headers = {"Authorization": f"{scheme} {api.emu.api_key}"}
    reply = await api.create(headers=headers)
    assert reply.status == 200
    assert (await api.status(reply.json["request_id"], headers=headers)).status == 200


async def test_model_not_allowed(api: Api) -> None:
    reply = await api.create(model="gpt_image_1")
    assert reply.status == 403
    assert reply.json == {"detail": "Model not allowed for this user"}
    assert (await api.call("GET", api.url("x", "status", model="flux_2_pro"))).status == 403
    assert (await api.create(model="nano_banana_2")).status == 200
    assert api.emu.stats.creates == 1


async def test_unknown_request_id(api: Api) -> None:
    for reply in (await api.status("mmsu_nope"), await api.result("mmsu_nope")):
        assert reply.status == 404
        assert reply.json == {"detail": "Request not found"}
    reply = await api.cancel("mmsu_nope")
    assert reply.status == 404
    assert reply.json == {"status": "NOT_FOUND"}


INVALID_BODIES: list[tuple[Any, list[Any], str]] = [
    ({"image_size": "1K"}, ["body", "prompt"], "missing"),
    ({"prompt": ""}, ["body", "prompt"], "string_too_short"),
    ({"prompt": "   "}, ["body", "prompt"], "string_too_short"),
    ({"prompt": 5}, ["body", "prompt"], "string_type"),
    ({"prompt": "x" * 2501}, ["body", "prompt"], "string_too_long"),
    ({"prompt": "p", "webhook_url": "http://x"}, ["body", "webhook_url"], "extra_forbidden"),
    ({"prompt": "p", "seed": 3}, ["body", "seed"], "extra_forbidden"),
    ({"prompt": "p", "image_urls": "http://x"}, ["body", "image_urls"], "list_type"),
    ({"prompt": "p", "image_urls": ["a", 3]}, ["body", "image_urls", 1], "string_type"),
    ({"prompt": "p", "image_urls": ["u"] * 15}, ["body", "image_urls"], "too_long"),
    ({"prompt": "p", "aspect_ratio": "1:2"}, ["body", "aspect_ratio"], "enum"),
    ({"prompt": "p", "aspect_ratio": "16/9"}, ["body", "aspect_ratio"], "enum"),
    ({"prompt": "p", "image_size": "4k"}, ["body", "image_size"], "enum"),
    ({"prompt": "p", "image_size": "8K"}, ["body", "image_size"], "enum"),
    ({"prompt": "p", "response_modalities": []}, ["body", "response_modalities"], "too_short"),
    ({"prompt": "p", "response_modalities": "Image"}, ["body", "response_modalities"], "list_type"),
    (
        {"prompt": "p", "response_modalities": ["Image", "Video"]},
        ["body", "response_modalities", 1],
        "enum",
    ),
    (
        {"prompt": "p", "response_modalities": ["Image", "Image"]},
        ["body", "response_modalities"],
        "value_error",
    ),
    (["prompt"], ["body"], "dict_type"),
]


@pytest.mark.parametrize(("body", "loc", "kind"), INVALID_BODIES)
async def test_validation_422_names_the_field(
    api: Api, body: Any, loc: list[Any], kind: str
) -> None:
    reply = await api.create(body)
    assert reply.status == 422
    details = reply.json["detail"]
    assert {"loc": loc, "type": kind} in [{"loc": d["loc"], "type": d["type"]} for d in details]
    assert all(isinstance(d["msg"], str) and d["msg"] for d in details)
    assert api.emu.stats.creates == 0


async def test_non_json_body_is_422(api: Api) -> None:
    url = f"{api.emu.base_url}/v1/queue/nano_banana_pro"
    reply = await api.call("POST", url, data=b"{not json", headers={**api.auth})
    assert reply.status == 422
    assert reply.json["detail"][0]["loc"] == ["body"]
    assert reply.json["detail"][0]["type"] == "json_invalid"


async def test_valid_edge_values_are_accepted(api: Api) -> None:
    body = {
        "prompt": "é" * 2500,  # code points, not bytes
        "image_urls": [f"https://img/{i}.png" for i in range(14)],
        "aspect_ratio": "21:9",
        "image_size": "4K",
        "response_modalities": ["Image", "Text"],
    }
    assert (await api.create(body)).status == 200


async def test_credits_run_out_with_402(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(credits=2) as emu:
        api = api_factory(emu)
        assert (await api.create()).status == 200
        assert (await api.create()).status == 200
        reply = await api.create()
        assert reply.status == 402
        assert reply.json == {
            "status": {"code": 402, "message": "Insufficient credits", "error_code": 40201},
            "data": None,
        }
        assert emu.stats.creates == 2
        assert emu.credits_left == 0
        emu.reconfigure(credits=1)
        assert (await api.create()).status == 200


async def test_rate_limit_429_with_retry_after(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(rate_limit=0.5, rate_burst=3) as emu:
        api = api_factory(emu)
        rid = await api.create_id()
        assert (await api.status(rid)).status == 200
        assert (await api.result(rid)).status in (200, 202)
        for reply in (await api.cancel(rid), await api.create(), await api.status(rid)):
            assert reply.status == 429
            assert reply.json["error"]["code"] == "RATE_LIMIT_EXCEEDED"
            assert reply.json["request_id"] == reply.headers["X-Request-Id"]
            assert reply.headers["Retry-After"] == "2"  # ceil(1 token / 0.5 per s)
        assert emu.stats.rate_limited == 3
        assert emu.stats.creates == 1
        # The stats route and the CDN are outside the gateway.
        async with api.session.get(emu.base_url.rsplit("/", 1)[0] + "/_emulator/stats") as resp:
            assert resp.status == 200
        emu.reconfigure(rate_limit=None)
        assert (await api.status(rid)).status == 200


async def test_rate_limit_refills(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(rate_limit=20.0, rate_burst=1) as emu:
        api = api_factory(emu)
        assert (await api.status("x")).status == 404
        reply = await api.status("x")
        assert reply.status == 429 and reply.headers["Retry-After"] == "1"
        await anyio.sleep(0.06)
        assert (await api.status("x")).status == 404


async def test_cancel_queued_and_running(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(
        workers=1, service_time=ServiceTime.fixed(30), time_scale=1.0
    ) as emu:
        api = api_factory(emu)
        running, queued, behind = [await api.create_id({"prompt": f"p{i}"}) for i in range(3)]
        assert (await api.status(behind)).json["queue_position"] == 1
        reply = await api.cancel(queued)
        assert reply.status == 202 and reply.json == {"status": "CANCELLATION_REQUESTED"}
        assert (await api.status(behind)).json["queue_position"] == 0
        reply = await api.cancel(running)
        assert reply.status == 202
        # The worker slot was freed at once.
        assert (await api.status(behind)).json["status"] == "IN_PROGRESS"
        for rid in (running, queued):
            body = (await api.status(rid)).json
            assert body["status"] == "COMPLETED"
            assert body["error_type"] == "CANCELED"
            assert body["error"] == "Request was cancelled"
            failed = await api.result(rid)
            assert failed.status == 400
            assert failed.json == {
                "request_id": rid,
                "status": "COMPLETED",
                "error": "Request was cancelled",
                "error_type": "CANCELED",
            }
            again = await api.cancel(rid)
            assert again.status == 400 and again.json == {"status": "ALREADY_COMPLETED"}
        assert emu.stats.cancels == 2
        assert emu.stats.tasks[queued].started_at is None
        assert emu.stats.tasks[running].error_type == "CANCELED"


async def test_cancel_after_success_is_already_completed(api: Api) -> None:
    rid = await api.create_id()
    await api.wait_done(rid)
    reply = await api.cancel(rid)
    assert reply.status == 400 and reply.json == {"status": "ALREADY_COMPLETED"}
    assert (await api.result(rid)).status == 200


async def test_retention_expiry_gives_404(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(retention=0.15) as emu:
        api = api_factory(emu)
        rid = await api.create_id()
        await api.wait_done(rid)
        result = (await api.result(rid)).json
        assert (await api.status(rid)).status == 200
        await anyio.sleep(0.2)
        for reply in (await api.status(rid), await api.result(rid)):
            assert reply.status == 404 and reply.json == {"detail": "Request not found"}
        assert (await api.cancel(rid)).json == {"status": "NOT_FOUND"}
        async with api.session.get(result["outputs"][0]["url"]) as resp:
            assert resp.status == 404
        assert rid in emu.stats.tasks  # the record outlives the task


async def test_stats_route_needs_no_auth(api: Api, nanobanana_emulator: Emulator) -> None:
    rid = await api.create_id()
    await api.status(rid)
    root = nanobanana_emulator.base_url.removesuffix("/model")
    async with aiohttp.ClientSession() as s, s.get(f"{root}/_emulator/stats?tasks=1") as resp:
        body = await resp.json()
    assert body["creates"] == 1
    assert body["status_polls"] == {rid: 1}
    assert body["requests"] == 2
    assert body["tasks"][rid]["request_id"] == rid
