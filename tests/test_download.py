"""Downloads against a real HTTP server on 127.0.0.1 that also misbehaves on purpose."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vqclip import zoo
from vqclip.download import DownloadError, download, ensure_file
from vqclip.models import load_vqgan


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


def _entry(base: str, ckpt_urls: tuple[str, ...], sha: str | None = None) -> zoo.ModelEntry:
    files = (
        zoo.ModelFile("test.yaml", (f"{base}/ok/model.yaml",), kind="yaml"),
        zoo.ModelFile("test.ckpt", ckpt_urls, sha),
    )
    return zoo.ModelEntry("test_vqgan", "vqgan", files, 1)


def test_download_then_cache_hit_with_server_stopped(server: str, home: Path, tiny_models: dict, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setitem(zoo.REGISTRY, "test_vqgan", _entry(server, (f"{server}/ok/model.ckpt",)))
    yaml_path, ckpt_path = zoo.resolve_vqgan("test_vqgan")
    assert ckpt_path == home / "test_vqgan" / "test.ckpt"
    assert ckpt_path.read_bytes() == tiny_models["ckpt"].read_bytes()
    recorded = (ckpt_path.parent / "test.ckpt.sha256").read_text().strip()
    assert recorded == hashlib.sha256(ckpt_path.read_bytes()).hexdigest()
    load_vqgan(yaml_path, ckpt_path)
    requests = len(_Handler.log)
    monkeypatch.setitem(
        zoo.REGISTRY, "test_vqgan", _entry("http://127.0.0.1:9", ("http://127.0.0.1:9/x",))
    )
    assert zoo.resolve_vqgan("test_vqgan") == (yaml_path, ckpt_path)  # no server needed
    assert len(_Handler.log) == requests
    with open(ckpt_path, "r+b") as f:  # a cached file that changes later is caught
        f.write(b"XX")
    with pytest.raises(DownloadError, match="does not match its SHA-256"):
        zoo.resolve_vqgan("test_vqgan")


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
    monkeypatch.setitem(zoo.REGISTRY, "test_vqgan", _entry("http://127.0.0.1:9", (url,)))
    with pytest.raises(DownloadError) as error:
        zoo.resolve_vqgan("test_vqgan")
    text = str(error.value)
    assert "http://127.0.0.1:9/ok/model.yaml" in text
    assert str(home / "test_vqgan" / "test.yaml") in text and "by hand" in text


def test_ensure_file_without_fetch_does_not_download(home: Path, server: str) -> None:
    file = zoo.ModelFile("x.ckpt", (f"{server}/ok/model.ckpt",))
    with pytest.raises(DownloadError, match="not in the cache"):
        ensure_file(file, home, fetch=False)
    assert _Handler.log == []


def test_registry_covers_the_known_models() -> None:
    import clip

    assert set(clip.available_models()) <= set(zoo.model_names("clip"))
    for name in (
        "imagenet_f16_1024",
        "imagenet_f16_16384",
        "openimages_f8_8192",
        "wikiart_f16_16384",
        "sflckr",
        "coco",
    ):
        entry = zoo.REGISTRY[name]
        assert entry.family == "vqgan" and all(f.urls for f in entry.files)
    assert len(zoo.REGISTRY["imagenet_f16_16384"].files[1].urls) == 2  # source and mirror


def test_images_by_url_are_fetched_once_and_match_local_files(
    server: str, home: Path, tiny_config, tmp_path: Path
) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from vqclip.pipeline import generate

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
    from vqclip.pipeline import generate

    with pytest.raises(DownloadError, match="^init_image: .*HTML"):
        generate(tiny_config.replace(init_image=f"{server}/html/init.png"))
    assert not Path(tiny_config.output_dir).exists()
    assert not list((home / "images").glob("*.png"))
