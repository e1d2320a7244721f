"""The client against the emulator: end to end, states, outputs, variants, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio
import anyio.lowlevel
import pytest

from nanobanana_async import (
    AspectRatio,
    AuthenticationError,
    Client,
    ClientStateError,
    GenerationRequest,
    ImageSize,
    NotFoundError,
    PermissionDeniedError,
    PollPolicy,
    TaskCancelledError,
    TaskFailedError,
    TaskState,
    TimeoutError,
    ValidationError,
)
from nanobanana_async.emulator import Emulator, EmulatorConfig, ServiceTime, TaskFaults, Variants

from .helpers import client_for

pytestmark = pytest.mark.anyio

LONG_SIDE = {ImageSize.SIZE_1K: 1024, ImageSize.SIZE_2K: 2048, ImageSize.SIZE_4K: 4096}


async def test_every_aspect_ratio_and_size_end_to_end(nanobanana_emulator: Emulator) -> None:
    results = {}
    async with client_for(nanobanana_emulator) as client:

        async def one(ratio: AspectRatio, size: ImageSize) -> None:
            req = GenerationRequest(
                f"a cat {ratio.value} {size.value}", aspect_ratio=ratio, image_size=size
            )
            results[ratio, size] = await client.generate(req, timeout=10)

        async with anyio.create_task_group() as tg:
            for ratio in AspectRatio:
                for size in ImageSize:
                    tg.start_soon(one, ratio, size)
    assert len(results) == 30
    for (ratio, size), result in results.items():
        (image,) = result.images
        assert image.width is not None and image.height is not None
        assert max(image.width, image.height) == LONG_SIDE[size]
        w, h = (int(x) for x in ratio.value.split(":"))
        assert abs(image.width / image.height - w / h) < 0.02
        assert image.url is not None and image.url.startswith("http://127.0.0.1")
        assert image.content_type == "image/png" and image.file_size
        assert result.request_id in nanobanana_emulator.stats.tasks


@pytest.mark.nanobanana_emulator(service_time=ServiceTime.fixed(0.3), time_scale=1.0, workers=1)
async def test_status_transitions(nanobanana_emulator: Emulator) -> None:
    async with client_for(nanobanana_emulator) as client:
        first = await client.submit("first")
        second = await client.submit("second")
        seen: list[TaskState] = []
        positions = []
        with anyio.fail_after(5):
            while True:
                status = await second.status()
                if not seen or seen[-1] is not status.state:
                    seen.append(status.state)
                    positions.append(status.queue_position)
                if status.done:
                    break
                await anyio.sleep(0.02)
        assert seen == [TaskState.IN_QUEUE, TaskState.IN_PROGRESS, TaskState.SUCCEEDED]
        assert positions[0] == 0  # next in line behind the running task
        assert (await first).request_id == first.request_id
        # The id alone re-attaches to the task.
        again = await client.result(second.request_id)
        assert again.request_id == second.request_id


async def test_text_and_image_outputs(nanobanana_emulator: Emulator) -> None:
    async with client_for(nanobanana_emulator) as client:
        both = await client.generate(
            GenerationRequest("a fox", response_modalities=["Text", "Image"])
        )
        image_only = await client.generate(
            GenerationRequest("a fox", response_modalities=["Image"])
        )
        default = await client.generate("a fox")
    assert both.text and len(both.images) == 1
    assert image_only.text is None and len(image_only.images) == 1
    assert default.text is not None  # the service's default is ["Text", "Image"]


async def test_task_failures_are_typed(nanobanana_emulator: Emulator) -> None:
    async with client_for(nanobanana_emulator) as client:
        with pytest.raises(TaskFailedError) as info:
            await client.generate("a [blocked] prompt")
    assert info.value.error_type == "CONTENT_BLOCKED"
    assert info.value.request_id in nanobanana_emulator.stats.tasks


@pytest.mark.nanobanana_emulator(task_faults=TaskFaults(request_invalid=1.0))
async def test_late_rejection(nanobanana_emulator: Emulator) -> None:
    async with client_for(nanobanana_emulator) as client:
        with pytest.raises(TaskFailedError) as info:
            await client.generate("fine at create time")
    assert info.value.error_type == "REQUEST_INVALID"


@pytest.mark.nanobanana_emulator(service_time=ServiceTime.fixed(0.0))
async def test_done_at_first_poll_costs_one_request(nanobanana_emulator: Emulator) -> None:
    async with client_for(
        nanobanana_emulator, poll=PollPolicy(initial_delay=0.05, jitter=0)
    ) as client:
        result = await client.generate("instant")
        stats = nanobanana_emulator.stats
        assert stats.result_polls[result.request_id] == 1
        assert stats.status_polls[result.request_id] == 0
        assert stats.requests == 2  # one create, one poll
        assert client.stats.requests_sent == 2


@pytest.mark.parametrize(
    "variant",
    [
        "lowercase_status",
        "queued_synonym",
        "id_field",
        "error_object",
        "status_202",
        "create_status_field",
        "minimal_create",
        "foreign_urls",
        "no_202_result",
    ],
)
async def test_wire_variants(variant: str, caplog: pytest.LogCaptureFixture) -> None:
    config = EmulatorConfig(
        variants=Variants(**{variant: True}),
        service_time=ServiceTime.fixed(0.05),
        workers=1,
    )
    caplog.set_level(logging.DEBUG, logger="nanobanana_async")
    async with Emulator(config) as emu, client_for(emu) as client:
        jobs = [await client.submit(f"variant {variant} {i}") for i in range(2)]
        results = [await job for job in jobs]
        status = await jobs[0].status()
        with pytest.raises(TaskFailedError) as info:
            await client.generate("variant [blocked]")
    assert [r.request_id for r in results] == [j.request_id for j in jobs]
    assert all(len(r.images) == 1 for r in results)
    assert status.state is TaskState.SUCCEEDED
    assert info.value.error_type == "CONTENT_BLOCKED"
    if variant == "foreign_urls":
        assert any("another origin" in r.getMessage() for r in caplog.records)
    assert emu.api_key not in caplog.text


@pytest.mark.nanobanana_emulator(service_time=ServiceTime.fixed(30.0), time_scale=1.0)
async def test_cancel_and_cancelled_outcome(nanobanana_emulator: Emulator) -> None:
    async with client_for(nanobanana_emulator) as client:
        job = await client.submit("long")
        assert await job.cancel() is True
        with pytest.raises(TaskCancelledError) as info:
            await job.result(timeout=5)
    assert info.value.error_type == "CANCELED"
    assert nanobanana_emulator.stats.tasks[job.request_id].error_type == "CANCELED"


@pytest.mark.nanobanana_emulator(service_time=ServiceTime.fixed(30.0), time_scale=1.0)
async def test_abandoned_wait_cancels_remotely(nanobanana_emulator: Emulator) -> None:
    stats = nanobanana_emulator.stats
    async with client_for(nanobanana_emulator) as client:
        job = await client.submit("abandoned by cancellation")
        with anyio.move_on_after(0.2):
            await job.result()
        assert stats.tasks[job.request_id].error_type == "CANCELED"

        timed = await client.submit("abandoned by timeout")
        with pytest.raises(TimeoutError):
            await timed.result(timeout=0.2)
        assert stats.tasks[timed.request_id].error_type == "CANCELED"

        kept = await client.submit("not cancelled when told so")
        with anyio.move_on_after(0.1):
            await kept.result(cancel_on_abandon=False)
        assert stats.tasks[kept.request_id].error_type is None
        assert client.stats.in_flight == 0
        await kept.cancel()
    assert stats.cancels == 3


@pytest.mark.nanobanana_emulator(service_time=ServiceTime.fixed(30.0), time_scale=1.0)
async def test_close_cancels_waited_tasks_and_leaves_no_task(nanobanana_emulator: Emulator) -> None:
    before = set(asyncio.all_tasks())
    outcome: list[BaseException] = []
    client = client_for(nanobanana_emulator)

    async def waiter() -> None:
        try:
            await job
        except ClientStateError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        await client.__aenter__()  # as a lifespan hook would: aclose() in the same scope
        job = await client.submit("waited on at close")
        tg.start_soon(waiter)
        await anyio.sleep(0.1)
        await client.aclose()
    assert nanobanana_emulator.stats.tasks[job.request_id].error_type == "CANCELED"
    assert len(outcome) == 1
    await anyio.lowlevel.checkpoint()
    assert set(asyncio.all_tasks()) <= before


@pytest.mark.nanobanana_emulator(service_time=ServiceTime.fixed(30.0), time_scale=1.0)
async def test_close_with_detach_leaves_remote_tasks(nanobanana_emulator: Emulator) -> None:
    client = client_for(nanobanana_emulator)
    async with anyio.create_task_group() as tg:
        await client.__aenter__()
        job = await client.submit("detached")
        tg.start_soon(_swallow, job.result)
        await anyio.sleep(0.05)
        await client.aclose(detach=True)
    assert nanobanana_emulator.stats.tasks[job.request_id].error_type is None


async def _swallow(fn: object) -> None:
    with contextlib.suppress(ClientStateError):
        await fn()  # type: ignore[operator]


async def test_lifecycle_errors(nanobanana_emulator: Emulator) -> None:
    client = client_for(nanobanana_emulator)
    with pytest.raises(ClientStateError, match="async with"):
        await client.submit("x")
    async with client:
        with pytest.raises(ClientStateError, match="already open"):
            await client.__aenter__()
    with pytest.raises(ClientStateError, match="closed"):
        await client.submit("x")
    with pytest.raises(ClientStateError, match="only once"):
        async with client:
            pass
    await client.aclose()  # idempotent


async def test_bad_input_sends_nothing(nanobanana_emulator: Emulator) -> None:
    async with client_for(nanobanana_emulator) as client:
        with pytest.raises(ValidationError) as info:
            await client.submit(GenerationRequest("x", aspect_ratio="5:1"))  # fails at construction
        with pytest.raises(ValidationError):
            await client.submit(42)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await client.generate("ok", timeout=-1)
        with pytest.raises(ValidationError):
            client.job("")
    assert info.value.field == "aspect_ratio"
    assert nanobanana_emulator.stats.creates == 0


def test_construction_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.delenv("NANOBANANA_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="NANOBANANA_API_KEY"):
        Client()
    with pytest.raises(ValidationError) as info:
        Client("k", base_url="ftp://example.com")
    assert info.value.field == "base_url"
    with pytest.raises(ValidationError) as info:
        Client("k", model="../../admin")
    assert info.value.field == "model"
    monkeypatch.setenv("NANOBANANA_API_KEY", "from-env-secret")
    monkeypatch.setenv("NANOBANANA_BASE_URL", "http://127.0.0.1:9/model")
    client = Client()
    assert client.base_url == "http://127.0.0.1:9/model"
    assert "from-env-secret" not in repr(client)


def test_api_key_file_read_once(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "key"
    path.write_text("file-secret\n")
    client = Client(api_key_file=path, base_url="http://127.0.0.1:9/model")
    path.write_text("changed")
    assert client._runtime.transport._auth == "Bearer file-secret"
    with pytest.raises(ValidationError) as info:
        Client(api_key_file=Path(str(tmp_path)) / "missing")
    assert info.value.field == "api_key_file"


async def test_auth_and_permission_errors(nanobanana_emulator: Emulator) -> None:
    async with Client("wrong-key", base_url=nanobanana_emulator.base_url) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.submit("x")
        assert "wrong-key" not in str(info.value) and "wrong-key" not in repr(info.value)
    async with client_for(nanobanana_emulator, model="gpt_image_9") as client:
        with pytest.raises(PermissionDeniedError):
            await client.submit("x")
    async with client_for(nanobanana_emulator) as client:
        with pytest.raises(NotFoundError):
            await client.status("mmsu_does_not_exist")
        with pytest.raises(NotFoundError):
            await client.result("mmsu_does_not_exist", timeout=5)
    assert nanobanana_emulator.stats.creates == 0


@pytest.mark.nanobanana_emulator(retention=0.05)
async def test_expired_result_is_not_found(nanobanana_emulator: Emulator) -> None:
    async with client_for(nanobanana_emulator) as client:
        result = await client.generate("short-lived")
        await anyio.sleep(0.3)
        with pytest.raises(NotFoundError):
            await client.result(result.request_id, timeout=5)
