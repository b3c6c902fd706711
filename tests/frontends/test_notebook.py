"""The notebook runs top to bottom in a real Jupyter kernel, and is committed clean."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path

import imageio_ffmpeg
import nbformat
import numpy as np
import pytest
from conftest import free_port, serving, video_duration
from nbclient import NotebookClient

from vqclip.run.frames import frame_paths
from vqclip.run.runstate import STATE, read_state
from vqclip.run.video import count_video_frames

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "vqgan_clip.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"


def _with_parameters(notebook: nbformat.NotebookNode, **values: object) -> nbformat.NotebookNode:
    """Insert an override cell after the cell tagged "parameters" (papermill's convention)."""
    (index,) = [
        i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])
    ]
    source = "\n".join(f"{key} = {value!r}" for key, value in values.items())
    notebook.cells.insert(
        index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    )
    return notebook


def test_committed_notebook_is_valid_and_has_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


def _execute(notebook: nbformat.NotebookNode, path: Path) -> list[dict]:
    """Run the notebook in a fresh real kernel; returns its code cells' outputs."""
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path)}}
    ).execute()
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]


def test_notebook_runs_in_a_real_kernel(tmp_path: Path) -> None:
    settings = dict(
        vqgan="shapes-vqgan", clip_model="shapes-clip", prompts="a yellow square on a black background",
        max_iterations=4, display_frequency=2, cutn=8, seed=0, output_dir=str(tmp_path / "out"),
        zoom_every=2, zoom_scale=1.1, zoom_start=2, precision="auto",
    )  # fmt: skip
    outputs = _execute(
        _with_parameters(nbformat.read(NOTEBOOK, as_version=4), **settings), tmp_path
    )
    (run_dir,) = (tmp_path / "out").iterdir()
    assert [p.name for p in frame_paths(run_dir)] == ["000000.png", "000002.png", "000004.png"]
    assert (run_dir / "video.mp4").stat().st_size > 0
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(WIDGET in o.get("data", {}) for o in outputs), "the preview widget was not displayed"
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "seed: 0" in printed and "CPU" in printed
    saved = json.loads((run_dir / "config.json").read_text())  # the form reached the config
    assert (saved["zoom_every"], saved["zoom_scale"], saved["zoom_start"]) == (2, 1.1, 2)
    assert saved["seed"] == 0 and saved["precision"] in ("fp32", "bf16")  # "auto", resolved

    # Run all again with resume_run: the same run goes on to 8 iterations, and a new video.
    settings.update(max_iterations=8, resume_run=str(run_dir))
    outputs = _execute(
        _with_parameters(nbformat.read(NOTEBOOK, as_version=4), **settings), tmp_path
    )
    assert not [o for o in outputs if o.output_type == "error"]
    assert [int(p.stem) for p in frame_paths(run_dir)] == [0, 2, 4, 6, 8]
    assert count_video_frames(run_dir / "video.mp4") == 5
    reader = imageio_ffmpeg.read_frames(str(run_dir / "video.mp4"))
    assert next(reader)["duration"] >= 3.9  # five frames last the notebook's minimum, not 0.5 s
    reader.close()
    shown = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "<video controls" in shown and 'poster="data:image/png;base64,' in shown
    aside = run_dir / "superseded-000004"
    assert sorted(p.name for p in aside.iterdir()) == ["000004.png", "final.png", "video.mp4"]


def test_notebook_previews_an_animations_motion_with_no_model(tmp_path: Path) -> None:
    notebook = _with_parameters(
        nbformat.read(NOTEBOOK, as_version=4),
        vqgan="nowhere-vqgan", clip_model="nowhere.pt", prompts="a tunnel", seed=0,
        output_dir=str(tmp_path / "out"), animation_mode="3D", max_frames=6, steps_per_frame=4,
        translation_z="0: (0), 5: (25)", rotation_3d_z="3*sin(t)", preview_motion=True,
    )  # fmt: skip
    (fetch,) = [c for c in notebook.cells if "fetch_models" in c.source]
    fetch.source = "# the models are not fetched: the preview needs none"
    outputs = _execute(notebook, tmp_path)
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert printed.count("translation_z") == 6 and "motion preview: 6 frames" in printed
    (run_dir,) = (tmp_path / "out").iterdir()
    assert len(frame_paths(run_dir)) == 6 and count_video_frames(run_dir / "video.mp4") == 6
    assert json.loads((run_dir / "config.json").read_text())["translation_z"] == "0: (0), 5: (25)"


