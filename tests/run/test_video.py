"""Videos from saved frames: frame ranges, batch runs tiled or one image picked, a length in
seconds, motion interpolation; real ffmpeg through imageio-ffmpeg."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from vqclip.frontends import cli
from vqclip.run.video import assemble_video, count_video_frames, select_frames, video_fps

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 220)]  # image K of the batch: COLOURS[K]
ITERATIONS = [0, 5, 10, 15]
W, H = 32, 24


def _save_run(run_dir: Path, batch: int, iterations: list[int] = ITERATIONS) -> Path:
    """A run directory whose frames are flat colours: image K of the batch in COLOURS[K % 3],
    brighter at later iterations."""
    (run_dir / "frames").mkdir(parents=True)
    for step in iterations:
        for k in range(batch):
            pixels = np.full((H, W, 3), COLOURS[k % 3], dtype=np.uint8)
            pixels[0, 0] = step  # a mark that tells the iterations apart
            name = f"{step:06d}.png" if batch == 1 else f"{step:06d}-{k}.png"
            Image.fromarray(pixels).save(run_dir / "frames" / name)
    return run_dir


def _read_frames(path: Path) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return [np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3) for raw in reader]


def test_a_batch_run_is_tiled_in_a_grid(tmp_path: Path) -> None:
    run = _save_run(tmp_path / "run", batch=3)
    frames = _read_frames(assemble_video(run))
    assert len(frames) == len(ITERATIONS)
    grid = frames[-1]  # 3 images: 2 columns, 2 rows, the fourth cell blank
    assert grid.shape == (2 * H, 2 * W, 3)
    cells = [
        grid[r * H + 4 : (r + 1) * H - 4, c * W + 4 : (c + 1) * W - 4]
        for r in (0, 1)
        for c in (0, 1)
    ]
    for cell, colour in zip(cells, [*COLOURS, (0, 0, 0)], strict=True):
        assert np.abs(cell.reshape(-1, 3).mean(0) - colour).max() < 12, (cell.mean((0, 1)), colour)


def test_one_image_of_a_batch_and_a_range_of_iterations(tmp_path: Path) -> None:
    run = _save_run(tmp_path / "run", batch=3)
    path = assemble_video(run, first=5, last=10, image=1, output=tmp_path / "one.mp4")
    frames = _read_frames(path)
    assert len(frames) == 2 and frames[0].shape == (H, W, 3)
    assert np.abs(frames[0][4:-4, 4:-4].reshape(-1, 3).mean(0) - COLOURS[1]).max() < 12
    assert [[p.name for p in paths] for paths in select_frames(run, first=10)] == [
        ["000010-0.png", "000010-1.png", "000010-2.png"],
        ["000015-0.png", "000015-1.png", "000015-2.png"],
    ]


def test_batch_images_are_ordered_by_number_not_by_name(tmp_path: Path) -> None:
    run = _save_run(tmp_path / "run", batch=12, iterations=[0])
    names = [p.name for p in select_frames(run)[0]]
    assert names == [f"000000-{k}.png" for k in range(12)]  # "-10" after "-9", not after "-1"


def test_length_sets_the_frame_rate(tmp_path: Path) -> None:
    run = _save_run(tmp_path / "run", batch=1)
    path = assemble_video(run, length=2.0)
    assert count_video_frames(path) == 4 and video_fps(path) == pytest.approx(2.0)


def test_interpolation_adds_frames_at_the_asked_rate_and_ends_on_the_last(tmp_path: Path) -> None:
    run = _save_run(tmp_path / "run", batch=3)  # tiled 64x48: minterpolate needs 32 and more
    for path in (run / "frames").glob("000015-*.png"):  # the last step: white
        Image.fromarray(np.full((H, W, 3), 255, np.uint8)).save(path)
    path = assemble_video(run, fps=2, interpolate=30)
    assert video_fps(path) == pytest.approx(30.0)
    frames = _read_frames(path)
    assert 58 <= len(frames) <= 62  # 2 seconds at 30 fps, as 4 frames at 2 fps last
    assert frames[-1][4:20, 4:28].min() > 240  # the last step (white) is in it, not cut off


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"first": 20}, "no frames from iteration 20 to None in .*iterations 0 to 15"),
        ({"first": 10, "last": 5}, "expected 0 <= first <= last, got 10, 5"),
        ({"image": 3}, r"image: expected 0 to 2 \(the run made 3\), got 3"),
        ({"fps": 5, "length": 2}, "fps and length: give one, not both"),
        ({"length": 0}, "length: expected a positive number of seconds, got 0"),
        ({"fps": 10, "interpolate": 10}, "interpolate: expected more than the input's 10 fps"),
        (
            {"image": 0, "interpolate": 30},
            "interpolate: needs frames of at least 32x32, these are 32x24",
        ),
    ],
)
def test_bad_video_options_are_clear_errors_and_write_nothing(
    tmp_path: Path, options: dict, message: str
) -> None:
    run = _save_run(tmp_path / "run", batch=3)
    with pytest.raises(ValueError, match=message):
        assemble_video(run, **options)
    assert not list(run.glob("*.mp4")) and not list(run.glob(".*"))


def test_cli_video_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _save_run(tmp_path / "run", batch=3)
    cli.main(["video", str(run), "--length", "1", "--first", "5", "--image", "2"])
    assert str(run / "video.mp4") in capsys.readouterr().out
    assert count_video_frames(run / "video.mp4") == 3 and video_fps(run / "video.mp4") == 3
    cli.main(["video", str(run), "--format", "gif", "--loop", "--image", "0"])
    assert str(run / "video.gif") in capsys.readouterr().out
    assert count_video_frames(run / "video.gif") == 6  # 4 iterations, there and back
    with pytest.raises(SystemExit) as stop:  # argparse: --fps and --length exclude each other
        cli.main(["video", str(run), "--fps", "5", "--length", "2"])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["video", str(run), "--image", "7", "--overwrite"])
    assert stop.value.code != 0 and "image: expected 0 to 2" in capsys.readouterr().err


def test_a_video_ffmpeg_could_not_write_is_an_error_not_a_broken_file(tmp_path: Path) -> None:
    run = _save_run(tmp_path / "run", batch=1)
    with pytest.raises(OSError, match="ffmpeg"):
        assemble_video(run, output=tmp_path / "no such folder" / "video.mp4")
    assert not (tmp_path / "no such folder").exists()


def test_frames_too_large_to_encode_are_refused_from_their_headers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Issue 45: 12000x12000 frames from small PNGs were decoded and sent to the encoder."""
    run = _save_run(tmp_path / "run", batch=1)
    Image.new("1", (12_000, 12_000)).save(run / "frames" / "000020.png")  # 1-bit: a small file
    with pytest.raises(SystemExit) as stop:
        cli.main(["video", str(run), "--first", "20"])
    assert stop.value.code == 2
    assert "is 12000x12000 pixels; expected at most 35389440" in capsys.readouterr().err
    assert count_video_frames(assemble_video(run, last=15, output=tmp_path / "ok.mp4")) == 4
    big = _save_run(tmp_path / "big", batch=1, iterations=[0])
    Image.new("RGB", (4_000, 3_000)).save(big / "frames" / "000000.png")
    with pytest.raises(ValueError, match="upscaled x4 make 16000x12000 frames"):
        assemble_video(big, upscale=4, upscaler="lanczos")
    assert not list(big.glob("*.mp4")) and not list(big.glob(".*"))


