"""Sweeps and restyles on a real local Ray cluster (ray start on 127.0.0.1, two CPUs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import free_port, png_pixels
from tests.core.test_limits import LAUGHS
from vqclip.core.config import GenerationConfig
from vqclip.frontends import cli
from vqclip.run.driver import generate
from vqclip.run.frames import frame_paths
from vqclip.scale.cluster import on_ray, stop_local_ray
from vqclip.scale.sweep import read_sweep, run_sweep

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A Ray head on 127.0.0.1 with two CPU workers, stopped at the end; yields its address.
    Only the tests that need it skip without Ray (the dev extra installs it)."""
    ray = pytest.importorskip("ray")
    home = tmp_path_factory.mktemp("ray")
    # A cluster on loopback for this test alone: no token (the driver here would need it).
    quiet = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {key: os.environ.get(key) for key in quiet}
    os.environ.update(quiet)
    env = {**os.environ, "VQCLIP_HOME": str(home / "cache")}
    port = free_port()
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
             "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
             "--temp-dir", str(home / "tmp"), "--disable-usage-stats"]  # fmt: skip
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=300)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        stop_local_ray(home / "tmp")  # this cluster only: ray stop --force ends a user's too
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


class _Flaky(BaseHTTPRequestHandler):
    """Serves an image, answering 500 to the first ``fails`` requests: a passing failure."""

    image, fails, log = b"", 0, []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.log.append(self.path)
        ok = len(self.log) > self.fails
        body = self.image if ok else b"busy"
        self.send_response(200 if ok else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.slow
def test_a_sweep_runs_retries_skips_and_shows_a_gallery(cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """Issue 35's check: 4 generations on the cluster; the one whose init image's server fails
    first request (HTTP 500) fails its first attempt and is retried by Ray, then made; a
    second start skips all 4; gallery.html shows 4 images."""
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), (200, 40, 40), np.uint8)).save(tmp_path / "red.png")
    _Flaky.image, _Flaky.fails, _Flaky.log = (tmp_path / "red.png").read_bytes(), 1, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/red.png"
    spec = {
        "name": "four", "output_dir": str(tmp_path / "out"),
        "settings": {"max_iterations": 4, "display_frequency": 2, "precision": "fp32", "device": "cpu"},
        "prompts": ["a red circle on a blue background", "a green square on a white background"],
        "seeds": [0],
        "configs": [{"prompts": "a blue triangle on a yellow background", "seed": 1},
                    {"prompts": "a red square on a black background", "seed": 2, "init_image": url}],
    }  # fmt: skip
    (tmp_path / "four.yaml").write_text(yaml.safe_dump(spec))
    try:
        cli.main(["sweep", str(tmp_path / "four.yaml"), "--address", cluster])
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr().out
    assert "done 4, skipped 0 (finished before), failed 0" in out
    assert len(_Flaky.log) == 2  # the first attempt's request failed, the retry's fetched it
    sweep_dir = tmp_path / "out" / "four"
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert len(runs) == 4 and all((r / "final.png").is_file() and (r / "video.mp4").is_file() for r in runs)  # fmt: skip
    page = (sweep_dir / "gallery.html").read_text()
    assert page.count("<figure>") == 4 and "a blue triangle on a yellow background" in page
    for run in runs:
        assert f'src="{run.name}/final.png"' in page and f'href="{run.name}/video.mp4"' in page
    again = run_sweep(read_sweep(tmp_path / "four.yaml"), cluster)
    assert again["done"] == [] and len(again["skipped"]) == 4 and again["failed"] == {}
    # Issue 45: a symlink planted at a run's name, to a stopped run elsewhere, was resumed
    # into and written through; now it is left alone, reported, and out of the gallery.
    victim = tmp_path / "victim"
    shutil.copytree(runs[1], victim)
    (victim / "final.png").unlink()
    before = {p.name: p.read_bytes() for p in victim.rglob("*") if p.is_file()}
    shutil.rmtree(runs[0])
    runs[0].symlink_to(victim)
    page_victim = tmp_path / "page_victim.html"
    page_victim.write_text("keep me")
    (sweep_dir / "gallery.html").unlink()
    (sweep_dir / "gallery.html").symlink_to(page_victim)  # the page is replaced, not followed
    planted = run_sweep(read_sweep(tmp_path / "four.yaml"), cluster)
    assert page_victim.read_text() == "keep me" and not (sweep_dir / "gallery.html").is_symlink()
    assert planted["done"] == [] and len(planted["skipped"]) == 3
    assert (
        "is a symlink or a file, not this sweep's run directory" in planted["failed"][runs[0].name]
    )
    assert {p.name: p.read_bytes() for p in victim.rglob("*") if p.is_file()} == before
    assert (sweep_dir / "gallery.html").read_text().count("<figure>") == 3


