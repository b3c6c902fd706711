"""Restyling a video: each frame a run from that frame, alike draws, stop and resume, errors."""

from __future__ import annotations

import re
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import png_pixels
from vqclip.core.config import GenerationConfig
from vqclip.frontends import cli
from vqclip.run.driver import generate, progress_of, read_run_config, resume
from vqclip.run.frames import frame_paths
from vqclip.run.video import assemble_video, count_video_frames, read_video_frames


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 4-frame, 5 fps H.264 video of a square moving over a gradient, 32x32."""
    path = tmp_path_factory.mktemp("video") / "in.mp4"
    writer = imageio_ffmpeg.write_frames(
        str(path), (32, 32), fps=5, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1
    )
    writer.send(None)
    for k in range(4):
        frame = np.zeros((32, 32, 3), np.uint8)
        frame[..., 2] = np.linspace(0, 255, 32, dtype=np.uint8)[None]
        frame[8:20, 4 + 4 * k : 16 + 4 * k, 0] = 230
        writer.send(frame)
    writer.close()
    return path


def _config(tiny_config: GenerationConfig, video: Path, **changes: object) -> GenerationConfig:
    return tiny_config.replace(init_video=str(video), max_iterations=3, init_weight=0.5, **changes)


def test_each_frame_is_a_run_from_that_frame(
    tiny_config: GenerationConfig, clip_mp4: Path, tmp_path: Path
) -> None:
    result = generate(_config(tiny_config, clip_mp4))
    frames = frame_paths(result.run_dir)
    assert [p.name for p in frames] == [f"{k:06d}.png" for k in range(4)]
    assert np.array_equal(png_pixels(result.run_dir / "final.png"), png_pixels(frames[-1]))
    # Frame k is what a plain run with that (decoded) frame as init_image makes, bit for bit:
    # every frame's run makes the same random draws.
    for k, pixels in enumerate(read_video_frames(clip_mp4)):
        Image.fromarray(pixels).save(tmp_path / f"in{k}.png")
        alone = tiny_config.replace(
            init_image=str(tmp_path / f"in{k}.png"), max_iterations=3, init_weight=0.5
        )
        assert np.array_equal(
            png_pixels(frames[k]), png_pixels(generate(alone).run_dir / "final.png")
        )
    assert not np.array_equal(png_pixels(frames[0]), png_pixels(frames[3]))  # the square moved


def test_a_stopped_restyle_keeps_its_frames_and_resumes(
    tiny_config: GenerationConfig, clip_mp4: Path
) -> None:
    unbroken = generate(_config(tiny_config, clip_mp4, run_name="unbroken")).run_dir

    def stop_in_frame_2(info: dict) -> None:
        if info["frame"] == 2 and info["iteration"] == 1:
            raise KeyboardInterrupt

    stopped = generate(_config(tiny_config, clip_mp4, run_name="stopped"), stop_in_frame_2)
    assert stopped.interrupted and not (stopped.run_dir / "final.png").exists()
    assert [p.name for p in stopped.frames] == ["000000.png", "000001.png"]
    # Resumed from the web page: its progress goes on from frame 2's first step, of 4 x 3.
    from vqclip.frontends.webpage import follow, run_in_thread

    page = run_in_thread(lambda callback: resume(stopped.run_dir, callback=callback))
    views = list(follow(page, progress_of(read_run_config(stopped.run_dir))))
    shown = [re.search(r"step (\d+) of (\d+)", status).groups() for _, status in views[:-1]]
    assert shown == [(str(n), "12") for n in range(7, 13)], shown
    resumed = page.result
    assert not resumed.interrupted and len(resumed.frames) == 4
    for a, b in zip(frame_paths(stopped.run_dir), frame_paths(unbroken), strict=True):
        assert np.array_equal(png_pixels(a), png_pixels(b))
    with pytest.raises(ValueError, match="every frame of .* is restyled"):
        resume(stopped.run_dir)
    with pytest.raises(ValueError, match="max_iterations: a restyled video goes on"):
        resume(stopped.run_dir, max_iterations=10)


def test_video_frames_limits_and_the_cli_keeps_the_frame_rate(
    tiny_models: dict, clip_mp4: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    flags = [
        "--vqgan", str(tiny_models["yaml"]), "--clip_model", str(tiny_models["clip"]),
        "--width", "32", "--height", "32", "--cutn", "4", "--augments", "--max_iterations", "2",
        "--seed", "3", "--device", "cpu", "--output_dir", str(out),
        "--init_video", str(clip_mp4), "--video_frames", "3", "--video",
    ]  # fmt: skip
    cli.main(["generate", "a red square", *flags])
    (run,) = out.iterdir()
    assert len(frame_paths(run)) == 3 and count_video_frames(run / "video.mp4") == 3
    cli.main(["video", str(run), "--output", str(run / "again.mp4")])
    for video in ("video.mp4", "again.mp4"):  # at the input's frame rate, by default
        reader = imageio_ffmpeg.read_frames(str(run / video))
        assert next(reader)["fps"] == 5
        reader.close()
    assert "3 frames" in capsys.readouterr().out


def test_a_folder_of_frames_restyles_as_the_video_does(
    tiny_config: GenerationConfig, clip_mp4: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "frames in"
    folder.mkdir()
    for k, pixels in enumerate(read_video_frames(clip_mp4)):  # 8.png ... 11.png: natural order
        Image.fromarray(pixels).save(folder / f"{k + 8}.png")
    (folder / "notes.txt").write_text("not a frame")
    assert count_video_frames(folder) == 4 and count_video_frames(folder, limit=3) == 3
    from_video = frame_paths(generate(_config(tiny_config, clip_mp4)).run_dir)
    from_folder = frame_paths(generate(_config(tiny_config, folder)).run_dir)
    assert len(from_folder) == 4
    for a, b in zip(from_video, from_folder, strict=True):  # the same pixels in, the same out
        assert np.array_equal(png_pixels(a), png_pixels(b))


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"init_video": "/nonexistent/in.mp4"},
            "init_video: video file '/nonexistent/in.mp4' does not exist",
        ),
        ({"init_video": "TEXT"}, "init_video: 'TEXT' is not a readable video"),
        ({"init_video": "empty"}, "init_video: folder 'empty' holds no frames"),
        ({"init_video": "broken"}, "init_video: 'broken/1.png' is not a readable image"),
        ({"init_image": "x.png"}, "init_image: 'x.png' does not combine with init_video"),
        ({"zoom_every": 2}, "zoom_every: 2 does not combine with init_video"),
        ({"prompts": "a ^ b"}, r"prompts: .phases \('\^'\). does not combine"),
        ({"max_iterations": -1}, "max_iterations: -1 does not combine with init_video"),
        ({"video_frames": -1}, "video_frames: expected an integer >= 0, got -1"),
    ],
)
def test_bad_video_input_is_a_clear_error_before_any_run(
    tiny_config: GenerationConfig, clip_mp4: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, changes: dict, message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    Path("TEXT").write_text("not a video")
    Path("empty").mkdir()
    Path("broken").mkdir()
    Path("broken/1.png").write_text("not a PNG")
    with pytest.raises(ValueError, match=message):
        generate(tiny_config.replace(**{"init_video": str(clip_mp4), **changes}))
    assert not Path(tiny_config.output_dir).exists()


@pytest.mark.parametrize(
    ("follow", "pull"),
    [
        ({"frame_init_weight": 0.5, "temporal_weight": 5.0}, "temporal"),
        ({"flow_warp": True, "flow_weight": 5.0}, "flow"),  # along the source's optical flow
        ({"flow_warp": True, "flow_weight": 5.0, "flow_long_term": 2}, "flow-2"),  # two back too
    ],
)
def test_frames_that_follow_start_from_the_previous_result_and_resume_alike(
    tiny_config: GenerationConfig, clip_mp4: Path, follow: dict, pull: str
) -> None:
    alone = frame_paths(generate(_config(tiny_config, clip_mp4, run_name="alone")).run_dir)
    unbroken = generate(_config(tiny_config, clip_mp4, run_name="unbroken", **follow))
    following = frame_paths(unbroken.run_dir)
    assert np.array_equal(png_pixels(alone[0]), png_pixels(following[0]))  # nothing before it
    assert all(not np.array_equal(png_pixels(a), png_pixels(b)) for a, b in zip(alone[1:], following[1:], strict=True))  # fmt: skip

    def stop_in_frame_2(info: dict) -> None:
        if info["frame"] == 2 and info["iteration"] == 1:
            assert pull in info["terms"]  # the pull toward frame 1's result
            raise KeyboardInterrupt

    stopped = generate(
        _config(tiny_config, clip_mp4, run_name="stopped", **follow), stop_in_frame_2
    )
    assert stopped.interrupted and len(stopped.frames) == 2
    resume(stopped.run_dir)  # frame 2 starts from frame 1's saved PNG, as it did unbroken
    for a, b in zip(frame_paths(stopped.run_dir), following, strict=True):
        assert np.array_equal(png_pixels(a), png_pixels(b))


def test_video_stride_and_video_fps_pick_the_frames_and_the_rate(
    tiny_config: GenerationConfig, clip_mp4: Path
) -> None:
    every = frame_paths(generate(_config(tiny_config, clip_mp4, run_name="every")).run_dir)
    for changes in ({"video_stride": 2}, {"video_fps": 2.5}):  # 5 fps in: frames 0 and 2
        result = generate(_config(tiny_config, clip_mp4, **changes))
        picked = frame_paths(result.run_dir)
        assert [p.name for p in picked] == ["000000.png", "000001.png"]
        for a, b in zip(picked, every[::2], strict=True):  # the same frame, the same result
            assert np.array_equal(png_pixels(a), png_pixels(b))
        reader = imageio_ffmpeg.read_frames(str(assemble_video(result.run_dir)))
        assert next(reader)["fps"] == 2.5  # the video keeps the input's pace
        reader.close()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"video_stride": 0}, "video_stride: expected a positive integer, got 0"),
        ({"video_fps": 2.0, "video_stride": 2}, "video_fps: 2.0 and video_stride 2 both pick"),
        ({"frame_init_weight": 1.5}, "frame_init_weight: expected 0 to 1, got 1.5"),
        ({"temporal_weight": -1.0}, "temporal_weight: expected a number >= 0, got -1.0"),
        ({"init_video": None, "temporal_weight": 1.0}, "temporal_weight: 1.0 is for restyling"),
        ({"init_video": None, "video_stride": 2}, "video_stride: 2 is for restyling a video"),
        ({"flow_blend": 1.5}, "flow_blend: expected 0 to 1, got 1.5"),
        ({"flow_long_term": 2}, "flow_long_term: 2 frames back are pulled toward with flow_weight"),
        ({"flow_warp": "yes"}, "flow_warp: expected true or false, got 'yes'"),
        ({"init_video": None, "flow_weight": 1.0}, "flow_weight: 1.0 is for restyling"),
    ],
)
def test_bad_follow_settings_are_clear_errors(
    tiny_config: GenerationConfig, clip_mp4: Path, changes: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_config.replace(**{"init_video": str(clip_mp4), **changes})


PAN = 5  # pixels the camera pans a frame: the whole view moves this far to the right


def _panning_circle(path: Path, frames: int = 6) -> Path:
    """A camera panning over a white circle on dark, faintly textured ground, 64x64 at 8 fps
    (the shapes world's size): the texture makes the pan the only motion that explains the
    frames, so it is the true motion of every pixel, whatever a restyle draws there."""
    writer = imageio_ffmpeg.write_frames(
        str(path), (64, 64), fps=8, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1
    )
    writer.send(None)
    width = 64 + PAN * (frames - 1)
    coarse = torch.from_numpy(np.random.default_rng(0).random((1, 1, 12, width // 4 + 1)))
    ground = torch.nn.functional.interpolate(coarse.float(), size=(64, width), mode="bicubic")
    canvas = np.clip(ground[0, 0].numpy() * 70, 0, 255)
    y, x = np.mgrid[:64, :width]
    right = PAN * (frames - 1)
    canvas[(x - 18 - right) ** 2 + (y - 32) ** 2 < 12**2] = 255
    for k in range(frames):
        view = canvas[:, right - PAN * k : right - PAN * k + 64]
        writer.send(np.repeat(view.astype(np.uint8)[..., None], 3, axis=2))
    writer.close()
    return path


def _mean_change(paths: list) -> float:
    pixels = [png_pixels(p).astype(np.float64) if isinstance(p, Path) else p.astype(np.float64) for p in paths]  # fmt: skip
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(pixels, pixels[1:], strict=False)]))


def _along_the_pan(frames: list[Path]) -> float:
    """Issue 49's temporal error: the mean change between consecutive results once the previous
    one is moved by the true motion (the pan), over the pixels both frames show (not the strip
    the pan brings into view)."""
    pixels = [png_pixels(p).astype(np.float64) for p in frames]
    return float(np.mean([np.abs(b[:, PAN:] - a[:, :-PAN]).mean() for a, b in zip(pixels, pixels[1:], strict=False)]))  # fmt: skip


@pytest.mark.slow
def test_following_frames_flicker_less_and_keep_the_prompted_colours(tmp_path: Path) -> None:
    """Issues 34's and 49's checks: a camera pan over a circle restyled with the shapes models,
    three ways. Every frame shows the prompted colours by the judge. Following the previous
    result (frame_init_weight, temporal_weight) changes less between frames than independent
    frames, but its circle stays where the first frame put it, so along the pan it still
    changes (0.46 to 0.50 of the input's change over seeds 0-3, independent frames 0.54 to
    0.87); following along the optical flow (flow_warp, flow_weight) changes least along the pan
    (0.32 to 0.38, at most 0.77 of either other way's) while its circle travels with the
    source's (22 to 25 px of 25; docs/video.md)."""
    from vqclip.shapes.judge import judge

    video = _panning_circle(tmp_path / "pan.mp4")
    source = _mean_change(list(read_video_frames(video)))
    base = GenerationConfig(
        prompts="a green circle on a yellow background", init_video=str(video), seed=0,
        max_iterations=20, device="cpu", precision="fp32", output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    ratios, along, travel = {}, {}, {}
    ways = {
        "independent": {},
        "following": {"frame_init_weight": 0.6, "temporal_weight": 10.0},
        "flow": {"flow_warp": True, "flow_weight": 100.0},
    }
    for name, changes in ways.items():
        frames = frame_paths(generate(base.replace(**changes)).run_dir)
        ratios[name] = _mean_change(frames) / source
        along[name] = _along_the_pan(frames) / source
        verdicts = [judge(png_pixels(p)) for p in frames]
        assert all(v.top_two() == {"green", "yellow"} for v in verdicts), name
        travel[name] = verdicts[-1].centre[0] - verdicts[0].centre[0]  # the source's: 25 px
        print(f"{name}: output change / input change {ratios[name]:.3f}, along the pan {along[name]:.3f}; the circle travels {travel[name]:.0f} px")  # fmt: skip
    assert ratios["following"] < ratios["independent"], ratios
    # over seeds 0-3 flow's was at most 0.77 of the others', and its circle travelled 22 to 25 px
    assert along["flow"] < 0.85 * min(along["following"], along["independent"]), along
    assert travel["flow"] > travel["following"] + 8 and travel["flow"] >= 20, travel
