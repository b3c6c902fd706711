"""The web UI: its handlers on tiny models, and the page itself in Chromium."""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, png_pixels, serving, video_duration

from vqclip.core import presets
from vqclip.core.config import GenerationConfig
from vqclip.frontends.webpage import (
    OUTLINES,
    _Page,
    follow,
    form_config,
    gallery_items,
    run_in_thread,
)
from vqclip.run.driver import generate, progress_of, read_run_config, resume
from vqclip.run.frames import frame_paths
from vqclip.run.runstate import STATE, read_state

PROMPT = "a red circle on a blue background"


def test_the_form_leaves_zeros_to_the_preset_and_takes_what_is_given() -> None:
    form = [PROMPT, "vqgan", "auto", "auto", 4]
    left = form_config(*form, 0, 0, 0, 0, 0)
    assert left == presets.apply(GenerationConfig(prompts=PROMPT, seed=4))  # as the CLI's
    given = form_config(*form, 128, 96, 7, 8, 2)
    assert (given.width, given.height, given.max_iterations, given.cutn) == (128, 96, 7, 8)
    assert given.display_frequency == 2 and given.start == left.start  # the rest: the preset
    assert form_config(*form, 0, 0, 0, 0, 0, *STILL) == left  # every section at its defaults
    cuts = ["perlin", "[4]*2+[2]*3", "[2]*5", "0.2", 1.5, "shapes-palette:0.5", "shapes-mirror"]
    config = form_config(*form, 0, 0, 5, 0, 0, *STILL[:-7], *cuts)
    assert (config.start, config.cut_overview, config.cut_innercut, config.cut_icgray_p, config.cut_ic_pow, config.terms, config.transforms) == tuple(cuts)  # fmt: skip


def test_the_animation_fields_make_an_animation_and_preview_its_motion(tmp_path: Path) -> None:
    form = [PROMPT, "pixels", "auto", "auto", 4, 0, 0, 0, 0, 0]
    still = form_config(*form, "none", 5, 0, 10, "1.1", "0", "3", "0", "0", "0", "0", "0", "40", "none", 0.6, 1, 0, "lab")  # fmt: skip
    assert still == form_config(*form)  # "none": no animation field is set
    animated = [*form, "2D", 5, 20, 4, "0: (1.0), 4: (1.1)", "0", "3*sin(t)", "0", "0", "0", "0", "0", "40", "none", "0: (0.7), 4: (0.5)", 1, 0, "lab", 8, "border", "bicubic", False, "0.02", "0: (1), 4: (1.1)"]  # fmt: skip
    config = form_config(*animated)
    assert (config.animation_mode, config.max_frames, config.max_iterations) == ("2D", 5, 36)
    assert (config.frame_strength, config.cadence, config.color_coherence) == ("0: (0.7), 4: (0.5)", 1, "lab")  # fmt: skip
    assert (config.fps, config.padding_mode, config.sampling_mode, config.save_depth) == (8.0, "border", "bicubic", False)  # fmt: skip
    assert (config.frame_noise, config.frame_contrast) == ("0.02", "0: (1), 4: (1.1)")
    assert config.zoom == "0: (1.0), 4: (1.1)" and config.translation_x == "3*sin(t)"
    video, status = _Page(tmp_path / "out").preview_motion(*animated)
    assert status.startswith("motion preview: 5 frames") and Path(video).is_file()
    composed = form_config(*animated, "both", True, "red, blue", 4.0, 0.5, 0.0, 0.5, "")
    assert (composed.symmetry, composed.tile, composed.palette, composed.palette_weight, composed.saturation_weight, composed.symmetry_share) == ("both", True, "red, blue", 4.0, 0.5, 0.5)  # fmt: skip
    sampled = [PROMPT, "diffusion", "auto", "auto", 4, 0, 0, 0, 0, 0, *animated[10:]]
    assert form_config(*sampled, "both", False, "", 1.0, 0.0, 0.0, 1.0, "0.09, 0.5").symmetry_at == (0.09, 0.5)  # fmt: skip
    with pytest.raises(ValueError, match="symmetry_at: '0.09; __import__'; expected shares"):
        form_config(*sampled, "both", False, "", 1.0, 0.0, 0.0, 1.0, "0.09; __import__")
    bad = list(animated)
    bad[16] = "1/0"  # translation_x
    video, status = _Page(tmp_path / "out").preview_motion(*bad)
    assert (
        video is None
        and "translation_x: &#x27;1/0&#x27; at frame 1: float division by zero" in status
    )


