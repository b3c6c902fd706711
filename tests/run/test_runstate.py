"""Stopping and resuming a run: the saved loop state, and resumed runs that match unbroken ones."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import vqclip.loop.optimise
from tests.conftest import png_pixels
from vqclip.core.config import GenerationConfig
from vqclip.run.driver import RunResult, generate, resume
from vqclip.run.frames import frame_paths
from vqclip.run.runstate import STATE, read_state


def _assert_same_frames(run: Path, reference: Path) -> None:
    names = [p.name for p in frame_paths(run)]
    assert names == [p.name for p in frame_paths(reference)]
    for name in names:
        assert np.array_equal(
            png_pixels(run / "frames" / name), png_pixels(reference / "frames" / name)
        )
    assert np.array_equal(png_pixels(run / "final.png"), png_pixels(reference / "final.png"))


def _ctrl_c_during_step(monkeypatch: pytest.MonkeyPatch, iteration: int, times: int) -> None:
    """Send ourselves ``times`` real SIGINTs in the middle of step ``iteration`` (after the
    decode, before the cutouts), as a user's Ctrl-C would arrive."""
    make_cutouts = vqclip.loop.optimise.make_cutouts
    calls = {"n": 0}

    def cutouts_with_ctrl_c(*args: object, **kwargs: object) -> torch.Tensor:
        if calls["n"] == iteration:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        calls["n"] += 1
        return make_cutouts(*args, **kwargs)

    monkeypatch.setattr(vqclip.loop.optimise, "make_cutouts", cutouts_with_ctrl_c)


def _stopped_run(
    config: GenerationConfig, monkeypatch: pytest.MonkeyPatch, ctrl_cs: int
) -> RunResult:
    """A 12-iteration run stopped by ``ctrl_cs`` SIGINTs during step 7, with Ctrl-C restored."""
    _ctrl_c_during_step(monkeypatch, iteration=7, times=ctrl_cs)
    stopped = generate(config.replace(max_iterations=12, run_name="stopped"))
    monkeypatch.undo()
    assert stopped.interrupted
    return stopped


@pytest.fixture
def unbroken(tiny_config: GenerationConfig) -> Path:
    """A 12-iteration run with frames every 5 steps, never stopped."""
    return generate(tiny_config.replace(max_iterations=12, run_name="unbroken")).run_dir