def test_an_encoder_that_stops_part_way_is_an_error_not_a_short_video(tmp_path: Path) -> None:
    """Issue 45: ffmpeg unable to write past its first frames (here: a file size limit, as a
    full disk) was reported as success with 1 of 4 frames written."""
    run = tmp_path / "run"
    (run / "frames").mkdir(parents=True)
    noise = np.random.default_rng(0)
    for step in range(8):
        Image.fromarray(noise.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(run / "frames" / f"{step:06d}.png")  # fmt: skip

    def small_files() -> None:  # in the child: files stop growing at 40 KB, writes then fail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    vqclip = str(Path(sys.executable).parent / "vqclip")
    done = subprocess.run([vqclip, "video", str(run)], capture_output=True, text=True, timeout=120, preexec_fn=small_files)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "frames of" in done.stderr and "nothing was kept" in done.stderr
    assert not (run / "video.mp4").exists() and not list(run.glob(".*"))


@pytest.mark.parametrize("target", ["a file", "nothing"])
def test_a_planted_video_symlink_is_replaced_not_followed(tmp_path: Path, target: str) -> None:
    """A link at ``video.mp4`` (to a file, or dangling): never written through, even when
    told to overwrite."""
    run = _save_run(tmp_path / "run", batch=1)
    victim = tmp_path / "victim.mp4"
    if target == "a file":
        victim.write_bytes(b"keep me")
    (run / "video.mp4").symlink_to(victim)
    if target == "a file":
        with pytest.raises(FileExistsError, match="video.mp4 exists"):
            assemble_video(run)
    path = assemble_video(run, overwrite=True)
    assert not path.is_symlink() and count_video_frames(path) == len(ITERATIONS)
    assert victim.read_bytes() == b"keep me" if target == "a file" else not victim.exists()


def _tone(path: Path, seconds: float, rate: int = 8000) -> Path:
    """A mono 16-bit WAV of a 440 Hz tone, written with the standard library."""
    import wave

    samples = (np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate) * 12000).astype("<i2")  # fmt: skip
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def _duration(path: Path) -> float:
    return imageio_ffmpeg.count_frames_and_secs(str(path))[1]