def test_notebook_runs_a_batch_of_stories_into_a_smooth_tiled_video(tmp_path: Path) -> None:
    notebook = _with_parameters(
        nbformat.read(NOTEBOOK, as_version=4),
        vqgan="shapes-vqgan", clip_model="shapes-clip", prompts="ignored: batch_prompts replace it",
        batch_prompts=["a red circle on a blue background ^ a red square on a blue background",
                       "a green triangle on a white background"],
        max_iterations=4, display_frequency=2, cutn=8, seed=0, output_dir=str(tmp_path / "out"),
        video_length=1.5, video_interpolate=12,
    )  # fmt: skip
    outputs = _execute(notebook, tmp_path)
    assert not [o for o in outputs if o.output_type == "error"]
    (run_dir,) = (tmp_path / "out").iterdir()
    names = [p.name for p in frame_paths(run_dir)]
    assert names == [f"{i:06d}-{k}.png" for i in (0, 2, 4) for k in (0, 1)]
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["prompts"] == "" and len(saved["batch_prompts"]) == 2
    reader = imageio_ffmpeg.read_frames(str(run_dir / "video.mp4"))
    meta = next(reader)
    assert meta["size"] == (128, 64) and meta["fps"] == 12  # two 64x64 images side by side
    assert len(list(reader)) > 3  # 3 frames over 1.5 s, interpolated up to 12 a second


def test_notebook_restyles_a_video_at_its_frame_rate(tmp_path: Path) -> None:
    source = tmp_path / "in.mp4"
    writer = imageio_ffmpeg.write_frames(str(source), (64, 64), fps=4, macro_block_size=1)
    writer.send(None)
    for shade in (40, 120, 200):
        writer.send(np.full((64, 64, 3), shade, np.uint8))
    writer.close()
    notebook = _with_parameters(
        nbformat.read(NOTEBOOK, as_version=4),
        vqgan="shapes-vqgan", clip_model="shapes-clip", prompts="a blue circle on a yellow background",
        init_video=str(source), init_weight=0.5, max_iterations=2, cutn=8, seed=0,
        output_dir=str(tmp_path / "out"), frame_init_weight=0.5, upscale=2, flow_warp=True,
        flow_weight=5.0, video_gif=True,
    )  # fmt: skip
    outputs = _execute(notebook, tmp_path)
    assert not [o for o in outputs if o.output_type == "error"]
    (run_dir,) = (tmp_path / "out").iterdir()
    config = json.loads((run_dir / "config.json").read_text())  # the form's, "auto" resolved
    assert (config["init_weight"], config["frame_init_weight"]) == (0.5, 0.5)
    assert (config["flow_warp"], config["flow_weight"]) == (True, 5.0)
    assert count_video_frames(run_dir / "video.gif") == 3  # offered beside the MP4
    assert (config["upscale"], config["upscaler"]) == (2, "shapes-upscaler")
    assert [p.name for p in frame_paths(run_dir)] == ["000000.png", "000001.png", "000002.png"]
    assert (run_dir / "final_x2.png").is_file()
    reader = imageio_ffmpeg.read_frames(str(run_dir / "video.mp4"))
    meta = next(reader)
    assert meta["fps"] == 4 and meta["size"] == (128, 128)  # the input's rate; frames upscaled
    reader.close()


def test_interrupting_the_run_cell_stops_after_a_step_and_keeps_everything(
    tmp_path: Path,
) -> None:
    """The kernel interrupt a user's stop button sends (SIGINT), during a run without end."""
    notebook = _with_parameters(
        nbformat.read(NOTEBOOK, as_version=4),
        vqgan="shapes-vqgan", clip_model="shapes-clip", prompts="a red square on a white background",
        max_iterations=-1, display_frequency=2, cutn=8, seed=0, output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )

    def interrupt_once_a_state_is_saved() -> None:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "out").glob("*/state.pt")) and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(client.km.provisioner.pid, signal.SIGINT)

    with client.setup_kernel():
        watcher = threading.Thread(target=interrupt_once_a_state_is_saved)
        watcher.start()
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)  # raises if a cell fails
        watcher.join()
        client.set_widgets_metadata()  # the widgets' last state, as execute() keeps it
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "stopping after this step" in printed
    (run_dir,) = (tmp_path / "out").iterdir()
    frames = frame_paths(run_dir)
    assert len(frames) >= 2 and (run_dir / "final.png").exists()
    assert count_video_frames(run_dir / "video.mp4") == len(frames)  # the next cells ran
    assert "stopped (to go on, set resume_run" in json.dumps(notebook.metadata.get("widgets", {}))


