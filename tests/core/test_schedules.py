"""Schedules: the peers' example strings give their documented values; anything else is one
clear error or a finite value, and no text runs code."""

from __future__ import annotations

import builtins
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vqclip.core.config import GenerationConfig
from vqclip.core.schedules import MAX_TEXT, parse_schedule


def test_disco_keyframes_are_linear_between_keys_and_held_outside() -> None:
    zoom = parse_schedule("0: (1), 10: (1.05)", "zoom")  # Disco Diffusion's example
    assert [zoom.at(f) for f in (0, 5, 10, 20)] == pytest.approx([1.0, 1.025, 1.05, 1.05])
    late = parse_schedule("10: (2), 20: (4)", "angle")
    assert [late.at(f) for f in (0, 10, 15, 25)] == pytest.approx([2.0, 2.0, 3.0, 4.0])
    assert parse_schedule("1.05", "zoom").at(7) == 1.05
    assert parse_schedule(3, "zoom").at(0) == 3.0


def test_deforum_expressions_of_t_max_f_and_s() -> None:
    wave = parse_schedule("0:(10*sin(2*3.14*t/10))", "translation_x")  # Deforum's example
    assert [wave.at(f) for f in (0, 5, 10)] == pytest.approx(
        [10 * math.sin(2 * 3.14 * f / 10) for f in (0, 5, 10)]
    )
    assert parse_schedule("max_f - t + s", "x").at(2, frames=10, seed=3) == 11
    assert parse_schedule("where(t > 5, 1, 0) + abs(-2) + floor(2.7) + pi", "x").at(6) == pytest.approx(1 + 2 + 2 + math.pi)  # fmt: skip
    assert parse_schedule("-2**2", "x").at(0) == -4  # as Python and numexpr read it
    assert parse_schedule("2**3**2", "x").at(0) == 512  # right-associative
    # A key's value may hold commas and nested parentheses; each key is evaluated at the frame.
    nested = parse_schedule("0: (max(1, (2))), 10: (min(t, 30) * (1 + 0))", "x")
    assert [nested.at(f) for f in (0, 5, 10, 40)] == pytest.approx([2.0, 3.5, 10.0, 30.0])


@pytest.mark.parametrize(
    ("text", "frame", "message"),
    [
        ("0: (1), 5: (1/0)", 5, "zoom: '0: (1), 5: (1/0)' at frame 5: float division by zero"),
        ("exp(t * 100)", 8, "at frame 8: math range error"),
        ("10**400", 0, "exponent 400.0 beyond"),
        ("log(t - 3)", 1, "at frame 1: math domain error"),
        ("__import__('os')", 0, "unexpected"),
        ("t.real", 0, "unexpected '.real'"),
        ("nan", 0, "unknown name 'nan'"),
        ("sin(1, 2)", 0, "sin() takes 1 arguments, got 2"),
        ("(" * 40 + "1" + ")" * 40, 0, "nested more than 32 deep"),
        ("+".join(["1"] * 300), 0, "operations deep"),
        ("0: (1), 0: (2)", 0, "frame 0 keyed twice"),
        ("0: (1), 5 (2)", 0, "expected FRAME: (VALUE)"),
        ("x" * (MAX_TEXT + 1), 0, f"expected at most {MAX_TEXT}"),
    ],
)
def test_bad_schedules_are_one_line_naming_the_setting_and_frame(text: str, frame: int, message: str) -> None:  # fmt: skip
    with pytest.raises(ValueError) as raised:
        parse_schedule(text, "zoom").at(frame)
    assert str(raised.value).startswith("zoom: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_config_checks_every_frame_before_work() -> None:
    base = {"prompts": "a", "animation_mode": "2D", "max_frames": 20}
    for changes, message in (
        ({"zoom": "1 - t/10"}, "zoom: 0 at frame 10; expected above 0"),
        ({"animation_mode": "3D", "fov": "0:(40), 10:(200)"}, "fov: 184 at frame 9"),
        ({"angle": "0:(0), 15:(exp(t*50))"}, "angle: '0:(0), 15:(exp(t*50))' at frame 15"),
        ({"frame_noise": "t / 10"}, "frame_noise: 1.1 at frame 11; expected from 0 to 1"),
        ({"frame_contrast": "1 - t/10"}, "frame_contrast: -0.1 at frame 11; expected from 0 to 10"),
    ):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):  # fmt: skip
            GenerationConfig(**{**base, **changes})
    # A number in a config file is a constant schedule; the text is kept as written.
    config = GenerationConfig(**{**base, "zoom": 1.05, "angle": "0: (0), 10: (2)"})
    again = GenerationConfig.from_json(config.to_json())
    assert (again.zoom, again.angle) == ("1.05", "0: (0), 10: (2)")


_PIECES = st.sampled_from(
    ["t", "s", "max_f", "pi", "e", "1", "0", "2.5", "1e308", "-", "+", "*", "/", "%", "**", "^",
     "(", ")", ",", ":", " ", "sin(", "log(", "where(", "max(", "exp(", "sqrt(", "10:", "0: (",
     "__import__", "'os'", ".", "lambda", "[", "]", "<", "==", "x"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=30).map("".join), st.integers(0, 50))
def test_any_text_is_one_error_or_a_finite_value_and_never_code(text: str, frame: int) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the schedule reached eval or compile")

    saved = builtins.eval, builtins.compile
    builtins.eval = builtins.compile = refuse  # type: ignore[assignment]
    try:
        value = parse_schedule(text, "zoom").at(frame, 50, 1)
    except ValueError as error:
        assert str(error).startswith("zoom: ") and "\n" not in str(error)
    else:
        assert math.isfinite(value)
    finally:
        builtins.eval, builtins.compile = saved
    assert not Path("os").exists()
