"""Hostile input: every bad request is refused with a ValidationError naming the field, locally.

Each case goes through ``submit``, ``generate``, ``stream``, ``map`` and ``_wire.parse_request``;
the emulator must see no request at all.
"""

from __future__ import annotations

from typing import Any

import pytest

from nanobanana_async import GenerationRequest, ValidationError
from nanobanana_async._http import _wire
from nanobanana_async.emulator import Emulator

from ..helpers import client_for

pytestmark = pytest.mark.anyio

BANANA = "\U0001f34c"  # one code point, four UTF-8 bytes
COMBINING = "e\u0301"  # two code points, one grapheme
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # five code points (ZWJ sequence)
URL = "https://example.com/ref.png"


def prompt_of(unit: str, code_points: int) -> str:
    text = unit * (code_points // len(unit))
    text += "x" * (code_points - len(text))
    assert len(text) == code_points
    return text


# (wire dict, field the error must name)
BAD: list[tuple[dict[str, Any], str]] = [
    ({"prompt": prompt_of(BANANA, 2501)}, "prompt"),
    ({"prompt": prompt_of(COMBINING, 2501)}, "prompt"),
    ({"prompt": prompt_of(FAMILY, 2501)}, "prompt"),
    ({"prompt": "x" * 10_000}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": " \t\n\u3000"}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"prompt": ["a"]}, "prompt"),
    ({"prompt": b"bytes"}, "prompt"),
    ({}, "prompt"),
    ({"prompt": "ok", "image_urls": [URL] * 15}, "image_urls"),
    ({"prompt": "ok", "image_urls": URL}, "image_urls"),
    ({"prompt": "ok", "image_urls": 3}, "image_urls"),
    ({"prompt": "ok", "image_urls": ["file:///etc/passwd"]}, "image_urls[0]"),
    ({"prompt": "ok", "image_urls": [URL, "javascript:alert(1)"]}, "image_urls[1]"),
    ({"prompt": "ok", "image_urls": ["ftp://example.com/a.png"]}, "image_urls[0]"),
    ({"prompt": "ok", "image_urls": ["data:text/html,<script>alert(1)</script>"]}, "image_urls[0]"),
    ({"prompt": "ok", "image_urls": ["https://"]}, "image_urls[0]"),
    ({"prompt": "ok", "image_urls": ["//example.com/a.png"]}, "image_urls[0]"),
    ({"prompt": "ok", "image_urls": ["https://exa mple.com/a.png"]}, "image_urls[0]"),
    ({"prompt": "ok", "image_urls": ["https://example.com/\x00"]}, "image_urls[0]"),
    ({"prompt": "ok", "image_urls": ["http://[::1/a.png"]}, "image_urls[0]"),
    ({"prompt": "ok", "image_urls": [None]}, "image_urls[0]"),
    ({"prompt": "ok", "image_urls": [{"url": URL}]}, "image_urls[0]"),
    ({"prompt": "ok", "aspect_ratio": "5:1"}, "aspect_ratio"),
    ({"prompt": "ok", "aspect_ratio": "1:1 "}, "aspect_ratio"),
    ({"prompt": "ok", "aspect_ratio": 1.0}, "aspect_ratio"),
    ({"prompt": "ok", "image_size": "4k"}, "image_size"),
    ({"prompt": "ok", "image_size": "8K"}, "image_size"),
    ({"prompt": "ok", "image_size": 4}, "image_size"),
    ({"prompt": "ok", "response_modalities": ["Video"]}, "response_modalities"),
    ({"prompt": "ok", "response_modalities": ["image"]}, "response_modalities"),
    ({"prompt": "ok", "response_modalities": []}, "response_modalities"),
    ({"prompt": "ok", "response_modalities": ["Image", "Image"]}, "response_modalities"),
    ({"prompt": "ok", "response_modalities": 7}, "response_modalities"),
]
# Only a wire-shaped dict (JSONL) can carry these.
BAD_WIRE_ONLY: list[tuple[Any, str]] = [
    ({"prompt": "ok", "webhook_url": "https://evil.example/hook"}, "webhook_url"),
    ({"prompt": "ok", "seed": 1}, "seed"),
    ({"prompt": "ok", "Prompt": "x"}, "Prompt"),
    (["prompt", "ok"], "request"),
    ("a prompt", "request"),
    (None, "request"),
]


def build(data: dict[str, Any]) -> GenerationRequest:
    return GenerationRequest(**data)


def test_limits_count_code_points_not_bytes_or_graphemes() -> None:
    for unit in (BANANA, COMBINING, FAMILY, "x"):
        ok = prompt_of(unit, 2500)
        assert GenerationRequest(ok).prompt == ok
        assert _wire.parse_request({"prompt": ok}).prompt == ok
        with pytest.raises(ValidationError) as info:
            GenerationRequest(ok + "x")
        assert info.value.field == "prompt" and "2501" in str(info.value)
    assert len(GenerationRequest(BANANA * 2500).prompt.encode()) == 10_000
    assert GenerationRequest("ok", image_urls=[URL] * 14).image_urls == (URL,) * 14
    data_uri = "data:image/png;base64,iVBORw0KGgo="
    assert GenerationRequest("ok", image_urls=[data_uri]).image_urls == (data_uri,)


@pytest.mark.parametrize(("data", "field"), BAD + BAD_WIRE_ONLY)
def test_parse_request_names_the_field(data: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        _wire.parse_request(data)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(("data", "field"), [(d, f) for d, f in BAD if "prompt" in d])
def test_constructor_names_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        build(data)
    assert info.value.field == field


def test_error_message_stays_short() -> None:
    with pytest.raises(ValidationError) as info:
        GenerationRequest("x" * 100_000)
    assert len(str(info.value)) < 300


async def test_nothing_is_sent_for_bad_input(nanobanana_emulator: Emulator) -> None:
    emu = nanobanana_emulator
    bad_prompts: list[Any] = [
        d["prompt"] for d, f in BAD if f == "prompt" and set(d) == {"prompt"}
    ] + [42, None, b"bytes", {"prompt": "dict is not a request"}]
    async with client_for(emu) as client:
        for raw in bad_prompts:
            with pytest.raises(ValidationError) as info:
                await client.submit(raw)
            assert info.value.field in ("prompt", "request")
            with pytest.raises(ValidationError):
                await client.generate(raw, timeout=1)
        for data, field in BAD:
            with pytest.raises(ValidationError) as info:
                await client.submit(_wire.parse_request(data))
            assert info.value.field == field
        # stream: one outcome per item, each carrying its ValidationError; nothing stops early
        items: list[Any] = [*bad_prompts, 7, object()]
        outcomes = [o async for o in client.stream(items)]
        assert sorted(o.index for o in outcomes) == list(range(len(items)))
        for o in outcomes:
            assert isinstance(o.error, ValidationError) and o.result is None
            assert o.error.field in ("prompt", "request")
        mapped = await client.map(items, return_exceptions=True)
        assert len(mapped) == len(items)
        assert all(isinstance(m, ValidationError) for m in mapped)
        with pytest.raises(ValidationError):
            await client.map(items)
        for bad_source in ("a string", b"bytes", 5, None):
            with pytest.raises(ValidationError) as info:
                client.stream(bad_source)  # type: ignore[arg-type]
            assert info.value.field == "requests"
        for bad_option in ({"max_in_flight": 0}, {"max_in_flight": 1.5}, {"submit_rate": -1}):
            with pytest.raises(ValidationError):
                client.stream(["ok"], **bad_option)
        for bad_id in ("", "   ", "x" * 300, 5, None):
            with pytest.raises(ValidationError) as info:
                await client.status(bad_id)  # type: ignore[arg-type]
            assert info.value.field == "request_id"
        with pytest.raises(ValidationError) as info:
            await client.status("bad\ud800")
        assert info.value.field == "request_id"
        for timeout in (0, -1, float("nan")):
            with pytest.raises(ValidationError):
                await client.generate("fine", timeout=timeout)
    assert emu.stats.requests == 0
    assert emu.stats.creates == 0


async def test_mixed_batch_only_sends_the_good_items(nanobanana_emulator: Emulator) -> None:
    emu = nanobanana_emulator
    items: list[Any] = ["good one", BANANA * 2501, "good two", 3, "x" * 2500]
    async with client_for(emu) as client:
        outcomes = {o.index: o async for o in client.stream(items)}
    assert set(outcomes) == set(range(len(items)))
    assert [outcomes[i].ok for i in range(len(items))] == [True, False, True, False, True]
    for i in (1, 3):
        error = outcomes[i].error
        assert isinstance(error, ValidationError) and error.field in ("prompt", "request")
    assert emu.stats.creates == 3