def test_the_form_and_run_cells_run_again_after_run_all(tmp_path: Path) -> None:
    """Edit the form, re-run it, re-run the run cell: "auto" is resolved where it is used."""
    settings = dict(
        vqgan="auto", clip_model="auto", prompts="a red circle on a blue background",
        max_iterations=2, display_frequency=2, cutn=4, seed=0, output_dir=str(tmp_path / "out"),
        precision="fp32",
    )  # fmt: skip
    notebook = _with_parameters(nbformat.read(NOTEBOOK, as_version=4), **settings)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    titles = [c.source.split("\n", 1)[0] for c in notebook.cells]
    form = next(i for i, t in enumerate(titles) if t.startswith("#@title 2."))
    run = next(i for i, t in enumerate(titles) if t.startswith("#@title 4."))
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
        for index in (form, form + 1, run):  # the form, its injected values, the run
            client.execute_cell(notebook.cells[index], index)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert len(list((tmp_path / "out").iterdir())) == 2  # the first run, and the second


def test_a_complete_run_left_in_resume_run_is_shown_not_run_again(tmp_path: Path) -> None:
    from vqclip.core.config import GenerationConfig
    from vqclip.run.driver import generate

    done = generate(
        GenerationConfig(prompts="a red circle on a blue background", seed=4, max_iterations=2,
                         display_frequency=2, output_dir=str(tmp_path / "out"), precision="fp32")
    )  # fmt: skip
    before = sorted(p.name for p in done.run_dir.rglob("*"))
    settings = dict(
        resume_run=str(done.run_dir), max_iterations=0, output_dir=str(tmp_path / "out")
    )
    outputs = _execute(
        _with_parameters(nbformat.read(NOTEBOOK, as_version=4), **settings), tmp_path
    )
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "seed: 4 (the run's own)" in printed  # not a fresh pick
    after = sorted(p.name for p in done.run_dir.rglob("*"))
    assert set(before) <= set(after) and after.count("final.png") == 1  # nothing run again
    assert (done.run_dir / "video.mp4").exists()  # the video cell still ran


def test_a_bad_field_is_one_line_and_the_video_cell_skips(tmp_path: Path) -> None:
    settings = dict(vqgan="shapes-vqgan", clip_model="shapes-clip", cutn=-3, seed=0,
                    output_dir=str(tmp_path / "out"))  # fmt: skip
    outputs = _execute(
        _with_parameters(nbformat.read(NOTEBOOK, as_version=4), **settings), tmp_path
    )
    assert not [o for o in outputs if o.output_type == "error"]  # no traceback
    shown = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "error:</b> cutn: expected a positive integer, got -3" in shown
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _form(**values: object) -> str:
    """The form cell's source with some values changed, as a user types them."""
    (cell,) = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]  # fmt: skip
    source = cell.source
    for key, value in values.items():
        pattern = rf"^{key} = .*?(  #@param.*)?$"
        source, count = re.subn(pattern, lambda m, k=key, v=value: f"{k} = {v!r}{m[1] or ''}", source, flags=re.M)  # fmt: skip
        assert count == 1, key
    return source


class _NotebookPage:
    """A user's hands on the notebook in Jupyter's page: edit, run and interrupt cells, watch."""

    def __init__(self, page) -> None:
        self.page = page

    def cell(self, index: int):
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def output(self, index: int) -> str:
        return self.cell(index).locator(".jp-OutputArea").inner_text()

    def type_source(self, index: int, text: str) -> None:
        self.cell(index).locator(".cm-content").click()
        self.page.keyboard.press("Control+a")
        self.page.keyboard.insert_text(text)

    def run(self, index: int) -> None:
        self.cell(index).locator(".cm-content").click()
        self.page.keyboard.press("Shift+Enter")

    def menu(self, menu: str, item: str) -> None:
        self.page.click(f".lm-MenuBar-itemLabel:text-is('{menu}')")
        self.page.click(f".lm-Menu-itemLabel:text-is('{item}')")

    def wait_for(self, index: int, pattern: str) -> re.Match:
        """Cell ``index``'s output once it matches ``pattern``: a widget's last update may
        arrive after the kernel reports idle."""
        deadline = time.monotonic() + 60
        while not (found := re.search(pattern, self.output(index))):
            assert time.monotonic() < deadline, self.output(index)
            time.sleep(0.2)
        return found

    def wait_idle(self) -> None:
        idle = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
        self.page.wait_for_selector(idle, timeout=300_000)

    def watch_run(self, index: int) -> tuple[set[str], list[float]]:
        """Until the run cell says done or error: the preview images and progress seen."""
        images, progress = set(), []
        deadline = time.monotonic() + 300
        while not re.search(r"\b(done|error):", self.output(index)):
            assert time.monotonic() < deadline, self.output(index)
            cell = self.cell(index)
            images |= {i.get_attribute("src") or "" for i in cell.locator(".widget-image").all()}
            for bar in cell.locator(".widget-hprogress .progress-bar").all():
                progress.append(float(bar.evaluate("e => e.style.width").rstrip("%") or 0))
            time.sleep(0.2)
        return images - {""}, progress


