"""Shared fixtures: tiny real-architecture models saved in the real formats."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import hypothesis.configuration
import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.core.config import GenerationConfig

# The suite's own model cache and precision choice: a probe timed while the suite loads the
# machine would otherwise be kept for the user's runs.
os.environ["VQCLIP_HOME"] = tempfile.mkdtemp(prefix="vqclip-tests-home-")
atexit.register(shutil.rmtree, os.environ["VQCLIP_HOME"], ignore_errors=True)
# Nothing of the suite's own in the checkout or the user's home: hypothesis's example database,
# IPython's profile and Jupyter's runtime files (the notebook tests' kernels) go to temp folders.
_SANDBOX = tempfile.mkdtemp(prefix="vqclip-tests-sandbox-")
atexit.register(shutil.rmtree, _SANDBOX, ignore_errors=True)
hypothesis.configuration.set_hypothesis_home_dir(os.path.join(_SANDBOX, "hypothesis"))
os.environ["IPYTHONDIR"] = os.path.join(_SANDBOX, "ipython")
os.environ["JUPYTER_RUNTIME_DIR"] = os.path.join(_SANDBOX, "jupyter-runtime")

TINY_VQGAN = {
    "double_z": False, "z_channels": 32, "resolution": 32, "in_channels": 3, "out_ch": 3,
    "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}  # fmt: skip
TINY_CLIP = {
    "embed_dim": 32, "image_resolution": 32, "vision_layers": 1, "vision_width": 64,
    "vision_patch_size": 8, "context_length": 16, "vocab_size": 49408,
    "transformer_width": 64, "transformer_heads": 1, "transformer_layers": 1,
}  # fmt: skip


# A second perceptor of another input size, for ensembles: a ViT reading 48x48.
TINY_CLIP_48 = {**TINY_CLIP, "image_resolution": 48, "vision_patch_size": 16}
# An OpenCLIP model in open_clip's own config format (its hub's open_clip_config.json).
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
OPEN_CLIP_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


# Tests talk to loopback only: any connection (or DNS lookup) for another address from this
# process is refused and recorded, and the test that made it fails, even where a library
# catches the error. UDP "connects" send nothing (Ray finds its own address that way).
_REACHED: list[str] = []
_LOOPBACK_NAMES = {"localhost", "::1", "0.0.0.0", "::", ""}


def _is_loopback(host: object) -> bool:
    host = host.decode() if isinstance(host, bytes) else str(host)
    return host in _LOOPBACK_NAMES or host.startswith(("127.", "::ffff:127."))


def _guarded(method):  # noqa: ANN001, ANN202
    def connect(sock: socket.socket, address, *args):  # noqa: ANN001, ANN202
        streams = sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM  # fmt: skip
        if streams and not _is_loopback(address[0]):
            _REACHED.append(f"{method.__name__} {address}")
            raise ConnectionRefusedError(f"tests talk to loopback only, not {address}")
        return method(sock, address, *args)

    return connect


def _lookup(real):  # noqa: ANN001, ANN202
    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001, ANN202
        if host is not None and not _is_loopback(host):
            _REACHED.append(f"getaddrinfo {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"tests resolve loopback names only, not {host!r}")  # fmt: skip
        return real(host, *args, **kwargs)

    getaddrinfo.reached = _REACHED  # for the test of this guard, whatever name imported it
    return getaddrinfo


@pytest.fixture(scope="session", autouse=True)
def _loopback_only():
    saved = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
    socket.socket.connect = _guarded(saved[0])
    socket.socket.connect_ex = _guarded(saved[1])
    socket.getaddrinfo = _lookup(saved[2])
    yield
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = saved


@pytest.fixture(autouse=True)
def _no_test_leaves_loopback():
    _REACHED.clear()
    yield
    reached, _REACHED[:] = list(_REACHED), []
    assert not reached, f"the test reached beyond loopback: {reached}"


def assert_pickled_code_refused(load, path: Path) -> None:  # noqa: ANN001
    """``load(path)`` refuses, with a ValueError, a pickle written at ``path`` that would run
    code if plainly unpickled (touch a marker beside it), and the code never runs."""
    marker = path.with_name(f"{path.name}.ran")

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    torch.save({"x": Payload()}, path)
    with pytest.raises(ValueError):
        load(path)
    assert not marker.exists()


def png_pixels(path: Path) -> np.ndarray:
    """A saved image's pixels, as written."""
    with Image.open(path) as image:
        return np.asarray(image)


