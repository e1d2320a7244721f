import pytest

from nanobanana_async import (
    AspectRatio,
    GenerationRequest,
    GenerationResult,
    ImageSize,
    Modality,
    Output,
    TaskState,
    ValidationError,
)


def test_plain_strings_become_enums() -> None:
    req = GenerationRequest(
        "a cat", aspect_ratio="16:9", image_size="2K", response_modalities=["Image"]
    )
    assert req.aspect_ratio is AspectRatio.LANDSCAPE_16_9
    assert req.image_size is ImageSize.SIZE_2K
    assert req.response_modalities == (Modality.IMAGE,)
    assert req.image_urls == ()


def test_all_ten_ratios_and_three_sizes_accepted() -> None:
    ratios = ["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]
    assert [r.value for r in AspectRatio] == ratios
    assert [s.value for s in ImageSize] == ["1K", "2K", "4K"]
    for ratio in ratios:
        assert GenerationRequest("x", aspect_ratio=ratio).aspect_ratio == AspectRatio(ratio)


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"prompt": ""}, "prompt", "2500"),
        ({"prompt": "   \n"}, "prompt", "2500"),
        ({"prompt": "x" * 2501}, "prompt", "2500"),
        ({"prompt": 42}, "prompt", "2500"),
        ({"prompt": "x", "aspect_ratio": "7:3"}, "aspect_ratio", "16:9"),
        ({"prompt": "x", "image_size": "4k"}, "image_size", "1K, 2K, 4K"),
        ({"prompt": "x", "image_size": "8K"}, "image_size", "1K, 2K, 4K"),
        ({"prompt": "x", "response_modalities": []}, "response_modalities", "Text, Image"),
        ({"prompt": "x", "response_modalities": ["Image", "Image"]}, "response_modalities", "Text"),
        ({"prompt": "x", "response_modalities": ["Video"]}, "response_modalities", "Text, Image"),
        ({"prompt": "x", "image_urls": ["https://a/b"] * 15}, "image_urls", "at most 14"),
        ({"prompt": "x", "image_urls": "https://a/b"}, "image_urls", "at most 14"),
        ({"prompt": "x", "image_urls": ["file:///etc/passwd"]}, "image_urls[0]", "http(s)"),
        (
            {"prompt": "x", "image_urls": ["https://a/b", "javascript:alert(1)"]},
            "image_urls[1]",
            "http",
        ),
        ({"prompt": "x", "image_urls": ["/relative/path.png"]}, "image_urls[0]", "http(s)"),
        ({"prompt": "x", "image_urls": ["https:///nohost"]}, "image_urls[0]", "http(s)"),
        ({"prompt": "x", "image_urls": ["https://a/b c"]}, "image_urls[0]", "http(s)"),
        ({"prompt": "x", "image_urls": [3]}, "image_urls[0]", "http(s)"),
    ],
)
def test_bad_input_names_field_and_allowed_values(
    kwargs: dict[str, object], field: str, allowed: str
) -> None:
    with pytest.raises(ValidationError) as info:
        GenerationRequest(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")
    assert info.value.allowed is not None and allowed in info.value.allowed


def test_limits_are_inclusive() -> None:
    assert len(GenerationRequest("x" * 2500).prompt) == 2500
    assert (
        len(GenerationRequest("x", image_urls=[f"https://h/{i}" for i in range(14)]).image_urls)
        == 14
    )


def test_prompt_length_counts_code_points() -> None:
    emoji = "\U0001f34c"  # one code point, four UTF-8 bytes, two UTF-16 units
    assert GenerationRequest(emoji * 2500).prompt == emoji * 2500
    with pytest.raises(ValidationError):
        GenerationRequest(emoji * 2501)
    combining = "e\u0301"  # two code points that render as one character
    with pytest.raises(ValidationError):
        GenerationRequest(combining * 1251)


def test_data_uri_accepted_and_value_truncated_in_message() -> None:
    uri = "data:image/png;base64," + "A" * 5000
    assert GenerationRequest("x", image_urls=[uri]).image_urls == (uri,)
    with pytest.raises(ValidationError) as info:
        GenerationRequest("y" * 5000)
    assert len(str(info.value)) < 300


def test_models_are_frozen_and_repr_is_short() -> None:
    req = GenerationRequest("p" * 2000, image_urls=["https://a/b"])
    with pytest.raises(AttributeError):
        req.prompt = "other"  # type: ignore[misc]
    assert len(repr(req)) < 150


def test_result_images_and_text() -> None:
    result = GenerationResult(
        "rid",
        outputs=(
            Output("image", url="u1"),
            Output("text", text="hello"),
            Output("image", url="u2"),
            Output("text", text="world"),
        ),
    )
    assert [o.url for o in result.images] == ["u1", "u2"]
    assert result.text == "hello\nworld"
    assert GenerationResult("r").text is None


def test_task_state_done() -> None:
    assert not TaskState.IN_QUEUE.done and not TaskState.IN_PROGRESS.done
    assert TaskState.SUCCEEDED.done and TaskState.FAILED.done and TaskState.CANCELLED.done
