"""Verified, resumable downloads into the cache.

A file arrives in ``NAME.part`` and is renamed to ``NAME`` only when it is complete (its length
matches Content-Length), of the right kind (a checkpoint, YAML or image, not an HTML error page)
and matches its SHA-256: the published one, or the one recorded at its first good download
(``NAME.sha256``). A broken connection resumes with an HTTP Range request; mirrors are tried in
turn; retries, sizes and the whole download's time are bounded. The ``.part`` file is never
written through a symlink, and processes fetching into one folder take turns (a lock on the folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from vqclip.core.errors import DownloadError
from vqclip.core.files import write_atomic

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent fetches there are not guarded
    fcntl = None

__all__ = ["DownloadError", "ModelFile", "ensure_file", "download", "fetch_url", "sha256_file"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: where it lives in the cache and where it can be fetched."""

    name: str  # file name in the model's cache directory
    urls: tuple[str, ...] = ()  # the source first, then mirrors, tried in turn
    # The published hash, if any (or, as torchvision publishes its files, its first 8 or more
    # hex digits: the full one is then recorded at first download); else recorded then.
    sha256: str | None = None
    kind: str = "checkpoint"  # checkpoint, yaml, clip, json or safetensors: checked after download


Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)
CHUNK = 1 << 20
# (path, size, mtime, inode, ctime) -> the SHA-256 already checked; ctime changes with any write
_verified: dict[tuple[str, int, int, int, int], str] = {}


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


def _matches(actual: str, expected: str) -> bool:
    """Whether a file's SHA-256 is the one expected: all of it, or a published prefix."""
    return actual == expected or (8 <= len(expected) < 64 and actual.startswith(expected))


def _verify_cached(path: Path, expected: str | None) -> None:
    """Check a cached file against its published and recorded SHA-256."""
    recorded = _sidecar(path).read_text().strip() if _sidecar(path).is_file() else None
    wanted = [want for want in (expected, recorded) if want]
    if not wanted:
        return
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
    actual = _verified.get(key) or sha256_file(path)
    for want in wanted:
        if not _matches(actual, want):
            raise DownloadError(
                f"{path} does not match its SHA-256 (expected {want}, got {actual}); "
                "delete it and download it again"
            )
    _verified[key] = actual


def ensure_file(
    file: ModelFile,
    directory: Path,
    fetch: bool = True,
    progress: Progress | None = None,
    max_bytes: int | None = None,
) -> Path:
    """The local path of ``file`` in ``directory``, verified; downloaded first (at most
    ``max_bytes``) if missing."""
    path = directory / file.name
    if path.is_file():
        _verify_cached(path, file.sha256)
        return path
    if not fetch or not file.urls:
        raise DownloadError(_by_hand(path, file.urls, ["not in the cache and not fetched"]))
    return download(file.urls, path, file.sha256, file.kind, progress, max_bytes=max_bytes)


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
    max_bytes: int | None = None,
    deadline: float | None = None,
) -> Path:
    """Fetch the first URL that gives a complete, valid file into ``path``; see module doc.

    ``max_bytes`` caps the file (default :func:`max_download_bytes`), ``deadline`` the seconds
    the whole download may take (default ``$VQCLIP_DOWNLOAD_DEADLINE`` or 6 hours), ``timeout``
    each read. Processes fetching into the same folder take turns: the second to ask for a
    file finds the first one's and verifies it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    limits = _Limits(max_bytes or max_download_bytes(), _deadline(deadline), timeout)
    with _locked(path):
        if path.is_file() and not path.is_symlink():  # another process fetched it meanwhile
            _verify_cached(path, sha256)
            return path
        return _download_locked(urls, path, sha256, kind, progress, retries, limits)


def _download_locked(
    urls: tuple[str, ...],
    path: Path,
    sha256: str | None,
    kind: str,
    progress: Progress | None,
    retries: int,
    limits: _Limits,
) -> Path:
    part = path.with_name(path.name + ".part")
    errors: list[str] = []
    for url in urls:
        for attempt in range(retries):
            try:
                _fetch(url, part, limits, kind, progress)
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


@dataclass(frozen=True)
class _Limits:
    max_bytes: int  # the file may not be larger
    until: float  # time.monotonic() by which the download must be done
    timeout: float  # seconds each connection or read may wait

    def check_time(self) -> None:
        if time.monotonic() > self.until:
            raise _BadFile("took longer than the download deadline ($VQCLIP_DOWNLOAD_DEADLINE)")


def max_download_bytes() -> int:
    """The cap on a download whose size the registry does not give: ``$VQCLIP_MAX_DOWNLOAD_MB``
    (default 100 MB, room for any image)."""
    return int(float(os.environ.get("VQCLIP_MAX_DOWNLOAD_MB") or 100) * 1e6)


def _deadline(seconds: float | None) -> float:
    seconds = seconds or float(os.environ.get("VQCLIP_DOWNLOAD_DEADLINE") or 6 * 3600)
    return time.monotonic() + seconds


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold a lock on ``path``'s folder while fetching into it: the folder itself, so that no
    lock file is left behind (the kernel releases it when its holder ends, even if killed)."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _accept(part: Path, path: Path, sha256: str | None) -> Path:
    digest = sha256 if sha256 and len(sha256) == 64 else sha256_file(part)
    if digest != sha256:  # not all published: record the first good download's hash, first
        write_atomic(_sidecar(path), (digest + "\n").encode())
    os.replace(part, path)
    log.info("downloaded %s (sha256 %s)", path, digest)
    return path


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "vqclip"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the .part is complete, or not a prefix we can extend
            raise _RangeRefused(error.headers.get("Content-Range", "")) from None
        if error.code in (408, 429, 503):  # busy: worth asking the same URL again
            raise _Retry(f"HTTP {error.code}") from None
        raise _BadFile(f"HTTP {error.code}") from None  # 404, 500, ...: try the next mirror
    except (urllib.error.URLError, OSError) as error:
        raise _BadFile(f"unreachable ({getattr(error, 'reason', error)})") from None


class _RangeRefused(Exception):
    """HTTP 416 to a Range request; the argument is the answer's Content-Range (``bytes */N``)."""