def tiny_vqgan_spec(target: str = "taming.models.vqgan.VQModel"):
    from vqclip.models.vqgan_clip import VQGANSpec

    gumbel = target.endswith("GumbelVQ")
    return VQGANSpec(target, dict(TINY_VQGAN), 64, 32 if gumbel else 16, gumbel, "")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A randomly initialised tiny VQGAN (YAML + ckpt) and CLIP (state dict), saved once."""
    from vqclip.models.openclip import build_open_clip, save_open_clip
    from vqclip.models.vqgan_clip import build_clip, build_vqgan, save_clip, save_vqgan

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    vqgan = build_vqgan(tiny_vqgan_spec())
    # Spread the codebook like a trained one (taming initialises it in a tiny range).
    vqgan.codebook.data.normal_(0, 1)
    save_vqgan(vqgan, root / "vqgan.yaml", root / "vqgan.ckpt")
    save_clip(build_clip(**TINY_CLIP), root / "clip.pt", fp16=False)
    save_clip(build_clip(**TINY_CLIP_48), root / "clip48.pt", fp16=False)
    open_clip = save_open_clip(build_open_clip(TINY_OPEN_CLIP), root / "open_clip", TINY_OPEN_CLIP, OPEN_CLIP_PREPROCESS)  # fmt: skip
    return {"yaml": root / "vqgan.yaml", "ckpt": root / "vqgan.ckpt", "clip": root / "clip.pt",
            "clip48": root / "clip48.pt", "open_clip": open_clip}  # fmt: skip


def tiny_rrdb_state(scale: int = 4, features: int = 8, blocks: int = 1) -> dict:
    """A random Real-ESRGAN RRDBNet as its release files hold it: basicsr's key names under
    ``params_ema`` (growth channels 32, as Real-ESRGAN's; x2 and x1 unshuffle their input)."""
    g = torch.Generator().manual_seed(scale)
    grow, inputs = 32, 3 * {4: 1, 2: 4, 1: 16}[scale]
    shapes = {"conv_first": (features, inputs)}
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                out = features if c == 5 else grow
                shapes[f"body.{b}.rdb{r}.conv{c}"] = (out, features + (c - 1) * grow)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (features, features)
    shapes["conv_last"] = (3, features)
    state = {}
    for name, (out, into) in shapes.items():
        state[f"{name}.weight"] = torch.randn(out, into, 3, 3, generator=g) * 0.05
        state[f"{name}.bias"] = torch.zeros(out)
    return {"params_ema": state}


@pytest.fixture(scope="session")
def tiny_upscalers(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Tiny random Real-ESRGAN x4 and x2 models, saved as their release files are (.pth)."""
    root = tmp_path_factory.mktemp("upscalers")
    paths = {}
    for scale in (4, 2):
        paths[scale] = root / f"RealESRGAN_x{scale}plus_tiny.pth"
        torch.save(tiny_rrdb_state(scale), paths[scale])
    return paths


@pytest.fixture
def tiny_config(tiny_models: dict[str, Path], tmp_path: Path) -> GenerationConfig:
    """A fast config on the tiny models: 32x32, 8 cutouts, no augments, CPU; the rest from the
    classic preset, resolved here so that tests read its values."""
    from vqclip.core import presets

    return presets.apply(
        GenerationConfig(
            prompts="a red circle",
            vqgan=str(tiny_models["yaml"]),
            clip_model=str(tiny_models["clip"]),
            width=32,
            height=32,
            cutn=8,
            augments=(),
            max_iterations=10,
            display_frequency=5,
            seed=1,
            device="cpu",
            precision="fp32",  # the same arithmetic on every CPU (auto's tests name auto)
            output_dir=str(tmp_path / "outputs"),
        )
    )


# Debian's chromium, driven by Playwright (its own browser download does not work here); the
# flags keep it off the network, which these machines close.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--host-resolver-rules=MAP rebind.test 127.0.0.1"]  # fmt: skip
# rebind.test: a second name for loopback, as a DNS-rebinding site would have it.


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium for the page tests (.ci/run installs Debian's package)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(command: list[str], url: str, cwd: Path, env: dict[str, str], log: Path):
    """Run a server process until ``url`` answers; stop it (and its children) afterwards."""
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"{command[0]} ended: {log.read_text()[-2000:]}"
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{url} never answered: {log.read_text()[-2000:]}"  # fmt: skip
                time.sleep(0.5)
        yield server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def video_duration(page, selector: str) -> float:
    """The duration, in seconds, that the browser reads from a page's <video> (NaN: unplayable)."""
    return page.evaluate(
        """async (selector) => {
            const video = document.querySelector(selector);
            if (!(video.duration > 0)) await new Promise(done => {
                video.addEventListener('loadedmetadata', done); setTimeout(done, 20000); });
            return video.duration;
        }""",
        selector,
    )
