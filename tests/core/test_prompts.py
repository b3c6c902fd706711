import math

import pytest

from vqclip.core.prompts import Prompt, parse_prompt, parse_prompts


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
    assert parse_prompt(text) == expected


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