def _fetch(url: str, part: Path, limits: _Limits, kind: str, progress: Progress | None) -> None:
    """Download into ``part``, resuming from its length; raise ``_Retry`` if cut short."""
    if part.is_symlink():  # planted: never written through
        part.unlink()
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, limits.timeout)
    except _RangeRefused as refused:
        total = refused.args[0].rpartition("/")[2]
        if total.isdigit() and int(total) == offset:  # complete already (stopped while hashing)
            return
        part.unlink()  # not a prefix of this file: start again
        raise _Retry("range not satisfiable, restarting") from None
    with response:
        if response.status != 206:  # a full body: start the file again
            offset = 0
        if "text/html" in response.headers.get("Content-Type", ""):
            raise _BadFile("got an HTML page, not the file")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        if total is not None and total > limits.max_bytes:
            raise _BadFile(f"the file's {total} bytes exceed the cap of {limits.max_bytes} bytes")
        done = _copy(response, part, offset, total, limits, kind, progress)
    if total is not None and done != total:
        raise _Retry(f"connection closed after {done} of {total} bytes")


def _copy(
    response: http.client.HTTPResponse,
    part: Path,
    offset: int,
    total: int | None,
    limits: _Limits,
    kind: str,
    progress: Progress | None,
) -> int:
    done, head = offset, b""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    flags |= os.O_APPEND if offset else os.O_TRUNC
    with os.fdopen(os.open(part, flags, 0o644), "wb") as out:
        try:
            while block := response.read1(min(CHUNK, (total or limits.max_bytes + 1) - done)):
                out.write(block)
                if kind == "image" and offset == 0 and done < 16:  # refused at its first bytes
                    head = (head + block)[:16]
                    if len(head) == 16 or done + len(block) == total:
                        _check_image_start(head)
                done += len(block)
                if done > limits.max_bytes:
                    raise _BadFile(f"the file exceeds the cap of {limits.max_bytes} bytes")
                limits.check_time()
                if progress:
                    progress(done, total)
        except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as error:
            if isinstance(error, http.client.IncompleteRead):
                out.write(error.partial)
                done += len(error.partial)
            raise _Retry(f"connection broken after {done} bytes ({type(error).__name__})") from None
    return done


# The first bytes of the image formats PIL reads for vqclip (PNG, JPEG, GIF, WebP, BMP, TIFF).
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


def _check_image_start(block: bytes) -> None:
    if not block.startswith(_IMAGE_MAGIC):
        raise _BadFile("not an image (expected PNG, JPEG, GIF, WebP, BMP or TIFF)")


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
    elif kind == "json":
        try:
            config = json.loads(part.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise _BadFile(f"not JSON ({error})") from None
        if not isinstance(config, dict):
            raise _BadFile("JSON that is not an object: not a model config")
    elif kind == "safetensors":  # an 8-byte header length, then the header's JSON object
        size = int.from_bytes(head[:8], "little")
        if len(head) < 9 or head[8:9] != b"{" or size > part.stat().st_size:
            raise _BadFile("not a safetensors file (no header)")
    elif kind == "image":
        from vqclip.core.images import check_image

        try:
            check_image(part, "image")
        except ValueError as error:
            raise _BadFile(str(error)) from None


def _check_hash(part: Path, sha256: str | None) -> None:
    if sha256 is not None and not _matches(actual := sha256_file(part), sha256):
        raise _BadFile(f"SHA-256 mismatch (expected {sha256}, got {actual}); file discarded")


def fetch_url(url: str, directory: Path, progress: Progress | None = None) -> Path:
    """An image from a URL, cached under ``directory`` by the URL's hash."""
    suffix = Path(url.split("?")[0]).suffix[:5] or ".img"
    path = directory / (hashlib.sha256(url.encode()).hexdigest()[:24] + suffix)
    if path.is_file() and _sidecar(path).is_file():
        _verify_cached(path, None)  # checked on every use against the hash recorded at fetch
        return path
    path.unlink(missing_ok=True)  # no recorded hash (stopped before it was written): again
    return download((url,), path, None, "image", progress)
