"""Downloads against a real HTTP server on 127.0.0.1 that also misbehaves on purpose."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import assert_pickled_code_refused
from vqclip.models import registry
from vqclip.models.download import CHUNK, DownloadError, download, ensure_file, fetch_url
from vqclip.models.vqgan_clip import load_vqgan


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list[tuple[str, str | None]] = []
    dropped: set[str] = set()

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, length: int | None = None, kind: str = "application/octet-stream", extra: dict | None = None) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _stream(self, block: bytes, pause: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.close_connection = True
        try:
            for _ in range(100_000):
                self.wfile.write(block[:1] if pause else block)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what the test wants

    def _send_slowly(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        for start in range(0, len(data), len(data) // 20 + 1):
            self.wfile.write(data[start : start + len(data) // 20 + 1])
            self.wfile.flush()
            time.sleep(0.05)

    def do_GET(self) -> None:  # noqa: N802
        route, _, name = self.path.strip("/").partition("/")
        self.log.append((self.path, self.headers.get("Range")))
        data = self.files.get(name, b"")
        if route == "404":
            return self._send(404, b"not found")
        if route == "500":
            return self._send(500, b"server error")
        if route == "html":
            return self._send(200, b"<!DOCTYPE html><html>quota exceeded</html>", kind="text/html")
        if route == "html-as-binary":
            return self._send(200, b"  <html><body>Sign in</body></html>")
        if route == "truncated":  # always promises the whole file, sends half, ignores Range
            self._send(200, data[: len(data) // 2], length=len(data))
            self.close_connection = True
            return None
        if route == "no-range" and self.headers.get("Range"):  # 416 to any Range, as some CDNs
            return self._send(416, b"", extra={"Content-Range": f"bytes */{len(data)}"})
        if route in ("endless", "drip"):  # no Content-Length; never ends, or one byte at a time
            return self._stream(data or b"\0" * CHUNK, 0.05 if route == "drip" else 0.0)
        if route == "slow":  # the whole file, slowly, so that two fetches overlap
            return self._send_slowly(data)
        offset = (
            int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        )
        if route == "drop" and self.path not in self.dropped:  # the first answer breaks mid-file
            self.dropped.add(self.path)
            self._send(200, data[: len(data) // 3], length=len(data))
            self.close_connection = True
            return None
        if offset:
            extra = {"Content-Range": f"bytes {offset}-{len(data) - 1}/{len(data)}"}
            return self._send(206, data[offset:], extra=extra)
        return self._send(200, data)


@pytest.fixture
def server(tiny_models: dict[str, Path]):
    """A loopback HTTP server serving a VQGAN (YAML + checkpoint); yields its base URL."""
    _Handler.files = {
        "model.ckpt": tiny_models["ckpt"].read_bytes(),
        "model.yaml": tiny_models["yaml"].read_bytes(),
    }
    _Handler.log, _Handler.dropped = [], set()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _entry(base: str, ckpt_urls: tuple[str, ...], sha: str | None = None) -> registry.ModelEntry:
    files = (
        registry.ModelFile("test.yaml", (f"{base}/ok/model.yaml",), kind="yaml"),
        registry.ModelFile("test.ckpt", ckpt_urls, sha),
    )
    return registry.ModelEntry("test_vqgan", "vqgan", files, 1)


def test_download_then_cache_hit_with_server_stopped(server: str, home: Path, tiny_models: dict, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setitem(
        registry.REGISTRY, "test_vqgan", _entry(server, (f"{server}/ok/model.ckpt",))
    )
    yaml_path, ckpt_path = registry.resolve_vqgan("test_vqgan")
    assert ckpt_path == home / "test_vqgan" / "test.ckpt"
    assert ckpt_path.read_bytes() == tiny_models["ckpt"].read_bytes()
    recorded = (ckpt_path.parent / "test.ckpt.sha256").read_text().strip()
    assert recorded == hashlib.sha256(ckpt_path.read_bytes()).hexdigest()
    load_vqgan(yaml_path, ckpt_path)
    requests = len(_Handler.log)
    monkeypatch.setitem(
        registry.REGISTRY, "test_vqgan", _entry("http://127.0.0.1:9", ("http://127.0.0.1:9/x",))
    )
    assert registry.resolve_vqgan("test_vqgan") == (yaml_path, ckpt_path)  # no server needed
    assert len(_Handler.log) == requests
    with open(ckpt_path, "r+b") as f:  # a cached file that changes later is caught
        f.write(b"XX")
    with pytest.raises(DownloadError, match="does not match its SHA-256"):
        registry.resolve_vqgan("test_vqgan")


def test_resume_after_dropped_connection_uses_range(
    server: str, tmp_path: Path, tiny_models: dict
) -> None:
    path = download((f"{server}/drop/model.ckpt",), tmp_path / "m.ckpt")
    assert path.read_bytes() == tiny_models["ckpt"].read_bytes()
    (first, first_range), (second, second_range) = _Handler.log
    size = len(tiny_models["ckpt"].read_bytes())
    assert first_range is None and second_range == f"bytes={size // 3}-"
    assert not (tmp_path / "m.ckpt.part").exists()


def test_mirror_fallback_after_404_and_500(server: str, tmp_path: Path, tiny_models: dict) -> None:
    urls = (f"{server}/404/model.ckpt", f"{server}/500/model.ckpt", f"{server}/ok/model.ckpt")
    path = download(urls, tmp_path / "m.ckpt")
    assert path.read_bytes() == tiny_models["ckpt"].read_bytes()
    assert [p for p, _ in _Handler.log] == ["/404/model.ckpt", "/500/model.ckpt", "/ok/model.ckpt"]


@pytest.mark.parametrize(
    "route, message",
    [("truncated", "connection closed after"), ("html", "HTML"), ("html-as-binary", "HTML")],
)
def test_truncated_and_html_bodies_are_rejected(
    server: str, tmp_path: Path, route: str, message: str
) -> None:
    with pytest.raises(DownloadError, match=message):
        download((f"{server}/{route}/model.ckpt",), tmp_path / "m.ckpt", retries=2)
    assert not (tmp_path / "m.ckpt").exists()


def test_wrong_kind_is_rejected(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="not YAML|not a VQGAN config"):
        download((f"{server}/ok/model.ckpt",), tmp_path / "m.yaml", kind="yaml")
    with pytest.raises(DownloadError, match="not a PyTorch checkpoint"):
        download((f"{server}/ok/model.yaml",), tmp_path / "m.ckpt", kind="checkpoint")


def test_sha256_mismatch_is_refused_and_not_kept(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download((f"{server}/ok/model.ckpt",), tmp_path / "m.ckpt", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_offline_error_names_url_cache_path_and_what_to_do(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "http://127.0.0.1:9/model.ckpt"  # port 9 (discard): nothing listens there
    monkeypatch.setitem(registry.REGISTRY, "test_vqgan", _entry("http://127.0.0.1:9", (url,)))
    with pytest.raises(DownloadError) as error:
        registry.resolve_vqgan("test_vqgan")
    text = str(error.value)
    assert "http://127.0.0.1:9/ok/model.yaml" in text
    assert str(home / "test_vqgan" / "test.yaml") in text and "by hand" in text


def test_ensure_file_without_fetch_does_not_download(home: Path, server: str) -> None:
    file = registry.ModelFile("x.ckpt", (f"{server}/ok/model.ckpt",))
    with pytest.raises(DownloadError, match="not in the cache"):
        ensure_file(file, home, fetch=False)
    assert _Handler.log == []


def test_registry_covers_the_known_models() -> None:
    from vqclip.models.vqgan_clip import clip

    assert set(clip.available_models()) <= set(registry.model_names("clip"))
    for name in (
        "imagenet_f16_1024",
        "imagenet_f16_16384",
        "openimages_f8_8192",
        "wikiart_f16_16384",
        "sflckr",
        "coco",
    ):
        entry = registry.REGISTRY[name]
        assert entry.family == "vqgan" and all(f.urls for f in entry.files)
    assert len(registry.REGISTRY["imagenet_f16_16384"].files[1].urls) == 2  # source and mirror


def test_images_by_url_are_fetched_once_and_match_local_files(
    server: str, home: Path, tiny_config, tmp_path: Path
) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from vqclip.run.driver import generate

    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[8:24, 8:24] = (220, 30, 30)
    local = tmp_path / "init.png"
    Image.fromarray(pixels).save(local)
    _Handler.files["init.png"] = local.read_bytes()
    url = f"{server}/ok/init.png"
    by_url = tiny_config.replace(
        init_image=url, init_weight=0.5, image_prompts=f"{url}:0.5", target_images=url
    )
    fetched = generate(by_url)
    assert [path for path, _ in _Handler.log] == ["/ok/init.png"]  # one download, then cached
    by_path = by_url.replace(
        init_image=str(local), image_prompts=f"{local}:0.5", target_images=str(local)
    )
    assert torch.equal(fetched.image, generate(by_path).image)


def test_an_html_page_as_init_image_is_refused_before_any_run(
    server: str, home: Path, tiny_config
) -> None:
    from vqclip.run.driver import generate

    with pytest.raises(DownloadError, match="^init_image: .*HTML"):
        generate(tiny_config.replace(init_image=f"{server}/html/init.png"))
    assert not Path(tiny_config.output_dir).exists()
    assert not list((home / "images").glob("*.png"))


def test_two_processes_fetching_one_file_end_with_one_intact_file(
    server: str, tmp_path: Path, tiny_models: dict
) -> None:
    """Before the folder lock, both appended to one .part: a file of the wrong length, and a
    raw FileNotFoundError in the process whose .part was renamed away."""
    target = tmp_path / "cache" / "m.ckpt"
    # Each process says it is ready and waits for the other, so that both ask at once; each
    # prints when its download call began and ended.
    code = (
        "import sys, time; from pathlib import Path; from vqclip.models.download import download; "
        "ready = Path(sys.argv[3]); (ready / sys.argv[4]).touch(); "
        "stop = time.monotonic() + 60\n"
        "while len(list(ready.iterdir())) < 2 and time.monotonic() < stop: time.sleep(0.01)\n"
        "began = time.time(); download((sys.argv[1],), Path(sys.argv[2])); "
        "print(began, time.time())"
    )
    (tmp_path / "ready").mkdir()
    command = [sys.executable, "-c", code, f"{server}/slow/model.ckpt", str(target), str(tmp_path / "ready")]  # fmt: skip
    runs = [subprocess.Popen([*command, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(2)]  # fmt: skip
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    (began_a, ended_a), (began_b, ended_b) = [map(float, out.split()) for out, _ in outputs]
    assert max(began_a, began_b) < min(ended_a, ended_b)  # they overlapped
    assert target.read_bytes() == tiny_models["ckpt"].read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.ckpt", "m.ckpt.sha256"]
    # One fetch: the second waited for the folder's lock, then found and verified the file.
    assert [path for path, _ in _Handler.log] == ["/slow/model.ckpt"]


def test_a_complete_part_against_a_server_that_answers_416(
    server: str, tmp_path: Path, tiny_models: dict
) -> None:
    """Killed while hashing, before the rename: the .part is whole, and a Range gets 416."""
    data = tiny_models["ckpt"].read_bytes()
    (tmp_path / "m.ckpt.part").write_bytes(data)
    assert download((f"{server}/no-range/model.ckpt",), tmp_path / "m.ckpt").read_bytes() == data
    (tmp_path / "n.ckpt.part").write_bytes(b"not a prefix of the file")  # 416 too: start again
    assert download((f"{server}/no-range/model.ckpt",), tmp_path / "n.ckpt").read_bytes() == data


def test_downloads_are_capped_in_bytes_and_time(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="exceeds the cap of 3145728 bytes"):
        download((f"{server}/endless/x",), tmp_path / "a.ckpt", max_bytes=3 << 20)
    with pytest.raises(DownloadError, match="exceed the cap of 1000 bytes"):  # Content-Length
        download((f"{server}/ok/model.ckpt",), tmp_path / "b.ckpt", max_bytes=1000)
    started = time.monotonic()
    with pytest.raises(DownloadError, match="download deadline"):
        download((f"{server}/drip/x",), tmp_path / "c.ckpt", deadline=1.0)
    assert time.monotonic() - started < 30  # one deadline, not one per retry of a slow read
    assert list(tmp_path.iterdir()) == []  # nothing half-fetched is kept


def test_an_image_url_is_refused_at_its_first_bytes(server: str, tmp_path: Path) -> None:
    """An endless stream that is no image: refused as one, not read up to the cap first."""
    with pytest.raises(DownloadError, match="not an image"):
        fetch_url(f"{server}/endless/huge.png", tmp_path)
    assert list(tmp_path.iterdir()) == []


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` x ``height`` pixels, in a few dozen bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [12_000, 40_000])  # over vqclip's cap; over PIL's bomb limit
def test_a_decompression_bomb_is_a_clear_error_and_leaves_nothing(
    server: str, home: Path, tiny_config, side: int
) -> None:
    from vqclip.run.driver import generate

    _Handler.files["bomb.png"] = _bomb_png(side, side)
    with pytest.raises(DownloadError, match=f"init_image: .*(pixels|{side})"):
        generate(tiny_config.replace(init_image=f"{server}/ok/bomb.png"))
    assert list((home / "images").iterdir()) == []
    local = home.parent / "bomb.png"
    local.write_bytes(_bomb_png(side, side))
    with pytest.raises(ValueError, match="init_image: .*pixels"):
        generate(tiny_config.replace(init_image=str(local)))


def test_a_cached_url_image_is_checked_on_every_use(
    server: str, home: Path, tiny_models: dict, tmp_path: Path
) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "red.png")
    _Handler.files["red.png"] = (tmp_path / "red.png").read_bytes()
    url = f"{server}/ok/red.png"
    path = fetch_url(url, home / "images")
    assert fetch_url(url, home / "images") == path and len(_Handler.log) == 1
    Image.new("RGB", (8, 8), (0, 0, 200)).save(path)  # the cached copy changed under us
    os.utime(path, ns=(0, 0))
    with pytest.raises(DownloadError, match="does not match its SHA-256"):
        fetch_url(url, home / "images")


@pytest.mark.parametrize("name", ["m.ckpt", "m.ckpt.part", "m.ckpt.sha256"])
def test_no_planted_symlink_in_the_cache_is_written_through(
    server: str, tmp_path: Path, name: str
) -> None:
    """Every name a download writes (the file, its partial file, its recorded hash): a link
    planted there is replaced, never followed."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / name).symlink_to(victim)
    path = download((f"{server}/ok/model.ckpt",), tmp_path / "cache" / "m.ckpt")
    assert victim.read_bytes() == b"keep me"
    assert not path.is_symlink() and path.read_bytes() == _Handler.files["model.ckpt"]