def test_a_run_stopped_from_the_page_keeps_its_state_and_resumes(
    tiny_config: GenerationConfig,
) -> None:
    run = run_in_thread(lambda callback: generate(tiny_config, callback=callback))
    run.stop.set()  # as the Stop button does: the run ends after the step under way
    views = list(follow(run, progress_of(tiny_config)))
    assert views[-1][1].startswith("stopped (Resume goes on)")
    run_dir = run.result.run_dir
    stopped_at = read_state(run_dir / STATE)["iteration"]
    assert 1 <= stopped_at < tiny_config.max_iterations
    again = run_in_thread(lambda callback: resume(run_dir, callback=callback))
    views = list(follow(again, progress_of(tiny_config)))
    assert views[-1][1].startswith("done: ") and views[-1][0] is not None
    steps = [int(m[1]) for _, status in views[:-1] if (m := re.search(r"step (\d+) of", status))]
    assert steps == list(range(stopped_at + 1, tiny_config.max_iterations + 1))
    assert read_state(run_dir / STATE)["iteration"] == tiny_config.max_iterations


def test_a_bad_field_is_one_line_on_the_page(tmp_path: Path) -> None:
    page = _Page(tmp_path / "out")
    form = [PROMPT, "vqgan", "auto", "auto", 0, 30, 30, 5, 0, 0]  # 30: not a multiple of 16
    status = list(page.start(*form))[-1][1]
    assert status.startswith('<b class="vqclip-error">error:</b> width') and "\n" not in status
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_gallery_shows_runs_newest_first_and_no_planted_links(
    tiny_config: GenerationConfig, tmp_path: Path
) -> None:
    first = generate(tiny_config.replace(max_iterations=2, seed=5)).run_dir
    time.sleep(0.01)  # config.json's times order the runs
    second = generate(tiny_config.replace(max_iterations=2, seed=6)).run_dir
    outside = tmp_path / "secret.png"
    outside.write_bytes((first / "final.png").read_bytes())
    (second.parent / "planted").symlink_to(first)  # a link to a run, and a link as a picture
    (second / "final.png").unlink()
    (second / "final.png").symlink_to(outside)
    items = gallery_items(second.parent)
    assert [Path(p).parent.parent if "frames" in p else Path(p).parent for p, _ in items] == [second, first]  # fmt: skip
    assert "frames" in items[0][0]  # the linked final image is passed over for a frame
    assert items[1][1] == f"a red circle · seed 5 · {first.name}"


# The form's fields after the first ten, at the page's defaults: a still, no composition.
STILL = ["none", 0, 0, 10, "1.0", "0", "0", "0", "0", "0", "0", "0", "40", "none", "0.6", 1, 0, "none",
         0.0, "reflection", "bilinear", False, "0", "1.0",
         "none", False, "", 1.0, 0.0, 0.0, 1.0, "", "auto", "", "", "", 1.0, "", ""]  # fmt: skip


def _moving_square(path: Path, frames: int = 4) -> Path:
    """A real H.264 video, 64x64 at 4 fps: a red square moving right over blue."""
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(path), (64, 64), fps=4, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1)  # fmt: skip
    writer.send(None)
    for k in range(frames):
        frame = np.zeros((64, 64, 3), np.uint8)
        frame[..., 2] = 200
        frame[20:40, 8 + 6 * k : 28 + 6 * k, 0] = 230
        writer.send(frame)
    writer.close()
    return path


