"""Outcomes a truthful client must report: failures that carry outputs, success without an image,
credits that run out and come back, a key revoked mid-run."""

from __future__ import annotations

from typing import Any

import pytest

from nanobanana_async.emulator import Emulator, ServiceTime, TaskFaults, Variants

from .conftest import Api, ApiFactory, Factory, Reply

pytestmark = pytest.mark.anyio

REFUSAL = "I can't generate that image. Try rephrasing the prompt."
SLOW = {"service_time": ServiceTime.fixed(10), "time_scale": 1.0, "workers": 1}


def _root(emu: Emulator) -> str:
    return emu.base_url.removesuffix("/model")


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


# -- credits that run out -----------------------------------------------------------------------------

CREDITS_BODY = {
    "status": {"code": 402, "message": "Insufficient credits", "error_code": 40201},
    "data": None,
}


async def test_credits_run_out_then_top_up_and_rerun(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(credits=3) as emu:
        api = api_factory(emu)
        replies = [await api.create({"prompt": f"p{i}"}) for i in range(5)]
        assert [r.status for r in replies] == [200, 200, 200, 402, 402]
        for reply in replies[3:]:
            assert reply.json == CREDITS_BODY
        assert emu.credits_left == 0 and emu.stats.credits_rejected == 2
        # Only creates are charged: the accepted tasks still answer every other route.
        rid = replies[0].json["request_id"]
        await api.wait_done(rid)
        assert (await api.result(rid)).status == 200
        assert (await api.cancel(rid)).status == 400  # ALREADY_COMPLETED, not 402
        assert emu.add_credits(2) == 2
        again = [await api.create({"prompt": f"p{i}"}) for i in (3, 4)]
        assert [r.status for r in again] == [200, 200]
        assert (await api.create({"prompt": "p5"})).json == CREDITS_BODY
        assert emu.stats.creates == 5 and emu.credits_left == 0
        stats = (await api.call("GET", f"{_root(emu)}/_emulator/stats", headers={})).json
        assert stats["credits_left"] == 0 and stats["credits_rejected"] == 3


async def test_add_credits_needs_a_limited_balance(nanobanana_emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="unlimited"):
        nanobanana_emulator.add_credits(1)


@pytest.mark.nanobanana_emulator(credits=0)
async def test_credits_control_route(nanobanana_emulator: Emulator, api: Api) -> None:
    url = f"{_root(nanobanana_emulator)}/_emulator/credits"
    assert (await api.create()).json == CREDITS_BODY
    reply = await api.call("POST", url, headers={}, json={"add": 1})
    assert (reply.status, reply.json) == (200, {"credits_left": 1})
    assert (await api.create()).status == 200
    for bad in ({"add": "1"}, {"add": -1}, {}, [1]):
        assert (await api.call("POST", url, headers={}, json=bad)).status == 400
    assert nanobanana_emulator.credits_left == 0


# -- a key revoked mid-run ----------------------------------------------------------------------------


async def _all_routes(api: Api, rid: str) -> list[Reply]:
    return [
        await api.create(),
        await api.status(rid),
        await api.result(rid),
        await api.cancel(rid),
    ]


def _assert_revoked(reply: Reply) -> None:
    assert reply.status == 401
    assert reply.json == {
        "error": {"code": "UNAUTHORIZED", "message": "API key has been revoked"},
        "request_id": reply.headers["X-Request-Id"],
    }


async def test_revoke_key_on_every_route_then_restore(
    nanobanana_emulator: Emulator, api: Api
) -> None:
    emu = nanobanana_emulator
    rid = await api.create_id()
    await api.wait_done(rid)
    emu.revoke_key()
    assert emu.key_revoked
    for reply in await _all_routes(api, rid):
        _assert_revoked(reply)
    # The Key scheme is revoked too; a wrong key still says so.
    _assert_revoked(await api.status(rid, headers={"Authorization": f"Key {emu.api_key}"}))
    wrong = await api.status(rid, headers={"Authorization": "Bearer nope"})
    assert wrong.json["error"]["message"] == "Invalid API key"
    # Output URLs are not behind the key.
    cdn = await api.call("GET", f"{emu.cdn_url}/files/{rid}/0.png", headers={})
    assert cdn.status == 200
    assert emu.stats.creates == 1
    emu.restore_key()
    assert not emu.key_revoked
    assert [r.status for r in await _all_routes(api, rid)] == [200, 200, 200, 400]


async def test_revoke_after_creates(
    nanobanana_emulator_factory: Factory, api_factory: ApiFactory
) -> None:
    async with nanobanana_emulator_factory(revoke_after_creates=2) as emu:
        api = api_factory(emu)
        first = await api.create_id()
        assert not emu.key_revoked
        assert (await api.status(first)).status == 200
        await api.create_id()  # the second create is accepted and answered
        assert emu.key_revoked
        for reply in await _all_routes(api, first):
            _assert_revoked(reply)
        assert emu.stats.creates == 2
        emu.restore_key()
        # The threshold fires once: restoring is final until it is configured again.
        for _ in range(3):
            await api.create_id()
        assert not emu.key_revoked
        # Configuring it again (even to the same value) arms it again.
        emu.reconfigure(revoke_after_creates=2)
        await api.create_id()
        assert not emu.key_revoked
        await api.create_id()
        _assert_revoked(await api.status(first))
    with pytest.raises(ValueError, match="revoke_after_creates"):
        nanobanana_emulator_factory(revoke_after_creates=0)


async def test_key_control_route(nanobanana_emulator: Emulator, api: Api) -> None:
    url = f"{_root(nanobanana_emulator)}/_emulator/key"
    reply = await api.call("POST", url, headers={}, json={"revoked": True})
    assert (reply.status, reply.json) == (200, {"key_revoked": True})
    _assert_revoked(await api.create())
    stats = (await api.call("GET", f"{_root(nanobanana_emulator)}/_emulator/stats")).json
    assert stats["key_revoked"] is True
    reply = await api.call("POST", url, headers={}, json={"revoked": False})
    assert (reply.status, reply.json) == (200, {"key_revoked": False})
    assert (await api.create()).status == 200
    assert (await api.call("POST", url, headers={}, json={"revoked": 1})).status == 400