def test_ctrl_c_stops_after_the_step_and_resume_matches_an_unbroken_run(
    tiny_config: GenerationConfig, unbroken: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped = _stopped_run(tiny_config, monkeypatch, ctrl_cs=1)
    assert read_state(stopped.run_dir / STATE)["iteration"] == 8  # step 7 finished first
    assert [p.name for p in stopped.frames] == ["000000.png", "000005.png", "000008.png"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    resumed = resume(stopped.run_dir)
    assert not resumed.interrupted and resumed.run_dir == stopped.run_dir
    _assert_same_frames(stopped.run_dir, unbroken)
    aside = stopped.run_dir / "superseded-000008"
    assert sorted(p.name for p in aside.iterdir()) == ["000008.png", "final.png"]  # kept, moved
    assert read_state(stopped.run_dir / STATE)["iteration"] == 12


def test_a_second_ctrl_c_stops_at_once_and_resume_goes_back_to_the_last_display_step(
    tiny_config: GenerationConfig, unbroken: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped = _stopped_run(tiny_config, monkeypatch, ctrl_cs=2)
    # Step 7 was cut short, so its state is not whole: the state saved at step 5 stays.
    assert read_state(stopped.run_dir / STATE)["iteration"] == 6
    assert (stopped.run_dir / "final.png").exists()  # what was made is kept
    resume(stopped.run_dir)
    _assert_same_frames(stopped.run_dir, unbroken)


def test_resume_extends_a_finished_run(tiny_config: GenerationConfig, unbroken: Path) -> None:
    short = generate(tiny_config.replace(max_iterations=6, run_name="short"))
    assert read_state(short.run_dir / STATE)["iteration"] == 6
    longer = resume(short.run_dir, max_iterations=12)
    assert longer.config.max_iterations == 12
    assert GenerationConfig.from_json((short.run_dir / "config.json").read_text()) == longer.config
    assert len(longer.frames) == len(frame_paths(unbroken))
    _assert_same_frames(short.run_dir, unbroken)


def test_resume_refuses_a_finished_run_without_more_iterations_and_moves_nothing(
    unbroken: Path,
) -> None:
    before = sorted(p.relative_to(unbroken) for p in unbroken.rglob("*"))
    with pytest.raises(ValueError, match="has done 12 of its 12 iterations"):
        resume(unbroken)
    with pytest.raises(ValueError, match="larger max_iterations"):
        resume(unbroken, max_iterations=8)
    assert sorted(p.relative_to(unbroken) for p in unbroken.rglob("*")) == before


def test_resume_names_what_is_missing(tmp_path: Path, unbroken: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        resume(tmp_path)
    (unbroken / STATE).unlink()
    with pytest.raises(FileNotFoundError, match="no saved state"):
        resume(unbroken, max_iterations=20)
    (unbroken / STATE).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read it"):
        resume(unbroken, max_iterations=20)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is not a readable checkpoint"),  # was "[Errno 22] Invalid argument" or EOFError
        (None, "is not a readable checkpoint"),  # the first half of a real one
    ],
)
def test_a_broken_state_is_named_on_resume(
    unbroken: Path, content: bytes | None, message: str
) -> None:
    state = (unbroken / STATE).read_bytes()
    (unbroken / STATE).write_bytes(state[: len(state) // 2] if content is None else content)
    with pytest.raises(ValueError, match=f"{unbroken / STATE} {message}"):
        resume(unbroken, max_iterations=20)


def test_a_config_json_that_is_not_json_is_named(unbroken: Path) -> None:
    (unbroken / "config.json").write_text('{"prompts": "a red circle",')
    with pytest.raises(ValueError, match=f"resume: {unbroken / 'config.json'}: not valid JSON"):
        resume(unbroken, max_iterations=20)
    (unbroken / "config.json").write_text('{"width": "abc"}')
    with pytest.raises(ValueError, match="config.json: width: expected a positive integer"):
        resume(unbroken, max_iterations=20)


# Every name a resume from iteration 12 to 20 writes, moves or makes in its run directory; the
# dot-names are the fixed temp names of before, which were written through.
_WRITTEN = (
    STATE, "config.json", "final.png", "frames/000012.png", "frames/000015.png",
    "frames/000020.png", "video.mp4", "superseded-000012", ".state.pt.part",
    ".config.json.part", "frames/.000015.png.part",
)  # fmt: skip


@pytest.mark.parametrize("name", _WRITTEN)
def test_resume_writes_through_no_planted_symlink(
    unbroken: Path, tmp_path: Path, name: str
) -> None:
    """A crafted run directory with a link at a name vqclip writes: the resume either refuses
    in one line or replaces the link; the file or folder it points to is untouched."""
    victim, folder = tmp_path / "victim", tmp_path / "folder"
    victim.write_bytes(b"keep me")
    folder.mkdir()
    planted = unbroken / name
    planted.unlink(missing_ok=True)
    planted.symlink_to(folder if name.startswith("superseded") else victim)
    try:
        resumed = resume(unbroken, max_iterations=20)
    except (ValueError, FileExistsError) as error:  # refused: one line naming the link
        assert "\n" not in str(error) and name.split("/")[-1] in str(error), error
    else:
        assert read_state(resumed.run_dir / STATE)["iteration"] == 20
        assert (unbroken / "final.png").is_file() and not (unbroken / "final.png").is_symlink()
    assert victim.read_bytes() == b"keep me" and not any(folder.iterdir())


def test_a_frames_symlink_or_a_stray_frame_name_is_named(unbroken: Path, tmp_path: Path) -> None:
    (unbroken / "frames" / "0abc.png").write_bytes(b"")
    with pytest.raises(ValueError, match="0abc.png is not a frame's name; expected NNNNNN.png"):
        resume(unbroken, max_iterations=20)
    elsewhere = tmp_path / "elsewhere"
    (unbroken / "frames").rename(elsewhere)
    (unbroken / "frames").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="frames is a symlink"):
        resume(unbroken, max_iterations=20)


def test_ema_frames_move_less_and_a_stopped_run_resumes_them_bit_for_bit(
    tiny_config: GenerationConfig, unbroken: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    every_step = {"display_frequency": 1, "max_iterations": 12}

    def change(run: Path) -> float:
        pixels = [png_pixels(p).astype(np.float64) for p in frame_paths(run)]
        return float(
            np.mean([np.abs(a - b).mean() for a, b in zip(pixels, pixels[1:], strict=False)])
        )

    plain = generate(tiny_config.replace(**every_step, run_name="plain")).run_dir
    smooth = generate(tiny_config.replace(**every_step, ema=0.8, run_name="ema")).run_dir
    print(f"ema 0.8: mean change between frames {change(smooth):.2f}, without {change(plain):.2f}")  # fmt: skip
    assert change(smooth) < change(plain)
    assert read_state(smooth / STATE)["average"] is not None
    assert read_state(plain / STATE)["average"] is None
    config = tiny_config.replace(ema=0.8, run_name="ema-unbroken")
    reference = generate(config.replace(max_iterations=12)).run_dir
    stopped = _stopped_run(config, monkeypatch, ctrl_cs=1)
    resume(stopped.run_dir)  # the average goes on from the saved one
    _assert_same_frames(stopped.run_dir, reference)
    assert not np.array_equal(png_pixels(reference / "final.png"), png_pixels(unbroken / "final.png"))  # fmt: skip


def test_a_state_saved_before_ema_still_resumes(tiny_config: GenerationConfig, unbroken: Path) -> None:  # fmt: skip
    short = generate(tiny_config.replace(max_iterations=6, run_name="old")).run_dir
    saved = torch.load(short / STATE, weights_only=True)
    del saved["average"]  # as vqclip wrote it before ema
    torch.save(saved, short / STATE)
    resume(short, max_iterations=12)
    _assert_same_frames(short, unbroken)


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        ({"iteration": -5}, "iteration -5 is outside 0 to"),  # had moved every frame aside
        ({"iteration": "7"}, "iteration is str; expected an integer"),
        ({"iteration": 10**30}, "iteration 1000000000000000000000000000000 is outside"),
        ({"iteration": True}, "iteration is bool"),
        ({"levels": [torch.zeros(3)] * 9}, "9 latent levels"),
        ({"levels": ["x"]}, "levels holds something other than float tensors"),
        ({"start": torch.zeros(2, 2)}, "the saved starting latent is \\(2, 2\\)"),
        ({"generator": torch.zeros(3, dtype=torch.uint8)}, "generator state does not fit"),
        (
            {"optimizer": {"state": {}, "param_groups": []}},
            "optimizer or generator state does not fit",
        ),  # fmt: skip
        ({"average": 3}, "average is int; expected a tensor or None"),
    ],
)
def test_a_crafted_state_is_refused_and_nothing_the_run_wrote_moves(
    unbroken: Path, change: dict, message: str
) -> None:
    """Issue 45: out-of-range or mistyped fields were accepted, then renamed or overwrote what
    the run had written."""
    saved = torch.load(unbroken / STATE, weights_only=True)
    saved["iteration"] = 4  # a state to go on from, then the crafted field
    torch.save({**saved, **change}, unbroken / STATE)
    before = _files(unbroken)
    with pytest.raises(ValueError, match=message):
        resume(unbroken, max_iterations=20)
    assert _files(unbroken) == before
