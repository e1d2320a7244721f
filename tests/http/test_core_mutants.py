"""Edges of the retry policy, the pacer's math and the wire converter that a mutation run found
unpinned: boundaries (``<`` against ``<=``), the seeded random source, error excerpts and the
converter that ``_wire`` builds at import time.
"""

from __future__ import annotations

import math
import random

import cattrs
import pytest

from nanobanana_async._http import _wire
from nanobanana_async._http._pacer import AdaptiveRateLimiter, PacingCore, _RateMeter
from nanobanana_async._http._retry import RetryPolicy
from nanobanana_async.errors import (
    ProtocolError,
    RateLimitError,
    ResponseTooLargeError,
    ServerError,
    TransportError,
    ValidationError,
)
from nanobanana_async.models import (
    AspectRatio,
    GenerationRequest,
    GenerationResult,
    ImageSize,
    Ticket,
)

# -- RetryPolicy --------------------------------------------------------------------------------


def test_zero_backoffs_and_a_zero_retry_after_cap_are_valid() -> None:
    policy = RetryPolicy(initial_backoff=0, max_backoff=0, max_retry_after=0)
    assert policy.backoff(3, random.Random(1)) == 0.0
    with pytest.raises(ValueError, match="initial_backoff must be >= 0"):
        RetryPolicy(initial_backoff=-0.001)


def test_a_retry_after_exactly_at_the_cap_is_honoured() -> None:
    policy = RetryPolicy(max_retry_after=5.0)
    at_cap = RateLimitError("slow", status_code=429, retry_after=5.0)
    assert policy.delay(at_cap, 1) == 5.0
    over = ServerError("busy", status_code=503, retry_after=5.000001)
    assert policy.delay(over, 1) is None


def test_delay_draws_its_jitter_from_the_given_random_source() -> None:
    policy = RetryPolicy(initial_backoff=10.0, max_backoff=10.0)
    error = TransportError("reset")
    expected = policy.backoff(2, random.Random(7))
    assert policy.delay(error, 2, random.Random(7)) == expected
    assert policy.delay(error, 2, random.Random(7)) == random.Random(7).uniform(0, 10.0)


def test_a_response_too_large_is_not_retryable_though_a_protocol_error_is() -> None:
    policy = RetryPolicy()
    assert policy.is_retryable(ProtocolError("garbled"))
    assert not policy.is_retryable(ResponseTooLargeError("big", limit=10))


# -- the pacer ------------------------------------------------------------------------------------


def _cut_core(now: float = 100.0, cooldown: float = 0.5) -> PacingCore:
    """A core that has just cut its rate: last_max w = 9.3, cut rate c = 7.0 (from 10/s)."""
    core = PacingCore(max_rate=10.0, cooldown=cooldown)  # paced at 10/s from the start
    for i in range(40):  # a steady 10/s of sends, all refused: the cut is at the send rate
        core.record_send(now - 4 + i * 0.1)
    core.on_throttle(now)
    return core


def test_the_recovery_curve_is_cubic_up_to_the_old_rate() -> None:
    core = _cut_core()
    w, c, k = core.last_max, core._cut_rate, core.recovery_time
    assert c < w
    assert core._curve(core.last_cut) == pytest.approx(c)
    half = core._curve(core.last_cut + k / 2)
    assert half == pytest.approx(w - (w - c) / 8)  # x = -1/2, x**3 = -1/8
    assert core._curve(core.last_cut + k) == pytest.approx(w)


def test_the_probe_curve_grows_from_the_old_rate_after_recovery() -> None:
    core = _cut_core()
    w, k, p = core.last_max, core.recovery_time, core.probe_time
    assert core._curve(core.last_cut + k + p) == pytest.approx(w * (1 + (1 - core.beta)))
    assert core._curve(core.last_cut + k + p / 2) == pytest.approx(w * (1 + (1 - core.beta) / 8))


def test_a_throttle_exactly_one_cooldown_after_a_cut_cuts_again() -> None:
    core = _cut_core()
    epoch, cut = core.epoch, core.last_cut
    core.on_throttle(cut + core.cooldown / 2)  # the same episode: no second cut
    assert core.epoch == epoch
    core.on_throttle(cut + core.cooldown)
    assert core.epoch == epoch + 1 and core.last_cut == cut + core.cooldown


def test_a_burst_lets_that_many_sends_go_at_once() -> None:
    core = PacingCore(max_rate=10.0, burst=3.0)
    slots = [core.reserve(50.0) for _ in range(4)]
    assert slots[:3] == [50.0, 50.0, 50.0]
    assert slots[3] == pytest.approx(50.1)
    plain = PacingCore(max_rate=10.0)
    assert [plain.reserve(50.0) for _ in range(2)] == [50.0, pytest.approx(50.1)]


def test_a_rate_meter_reads_zero_until_its_first_event() -> None:
    meter = _RateMeter(tau=0.5)
    assert meter.rate(10.0) == 0.0
    meter.add(10.0)
    assert meter.rate(10.0) > 0