def test_the_page_restyles_an_uploaded_video_under_an_uploaded_sound(tmp_path: Path) -> None:
    """Issue 49 on the page: a video restyled along its flow, a soundtrack under it, played
    with its sound; both uploads kept beside the runs (gradio removes its own copies), once."""
    from tests.run.test_video import _tone
    from vqclip.run.video import count_video_frames, has_sound

    uploads = tmp_path / "gradio"  # where gradio leaves what the browser sent
    uploads.mkdir()
    video, tone = _moving_square(uploads / "clip.mp4"), _tone(uploads / "tone.wav", 3.0)
    page = _Page(tmp_path / "out")
    form = [PROMPT, "vqgan", "auto", "auto", 3, 0, 0, 4, 0, 2, *STILL]
    restyle = [str(video), 3, 0.0, 1, 0.0, 0.0, True, 1.0, 1.0, 0, "dis", str(tone), 0.5]
    views = list(page.start(*form, *restyle))
    assert views[-1][1].startswith("done: seed 3") and "step 12 of 12" in views[-2][1]  # 3 frames
    run_dir = tmp_path / "out" / views[-1][2]
    config = GenerationConfig.from_json((run_dir / "config.json").read_text())
    kept = tmp_path / "out" / "uploads"
    assert Path(config.init_video).parent == kept and Path(config.soundtrack).parent == kept
    assert Path(config.init_video).read_bytes() == video.read_bytes()
    assert (config.flow_warp, config.flow_weight, config.video_frames, config.soundtrack_offset) == (True, 1.0, 3, 0.5)  # fmt: skip
    for name in ("clip.mp4", "tone.wav"):
        (uploads / name).unlink()  # as gradio's cache is emptied: the run still has its files
    player, download, status = page.video(run_dir.name)
    assert player == download == str(run_dir / "video.mp4") and has_sound(player)
    assert count_video_frames(player) == 3 and status.startswith("video, made")
    player, download, _ = page.video(run_dir.name, "gif")
    assert player is None and download.endswith("video.gif")  # a GIF: to download only
    # Smoother, and forward then back: its own file; the plain MP4 is kept as it was.
    player, _, _ = page.video(run_dir.name, "webm", 8, "flow", True)
    assert player == str(run_dir / "video-flow8fps-loop.webm") and has_sound(player)
    assert count_video_frames(player) > 2 * 3  # back as well, with frames in between
    # The same file again is the same kept copy; what the page cannot take is one line.
    again = _moving_square(uploads / "again.mp4")
    list(page.start(*form, str(again), 1, *restyle[2:11], "", 0.0))
    assert sorted(p.suffix for p in kept.iterdir()) == [".mp4", ".wav"]
    status = list(page.start(*form, str(tone), *restyle[1:]))[-1][1]
    assert "init_video: &#x27;tone.wav&#x27; is not a file the page takes" in status
    status = list(page.start(*form, "", *restyle[1:11], "", 0.0))[-1][1]
    assert "flow_warp" in status and "set init_video" in status  # no video: not dropped
    # A link planted at the uploads folder is not written through.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = tmp_path / "planted"
    _Page(planted).output_dir.mkdir()
    (planted / "uploads").symlink_to(elsewhere)
    status = list(_Page(planted).start(*form, str(again), *restyle[1:]))[-1][1]
    assert "is a link or not a folder" in status and not any(elsewhere.iterdir())