def test_a_soundtrack_plays_under_the_video_and_a_silent_one_is_no_error(tmp_path: Path) -> None:
    from vqclip.run.video import has_sound

    run = _save_run(tmp_path / "run", batch=1)  # 4 frames: 2 s at 2 fps
    tone = _tone(tmp_path / "tone.wav", 5.0)
    video = assemble_video(run, fps=2, soundtrack=tone, soundtrack_offset=1.0)
    assert has_sound(video) and count_video_frames(video) == 4
    assert abs(_duration(video) - 2.0) < 0.3  # the sound cut to the video's length
    silent_source = assemble_video(run, fps=2, output=tmp_path / "silent.mp4")
    assert not has_sound(silent_source)
    again = assemble_video(run, fps=2, output=tmp_path / "b.mp4", soundtrack=silent_source)
    assert not has_sound(again) and count_video_frames(again) == 4  # a file without sound: silent
    # A restyle keeps its source's sound: the run's config names the source.
    from vqclip.core.config import GenerationConfig
    from vqclip.run.video import add_soundtrack

    add_soundtrack(silent_source, tone)
    (run / "config.json").write_text(GenerationConfig(prompts="x", init_video=str(silent_source)).to_json())  # fmt: skip
    assert has_sound(assemble_video(run, fps=2, output=tmp_path / "restyled.mp4"))


def test_a_soundtrack_is_a_local_file_and_reaches_no_network(tmp_path: Path) -> None:
    """A URL, or a playlist that names one, is refused: ffmpeg may open local files only, and
    the loopback port the playlist names hears nothing."""
    import socket

    run = _save_run(tmp_path / "run", batch=1)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        playlist = tmp_path / "list.m3u8"
        playlist.write_text(f"#EXTM3U\n#EXTINF:2,\nhttp://127.0.0.1:{port}/a.wav\n#EXT-X-ENDLIST\n")
        for sound, message in ((f"http://127.0.0.1:{port}/a.wav", "soundtrack: cannot read"), (playlist, "could not be put under the video")):  # fmt: skip
            with pytest.raises(ValueError, match=message):
                assemble_video(run, fps=2, output=tmp_path / "v.mp4", overwrite=True, soundtrack=sound)  # fmt: skip
        with pytest.raises(TimeoutError):
            listener.accept()  # no one came
    assert not (tmp_path / "v.mp4").exists()