def test_one_call_fetches_every_file_and_checking_and_building_fetch_nothing(
    server: str, home: Path, tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from vqclip.models.acquire import acquire
    from vqclip.run.build import check_inputs, prepare, resolve_device

    monkeypatch.setitem(
        registry.REGISTRY, "test_vqgan", _entry(server, (f"{server}/ok/model.ckpt",))
    )
    Image.new("RGB", (32, 32), (30, 30, 220)).save(tmp_path / "init.png")
    _Handler.files["init.png"] = (tmp_path / "init.png").read_bytes()
    config = tiny_config.replace(
        vqgan="test_vqgan", vqgan_checkpoint=None, init_image=f"{server}/ok/init.png"
    )
    files = acquire(config)
    fetched = sorted(path for path, _ in _Handler.log)
    assert fetched == ["/ok/init.png", "/ok/model.ckpt", "/ok/model.yaml"]
    assert files.vqgan == (home / "test_vqgan" / "test.yaml", home / "test_vqgan" / "test.ckpt")
    check_inputs(config, files)
    prepare(config, resolve_device("cpu"), files)
    assert len(_Handler.log) == 3  # nothing more was fetched


def test_raft_weights_come_from_a_registry_row_hashed_and_a_pickle_with_code_is_refused(
    server: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from torchvision.models.optical_flow import raft_small

    from vqclip.models.download import sha256_file
    from vqclip.models.flow import flow_estimator, load_raft

    torch.manual_seed(0)
    torch.save(raft_small(weights=None).state_dict(), tmp_path / "raft.pth")  # torchvision's format
    _Handler.files["raft.pth"] = (tmp_path / "raft.pth").read_bytes()
    prefix = sha256_file(tmp_path / "raft.pth")[:8]  # what torchvision publishes in its file names

    def row(sha: str) -> registry.ModelEntry:
        file = registry.ModelFile("raft_small.pth", (f"{server}/ok/raft.pth",), sha)
        return registry.ModelEntry("raft_small", "flow", (file,), 4.0)

    monkeypatch.setitem(registry.REGISTRY, "raft_small", row("0" * 8))
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        flow_estimator("raft_small")
    monkeypatch.setitem(registry.REGISTRY, "raft_small", row(prefix))
    estimate = flow_estimator("raft_small")
    assert [path for path, _ in _Handler.log] == ["/ok/raft.pth", "/ok/raft.pth"]
    a, b = torch.rand(1, 3, 44, 60), torch.rand(1, 3, 44, 60)  # smaller than RAFT takes: padded
    assert estimate(a, b).shape == (1, 2, 44, 60)
    flow_estimator("raft_small")  # cached, and checked against the recorded full hash
    assert len(_Handler.log) == 2
    assert_pickled_code_refused(lambda path: load_raft(path, large=False), tmp_path / "evil.pth")


def test_rife_is_the_published_layout_fetched_hashed_and_makes_the_frames_of_a_video(
    server: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RIFE's network, random weights saved as the published file is (safetensors, fp32): the
    file is byte for byte as long as the registry's, it comes through its row hashed, and
    ``vqclip video --interpolation rife`` makes its frames; other layouts and pickled code are
    refused."""
    import torch
    from safetensors.torch import save_file

    from tests.run.test_video import _moving_disc_run
    from vqclip.models.download import sha256_file
    from vqclip.models.rife import IFNet, load_rife
    from vqclip.run.video import assemble_video, count_video_frames

    torch.manual_seed(0)
    state = IFNet().state_dict()
    save_file(state, tmp_path / "rife.safetensors")
    assert (tmp_path / "rife.safetensors").stat().st_size == 22_674_392  # the Hub's file's size
    _Handler.files["rife.safetensors"] = (tmp_path / "rife.safetensors").read_bytes()

    def row(sha: str) -> registry.ModelEntry:
        file = registry.ModelFile("rife.safetensors", (f"{server}/ok/rife.safetensors",), sha, kind="safetensors")  # fmt: skip
        return registry.ModelEntry("rife", "interpolator", (file,), 22.7)

    run = _moving_disc_run(tmp_path / "run")
    monkeypatch.setitem(registry.REGISTRY, "rife", row("0" * 64))
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        assemble_video(run, fps=2, interpolate=8, interpolation="rife")
    monkeypatch.setitem(registry.REGISTRY, "rife", row(sha256_file(tmp_path / "rife.safetensors")))
    path = assemble_video(run, fps=2, interpolate=8, interpolation="rife")
    assert count_video_frames(path) == 4 * 4  # 3 made between each pair, the last held
    assert [p for p, _ in _Handler.log] == ["/ok/rife.safetensors"] * 2

    interpolate = load_rife(home / "rife" / "rife.safetensors")
    a, b = torch.rand(1, 3, 44, 60), torch.rand(1, 3, 44, 60)  # padded to 128, cut back
    assert [f.shape for f in interpolate(a, b, [0.25, 0.5])] == [(1, 3, 44, 60)] * 2
    save_file({k: v for k, v in state.items() if not k.startswith("block4.")}, tmp_path / "v4.6.safetensors")  # fmt: skip
    with pytest.raises(ValueError, match="not RIFE 4.25's IFNet"):
        load_rife(tmp_path / "v4.6.safetensors")
    assert_pickled_code_refused(load_rife, tmp_path / "flownet.pkl")


# Tiny instances of the two depth architectures (transformers' own classes, a few hundred
# thousand weights each), with the settings a registry row would hold for them.
_TINY_DEPTH = {
    "depth-anything": {
        "backbone_config": {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
                            "image_size": 28, "patch_size": 14, "out_indices": [1, 2, 3, 4],
                            "reshape_hidden_states": False},
        "reassemble_hidden_size": 32, "neck_hidden_sizes": [8, 16, 32, 32],
        "fusion_hidden_size": 16, "head_hidden_size": 8,
    },
    "dpt-hybrid": {
        "backbone_config": {"depths": [1, 1, 1], "hidden_sizes": [16, 32, 64, 128],
                            "embedding_size": 32, "num_groups": 8, "global_padding": "same",
                            "out_features": ["stage1", "stage2", "stage3"],
                            "layer_type": "bottleneck", "embedding_dynamic_padding": True},
        "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
        "intermediate_size": 64, "image_size": 64, "backbone_out_indices": [0, 1, 2, 3],
        "backbone_featmap_shape": [1, 64, 4, 4], "neck_hidden_sizes": [16, 32, 32, 32],
        "fusion_hidden_size": 16,
    },
}  # fmt: skip


def test_the_real_depth_architectures_are_the_published_checkpoints() -> None:
    """Built on the meta device as the registry rows build them: the weights the published
    models have (Depth-Anything-V2-Small 24.8M, DPT-Hybrid MiDaS 122M), and Depth-Anything
    reading V2's DINOv2 layers (3, 6, 9, 12, as transformers' V2 conversion sets them), not
    transformers' default V1 layers, which the same file would fill without a word."""
    import torch
    import transformers

    from vqclip.models.depth import ARCHITECTURES, architecture

    counts = {}
    for name in ARCHITECTURES:
        model_class, config = architecture(name, {})
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in model_class(config).parameters())
    assert round(counts["depth-anything"] / 1e6, 1) == 24.8
    assert round(counts["dpt-hybrid"] / 1e6) == 122
    layers = architecture("depth-anything", {})[1].backbone_config.out_indices
    assert list(layers) == [3, 6, 9, 12] != list(transformers.DepthAnythingConfig().backbone_config.out_indices)  # fmt: skip
    row = registry.REGISTRY["depth-anything-v2-small"].files[0]
    # pinned to a revision, so that the published hash holds
    assert len(row.sha256) == 64 and "/resolve/main/" not in row.urls[0]


def test_depth_models_come_from_registry_rows_hashed_and_make_a_3d_frame(
    server: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_config
) -> None:
    """Depth-Anything and DPT-Hybrid, tiny instances of transformers' classes saved as
    transformers saves them (``model.safetensors``), fetched from 127.0.0.1 through registry
    rows whose settings build the architecture: each gives a depth map, one moves a 3D frame;
    a wrong hash, and a file of the other architecture, are each refused with one line."""
    import torch

    from vqclip.models.depth import ARCHITECTURES, architecture, depth_estimator
    from vqclip.models.download import sha256_file
    from vqclip.run.driver import generate
    from vqclip.run.frames import frame_paths

    for kind, settings in _TINY_DEPTH.items():
        torch.manual_seed(0)
        folder, (model_class, config) = tmp_path / kind, architecture(kind, settings)
        model_class(config).save_pretrained(folder)  # the real file format
        _Handler.files[f"{kind}.safetensors"] = (folder / "model.safetensors").read_bytes()
        sha = sha256_file(folder / "model.safetensors")
        flags = {"architecture": kind, "config": settings, "size": 56 if kind == "depth-anything" else 64}  # fmt: skip
        name = f"tiny-{kind}"
        file = registry.ModelFile(f"{name}.safetensors", (f"{server}/ok/{kind}.safetensors",), sha, kind="safetensors")  # fmt: skip
        monkeypatch.setitem(registry.REGISTRY, name, registry.ModelEntry(name, "depth", (file,), 1, flags=flags))  # fmt: skip
        depth = depth_estimator(name)(torch.rand(2, 3, 40, 48))
        assert depth.shape == (2, 1, 40, 48) and torch.isfinite(depth).all()
    assert [p for p, _ in _Handler.log] == ["/ok/depth-anything.safetensors", "/ok/dpt-hybrid.safetensors"]  # fmt: skip
    assert set(ARCHITECTURES) == set(_TINY_DEPTH)

    config = tiny_config.replace(
        max_iterations=None, animation_mode="3D", max_frames=2, steps_per_frame=2,
        translation_z="20", depth_model="tiny-depth-anything", save_depth=True,
    )  # fmt: skip
    result = generate(config)
    assert len(frame_paths(result.run_dir)) == 2 and len(list((result.run_dir / "depth").iterdir())) == 2  # fmt: skip
    assert len(_Handler.log) == 2  # from the cache: nothing fetched again

    wrong = registry.REGISTRY["tiny-dpt-hybrid"]
    monkeypatch.setitem(registry.REGISTRY, "tiny-dpt-hybrid", registry.ModelEntry(
        "tiny-dpt-hybrid", "depth", wrong.files, 1, flags={**wrong.flags, "architecture": "depth-anything", "config": _TINY_DEPTH["depth-anything"]},
    ))  # fmt: skip
    with pytest.raises(ValueError, match="does not fit the architecture of depth-anything"):
        depth_estimator("tiny-dpt-hybrid")
    file = registry.ModelFile("other.safetensors", (f"{server}/ok/dpt-hybrid.safetensors",), "0" * 64, kind="safetensors")  # fmt: skip
    monkeypatch.setitem(registry.REGISTRY, "other", registry.ModelEntry("other", "depth", (file,), 1, flags=wrong.flags))  # fmt: skip
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        depth_estimator("other")
    runs = sorted(Path(config.output_dir).iterdir())
    with pytest.raises(ValueError, match=r"depth_model: unknown estimator 'midas'; expected none or one of \['depth-anything-v2-small', 'dpt-hybrid-midas'"):  # fmt: skip
        generate(config.replace(depth_model="midas"))
    assert sorted(Path(config.output_dir).iterdir()) == runs  # refused before a run was begun
