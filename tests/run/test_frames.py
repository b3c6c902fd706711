"""Run directories and frames: never reused, never overwritten, metadata that repeats the run."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import png_pixels
from vqclip.core.config import GenerationConfig
from vqclip.run.frames import (
    FrameWriter,
    check_output_dir,
    create_run_dir,
    frame_paths,
    read_png_metadata,
    save_png,
    set_aside_from,
)


@pytest.fixture
def config(tmp_path: Path) -> GenerationConfig:
    return GenerationConfig(prompts="a red circle:2 | blurry:-1", seed=5, output_dir=str(tmp_path))


def _pixels(value: int) -> np.ndarray:
    return np.full((4, 6, 3), value, dtype=np.uint8)  # (H, W, 3)


def test_run_directories_are_new_each_time_and_hold_the_config(config: GenerationConfig) -> None:
    named = config.replace(run_name="mine")
    first, second = create_run_dir(named), create_run_dir(named)
    assert (first.name, second.name) == ("mine", "mine-1")
    assert GenerationConfig.from_json((first / "config.json").read_text()) == named
    assert (first / "frames").is_dir()
    slugged = create_run_dir(config)
    assert slugged.name.endswith("-a-red-circle-s5")  # the first prompt's text, no weight


@pytest.mark.parametrize("raced", [False, True])
def test_save_png_carries_metadata_and_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raced: bool
) -> None:
    path = tmp_path / "x.png"
    save_png(path, _pixels(10), {"prompts": "a", "config": {"seed": 1}})
    if raced:  # another writer made the file after save_png's check
        monkeypatch.setattr(Path, "exists", lambda self: False)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_png(path, _pixels(200), {})
    monkeypatch.undo()
    assert (png_pixels(path) == 10).all()  # the first image is kept
    assert read_png_metadata(path) == {"prompts": "a", "config": json.dumps({"seed": 1})}
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary file left


def test_frame_writer_names_frames_by_iteration_and_batch_index(
    config: GenerationConfig,
) -> None:
    run = create_run_dir(config)
    writer = FrameWriter(run, config)
    writer.save("frames/000010", [_pixels(i) for i in range(11)], 10)
    writer.save("frames/000002", [_pixels(0)], 2)
    names = [p.name for p in frame_paths(run)]
    assert names[0] == "000002.png"
    assert names[-2:] == ["000010-9.png", "000010-10.png"]  # by number, not by name
    meta = read_png_metadata(run / "frames" / "000010-3.png")
    assert (meta["iteration"], meta["batch_index"], meta["seed"]) == ("10", "3", "5")
    assert GenerationConfig.from_json(meta["config"]) == config


def test_set_aside_moves_what_came_from_an_iteration_on(config: GenerationConfig) -> None:
    run = create_run_dir(config)
    writer = FrameWriter(run, config)
    for iteration in (0, 5, 10):
        writer.save(f"frames/{iteration:06d}", [_pixels(iteration)], iteration)
    writer.save("final", [_pixels(99)], 10)
    aside = set_aside_from(run, 5)
    assert aside is not None and aside.name == "superseded-000005"
    assert sorted(p.name for p in aside.iterdir()) == ["000005.png", "000010.png", "final.png"]
    assert [p.name for p in frame_paths(run)] == ["000000.png"]
    assert set_aside_from(run, 5) is None  # nothing left to move


def test_an_output_dir_that_cannot_be_one_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="output_dir: .*file is a file"):
        check_output_dir(str(blocker / "runs"))
    check_output_dir(str(tmp_path / "new" / "runs"))  # may be made: no error, nothing made
    assert not (tmp_path / "new").exists()


def test_save_png_never_writes_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "frame.png").symlink_to(tmp_path / "absent.png")  # dangling: exists() is False
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_png(tmp_path / "frame.png", _pixels(1), {})
    assert not (tmp_path / "absent.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["frame.png"]  # no temp file left


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "..", ".", "", "a\\b"])
def test_run_name_stays_inside_output_dir(name: str) -> None:
    with pytest.raises(ValueError, match="run_name: expected a plain folder name"):
        GenerationConfig(prompts="a", run_name=name)


def test_run_name_from_a_crafted_png_is_refused(tmp_path: Path) -> None:
    from vqclip.frontends import cli

    crafted = GenerationConfig(prompts="a", output_dir=str(tmp_path / "out")).to_dict()
    crafted["run_name"] = "../../escaped"
    save_png(tmp_path / "crafted.png", _pixels(1), {"config": json.dumps(crafted)})
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--config", str(tmp_path / "crafted.png")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