def test_the_page_starts_from_an_uploaded_image_and_is_prompted_by_one(tmp_path: Path) -> None:
    """The images section: a start image (held by init_weight), an image prompt with its
    weight and a target image, uploaded and kept beside the runs as the video is."""
    from PIL import Image

    uploads = tmp_path / "gradio"
    uploads.mkdir()
    start = np.zeros((64, 64, 3), np.uint8)
    start[...] = (230, 210, 30)  # a green square on yellow
    start[16:48, 16:48] = (30, 180, 40)
    Image.fromarray(start).save(uploads / "start.png")
    Image.fromarray(start[:, ::-1].copy()).save(uploads / "prompt.jpg")
    page = _Page(tmp_path / "out")
    form = [PROMPT, "vqgan", "auto", "auto", 3, 0, 0, 3, 0, 3, *STILL, *[None] * 13]
    images = [str(uploads / "start.png"), 2.0, 0, str(uploads / "prompt.jpg"), 0.5, str(uploads / "start.png")]  # fmt: skip
    views = list(page.start(*form, *images))
    assert views[-1][1].startswith("done: seed 3"), views[-1][1]
    config = read_run_config(tmp_path / "out" / views[-1][2])
    kept = tmp_path / "out" / "uploads"
    assert Path(config.init_image).parent == kept and config.init_weight == 2.0
    prompt, weight = config.image_prompts.rsplit(":", 1)
    assert Path(prompt).parent == kept and weight == "0.5"
    assert Path(prompt).read_bytes() == (uploads / "prompt.jpg").read_bytes()
    assert config.target_images == config.init_image  # the same file, kept once
    assert sorted(p.suffix for p in kept.iterdir()) == [".jpg", ".png"]
    final = png_pixels(tmp_path / "out" / views[-1][2] / "final.png").astype(float)
    plain = generate(config.replace(init_image=None, init_weight=0.0, run_name="plain")).image
    plain = (plain[0].permute(1, 2, 0).numpy() * 255).astype(float)
    # Nearer the start than the same run from the preset's start (measured: 13.8 against 27.1).
    assert np.abs(final - start).mean() < 0.75 * np.abs(plain - start).mean()
    status = list(page.start(*form, str(uploads / "start.png"), 0.0, 5, None, 1.0, None))[-1][1]
    assert "skip_timesteps" in status  # for diffusion only: one line


@pytest.mark.slow
def test_the_page_in_a_real_browser(tmp_path: Path, browser) -> None:
    """Chromium against ``vqclip ui``: generate with a live preview, stop, resume, replay from
    the gallery (the same pixels), show a run's config and its video."""
    port = free_port()
    env = {**os.environ, "VQCLIP_HOME": str(tmp_path / "home"), "GRADIO_ANALYTICS_ENABLED": "False"}  # fmt: skip
    vqclip = str(Path(sys.executable).parent / "vqclip")
    out = tmp_path / "out"
    command = [vqclip, "ui", "--output_dir", str(out), "--port", str(port)]
    url = f"http://127.0.0.1:{port}/"
    with serving(command, url, tmp_path, env, tmp_path / "ui.log"):
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.set_default_timeout(120_000)  # each Playwright wait (a generation takes ~10 s)
        page.goto(url)
        page.wait_for_selector("#generate")
        assert "preset shapes" in page.inner_text("#preset")
        # Prompts that name regions: their boxes are outlined over the preview as they are typed.
        page.fill("#prompts textarea", "a red circle @left | a green square @right")
        page.wait_for_selector("#preview img")
        seen = page.evaluate(_PIXELS_AT, [[0.0, 0.5], [0.25, 0.5], [0.999, 0.5]])
        edge, inside, far_edge = (np.array(rgb) for rgb in seen)
        assert np.abs(edge - OUTLINES[0]).max() < 24 and np.abs(far_edge - OUTLINES[1]).max() < 24, seen  # fmt: skip
        assert np.abs(inside - 96).max() < 24, seen  # the canvas's grey inside the left box
        page.fill("#prompts textarea", PROMPT)
        page.fill("#seed input", "5")
        page.fill("#steps input", "60")
        page.click("#generate")
        previews, progress = set(), []
        deadline = time.monotonic() + 300  # every wait has one: a hung page fails, not hangs
        while (value := _progress(page)) is None or value < 25:
            assert time.monotonic() < deadline, f"progress stayed at {progress[-5:]}"
            progress.append(value or 0)
            previews.add(page.get_attribute("#preview img", "src") or "")
            time.sleep(0.2)
        page.click("#stop")
        stopped = _wait_status(page, "stopped")
        assert len(previews - {""}) >= 2 and len(set(progress)) >= 3, (previews, progress)
        run_dir = Path(re.search(r"run directory (\S+)", stopped)[1])
        assert 25 <= read_state(run_dir / STATE)["iteration"] < 60
        page.click("#resume")
        assert f"done: seed 5, run directory {run_dir}" in _wait_status(page, "done")
        assert read_state(run_dir / STATE)["iteration"] == 60
        page.wait_for_selector("#gallery .thumbnail-item")
        page.locator("#gallery .thumbnail-item").first.click()
        page.wait_for_function("() => document.querySelector('#config').innerText.includes('seed')")
        assert '"seed": 5' in page.inner_text("#config")
        page.click("#replay")
        replayed = _wait_status(page, "done", after=str(run_dir))
        replay_dir = Path(re.search(r"run directory (\S+)", replayed)[1])
        assert replay_dir != run_dir
        assert (png_pixels(replay_dir / "final.png") == png_pixels(run_dir / "final.png")).all()
        page.click("#video-button")
        page.wait_for_selector("#video video")
        assert video_duration(page, "#video video") > 2
        # A video uploaded through the page (and its guard), restyled, and its video played.
        page.click("text=restyle a video")
        page.set_input_files("#init_video input[type=file]", str(_moving_square(tmp_path / "clip.mp4")))  # fmt: skip
        page.wait_for_selector("#init_video >> text=clip.mp4")
        page.fill("#video_frames input", "2")
        page.fill("#steps input", "3")
        page.click("#generate")
        restyled = _wait_status(page, "done", after=str(replay_dir))
        restyle_dir = Path(re.search(r"run directory (\S+)", restyled)[1])
        assert [p.name for p in frame_paths(restyle_dir)] == ["000000.png", "000001.png"]
        assert Path(read_run_config(restyle_dir).init_video).parent == out / "uploads"
        page.click("#video-button")
        assert str(restyle_dir / "video.mp4") in _wait_status(page, "video, made")
        assert video_duration(page, "#video video") > 0.2  # 2 frames at the clip's 4 fps
        assert page.locator(".vqclip-error").count() == 0
        page.close()