# -- the wire converter ---------------------------------------------------------------------------


def test_the_converter_sends_only_set_fields_by_their_wire_values() -> None:
    conv = _wire._build()
    request = GenerationRequest("x", aspect_ratio="16:9", image_size="2K")
    assert conv.unstructure(request) == {"prompt": "x", "aspect_ratio": "16:9", "image_size": "2K"}
    assert conv.unstructure(AspectRatio.SQUARE) == "1:1"
    assert conv.unstructure(ImageSize.SIZE_4K) == "4K"
    back = conv.structure({"prompt": "x", "aspect_ratio": "16:9"}, GenerationRequest)
    assert back.aspect_ratio is AspectRatio.LANDSCAPE_16_9
    with pytest.raises(cattrs.ClassValidationError):
        conv.structure({"prompt": "x", "webhook_url": "u"}, GenerationRequest)
    # The model's own converters check the values (and name the field), not cattrs'.
    with pytest.raises(cattrs.ClassValidationError) as caught:
        conv.structure({"prompt": "x", "aspect_ratio": "7:3"}, GenerationRequest)
    assert [type(e) for e in caught.value.exceptions] == [ValidationError]
    assert conv.structure({"request_id": "r", "queue_position": 2}, Ticket) == Ticket(
        "r", queue_position=2
    )


def test_request_validation_errors_name_the_field_and_what_is_allowed() -> None:
    with pytest.raises(ValidationError) as caught:
        _wire.parse_request(["not", "an", "object"])
    e = caught.value
    assert (e.field, e.reason, e.allowed) == (
        "request",
        "must be a JSON object",
        "an object with 'prompt'",
    )
    assert e.value == ["not", "an", "object"]

    with pytest.raises(ValidationError) as caught:
        _wire.parse_request({"prompt": "x", "webhook_url": "u"})
    e = caught.value
    assert (e.field, e.reason) == ("webhook_url", "unknown field")
    assert e.allowed == "prompt, image_urls, aspect_ratio, image_size, response_modalities"

    with pytest.raises(ValidationError) as caught:
        _wire.parse_request({"image_size": "1K"})
    e = caught.value
    assert (e.field, e.value, e.reason, e.allowed) == (
        "prompt",
        None,
        "is required",
        "1 to 2500 chars",
    )


def test_a_request_of_the_wrong_type_inside_lists_the_problems() -> None:
    with pytest.raises(ValidationError) as caught:
        _wire.parse_request({"prompt": "x", "image_urls": 5})
    e = caught.value
    assert e.field in ("request", "image_urls")
    assert e.value in ({"prompt": "x", "image_urls": 5}, 5)
    assert "XX" not in e.reason


def test_a_wrong_shape_names_the_body_in_its_excerpt() -> None:
    with pytest.raises(ProtocolError) as caught:
        _wire.parse_status({"status": 7, "request_id": "r9"})
    assert '"status": 7' in caught.value.body_excerpt
    circular: dict[str, object] = {"status": 5, "request_id": "r8"}
    circular["self"] = circular  # json.dumps refuses it: the excerpt falls back to repr
    with pytest.raises(ProtocolError) as caught:
        _wire.parse_status(circular)
    assert "'status': 5" in caught.value.body_excerpt


def test_an_output_without_a_type_is_typed_from_its_fields() -> None:
    parsed = _wire.parse_response(
        200, {"request_id": "r", "outputs": [{"url": "u"}, {"text": "t"}, {"file_size": 3}]}
    )
    assert [o.type for o in parsed.outputs] == ["image", "text", "file"]  # type: ignore[union-attr]
    with pytest.raises(ProtocolError, match=r"^output is not a JSON object"):
        _wire.parse_response(200, {"request_id": "r", "outputs": [1]})


def test_an_error_object_with_only_a_message_keeps_the_message() -> None:
    status = _wire.parse_status({"status": "COMPLETED", "error": {"message": "boom"}})
    assert status.error_message == "boom" and status.error_type is None


def test_log_lines_given_as_plain_strings_are_kept() -> None:
    status = _wire.parse_status({"status": "IN_PROGRESS", "logs": ["step 1", {"message": "2"}]})
    assert [entry.message for entry in status.logs] == ["step 1", "2"]


def test_a_result_without_outputs_or_status_is_a_result_with_its_images() -> None:
    parsed = _wire.parse_response(
        200, {"request_id": "r", "images": [{"type": "image", "url": "u"}]}
    )
    assert isinstance(parsed, GenerationResult)
    assert [o.url for o in parsed.outputs] == ["u"]


def test_the_plain_result_path_keeps_the_id_and_refuses_wrong_types() -> None:
    parsed = _wire.parse_response(200, {"request_id": "r9", "outputs": [{"type": "image"}]})
    assert isinstance(parsed, GenerationResult) and parsed.request_id == "r9"
    # A null field is skipped, but a wrong type after it still sends the body to the checks.
    with pytest.raises(ProtocolError):
        _wire.parse_response(
            200, {"request_id": "r", "outputs": [{"type": "image", "url": None, "width": "wide"}]}
        )
    # An unknown output field is kept (in extra), not passed on as a keyword.
    odd = _wire.parse_response(200, {"request_id": "r", "outputs": [{"type": "image", "seed": 3}]})
    assert isinstance(odd, GenerationResult) and odd.outputs[0].type == "image"


