import json

import pytest

from vqclip.core.config import GenerationConfig, resolve_seed


def test_round_trips_through_json() -> None:
    config = GenerationConfig(
        prompts="a:2 | b", noise_prompt_seeds=(3,), noise_prompt_weights=(0.5,)
    )
    again = GenerationConfig.from_json(config.to_json())
    assert again == config
    assert json.loads(config.to_json())["noise_prompt_seeds"] == [3]


def test_lists_become_tuples_so_configs_stay_hashable() -> None:
    config = GenerationConfig.from_dict({"prompts": "x", "augments": ["Af", "Ji"]})
    assert config.augments == ("Af", "Ji")
    hash(config)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"width": 0}, "width: expected a positive integer, got 0"),
        ({"height": -64}, "height: expected a positive integer, got -64"),
        ({"width": 64.5}, "width: expected a positive integer"),
        ({"optimizer": "Adadelta"}, "optimizer: unknown value 'Adadelta'; valid options are"),
        ({"precision": "int8"}, "precision: unknown value 'int8'"),
        ({"augments": ("Af", "Zz")}, "augments: unknown value 'Zz'"),
        ({"augments": "Af"}, "augments: expected a list"),
        ({"cutn": 0}, "cutn: expected a positive integer"),
        ({"step_size": 0}, "step_size: expected a positive number"),
        ({"smoothness": -1.0}, "smoothness: expected a number >= 0, got -1.0"),
        ({"prior_weight": -1.0}, "prior_weight: expected a number >= 0, got -1.0"),
        ({"prior_weight": 2.0, "prior": None}, "prior_weight: 2.0 needs an image prior; set prior"),
        ({"prior_ramp": -5}, "prior_ramp: expected an integer >= 0, got -5"),
        ({"prior_ramp": 2.5}, "prior_ramp: expected an integer >= 0, got 2.5"),
        ({"compile": "yes"}, "compile: expected true or false, got 'yes'"),
        ({"max_iterations": 0}, "max_iterations: expected a positive integer or -1"),
        ({"seed": -2}, "seed: expected an integer"),
        ({"device": "tpu"}, "device: expected"),
        ({"prompts": "a cat:heavy1"}, "a cat:heavy1"),
        ({"prompts": "a cat:1x"}, "prompt 'a cat:1x': weight '1x' is not a number"),
        ({"prompts": ""}, "nothing to steer toward"),
        ({"noise_prompt_seeds": (1, 2), "noise_prompt_weights": (1.0,)}, "same length"),
    ],
)
def test_bad_values_are_named(changes: dict, message: str) -> None:
    values = {"prompts": "a red circle", **changes}
    if "heavy1" in str(changes.get("prompts")):  # a non-number-like suffix is text, not an error
        assert GenerationConfig(**values).prompts == "a cat:heavy1"
        return
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        GenerationConfig(**values)


def test_unknown_keys_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown config keys \\['iterations'\\].*max_iterations"):
        GenerationConfig.from_dict({"prompts": "x", "iterations": 5})


def test_seed_minus_one_is_resolved_and_recorded() -> None:
    config = resolve_seed(GenerationConfig(prompts="x", seed=-1))
    assert 0 <= config.seed < 2**31
    assert resolve_seed(GenerationConfig(prompts="x", seed=5)).seed == 5


DIFFUSION_2D = {"generator": "diffusion", "animation_mode": "2D"}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"width": 10**400}, "width: an integer of about 401 digits is over 16384"),
        ({"zoom_scale": 10**400}, "zoom_scale: an integer of about 401 digits is beyond"),
        ({"step_size": 1e300}, "step_size: 1e\\+300 is beyond"),
        ({"cutn": 100_000_000}, "cutn: 100000000 is over 2048"),
        ({"batch_size": 8, "best_of": 16}, "batch_size, best_of: 8 x 16 images"),
        ({"max_iterations": 10**12}, "max_iterations: expected a positive integer or -1"),
        ({"prompts": "a |" * 20_000}, "prompts: 20001 prompts; expected at most 256"),
        ({"prompts": "a ^" * 300}, "prompts: 301 prompts; expected at most 256"),
        (
            {"noise_prompt_seeds": (1,) * 300, "noise_prompt_weights": (1.0,) * 300},
            "noise_prompt_seeds: 300 items",
        ),  # fmt: skip
        ({"prompts": "a red \udc00 circle"}, "prompts: .* holds a lone surrogate"),
        ({"run_name": "x" * 70_000}, "run_name: 70000 characters"),
        (  # counted before the schedule is walked frame by frame (it was, 10**8 times)
            {**DIFFUSION_2D, "max_frames": 10**8, "zoom": "1+t/1e9"},
            "max_frames: 100000000; expected at most 100000",
        ),
    ],
)
def test_every_size_and_count_is_bounded_before_work(changes: dict, message: str) -> None:
    """Issue 45: settings that asked for 147 GB (cutn), 10 GB (60,000 prompts), or ended in
    OverflowError (numbers beyond a float) are one ValueError naming the field."""
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**{"prompts": "a red circle", **changes})


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100_000 + "]" * 100_000, "nested over 32 levels"),  # was RecursionError
        ('{"prompts": "x", "width": 1e999}', "inf is not a finite number"),
        ('{"prompts": "x", "width": NaN}', "NaN is not a number JSON allows"),
        ('{"prompts": "x", "seed": 1' + "0" * 400 + "}", "has 401 digits"),
        ('{"prompts": "\\ud800"}', "lone surrogate"),
        ('["prompts"]', "holds list, expected an object"),
        ('{"prompts": "x", "3": 1}', r"unknown config keys \['3'\]"),
    ],
)
def test_a_crafted_config_json_is_one_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GenerationConfig.from_json(text)