# The preview's colours at points given as fractions of its width and height.
_PIXELS_AT = """async (points) => {
  const img = document.querySelector('#preview img');
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  return points.map(([x, y]) => Array.from(context.getImageData(
    Math.floor(x * canvas.width), Math.floor(y * canvas.height), 1, 1).data.slice(0, 3)));
}"""


def _progress(page) -> float | None:
    return page.evaluate("() => document.querySelector('#status progress')?.value ?? null")


def _wait_status(page, word: str, after: str = "") -> str:
    """The status line once it starts with ``word`` (and no longer names ``after``)."""
    deadline = time.monotonic() + 300
    while not ((status := page.inner_text("#status")).startswith(word) and (not after or after not in status)):  # fmt: skip
        assert time.monotonic() < deadline and "error" not in status, status
        time.sleep(0.2)
    return status


def _request(url: str, headers: dict[str, str], data: bytes | None = None) -> tuple[int, dict, bytes]:  # fmt: skip
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
    except urllib.error.URLError as error:  # refused mid-upload: the server closed on us
        assert isinstance(error.reason, ConnectionResetError | BrokenPipeError), error
        return 0, {}, b""


def test_the_page_answers_only_its_user(tiny_config: GenerationConfig, tmp_path: Path, browser) -> None:  # noqa: ANN001  # fmt: skip
    """Issue 45: the page answered any Host (DNS rebinding) and echoed any Origin, served
    .html inline, took 50 MB uploads, broke on one unreadable run, and its clicks indexed a
    list that had changed since it was drawn."""
    out = Path(tiny_config.output_dir)
    good = generate(tiny_config.replace(max_iterations=2, seed=5, run_name="good")).run_dir
    (good / "page.html").write_text("<script>alert(1)</script>")
    stray = generate(tiny_config.replace(max_iterations=2, seed=6, run_name="stray")).run_dir
    (stray / "frames" / "evil.png").write_bytes((stray / "final.png").read_bytes())
    (stray / "final.png").unlink()  # its picture would be its latest frame: unreadable now
    port, temp = free_port(), tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "VQCLIP_HOME": str(tmp_path / "home"), "TMPDIR": str(temp)}
    vqclip = str(Path(sys.executable).parent / "vqclip")
    command = [vqclip, "ui", "--output_dir", str(out), "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with serving(command, base + "/", tmp_path, env, tmp_path / "ui.log"):
        for headers in ({"Host": f"rebind.test:{port}"}, {"Origin": "http://evil.example"}):
            status, answer, body = _request(base + "/config", headers)
            assert status == 403 and b"refused" in body, (headers, status)
            assert "access-control-allow-origin" not in {k.lower() for k in answer}
        assert _request(base + "/config", {"Origin": base})[0] == 200
        status, _, body = _request(f"{base}/gradio_api/file={good / 'page.html'}", {})
        assert status == 403 and b"images and videos only" in body
        status, answer, _ = _request(f"{base}/gradio_api/file={good / 'final.png'}", {})
        assert status == 200 and answer.get("x-content-type-options") == "nosniff"
        assert _request(f"{base}/gradio_api/file=http://example.com/x.png", {})[0] == 403
        boundary = "vqclipboundary"
        upload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n\r\n").encode() + b"\0" * (50 << 20) + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
        status, _, _ = _request(f"{base}/gradio_api/upload", {"Content-Type": f"multipart/form-data; boundary={boundary}"}, upload)  # fmt: skip
        assert status in (413, 0), status  # refused (or cut off) at 10 MB, not stored
        page = browser.new_page()
        page.set_default_timeout(120_000)
        assert page.goto(f"http://rebind.test:{port}/").status == 403  # the rebinding site
        page.goto(base + "/")
        page.wait_for_selector("#gallery .thumbnail-item")
        captions = page.locator("#gallery .thumbnail-item").count()
        assert captions == 2  # the unreadable run shown as such, beside the good one
        newer = generate(tiny_config.replace(max_iterations=2, seed=7, run_name="newer")).run_dir
        assert newer.is_dir()  # the list on disk changed since the page drew it
        page.locator("#gallery .thumbnail-item").nth(1).click()  # "good", drawn second
        page.wait_for_function("() => document.querySelector('#config').innerText.includes('seed')")
        assert '"seed": 5' in page.inner_text("#config")
        page.close()
        grown = sum(p.stat().st_size for p in temp.rglob("*") if p.is_file())
        assert grown < 5 << 20, f"{grown} bytes left in the temp dir"
    assert not any(temp.iterdir()), list(temp.iterdir())  # gradio's cache removed at the end


def test_the_page_outlines_the_regions_the_prompts_name(tmp_path: Path) -> None:
    from vqclip.frontends.webpage import named_regions, outline_regions, region_canvas

    assert named_regions("a red circle @left:1.5 | a green square @Right | me@example.com") == ["left", "right"]  # fmt: skip
    assert named_regions("0: a cat @top | 5: a dog @bottom") == ["top", "bottom"]
    assert named_regions("a castle @mask.png") == [] and named_regions("a:b:c:d") == []
    canvas = region_canvas("a red circle @left | a green square @right", 64, 32)
    assert canvas.shape == (128, 256, 3)  # the form's shape, 256 pixels on its long side
    assert tuple(canvas[64, 0]) == (255, 220, 0) and tuple(canvas[64, 127]) == (
        255,
        220,
        0,
    )  # @left's box
    assert tuple(canvas[64, 128]) == (0, 230, 255) and tuple(canvas[64, 255]) == (0, 230, 255)
    assert tuple(canvas[64, 64]) == (96, 96, 96)  # inside: the canvas as it was
    image = np.zeros((64, 64, 3), np.uint8)
    assert outline_regions(image, ["left"]).any() and not image.any()  # drawn on a copy
    assert not isinstance(region_canvas("a red circle", 64, 64), np.ndarray)  # nothing to draw
