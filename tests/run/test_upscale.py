"""Upscaling: spandrel builds Real-ESRGAN-format files that vqclip reads weights-only; the CLI,
runs and videos upscale; hostile files are refused; the registry's models download."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.conftest import png_pixels, tiny_rrdb_state
from vqclip.core.config import GenerationConfig
from vqclip.core.images import image_tensor
from vqclip.frontends import cli
from vqclip.models import registry
from vqclip.run.driver import generate
from vqclip.run.frames import read_png_metadata
from vqclip.run.upscale import LANCZOS, load_upscaler, upscale_file
from vqclip.shapes.data import sample_scenes


def test_spandrel_builds_a_real_esrgan_file_read_weights_only(tiny_upscalers: dict) -> None:
    for scale, path in tiny_upscalers.items():
        upscaler = load_upscaler(str(path))
        assert upscaler.scale == scale and type(upscaler.model.model).__name__ == "RRDBNet"
        weights = tiny_rrdb_state(scale)["params_ema"]
        loaded = upscaler.model.model.state_dict()
        assert sum(v.numel() for v in loaded.values()) == sum(v.numel() for v in weights.values())
        assert torch.equal(loaded["model.0.weight"], weights["conv_first.weight"])
        image = torch.rand(2, 3, 12, 20)
        assert upscaler(image, 4).shape == (2, 3, 48, 80)  # an x2 model's result, then Lanczos
        assert upscaler(image, scale).shape == (2, 3, 12 * scale, 20 * scale)
        assert torch.equal(upscaler(image, 1), image)


def test_tiles_with_enough_context_add_up_to_the_whole(tiny_upscalers: dict) -> None:
    upscaler = load_upscaler(str(tiny_upscalers[4]))
    image = torch.rand(1, 3, 40, 28, generator=torch.Generator().manual_seed(0))
    whole = upscaler(image, 4, tile=64)
    tiled = upscaler(image, 4, tile=16, pad=24)  # 6 tiles; the tiny model sees < 24 pixels out
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_lanczos_needs_no_weights() -> None:
    ramp = torch.linspace(0, 1, 14)  # a smooth image: what it enlarges, averaged back, is it
    image = torch.stack([ramp.expand(10, 14), ramp.flip(0).expand(10, 14), torch.full((10, 14), 0.5)])[None]  # fmt: skip
    out = load_upscaler(LANCZOS)(image, 3)
    assert out.shape == (1, 3, 30, 42)
    assert (F.avg_pool2d(out, 3) - image).abs().mean() < 0.02


def _shapes_image(path: Path) -> np.ndarray:
    from vqclip.shapes.data import render

    pixels = (render(sample_scenes(1, torch.Generator().manual_seed(3)))[0] * 255).round()
    Image.fromarray(pixels.byte().permute(1, 2, 0).numpy()).save(path)
    return png_pixels(path)


def test_the_cli_writes_a_4x_copy_close_to_the_image_with_its_text(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = tmp_path / "shapes.png"
    pixels = _shapes_image(source)
    cli.main(["upscale", str(source)])  # the default: shapes-upscaler, bundled
    out = tmp_path / "shapes_x4.png"
    assert str(out) in capsys.readouterr().out
    big = png_pixels(out)
    assert big.shape == (256, 256, 3)
    back = F.avg_pool2d(image_tensor(big), 4)  # the image, as the world renders it smaller
    error = (back - image_tensor(pixels)).abs().mean().item()
    print(f"shapes-upscaler x4, 4x4 average back: mean error {error * 255:.2f} levels of 255")
    assert error < 4 / 255
    # Nearest neighbour gives the image back exactly too: what was written is the bundled
    # model's upscale (its quality against nearest and Lanczos over 64 held-out scenes:
    # test_shapes.py's test_the_shipped_upscaler_beats_lanczos_and_nearest_on_held_out_scenes).
    model = load_upscaler("shapes-upscaler")(image_tensor(pixels), 4)[0]
    assert np.abs(big.astype(int) - model.permute(1, 2, 0).mul(255).round().numpy()).max() <= 1
    assert np.abs(big.astype(int) - pixels.repeat(4, 0).repeat(4, 1)).max() > 32
    text = read_png_metadata(out)
    assert json.loads(text["upscale"]) == {"scale": 4, "model": "shapes-upscaler", "source": "shapes.png"}  # fmt: skip
    with pytest.raises(SystemExit) as stop:  # a second time: refuses to overwrite, one line
        cli.main(["upscale", str(source)])
    assert stop.value.code == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_a_run_upscales_its_finals_and_frames(
    tiny_config: GenerationConfig, tiny_upscalers: dict, capsys: pytest.CaptureFixture
) -> None:
    config = tiny_config.replace(upscale=2, upscaler=str(tiny_upscalers[2]), batch_size=2)
    result = generate(config)
    assert [p.name for p in result.upscaled] == ["final-0_x2.png", "final-1_x2.png"]
    for path in result.upscaled:
        assert png_pixels(path).shape == (64, 64, 3)
        text = read_png_metadata(path)
        assert GenerationConfig.from_json(text["config"]) == result.config  # the run's settings
        assert json.loads(text["upscale"])["model"] == str(tiny_upscalers[2])
    # `vqclip upscale RUN_DIR` takes the run's upscaler; `vqclip video --upscale` the frames.
    cli.main(["upscale", str(result.run_dir), "--scale", "4"])
    assert len(list(result.run_dir.glob("final-*_x4.png"))) == 2
    assert f"({tiny_upscalers[2]}, x4)" in capsys.readouterr().out
    cli.main(["video", str(result.run_dir), "--upscale", "3", "--upscaler", "lanczos"])
    reader = imageio_ffmpeg.read_frames(str(result.run_dir / "video.mp4"))
    assert next(reader)["size"] == (192, 96)  # two 96x96 images side by side
    reader.close()


def test_generate_with_upscale_and_video_on_the_cli(
    tiny_models: dict, tiny_upscalers: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cli.main([
        "generate", "a red square", "--vqgan", str(tiny_models["yaml"]), "--clip_model",
        str(tiny_models["clip"]), "--width", "32", "--height", "32", "--cutn", "4", "--augments",
        "--max_iterations", "2", "--seed", "3", "--device", "cpu", "--output_dir", str(out),
        "--upscale", "4", "--upscaler", str(tiny_upscalers[4]), "--video",
    ])  # fmt: skip
    (run,) = out.iterdir()
    assert png_pixels(run / "final_x4.png").shape == (128, 128, 3)
    reader = imageio_ffmpeg.read_frames(str(run / "video.mp4"))
    assert next(reader)["size"] == (128, 128)  # frames upscaled before assembly
    reader.close()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: torch.save({"weight": torch.zeros(3)}, p), "no architecture spandrel knows"),
        (lambda p: p.write_bytes(b"not a checkpoint"), "upscaler"),
        (
            lambda p: torch.save(
                {**tiny_rrdb_state(4)["params_ema"], "body.900.rdb1.conv1.weight": torch.zeros(1)},
                p,
            ),
            "cannot build a model",
        ),  # keys that claim 901 blocks: refused on the meta device, before any allocation
        (
            lambda p: torch.save(
                {**tiny_rrdb_state(4)["params_ema"], "conv_last.weight": torch.zeros(3, 5, 3, 3)}, p
            ),
            "cannot build a model",
        ),
        (
            lambda p: torch.save({"conv_first.weight": torch.zeros(1).expand(201_000_000)}, p),
            "holds over 200000000 weights",
        ),
        (  # issue 45: gave a black final_x4 with exit 0
            lambda p: torch.save(
                {k: v.fill_(float("nan")) for k, v in tiny_rrdb_state(4)["params_ema"].items()}, p
            ),  # fmt: skip
            "weights that are NaN or infinite",
        ),
    ],
)
def test_hostile_or_wrong_upscaler_files_are_one_line_errors(
    tmp_path: Path, make, message: str
) -> None:  # noqa: ANN001
    path = tmp_path / "bad.pth"
    make(path)
    with pytest.raises(ValueError, match=message) as error:
        load_upscaler(str(path))
    assert "\n" not in str(error.value)


def test_a_torchscript_upscaler_is_refused_unrun(tmp_path: Path) -> None:
    from vqclip.models.checkpoints import UnsafeCheckpointError

    scripted = torch.jit.script(torch.nn.Conv2d(3, 3, 3))
    scripted.save(str(tmp_path / "model.pt"))
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        load_upscaler(str(tmp_path / "model.pt"))


def test_bad_upscale_settings_are_clear_errors(
    tiny_config: GenerationConfig, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(ValueError, match=r"upscale: expected one of \[1, 2, 3, 4\], got 8"):
        tiny_config.replace(upscale=8)
    with pytest.raises(ValueError, match="upscaler: unknown model 'nope'"):
        generate(tiny_config.replace(upscale=2, upscaler="nope"))
    assert not Path(tiny_config.output_dir).exists()  # refused before the run
    with pytest.raises(ValueError, match="over 64000000 pixels"):
        generate(tiny_config.replace(width=4096, height=4096, upscale=2, upscaler="lanczos"))
    for argv, text in (
        (["upscale", str(tmp_path / "missing.png")], "does not exist"),
        (["upscale", str(tmp_path), "--scale", "5"], "upscale: expected one of"),
        (["upscale", str(tmp_path)], "holds no final image"),
    ):
        with pytest.raises(SystemExit) as stop:
            cli.main([*argv, "--model", "lanczos"])
        assert stop.value.code == 2 and text in capsys.readouterr().err


class _Files(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        data = self.files.get(self.path.strip("/"))
        self.send_response(200 if data else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")


def test_a_registry_upscaler_downloads_checked_then_loads(
    tiny_upscalers: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"RealESRGAN_x4plus", "RealESRGAN_x2plus"} <= set(registry.model_names("upscaler"))
    assert all(f.sha256 and f.urls for n in ("RealESRGAN_x4plus", "RealESRGAN_x2plus") for f in registry.REGISTRY[n].files)  # fmt: skip
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path / "cache"))
    data = tiny_upscalers[4].read_bytes()
    _Files.files = {"up.pth": data}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/up.pth"
        for sha, fine in ((hashlib.sha256(b"other").hexdigest(), False), (hashlib.sha256(data).hexdigest(), True)):  # fmt: skip
            file = registry.ModelFile("up.pth", (url,), sha)
            monkeypatch.setitem(registry.REGISTRY, "test-up", registry.ModelEntry("test-up", "upscaler", (file,), 1))  # fmt: skip
            if fine:
                assert load_upscaler("test-up").scale == 4
            else:
                with pytest.raises(Exception, match="SHA-256 mismatch"):
                    load_upscaler("test-up")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (tmp_path / "cache" / "test-up" / "up.pth").read_bytes() == data


def test_upscale_file_never_writes_through_a_symlink(tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(source)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "a_x2.png").symlink_to(victim)
    with pytest.raises(FileExistsError):
        upscale_file(source, 2, load_upscaler(LANCZOS))
    assert victim.read_text() == "keep"
