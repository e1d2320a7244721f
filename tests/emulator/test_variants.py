"""Each wire variant "seen in the wild" changes exactly what it says."""

from __future__ import annotations

import pytest

from nanobanana_async.emulator import ServiceTime, TaskFaults, Variants

from .conftest import Api, ApiFactory, Factory

pytestmark = pytest.mark.anyio

SLOW = {"service_time": ServiceTime.fixed(10), "time_scale": 1.0, "workers": 1}
BRIEF = {"service_time": ServiceTime.fixed(0.2), "time_scale": 1.0, "workers": 1}


async def _two_tasks(api: Api) -> tuple[str, str]:
    first = await api.create({"prompt": "a"})
    second = await api.create({"prompt": "b"})
    key = "id" if "id" in first.json else "request_id"
    return first.json[key], second.json[key]


@pytest.mark.parametrize(
    ("variants", "queued", "running", "completed"),
    [
        (Variants(), "IN_QUEUE", "IN_PROGRESS", "COMPLETED"),
        (Variants(lowercase_status=True), "in_queue", "in_progress", "completed"),
        (Variants(queued_synonym=True), "QUEUED", "IN_PROGRESS", "COMPLETED"),
        (
            Variants(lowercase_status=True, queued_synonym=True),
            "queued",
            "in_progress",
            "completed",
        ),
    ],
)
async def test_status_spellings(
    nanobanana_emulator_factory: Factory,
    api_factory: ApiFactory,
    variants: Variants,
    queued: str,
    running: str,
    completed: str,
) -> None:
    async with nanobanana_emulator_factory(variants=variants, **SLOW) as emu:
        api = api_factory(emu)
        first, second = await _two_tasks(api)
        assert (await api.status(first)).json["status"] == running
        assert (await api.status(second)).json["status"] == queued
        assert (await api.result(second)).json["status"] == queued
        await api.cancel(first)
        assert (await api.status(first)).json["status"] == completed


async def test_id_field(nanobanana_emulator_factory: Factory, api_factory: ApiFactory) -> None:
    async with nanobanana_emulator_factory(variants=Variants(id_field=True)) as emu:
        api = api_factory(emu)
        created = (await api.create()).json
        assert "request_id" not in created
        rid = created["id"]
        assert created["status_url"].endswith(f"/requests/{rid}/status")
        status = (await api.status(rid)).json
        assert status["id"] == rid and "request_id" not in status


async def test_error_object(nanobanana_emulator_factory: Factory, api_factory: ApiFactory) -> None:
    async with nanobanana_emulator_factory(
        variants=Variants(error_object=True), task_faults=TaskFaults(inference_timeout=1.0)
    ) as emu:
        api = api_factory(emu)
        rid = await api.create_id()
        body = (await api.wait_done(rid)).json
        assert body["error_type"] == "INFERENCE_TIMEOUT"
        assert body["error"] == {"code": "INFERENCE_TIMEOUT", "message": "Inference timed out"}
        assert (await api.result(rid)).json["error"]["code"] == "INFERENCE_TIMEOUT"


async def test_status_202(nanobanana_emulator_factory: Factory, api_factory: ApiFactory) -> None:
    async with nanobanana_emulator_factory(variants=Variants(status_202=True), **SLOW) as emu:
        api = api_factory(emu)
        first, second = await _two_tasks(api)
        assert (await api.status(first)).status == 202
        assert (await api.status(second)).status == 202
        await api.cancel(first)
        assert (await api.status(first)).status == 200


async def test_create_status_field(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(variants=Variants(create_status_field=True)) as emu:
        created = (await api_factory(emu).create()).json
        assert created["status"] == "QUEUED"
        assert "status_url" in created
    both = Variants(create_status_field=True, lowercase_status=True)
    async with nanobanana_emulator_factory(variants=both) as emu:
        assert (await api_factory(emu).create()).json["status"] == "queued"


@pytest.mark.parametrize("id_field", [False, True])
async def test_minimal_create(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory, id_field: bool
) -> None:
    variants = Variants(minimal_create=True, id_field=id_field)
    async with nanobanana_emulator_factory(variants=variants) as emu:
        created = (await api_factory(emu).create()).json
        assert list(created) == ["id" if id_field else "request_id"]


async def test_foreign_urls(nanobanana_emulator_factory: Factory, api_factory: ApiFactory) -> None:
    async with nanobanana_emulator_factory(variants=Variants(foreign_urls=True)) as emu:
        api = api_factory(emu)
        created = (await api.create()).json
        rid = created["request_id"]
        for name in ("status_url", "response_url", "cancel_url"):
            assert created[name].startswith("http://evil.invalid/")
            assert rid in created[name]
        # The real routes still work at the real origin.
        assert (await api.status(rid)).json["response_url"].startswith("http://evil.invalid/")


async def test_no_202_result(nanobanana_emulator_factory: Factory, api_factory: ApiFactory) -> None:
    async with nanobanana_emulator_factory(variants=Variants(no_202_result=True), **BRIEF) as emu:
        api = api_factory(emu)
        first, _ = await _two_tasks(api)
        reply = await api.result(first)
        assert reply.status == 200
        assert reply.json["status"] == "IN_PROGRESS" and "outputs" not in reply.json
        await api.wait_done(first)
        done = await api.result(first)
        assert done.status == 200 and "outputs" in done.json


async def test_reconfigure_variants_live(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory() as emu:
        api = api_factory(emu)
        rid = await api.create_id()
        await api.wait_done(rid)
        emu.reconfigure(variants=Variants(lowercase_status=True))
        assert emu.config.variants.lowercase_status
        assert (await api.status(rid)).json["status"] == "completed"
        with pytest.raises(ValueError, match="port"):
            emu.reconfigure(port=1)
