"""Fault soak: 1,000 tasks through every kind of fault at once — nothing lost, nothing paid twice."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter

import pytest

from nanobanana_async import (
    Limits,
    PollPolicy,
    RetryPolicy,
    SubmissionUnknownError,
    TaskFailedError,
    Timeout,
)
from nanobanana_async.emulator import Emulator, EmulatorConfig, Faults, ServiceTime, TaskFaults

from ..helpers import client_for

pytestmark = pytest.mark.anyio

SOAK = int(os.environ.get("NANOBANANA_SOAK", "1"))  # the --soak option sets 10


def body_key(prompt: str) -> str:
    """The emulator's identity of a create body (sha256 of the sorted-key JSON)."""
    canonical = json.dumps({"prompt": prompt}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.timeout(300)
async def test_fault_soak() -> None:
    tasks = 1000 * SOAK
    faults = Faults(
        error_500=0.04,
        error_502=0.03,
        error_503=0.03,  # 10% 5xx; 503 carries Retry-After
        rate_limited_429=0.05,
        reset=0.02,
        stall=0.02,
        malformed_json=0.01,
        lost_create_response=0.01,
        retry_after_seconds=0.05,
        stall_seconds=1.0,  # past the client's 0.3 s read timeout
    )
    config = EmulatorConfig(
        faults=faults,
        task_faults=TaskFaults(inference_failure=0.05),
        service_time=ServiceTime.uniform(0.5, 1.5),
        time_scale=0.05,
        workers=500,
        seed=11,
    )
    prompts = [f"soak item {i}" for i in range(tasks)]
    async with Emulator(config) as emu:
        client = client_for(
            emu,
            timeout=Timeout(connect=1, read=0.3, deadline=10, cancel=2),
            retry=RetryPolicy(max_attempts=6, initial_backoff=0.01, max_backoff=0.05),
            poll=PollPolicy(
                initial_delay=0.02, max_interval=0.1, min_interval=0.01, target_delay=0.05
            ),
            limits=Limits(max_concurrent_polls=64),
        )
        async with client:
            outcomes = [o async for o in client.stream(prompts, max_in_flight=200)]
        stats = emu.stats

    # Every input has exactly one outcome.
    assert sorted(o.index for o in outcomes) == list(range(tasks))
    # No create was paid twice, and none was re-sent unasked.
    assert stats.duplicate_creates == 0
    assert max(stats.creates_by_body.values()) == 1
    # The faults really happened.
    injected = Counter(stats.faults)
    for kind in (
        "error_500",
        "error_502",
        "error_503",
        "rate_limited_429",
        "reset",
        "stall",
        "malformed_json",
        "lost_create_response",
    ):
        assert injected[kind] > 0, kind
    # Lost create responses are reported as unknown (the task exists; we hold no id for it).
    by_index = {o.index: o for o in outcomes}
    unknown = {o.index for o in outcomes if isinstance(o.error, SubmissionUnknownError)}
    assert len(unknown) >= len(stats.lost_create_ids) > 0
    created_keys = set(stats.creates_by_body)
    known_ids = {o.request_id for o in outcomes if o.request_id}
    for rid in stats.lost_create_ids:
        assert rid not in known_ids
    # Every task the service completed successfully and we hold the id of was delivered.
    delivered = {o.request_id for o in outcomes if o.ok}
    for rid, record in stats.tasks.items():
        if rid in known_ids and record.state == "COMPLETED" and record.error_type is None:
            assert rid in delivered, rid
    # Every item is either a result, a task failure the service reported, or an ambiguous
    # create: transient faults never surface as item errors.
    kinds = Counter(type(o.error).__name__ for o in outcomes if o.error is not None)
    assert set(kinds) <= {"SubmissionUnknownError", "TaskFailedError"}, kinds
    failed = [o for o in outcomes if isinstance(o.error, TaskFailedError)]
    assert all(o.error.error_type == "INFERENCE_FAILURE" for o in failed)  # type: ignore[union-attr]
    # Each unknown item holds no id; a lost-response create is among them (its body was created
    # once, and only once).
    assert all(by_index[i].request_id is None for i in unknown)
    unknown_keys = {body_key(prompts[i]) for i in unknown}
    lost_created = unknown_keys & created_keys
    assert len(lost_created) >= len(stats.lost_create_ids)
    assert all(stats.creates_by_body[k] == 1 for k in lost_created)
    print(
        f"soak: {tasks} tasks, {stats.requests} requests, faults {dict(injected)}, "
        f"ok {sum(o.ok for o in outcomes)}, task failures {len(failed)}, unknown {len(unknown)}, "
        f"duplicates {stats.duplicate_creates}"
    )
