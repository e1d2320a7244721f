"""Outcomes a truthful client must report: failures that carry outputs, success without an image,
and the wire shapes they arrive in."""

from __future__ import annotations

from typing import Any

import pytest

from nanobanana_async.emulator import ServiceTime, TaskFaults, Variants

from .conftest import Api, ApiFactory, Factory, Reply

pytestmark = pytest.mark.anyio

REFUSAL = "I can't generate that image. Try rephrasing the prompt."
SLOW = {"service_time": ServiceTime.fixed(10), "time_scale": 1.0, "workers": 1}


async def _failed(api: Api, prompt: str = "a banana") -> tuple[str, Reply]:
    rid = await api.create_id({"prompt": prompt})
    await api.wait_done(rid)
    return rid, await api.result(rid)


# -- failure bodies that also carry outputs ---------------------------------------------------------


async def test_failure_with_outputs_error_object(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    variants = Variants(failure_with_outputs=True, error_object=True)
    async with nanobanana_emulator_factory(
        variants=variants, task_faults=TaskFaults(request_invalid=1.0)
    ) as emu:
        api = api_factory(emu)
        rid, reply = await _failed(api)
        assert reply.status == 200
        assert reply.json == {
            "request_id": rid,
            "status": "COMPLETED",
            "error": {
                "code": "InvalidParameter",
                "message": "Request parameters were rejected by the model",
            },
            "error_type": "REQUEST_INVALID",
            "outputs": [],
        }
        # The status route is not part of the variant: its error code stays the error_type.
        status = (await api.status(rid)).json
        assert status["error"] == {
            "code": "REQUEST_INVALID",
            "message": "Request parameters were rejected by the model",
        }
        assert status["error_type"] == "REQUEST_INVALID" and "outputs" not in status


async def test_failure_with_outputs_string_error(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(
        variants=Variants(failure_with_outputs=True), task_faults=TaskFaults(request_invalid=1.0)
    ) as emu:
        rid, reply = await _failed(api_factory(emu))
        assert reply.status == 200
        assert reply.json == {
            "request_id": rid,
            "status": "COMPLETED",
            "error": "Request parameters were rejected by the model",
            "error_type": "REQUEST_INVALID",
            "outputs": [],
        }


async def test_failure_with_outputs_covers_cancellation(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    variants = Variants(failure_with_outputs=True, error_object=True)
    async with nanobanana_emulator_factory(variants=variants, **SLOW) as emu:
        api = api_factory(emu)
        rid = await api.create_id()
        assert (await api.cancel(rid)).status == 202
        reply = await api.result(rid)
        assert reply.status == 200
        assert reply.json == {
            "request_id": rid,
            "status": "COMPLETED",
            "error": {"code": "Canceled", "message": "Request was cancelled"},
            "error_type": "CANCELED",
            "outputs": [],
        }


async def test_failure_body_default_unchanged(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(task_faults=TaskFaults(request_invalid=1.0)) as emu:
        rid, reply = await _failed(api_factory(emu))
        assert reply.status == 400
        assert reply.json == {
            "request_id": rid,
            "status": "COMPLETED",
            "error": "Request parameters were rejected by the model",
            "error_type": "REQUEST_INVALID",
        }


# -- finished with no image -------------------------------------------------------------------------


async def _no_image_checks(api: Api, rid: str, prompt: str, outputs: list[Any]) -> None:
    status = (await api.wait_done(rid)).json
    assert status["status"] == "COMPLETED"
    assert "error" not in status and "error_type" not in status
    reply = await api.result(rid)
    assert reply.status == 200
    assert reply.json == {
        "request_id": rid,
        "outputs": outputs,
        "metadata": {"prompt": prompt, "finish_reason": "SAFETY"},
    }
    cdn = await api.call("GET", f"{api.emu.cdn_url}/files/{rid}/0.png", headers={})
    assert cdn.status == 404
    assert api.emu.stats.tasks[rid].error_type is None


async def test_no_image_prompt_marker(api: Api) -> None:
    prompt = "a banana [no-image]"
    rid = await api.create_id({"prompt": prompt})
    await _no_image_checks(api, rid, prompt, [{"type": "text", "text": REFUSAL}])


async def test_no_image_marker_with_image_only_modalities(api: Api) -> None:
    prompt = "[no-image] a banana"
    rid = await api.create_id({"prompt": prompt, "response_modalities": ["Image"]})
    await _no_image_checks(api, rid, prompt, [])


async def test_no_image_task_fault(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(task_faults=TaskFaults(no_image=1.0)) as emu:
        api = api_factory(emu)
        rid = await api.create_id({"prompt": "a banana"})
        await _no_image_checks(api, rid, "a banana", [{"type": "text", "text": REFUSAL}])


async def test_blocked_marker_wins_over_no_image(api: Api) -> None:
    rid = await api.create_id({"prompt": "[no-image] [blocked]"})
    assert (await api.wait_done(rid)).json["error_type"] == "CONTENT_BLOCKED"


async def test_text_only_modalities_unchanged(api: Api) -> None:
    rid = await api.create_id({"prompt": "a banana", "response_modalities": ["Text"]})
    await api.wait_done(rid)
    reply = await api.result(rid)
    assert reply.status == 200
    assert reply.json == {
        "request_id": rid,
        "outputs": [{"type": "text", "text": "Here is your image for: a banana"}],
        "metadata": {"prompt": "a banana"},
    }


async def test_no_image_rate_leaves_the_error_draws_alone(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async def run(task_faults: TaskFaults) -> list[tuple[str | None, bool]]:
        async with nanobanana_emulator_factory(task_faults=task_faults, **SLOW) as emu:
            api = api_factory(emu)
            for i in range(60):
                await api.create_id({"prompt": f"p{i}"})
            tasks: list[Any] = list(emu.stats.tasks.values())
            return [(t.planned_error, t.no_image) for t in tasks]

    plain = await run(TaskFaults(inference_failure=0.3))
    mixed = await run(TaskFaults(inference_failure=0.3, no_image=0.4))
    assert [e for e, _ in plain] == [e for e, _ in mixed]
    assert not any(n for _, n in plain)
    flagged = [n for e, n in mixed if e is None]
    assert any(flagged) and not all(flagged)
    assert not any(n for e, n in mixed if e is not None)