@pytest.mark.slow
def test_a_restyle_on_ray_writes_the_frames_one_process_writes(cluster: str, tiny_config: GenerationConfig, tmp_path: Path) -> None:  # fmt: skip
    import imageio_ffmpeg

    video = tmp_path / "in.mp4"
    writer = imageio_ffmpeg.write_frames(str(video), (32, 32), fps=5, macro_block_size=1)
    writer.send(None)
    for k in range(4):
        frame = np.zeros((32, 32, 3), np.uint8)
        frame[8:20, 4 + 4 * k : 16 + 4 * k] = (230, 40, 40)
        writer.send(frame)
    writer.close()
    config = tiny_config.replace(init_video=str(video), max_iterations=3, init_weight=0.5, precision="fp32")  # fmt: skip
    spread = generate(config.replace(run_name="ray"), remote=on_ray(cluster))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as Ray gives each task one thread
    try:
        alone = generate(config.replace(run_name="alone"))
    finally:
        torch.set_num_threads(threads)
    a, b = frame_paths(spread.run_dir), frame_paths(alone.run_dir)
    assert [p.name for p in a] == [p.name for p in b] == [f"{k:06d}.png" for k in range(4)]
    for x, y in zip([*a, spread.run_dir / "final.png"], [*b, alone.run_dir / "final.png"], strict=True):  # fmt: skip
        assert np.array_equal(png_pixels(x), png_pixels(y))


def test_sweep_files_are_checked_before_anything_runs(tmp_path: Path) -> None:
    cases = [
        ("[1, 2]", "holds no sweep"),
        ("prompts: [a]\nwhat: 1", "unknown keys \\['what'\\]"),
        ("prompts: a", "prompts is 'a'; expected a list"),
        ("grid: {cutn: 4}", "grid.cutn is 4; expected a list"),
        ("prompts: [a]\nsettings: {cutn: -1}", "run 0 .*cutn: expected a positive integer"),
        ("configs: [{prompts: a, run_name: x}]", "sets output_dir or run_name"),
        ("name: ../up\nprompts: [a]", "not a plain folder name"),
        ("prompts: [a]\nretries: 99", "retries is 99; expected 0 to 10"),
        ("settings: {}", "describes no runs"),
    ]
    for text, message in cases:
        (tmp_path / "s.yaml").write_text(text)
        with pytest.raises(ValueError, match=message):
            read_sweep(tmp_path / "s.yaml")
    # Issue 45: counted before the grid is built (10**9 runs from a few hundred bytes), YAML
    # aliases counted as they expand, a FIFO refused without blocking.
    grid = (
        "grid: {" + ", ".join(f"k{n}: [{', '.join(map(str, range(10)))}]" for n in range(9)) + "}"
    )
    (tmp_path / "s.yaml").write_text(f"prompts: [a]\n{grid}\n")
    with pytest.raises(ValueError, match="sweep: 1000000000 runs, over 10000"):
        read_sweep(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text(LAUGHS.replace("a: &a", "x: &a") + "prompts: *i\n")
    with pytest.raises(ValueError, match="over 200000 values"):
        read_sweep(tmp_path / "s.yaml")
    os.mkfifo(tmp_path / "fifo.yaml")
    with pytest.raises(ValueError, match="is not a regular file"):
        read_sweep(tmp_path / "fifo.yaml")
    (tmp_path / "s.yaml").write_text("prompts: [a, b]\nseeds: [0, 1]\ngrid: {cutn: [4, 8]}\n")
    sweep = read_sweep(tmp_path / "s.yaml")
    assert len(sweep.runs) == 8 and len({r["run_name"] for r in sweep.runs}) == 8
    assert sweep.varied == ("cutn", "prompts", "seed")
    assert read_sweep(tmp_path / "s.yaml").runs == sweep.runs  # names are stable: restarts skip


def test_ray_with_frames_that_follow_or_without_a_video_is_refused(tiny_config: GenerationConfig) -> None:  # fmt: skip
    with pytest.raises(ValueError, match="--ray: spreads a restyle's frames"):
        generate(tiny_config, remote=on_ray("local"))
    for follow in ({"frame_init_weight": 0.5}, {"flow_warp": True}):
        with pytest.raises(ValueError, match="made one after another"):
            generate(tiny_config.replace(init_video="in.mp4", **follow), remote=on_ray("local"))


def test_stopping_a_local_ray_ends_its_processes_and_no_one_elses(tmp_path: Path) -> None:
    """What the fixture above does instead of ``ray stop --force``: the processes that name the
    instance's temp folder and their children end; a process of another instance (another
    folder) goes on. Real processes, no Ray needed."""
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"  # fmt: skip
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    started = [subprocess.Popen([sys.executable, "-c", code, f"--temp-dir={d}"]) for d in (ours, theirs)]  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(_children(p.pid) for p in started):
            time.sleep(0.05)  # each has started its child
        (child,) = _children(started[0].pid)
        assert stop_local_ray(ours, grace=5) == 2
        assert started[0].wait(timeout=10) is not None and _ended(child)
        assert started[1].poll() is None and _children(started[1].pid)
    finally:
        for process in started:
            for pid in _children(process.pid):
                os.kill(pid, 9)
            process.kill()
            process.wait()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _ended(pid: int) -> bool:
    """Gone, or a zombie (ended; whoever adopted it has not yet collected it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
