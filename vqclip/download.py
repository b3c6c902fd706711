"""Verified, resumable downloads into the cache.

A file arrives in ``NAME.part`` and is renamed to ``NAME`` only when it is complete (its length
matches Content-Length), of the right kind (a checkpoint, YAML or image, not an HTML error page)
and matches its SHA-256: the published one, or the one recorded at its first good download
(``NAME.sha256``). A broken connection resumes with an HTTP Range request; mirrors are tried in
turn; retries are bounded.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import yaml

from vqclip.zoo import ModelFile

__all__ = ["DownloadError", "ensure_file", "download", "fetch_url", "sha256_file"]

log = logging.getLogger(__name__)
Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)
CHUNK = 1 << 20
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 already checked


class DownloadError(RuntimeError):
    """A file could not be fetched or verified; the message says how to place it by hand."""


class _Retry(Exception):
    """A transient failure: retry the same URL (resuming from what the .part file holds)."""


class _BadFile(Exception):
    """The server answered with something that is not the file: try the next URL."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verify_cached(path: Path, expected: str | None) -> None:
    """Check a cached file against its published or recorded SHA-256."""
    recorded = _sidecar(path).read_text().strip() if _sidecar(path).is_file() else None
    want = expected or recorded
    if want is None:
        return
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    actual = _verified.get(key) or sha256_file(path)
    if actual != want:
        raise DownloadError(
            f"{path} does not match its SHA-256 (expected {want}, got {actual}); "
            "delete it and download it again"
        )
    _verified[key] = actual


def ensure_file(
    file: ModelFile, directory: Path, fetch: bool = True, progress: Progress | None = None
) -> Path:
    """The local path of ``file`` in ``directory``, verified; downloaded first if missing."""
    path = directory / file.name
    if path.is_file():
        _verify_cached(path, file.sha256)
        return path
    if not fetch or not file.urls:
        raise DownloadError(_by_hand(path, file.urls, ["not in the cache and not fetched"]))
    return download(file.urls, path, file.sha256, file.kind, progress)


def _by_hand(path: Path, urls: tuple[str, ...], errors: list[str]) -> str:
    tried = "\n".join(f"  {url}" for url in urls) or "  (no URL known)"
    why = "; ".join(errors)
    return (
        f"could not get {path.name} ({why}).\nURLs tried:\n{tried}\n"
        f"Cache path: {path}\nOn a machine with internet access, download the file from one of "
        f"the URLs and place it at that path by hand (the cache is $VQCLIP_HOME, default "
        f"~/.cache/vqclip)."
    )


def download(
    urls: tuple[str, ...],
    path: Path,
    sha256: str | None = None,
    kind: str = "checkpoint",
    progress: Progress | None = None,
    retries: int = 3,
    timeout: float = 30.0,
) -> Path:
    """Fetch the first URL that gives a complete, valid file into ``path``; see module doc."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    errors: list[str] = []
    for url in urls:
        for attempt in range(retries):
            try:
                _fetch(url, part, timeout, progress)
                _check_kind(part, kind)
                _check_hash(part, sha256)
            except _Retry as error:
                errors.append(f"{url}: {error}")
                time.sleep(min(0.2 * 2**attempt, 2.0))
                continue
            except _BadFile as error:
                errors.append(f"{url}: {error}")
                part.unlink(missing_ok=True)
                break
            return _accept(part, path, sha256)
    raise DownloadError(_by_hand(path, urls, errors))


def _accept(part: Path, path: Path, sha256: str | None) -> Path:
    digest = sha256 or sha256_file(part)
    os.replace(part, path)
    if sha256 is None:  # nothing published: record the first good download's hash
        _sidecar(path).write_text(digest + "\n")
    log.info("downloaded %s (sha256 %s)", path, digest)
    return path


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "vqclip"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the .part is not a prefix we can extend: restart
            raise _Retry("range not satisfiable, restarting") from None
        if error.code in (408, 429, 503):  # busy: worth asking the same URL again
            raise _Retry(f"HTTP {error.code}") from None
        raise _BadFile(f"HTTP {error.code}") from None  # 404, 500, ...: try the next mirror
    except (urllib.error.URLError, OSError) as error:
        raise _BadFile(f"unreachable ({getattr(error, 'reason', error)})") from None


def _fetch(url: str, part: Path, timeout: float, progress: Progress | None) -> None:
    """Download into ``part``, resuming from its length; raise ``_Retry`` if cut short."""
    offset = part.stat().st_size if part.exists() else 0
    if offset == 0 and part.exists():
        part.unlink()
    with _open(url, offset, timeout) as response:
        if response.status != 206:  # a full body: start the file again
            offset = 0
        if "text/html" in response.headers.get("Content-Type", ""):
            raise _BadFile("got an HTML page, not the file")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        done = _copy(response, part, offset, total, progress)
    if total is not None and done != total:
        raise _Retry(f"connection closed after {done} of {total} bytes")


def _copy(response, part: Path, offset: int, total: int | None, progress: Progress | None) -> int:  # noqa: ANN001
    done = offset
    with open(part, "ab" if offset else "wb") as out:
        try:
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
        except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as error:
            if isinstance(error, http.client.IncompleteRead):
                out.write(error.partial)
                done += len(error.partial)
            raise _Retry(f"connection broken after {done} bytes ({type(error).__name__})") from None
    return done


def _check_kind(part: Path, kind: str) -> None:
    """Reject HTML error pages and files that are not what the registry says."""
    with open(part, "rb") as f:
        head = f.read(512)
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")):
        raise _BadFile("got an HTML/XML page, not the file")
    if kind in ("checkpoint", "clip"):
        pickle = head[:1] == b"\x80"  # torch's legacy format starts with a pickle protocol byte
        if not pickle and not zipfile.is_zipfile(part):
            raise _BadFile("not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    elif kind == "yaml":
        try:
            config = yaml.safe_load(part.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise _BadFile(f"not YAML ({error})") from None
        if not isinstance(config, dict) or "model" not in config:
            raise _BadFile("YAML without a 'model' section: not a VQGAN config")
    elif kind == "image":
        from vqclip.images import check_image

        try:
            check_image(part, "image")
        except ValueError as error:
            raise _BadFile(str(error)) from None


def _check_hash(part: Path, sha256: str | None) -> None:
    if sha256 is not None and (actual := sha256_file(part)) != sha256:
        raise _BadFile(f"SHA-256 mismatch (expected {sha256}, got {actual}); file discarded")


def fetch_url(url: str, directory: Path, progress: Progress | None = None) -> Path:
    """An image from a URL, cached under ``directory`` by the URL's hash."""
    suffix = Path(url.split("?")[0]).suffix[:5] or ".img"
    path = directory / (hashlib.sha256(url.encode()).hexdigest()[:24] + suffix)
    if path.is_file():
        return path
    return download((url,), path, None, "image", progress)