@pytest.mark.slow
def test_the_notebook_in_a_real_browser(tmp_path: Path, browser) -> None:
    """Chromium against Jupyter: Run All, edit the prompt and re-run form then run, interrupt,
    resume from the form, make the video; the page shows what the user is promised."""
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    port, token = free_port(), "vqclip-test"
    env = {**os.environ, "VQCLIP_HOME": str(tmp_path / "home"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}  # fmt: skip
    command = [str(Path(sys.executable).parent / "jupyter"), "notebook", "--no-browser",
               "--ip", "127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0", "--allow-root",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with serving(command, f"{url}/api/status?token={token}", tmp_path, env, tmp_path / "jupyter.log"):  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(f"{url}/notebooks/{NOTEBOOK.name}?token={token}")
        notebook = _NotebookPage(page)
        notebook.wait_idle()
        # 1. Run All, a short run: the preview updates, the progress moves, a video plays.
        notebook.type_source(2, _form(max_iterations=20, seed=1))
        notebook.menu("Run", "Run All Cells")
        images, progress = notebook.watch_run(4)
        assert len(images) >= 2, "the preview image never changed"
        assert len(set(progress)) >= 3 and max(progress) >= 50, progress  # it moved, forward
        page.wait_for_selector(".jp-Cell video", timeout=120_000)
        notebook.wait_idle()
        assert video_duration(page, ".jp-Cell video") > 2
        # 2. Edit the prompt; re-run the form, then the run cell; interrupt it mid-run.
        notebook.type_source(2, _form(prompts="a green square on a white background", max_iterations=200, seed=2))  # fmt: skip
        notebook.run(2)
        notebook.wait_idle()
        notebook.run(4)
        bar = ".jp-Cell:nth-child(5) .widget-hprogress .progress-bar"
        page.wait_for_function(f"() => parseFloat(document.querySelector(\"{bar}\")?.style.width) >= 10", timeout=120_000)  # fmt: skip
        notebook.menu("Kernel", "Interrupt Kernel")
        notebook.wait_idle()
        run_dir = notebook.wait_for(4, r"set resume_run to '([^']+)'")[1]
        stopped = notebook.output(4)
        assert "green-square" in run_dir and "seed 2" in stopped
        # 3. Resume from the form, up to 40 steps, then the video of the whole run.
        notebook.type_source(2, _form(prompts="a green square on a white background", max_iterations=40, seed=2, resume_run=run_dir))  # fmt: skip
        notebook.run(2)
        notebook.wait_idle()
        notebook.run(4)
        images, _ = notebook.watch_run(4)
        notebook.wait_idle()
        assert "seed: 2 (the run's own)" in notebook.output(4) and "done:" in notebook.output(4)
        assert images, "the resumed run showed no preview"
        video = ".jp-Cell:nth-child(6) video"
        first = page.get_attribute(video, "src")  # Run All's video, until the cell replaces it
        notebook.run(5)
        changed = f"(old) => document.querySelector('{video}')?.src && document.querySelector('{video}').src !== old"  # fmt: skip
        page.wait_for_function(changed, arg=first, timeout=120_000)
        assert video_duration(page, video) > 2
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error'], .vqclip-error")
        assert errors.count() == 0 and "error:" not in page.inner_text(".jp-Notebook")
        assert read_state(Path(run_dir) / STATE)["iteration"] == 40
        page.close()


def test_colab_installs_the_release_of_this_checkout() -> None:
    """The install cell's URL names a tag, not a moving branch: the version this code carries."""
    version = tomllib.loads((NOTEBOOK.parent.parent / "pyproject.toml").read_text())["project"]["version"]  # fmt: skip
    source = nbformat.read(NOTEBOOK, as_version=4).cells[1].source
    assert re.search(rf'^repo_url = "git\+https://\S+\.git@v{re.escape(version)}"', source, re.M)