def _moving_disc_run(run_dir: Path, frames: int = 4, step: int = 8) -> Path:
    """A run whose frames show a textured disc moving ``step`` px right a frame (96x96)."""
    from tests.models.test_flow import _disc_scene

    (run_dir / "frames").mkdir(parents=True)
    for k in range(frames):
        image = _disc_scene(32 + step * k)[0][0].permute(1, 2, 0)
        Image.fromarray((image * 255).round().byte().numpy()).save(run_dir / "frames" / f"{k:06d}.png")  # fmt: skip
    return run_dir


def test_frames_in_between_along_the_flow_beat_a_cross_fade(tmp_path: Path) -> None:
    """Linear motion: the frame flow interpolation makes halfway is closer to the true middle
    frame than a cross-fade of the neighbours; the video holds every frame made."""
    from tests.models.test_flow import _disc_scene
    from vqclip.models.flow import dis_flow, in_between

    (a, _), (middle, _), (b, _) = (_disc_scene(cx) for cx in (36, 40, 44))
    (made,) = in_between(a, b, [0.5], dis_flow)
    flow_error = (made - middle).abs().mean().item()
    fade_error = ((a + b) / 2 - middle).abs().mean().item()
    print(f"middle frame's mean error: flow {flow_error:.4f}, cross-fade {fade_error:.4f}")
    assert flow_error < 0.6 * fade_error  # measured 0.0047 against 0.0117
    run = _moving_disc_run(tmp_path / "run")
    path = assemble_video(run, fps=2, interpolate=8, interpolation="flow")
    frames = _read_frames(path)
    assert len(frames) == 4 * 4 and video_fps(path) == pytest.approx(
        8.0
    )  # 3 made between, the last held
    last, before = (np.asarray(Image.open(run / "frames" / f"00000{k}.png")) for k in (3, 2))
    assert np.abs(frames[-1].astype(int) - last).mean() < 0.5 * np.abs(frames[-1].astype(int) - before).mean()  # fmt: skip


def test_webm_gif_and_ping_pong_decode_with_their_frame_counts(tmp_path: Path) -> None:
    from vqclip.run.video import has_sound

    run = _moving_disc_run(tmp_path / "run")
    tone = _tone(tmp_path / "tone.wav", 3.0)
    webm = assemble_video(run, fps=2, format="webm", soundtrack=tone)
    assert webm.name == "video.webm" and count_video_frames(webm) == 4 and has_sound(webm)
    gif = assemble_video(run, fps=2, output=tmp_path / "out.gif")  # the format from the suffix
    assert count_video_frames(gif) == 4 and not has_sound(gif)
    pong = assemble_video(run, fps=2, format="gif", ping_pong=True)
    frames = _read_frames(pong)
    assert len(frames) == 6  # 0 1 2 3 2 1, then the GIF loops to 0
    assert np.abs(frames[4].astype(int) - frames[2]).mean() < 3  # frame 2 again, on the way back
    small = assemble_video(run, fps=2, format="gif", output=tmp_path / "small.gif", max_gif_mb=0.01)  # fmt: skip
    assert small.stat().st_size <= 10_000 and next(imageio_ffmpeg.read_frames(str(small)))["size"][0] < 96  # fmt: skip
    with pytest.raises(ValueError, match="soundtrack: a GIF has no sound"):
        assemble_video(run, fps=2, format="gif", output=tmp_path / "x.gif", soundtrack=tone)
    with pytest.raises(ValueError, match="output: x.mp4 does not end in .gif"):
        assemble_video(run, fps=2, format="gif", output=tmp_path / "x.mp4")
    assert not (tmp_path / "x.gif").exists() and not (tmp_path / "x.mp4").exists()
