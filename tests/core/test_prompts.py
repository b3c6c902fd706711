import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vqclip.core.prompts import REGIONS, Prompt, parse_prompt, parse_prompts


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a red circle", Prompt("a red circle", 1.0, -math.inf)),
        ("a red circle:2", Prompt("a red circle", 2.0, -math.inf)),
        ("blurry:-0.5", Prompt("blurry", -0.5, -math.inf)),
        ("a cat:1.5:0.8", Prompt("a cat", 1.5, 0.8)),
        ("a cat:1:-inf", Prompt("a cat", 1.0, -math.inf)),
        ("  spaced out : 3 ", Prompt("spaced out", 3.0, -math.inf)),
        ("ratio 16:9 poster", Prompt("ratio 16:9 poster", 1.0, -math.inf)),
        ("note: a sunset", Prompt("note: a sunset", 1.0, -math.inf)),
        ("a:b:c", Prompt("a:b:c", 1.0, -math.inf)),
        ("https://x/y.png", Prompt("https://x/y.png", 1.0, -math.inf)),
        ("https://x/y.png:0.5", Prompt("https://x/y.png", 0.5, -math.inf)),
        ("http://host:8080/img.png:2:0.1", Prompt("http://host:8080/img.png", 2.0, 0.1)),
        ("http://host:8080/img.png:0.5", Prompt("http://host:8080/img.png", 0.5, -math.inf)),
        ("http://127.0.0.1:8080/img.png", Prompt("http://127.0.0.1:8080/img.png", 1.0, -math.inf)),
        ("C:/images/cat.png:.5", Prompt("C:/images/cat.png", 0.5, -math.inf)),
        ("x:1e-1", Prompt("x", 0.1, -math.inf)),
    ],
)
def test_parse_prompt(text: str, expected: Prompt) -> None:
    assert (
        parse_prompt(text) == expected
    )  # and no region: the prompts before regions parse as before


@pytest.mark.parametrize(
    "text, message",
    [
        ("a cat:1.5x", "weight '1.5x' is not a number"),
        ("a cat:-abc", "weight '-abc' is not a number"),
        ("a cat:1:2x", "stop '2x' is not a number"),
        ("a cat:nan", "is NaN"),
        ("a cat:inf", "must be finite"),
        (":2", "has no text"),
        ("   :1:2", "has no text"),
    ],
)
def test_bad_prompts_name_the_prompt(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        parse_prompt(text)
    assert repr(text) in str(error.value)


def test_parse_prompts_splits_and_skips_empty_parts() -> None:
    prompts = parse_prompts(" a red circle:1 || blurry:-0.5 |  | https://a/b.png:0.3 ")
    assert prompts == [
        Prompt("a red circle", 1.0),
        Prompt("blurry", -0.5),
        Prompt("https://a/b.png", 0.3),
    ]
    assert parse_prompts("") == [] and parse_prompts(" | ") == []


def test_split_phases_of_a_story() -> None:
    from vqclip.core.prompts import split_phases

    assert split_phases("a forest | mist:0.5 ^ a city ^ ") == ["a forest | mist:0.5", "a city"]
    assert split_phases("no phases: https://x/y.png:0.5") == ["no phases: https://x/y.png:0.5"]
    assert split_phases("") == [""]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red circle @left:1.5", Prompt("a red circle", 1.5, region="left")),
        ("a castle @mask.png", Prompt("a castle", region="mask.png")),
        ("a tree @top-left:2:0.5", Prompt("a tree", 2.0, 0.5, region="top-left")),
        ("a sun @centre", Prompt("a sun", region="centre")),
        # Not regions: an @handle, an address, a URL whose path ends in an image name.
        ("a photo by @artist:0.5", Prompt("a photo by @artist", 0.5)),
        ("write to me@left", Prompt("write to me@left")),
        ("https://example.com/@left.png:0.5", Prompt("https://example.com/@left.png", 0.5)),
        ("@left", Prompt("@left")),
    ],
)
def test_a_prompt_may_name_where_it_applies(text: str, expected: Prompt) -> None:
    assert parse_prompt(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*"ab @:.-|/0123456789", "left", "png", "top-left", "://"]), max_size=30).map("".join))  # fmt: skip
def test_any_prompt_text_is_one_error_or_a_prompt_with_a_known_region(text: str) -> None:
    try:
        prompts = parse_prompts(text)
    except ValueError as error:
        assert "\n" not in str(error)
        return
    for prompt in prompts:
        assert prompt.region is None or prompt.region.lower() in REGIONS or prompt.region.lower().endswith(".png")  # fmt: skip
        assert prompt.text.strip() and not prompt.text.endswith(f"@{prompt.region}")