def test_protocol_errors_carry_an_excerpt_of_the_body() -> None:
    with pytest.raises(ProtocolError) as caught:
        _wire.parse_status({"status": "EXPLODED", "request_id": "r7"})
    assert "EXPLODED" in str(caught.value) and '"request_id": "r7"' in caught.value.body_excerpt
    with pytest.raises(ProtocolError) as caught:
        _wire.parse_ticket({"request_id": "r6", "queue_position": "first", "x": 1})
    assert '"queue_position": "first"' in caught.value.body_excerpt


def test_an_id_no_url_can_carry_is_refused_by_name() -> None:
    from nanobanana_async import Client

    transport = Client("k", base_url="http://api.example/model")._runtime.transport
    with pytest.raises(ValidationError) as caught:
        transport.task_url("bad\ud800", "status")
    assert (caught.value.field, caught.value.value) == ("request_id", "bad\ud800")


def test_a_result_without_an_id_has_an_empty_one() -> None:
    parsed = _wire.parse_response(200, {"outputs": [{"type": "image", "url": "u"}]})
    assert isinstance(parsed, GenerationResult) and parsed.request_id == ""


def test_the_pacer_floors_at_half_a_request_per_second_by_default() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(clock=lambda: now[0])
    core = limiter.core
    for _ in range(60):  # overload, over and over: each cut after the cooldown
        core.record_send(now[0])
        limiter.on_throttle()
        now[0] += 1.0
    assert limiter.rate == 0.5 == core.min_rate


def test_max_rate_caps_the_rate_and_must_be_positive() -> None:
    core = PacingCore(max_rate=5.0)
    core.on_success(0.0)  # before any cut: nothing to recover, no error
    assert core.fill_rate == 5.0
    core._set_rate(100.0)
    assert core.fill_rate == 5.0
    with pytest.raises(ValueError, match="max_rate must be positive"):
        PacingCore(max_rate=0)


def test_the_default_cooldown_allows_a_second_cut_half_a_second_later() -> None:
    core = PacingCore(max_rate=10.0)
    for i in range(20):
        core.record_send(i * 0.1)
    core.on_throttle(2.0)
    core.on_throttle(2.5)
    assert core.epoch == 2


def test_a_slow_rate_recovers_after_a_cut_too() -> None:
    core = PacingCore()
    t = 0.0
    for _ in range(20):  # a request every 0.6 s, then a 429: the old rate is below 1/s
        core.record_send(t)
        core.on_success(t)
        t += 0.6
    core.on_throttle(t)
    cut = core.fill_rate
    assert cut is not None and 0.5 < cut < core.last_max < 1.0
    core.record_send(t + 0.5)
    core.on_success(t + core.recovery_time)
    assert core.fill_rate == pytest.approx(core.last_max)  # back up to the old rate


def test_one_event_reads_as_one_event_in_the_window() -> None:
    meter = _RateMeter(tau=0.5)
    meter.add(10.0)
    seen = 1.0 - math.exp(-1e-3 / 0.5)
    assert meter.rate(10.0) == pytest.approx(1.0 / (0.5 * seen))


def test_a_bad_value_in_a_request_is_named_by_its_field() -> None:
    with pytest.raises(ValidationError) as caught:
        _wire.parse_request({"prompt": "x", "aspect_ratio": "7:3"})
    assert (caught.value.field, caught.value.value) == ("aspect_ratio", "7:3")
    assert "16:9" in (caught.value.allowed or "")


@pytest.mark.parametrize("rid", ["a\x00b", "tab\there", "del\x7f"])
def test_a_ticket_with_an_id_no_url_can_carry_is_a_protocol_error(rid: str) -> None:
    with pytest.raises(ProtocolError, match="unusable request_id"):
        _wire.parse_ticket({"request_id": rid})


def test_the_plain_ticket_path_keeps_every_url_and_checks_the_position() -> None:
    ticket = _wire.parse_ticket(
        {"request_id": "r", "status_url": "s", "response_url": "p", "cancel_url": "c"}
    )
    assert ticket == Ticket("r", status_url="s", response_url="p", cancel_url="c")
    with pytest.raises(ProtocolError):
        _wire.parse_ticket({"request_id": "r", "queue_position": "first"})


def test_a_body_that_is_not_an_object_is_quoted_in_the_error() -> None:
    with pytest.raises(ProtocolError, match="status response is not a JSON object") as caught:
        _wire.parse_status([1, 2])
    assert "[1, 2]" in caught.value.body_excerpt


def test_a_limiter_passes_its_floor_to_its_core() -> None:
    assert AdaptiveRateLimiter(min_rate=2.0).core.min_rate == 2.0
