"""The command line end to end: generate writes a run, video turns it into an MP4, bad input fails early."""

import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import png_pixels
from vqclip.core.config import GenerationConfig
from vqclip.frontends import cli
from vqclip.models import registry
from vqclip.run.frames import frame_paths, read_png_metadata
from vqclip.run.video import count_video_frames


def _flags(tiny_models: dict, out: Path, *extra: str) -> list[str]:
    return [
        "--vqgan", str(tiny_models["yaml"]), "--clip_model", str(tiny_models["clip"]),
        "--width", "32", "--height", "32", "--cutn", "4", "--augments",
        "--max_iterations", "6", "--display_frequency", "2", "--seed", "3",
        "--device", "cpu", "--precision", "fp32", "--output_dir", str(out), *extra,
    ]  # fmt: skip


def _only_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def test_generate_then_video(
    tiny_models: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    cli.main(["generate", "a red circle:2 | blurry:-0.5", *_flags(tiny_models, out)])
    run = _only_run(out)
    assert "run directory" in capsys.readouterr().out
    frames = frame_paths(run)
    assert [p.name for p in frames] == ["000000.png", "000002.png", "000004.png", "000006.png"]
    assert (run / "final.png").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["prompts"] == "a red circle:2 | blurry:-0.5" and config["seed"] == 3
    meta = read_png_metadata(frames[1])
    assert meta["prompts"] == config["prompts"] and meta["seed"] == "3" and meta["iteration"] == "2"
    assert json.loads(meta["config"]) == config
    cli.main(["video", str(run), "--fps", "5"])
    assert count_video_frames(run / "video.mp4") == len(frames)
    with pytest.raises(SystemExit) as exit_info:  # never overwrite without asking
        cli.main(["video", str(run)])
    assert exit_info.value.code == 2 and "exists" in capsys.readouterr().err
    cli.main(["video", str(run), "--overwrite", "--fps", "2"])


def test_config_from_a_png_or_config_json_makes_the_same_image(
    tiny_models: dict, tmp_path: Path
) -> None:
    cli.main(["generate", "a red circle", *_flags(tiny_models, tmp_path / "a")])
    first = _only_run(tmp_path / "a")
    cli.main(
        ["generate", "--config", str(first / "final.png"), "--output_dir", str(tmp_path / "b")]
    )
    cli.main(
        ["generate", "--config", str(first / "config.json"), "--output_dir", str(tmp_path / "c")]
    )
    for out in ("b", "c"):
        again = _only_run(tmp_path / out)
        assert json.loads((again / "config.json").read_text())["prompts"] == "a red circle"
        assert np.array_equal(png_pixels(again / "final.png"), png_pixels(first / "final.png"))
    cli.main(["generate", "a blue square", "--config", str(first / "config.json"),
              "--output_dir", str(tmp_path / "d")])  # fmt: skip
    assert (
        json.loads((_only_run(tmp_path / "d") / "config.json").read_text())["prompts"]
        == "a blue square"
    )


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.json", None, r"--config: cannot read .*missing.json"),
        (
            "bad.json",
            b"{prompts",
            r"--config: .*bad.json: not valid JSON .*expected a run's config.json",
        ),
        ("text.png", b"hello", r"--config: cannot read .*text.png"),
        ("list.json", b"[1, 2]", r"--config: .*list.json holds list, expected an object"),
        ("plain.png", "png", r"--config: .*plain.png carries no vqclip config"),
    ],
)
def test_a_config_file_that_is_not_one_is_a_clear_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    name: str,
    content: bytes | str | None,
    message: str,
) -> None:
    path = tmp_path / name
    if content == "png":
        Image.new("RGB", (4, 4)).save(path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--config", str(path), "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_batch_run_reports_each_final_image_and_tiles_its_video(
    tiny_models: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    cli.main(
        ["generate", "--batch_prompts", "a cat", "a dog", *_flags(tiny_models, out), "--video"]
    )
    run = _only_run(out)
    report = capsys.readouterr().out
    assert "done: 4 frames of 2 images" in report
    assert f"{run / 'final-0.png'}\n" in report and f"{run / 'final-1.png'}\n" in report
    assert (run / "final-0.png").is_file() and not (run / "final.png").exists()
    reader = imageio_ffmpeg.read_frames(str(run / "video.mp4"))
    assert next(reader)["size"] == (64, 32) and len(list(reader)) == 4  # side by side


def test_video_with_no_frames_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["video", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no frames in" in capsys.readouterr().err


def test_ctrl_c_keeps_the_run_and_resume_goes_on(tiny_models: dict, tmp_path: Path) -> None:
    """A real SIGINT to a real ``vqclip generate`` process that runs until interrupted."""
    out = tmp_path / "out"
    flags = _flags(tiny_models, out, "--max_iterations", "-1", "--display_frequency", "5")
    command = [sys.executable, "-m", "vqclip", "generate", "a red circle", *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/state.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the first display step has saved the state
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr  # as shells expect of an interrupted command
    run = _only_run(out)
    assert "stopped; kept" in stdout and f"vqclip resume {run}" in stdout
    assert "stopping after this step" in stderr
    done = int(read_png_metadata(run / "final.png")["iteration"])
    assert done >= 1 and frame_paths(run)[-1].name == f"{done:06d}.png"

    # Resumed in a fresh process, as a user would the next day; an unbroken run of the same
    # length, also in its own process (the same thread count), draws the same pixels.
    total = (done // 5 + 2) * 5 + 1  # past two more display steps, and not on one
    resume = [sys.executable, "-m", "vqclip", "resume", str(run), "--max_iterations", str(total)]
    subprocess.run([*resume, "--video", "--fps", "5"], check=True, capture_output=True)
    frames = frame_paths(run)
    assert [int(p.stem) for p in frames] == [*range(0, total, 5), total]
    assert int(read_png_metadata(run / "final.png")["iteration"]) == total
    assert count_video_frames(run / "video.mp4") == len(frames)
    unbroken = tmp_path / "unbroken"
    flags = _flags(tiny_models, unbroken, "--max_iterations", str(total), "--display_frequency", "5")  # fmt: skip
    command = [sys.executable, "-m", "vqclip", "generate", "a red circle", *flags]
    subprocess.run(command, check=True, capture_output=True)
    reference = frame_paths(_only_run(unbroken))
    assert [p.name for p in reference] == [p.name for p in frames]
    for mine, theirs in zip([*frames, run / "final.png"], [*reference, reference[-1]], strict=True):  # fmt: skip
        assert np.array_equal(png_pixels(mine), png_pixels(theirs)), mine.name


@pytest.mark.parametrize(
    "prompt, extra, message",
    [
        ("a cat:1.5x", [], "weight '1.5x' is not a number"),
        (
            "a cat",
            ["--init_image", "/nonexistent/init.png"],
            "init_image: image file '/nonexistent/init.png' does not exist",
        ),
        ("a cat", ["--init_image", "NOT_AN_IMAGE"], "init_image: .* is not a readable image"),
        ("a cat", ["--target_images", "NOT_AN_IMAGE"], "target_images: .* is not a readable image"),
        ("a cat", ["--width", "0"], "width: expected a positive integer, got 0"),
        ("a cat", ["--height", "-32"], "height: expected a positive integer, got -32"),
        ("a cat", ["--width", "33"], "width: 33 is not a multiple of the VQGAN's factor 2"),
        (
            "a cat",
            ["--prior", "/nonexistent/prior.pt", "--prior_weight", "1"],
            "prior: file '/nonexistent/prior.pt' does not exist",
        ),
        (
            "a cat",
            ["--prior", "no-such-prior"],
            r"prior: unknown model 'no-such-prior'; .*shapes-prior",
        ),
        (
            "a cat",
            ["--init_image", "."],
            "init_image: '.' is a directory; expected an image file",
        ),
        (
            "a cat",
            ["--optimizer", "Adadelta"],
            "optimizer: unknown value 'Adadelta'; valid options are",
        ),
        (
            "a cat",
            ["--output_dir", "NOT_AN_IMAGE/runs"],
            r"output_dir: .*NOT_AN_IMAGE is a file; expected a directory for 'NOT_AN_IMAGE/runs'",
        ),
        (
            "a cat",
            ["--device", "cuda:15"],
            r"device: 'cuda:15', but torch sees \d+ CUDA device\(s\) on this machine; expected 'auto', 'cpu'",
        ),
    ],
)
def test_bad_input_fails_before_any_model_is_built(
    tiny_models: dict, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
    prompt: str, extra: list[str], message: str,
) -> None:  # fmt: skip
    (tmp_path / "NOT_AN_IMAGE").write_text("hello")
    monkeypatch.chdir(tmp_path)
    built = []
    monkeypatch.setattr("vqclip.run.build.load_vqgan", lambda *a, **k: built.append(a))
    monkeypatch.setattr("vqclip.run.build.load_clip", lambda *a, **k: built.append(a))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", prompt, *_flags(tiny_models, tmp_path / "out"), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err)
    assert "it/s" not in err  # no progress bar: nothing ran
    assert built == [] and not (tmp_path / "out").exists()


def test_help_documents_the_prompt_syntax() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vqclip", "generate", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "text:weight:stop" in result.stdout and "--max_iterations" in result.stdout
    assert "--init_weight" in result.stdout and "pull toward the starting latent" in result.stdout


def test_models_lists_the_registry_with_cache_state(capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path))
    cli.main(["models"])
    out = capsys.readouterr().out
    assert str(tmp_path) in out
    for name in ("shapes-vqgan", "imagenet_f16_16384", "openimages_f8_8192", "ViT-B/32"):
        assert name in out
    assert "bundled" in out and " no" in out


def test_models_download_offline_names_url_and_cache(capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from vqclip.models import registry

    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path))
    file = registry.ModelFile("x.pt", ("http://127.0.0.1:9/x.pt",), kind="clip")
    monkeypatch.setitem(
        registry.REGISTRY, "test-clip", registry.ModelEntry("test-clip", "clip", (file,), 1)
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["models", "download", "test-clip"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "http://127.0.0.1:9/x.pt" in err and str(tmp_path / "test-clip" / "x.pt") in err


def test_boolean_fields_are_on_off_flags() -> None:
    parse = cli._parser().parse_args
    assert cli._config_from_args(parse(["generate", "a cat", "--compile"]))[0].compile is True
    assert cli._config_from_args(parse(["generate", "a cat", "--no-compile"]))[0].compile is False
    assert cli._config_from_args(parse(["generate", "a cat"]))[0].compile is False


def test_every_config_field_has_help_and_a_section_in_help() -> None:
    from dataclasses import fields

    from vqclip.core.config import GenerationConfig

    undocumented = [f.name for f in fields(GenerationConfig) if not f.metadata.get("help")]
    assert undocumented == [], "each field's help is its flag's --help"
    text = cli._parser()._subparsers._group_actions[0].choices["generate"].format_help()
    sections = {f.metadata["group"] for f in fields(GenerationConfig)}
    assert all(f"\n{section}:\n" in text for section in sections), sections
    assert "--generator GENERATOR" in text and "shapes pixels (--generator pixels" in text


def test_models_lists_the_registry_with_real_sizes_once_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path))
    (tmp_path / "RN50").mkdir()
    (tmp_path / "RN50" / "RN50.pt").write_bytes(b"\0" * 3_000_000)
    cli.main(["models"])
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["RN50"] == ["clip", "3.0MB", "yes"]  # measured on disk, not the registry's 244
    assert rows["ViT-B/32"] == ["clip", "338.0MB", "no"]
    clip_mb = (registry.registry()["shapes-clip"].directory / "shapes_clip.pt").stat().st_size / 1e6
    assert rows["shapes-clip"] == ["clip", f"{clip_mb:.1f}MB", "bundled"]
    assert set(rows) == set(registry.registry())


def test_a_closed_pipe_ends_the_listing_quietly() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "vqclip", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()  # as `vqclip models | head -0` does, before anything is written
    assert process.wait(timeout=120) == 1
    assert process.stderr.read() == b""  # no "error: [Errno 32] Broken pipe", no traceback


def test_the_command_exits_with_its_code_its_output_and_its_exit_handlers(tmp_path: Path) -> None:
    """``vqclip`` leaves without the interpreter's teardown (``cli.run``): what it printed, its
    exit code and the exit handlers (Ray's shutdown is one) must all still be there."""
    marker = tmp_path / "handler-ran"
    script = (
        "import atexit, pathlib, sys\n"
        "from vqclip import cli\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        "sys.argv = ['vqclip', *sys.argv[1:]]\n"
        "cli.run()\n"
    )
    listing = subprocess.run([sys.executable, "-c", script, "models"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert "shapes-clip" in listing.stdout and marker.read_text() == "yes"
    marker.unlink()
    bad = subprocess.run([sys.executable, "-c", script, "generate", "x", "--width", "-3"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == ["vqclip generate: error: width: expected a positive integer, got -3"]  # fmt: skip
    assert marker.read_text() == "yes"


def test_the_loop_reads_nothing_back_between_display_steps(
    tiny_models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 6: no host synchronisation in the hot loop except at display steps.

    Every read of a tensor's value into Python (``item``, ``tolist``, ``bool``, ...) is recorded
    with the iteration under way and the code that asked for it, through the CLI (its progress
    bar included). Between display steps vqclip's own code reads nothing; what is read comes
    from torch.optim (Adam's step count, a host tensor unless ``capturable``) and kornia (its
    sampled parameters, on the host: vqclip leaves the augmentation modules there). The image
    prior's pull is on: it reads its scene and draws the alternatives on the device.
    """
    import sys
    from collections import defaultdict
    from collections.abc import Callable, Iterator
    from typing import Any

    import torch

    import vqclip
    from vqclip.loop import optimise as optimize

    package = str(Path(vqclip.__file__).parent)
    sources = {package: "vqclip", "/torch/optim/": "torch.optim", "/kornia/": "kornia"}
    reads: dict[int, set[str]] = defaultdict(set)
    current: list[int] = []

    def recording(original: Callable) -> Callable:
        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if current:
                caller = sys._getframe(1).f_code.co_filename
                where = [label for part, label in sources.items() if part in caller]
                reads[current[-1]].add(where[0] if where else caller)
            return original(self, *args, **kwargs)

        return read

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, recording(getattr(torch.Tensor, name)))
    real_iterations = optimize.iterations

    def tracked(*args: int) -> Iterator[int]:
        for i in real_iterations(*args):
            current.append(i)
            yield i
        current.clear()

    monkeypatch.setattr(optimize, "iterations", tracked)
    extra = ["--augments", "Af", "Pe", "Ji", "Er", "--latent_levels", "2", "--best_of", "2", "--smoothness", "0.1", "--prior", "shapes-prior", "--prior_weight", "2"]  # fmt: skip
    flags = [f for f in _flags(tiny_models, tmp_path) if f != "--augments"]
    cli.main(["generate", "a red circle:1 | blue:-0.5:0.1", *flags, *extra, "--max_iterations", "9", "--display_frequency", "4"])  # fmt: skip
    assert sorted(reads) == list(range(9))
    for i, where in sorted(reads.items()):
        if i % 4:
            assert where <= {"torch.optim", "kornia"}, (i, where)
        else:  # the finite check, the progress bar's loss, the frame: proof that reads are seen
            assert "vqclip" in where, (i, where)


class _Reached(Exception):
    """Raised where the models would be built: the input got through every check."""


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=6,
)
_FIELDS = sorted(f.name for f in fields(GenerationConfig))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    prompt=st.text(max_size=60),
    values=st.dictionaries(
        st.sampled_from(_FIELDS) | st.text(max_size=8), _JSON_VALUES, max_size=4
    ),
)
def test_any_prompt_or_config_value_is_a_clear_error_or_gets_through(
    tiny_models: dict,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    prompt: str,
    values: dict,
) -> None:
    """No traceback reaches the user: each input ends in one line on stderr and exit code 2,
    or it reaches model building."""
    from vqclip.run import driver

    def reached(*args: object, **kwargs: object) -> None:
        raise _Reached

    monkeypatch.setattr(driver, "prepare", reached)
    monkeypatch.setattr(driver, "prepare_loop", reached)
    root = tmp_path_factory.mktemp("hyp")
    base = {"vqgan": str(tiny_models["yaml"]), "clip_model": str(tiny_models["clip"])}
    base |= {"width": 32, "height": 32, "device": "cpu", "output_dir": str(root / "out")}
    (root / "config.json").write_text(json.dumps({**base, **values}))
    _one_line_or_reached(["generate", prompt, "--config", str(root / "config.json")], capsys, values)  # fmt: skip


def _one_line_or_reached(argv: list[str], capsys: pytest.CaptureFixture, values: dict) -> None:
    """``vqclip ARGV`` ends in one error line and exit 2, or gets as far as the patched
    ``_Reached``; anything else (a traceback, a silent success) fails with ``values``."""
    capsys.readouterr()
    try:
        cli.main(argv)
    except _Reached:
        return
    except SystemExit as exit_info:
        assert exit_info.code == 2, values
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and re.match(r"vqclip( generate)?: error: ", lines[0]), (values, lines)  # fmt: skip
        return
    pytest.fail(f"generate neither failed nor reached the patched step: {values}")


# Values that pass the config's own checks (the property above covers those), with the kinds
# of wrong that only the models can tell: a size the VQGAN cannot draw, a prior or a target
# image that is not there, a start the generator does not have.
_PREPARED = {
    "generator": st.sampled_from(["vqgan", "vqgan", "pixels", "diffusion"]),
    "width": st.sampled_from([32, 48, 64, 64, 42]),
    "height": st.sampled_from([32, 40, 64, 64, 30]),
    "cutn": st.integers(1, 24),
    "best_of": st.integers(1, 3),
    "batch_size": st.integers(1, 2),
    "latent_levels": st.integers(1, 5),
    "start": st.sampled_from(["palette", "random", "palette", "nonsense"]),
    "prior": st.sampled_from(
        ["shapes-prior", "shapes-prior", "no-such-prior", "/no/such/file.pt"]
    ),  # fmt: skip
    "prior_weight": st.floats(0, 50),
    "augments": st.lists(st.sampled_from(["Af", "Pe", "Ji", "Er", "Hf"]), max_size=4),
    "clip_model": st.sampled_from(
        ["shapes-clip", "shapes-clip", "shapes-clip + shapes-clip-vit:0.5"]
    ),  # fmt: skip
    "target_images": st.sampled_from(["", "", "missing.png"]),
}
_PROMPTS = st.sampled_from(["a red circle on a blue background", "a green square:2 | blurry:-0.5", "x:1:-0.2"]) | st.text(max_size=40)  # fmt: skip


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(prompt=_PROMPTS, values=st.fixed_dictionaries({}, optional=_PREPARED))
def test_any_input_through_model_preparation_is_a_clear_error_or_a_prepared_run(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    prompt: str,
    values: dict,
) -> None:
    """The property above, carried through model preparation on the shapes models (their
    files loaded, the prompts embedded, the prior and the start built): each input ends in one
    line and exit 2, or in a prepared run whose loop is about to start."""
    from vqclip.loop.diffusion import Sampler
    from vqclip.run import driver

    def reached(*args: object, **kwargs: object) -> None:
        raise _Reached

    monkeypatch.setattr(driver, "run_schedule", reached)  # an optimisation's loop
    monkeypatch.setattr(Sampler, "run", reached)  # a diffusion sample's
    root = tmp_path_factory.mktemp("prepared")
    base = {"vqgan": "shapes-vqgan", "device": "cpu", "output_dir": str(root / "out")}
    (root / "config.json").write_text(json.dumps({**base, **values}))
    _one_line_or_reached(["generate", prompt, "--config", str(root / "config.json")], capsys, values)  # fmt: skip


def test_out_of_device_memory_ends_the_run_in_one_line_keeping_its_frames(
    tiny_models: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step that does not fit (torch's CUDA out-of-memory error, raised here on the CPU at the
    fifth step): exit 2, a line that suggests cutn_batches, the frames made so far kept."""
    from vqclip.loop.perceptors import Perceptor

    encode, calls = Perceptor.encode_image, []

    def fill_the_device(self: Perceptor, images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        if len(calls) == 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(self, images)

    monkeypatch.setattr(Perceptor, "encode_image", fill_the_device)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "a red circle", *_flags(tiny_models, out), "--cutn_batches", "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and err.count("error") == 1, err
    err = err.strip().splitlines()[-1]
    assert "out of cpu memory" in err and "try cutn_batches 4 or a smaller width" in err
    run = _only_run(out)
    assert [p.name for p in frame_paths(run)] == ["000000.png"] and f"(1, in {run}) are kept" in err  # fmt: skip
