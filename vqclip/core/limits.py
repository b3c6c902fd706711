"""The bounds that vqclip holds every file and setting to, and the readers that hold them.

A crafted file may be small and still ask for much: a FIFO that never ends, YAML aliases that
expand a few hundred bytes into gigabytes, JSON nested deeper than Python's stack, a number
beyond a float's range. Every text file vqclip reads (a run's ``config.json``, a ``--config``
PNG's text, a sweep, an OpenCLIP or diffusion config) goes through :func:`read_text` and
:func:`parse_json` or :func:`parse_yaml`, which check size, kind and shape before the parsed
values reach any library; errors are ``ValueError`` naming the field (docs/safety.md).
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_TEXT_BYTES", "MAX_DEPTH", "MAX_NODES", "MAX_SIDE", "MAX_CUTN", "MAX_IMAGES",
    "MAX_STEPS", "MAX_PROMPTS", "MAX_MAGNITUDE", "MAX_VIDEO_PIXELS",
    "check_regular", "read_text", "parse_json", "parse_yaml", "check_tree", "check_text",
]  # fmt: skip

MAX_TEXT_BYTES = 1 << 20  # a config, a sweep or a model's flags; the largest real one is ~20 KB
MAX_DEPTH = 32  # nesting of lists and mappings; vqclip's own files nest 3 deep
MAX_NODES = 200_000  # values in one parsed file, YAML aliases counted each time they are used
MAX_SIDE = 16_384  # pixels a side: libx264's limit, and beyond any decoder's memory here
MAX_CUTN = 2_048  # cutouts a step: 16x the usual 128, a 1.2 GB batch at 224x224 in fp32
MAX_IMAGES = 64  # images in one batch (batch_size x best_of)
MAX_STEPS = 100_000_000  # iterations, frames and counts of steps
MAX_PROMPTS = 256  # prompts in one field (a "|" list), phases in one story, noise prompts
MAX_MAGNITUDE = 1e12  # any weight, scale or shift: beyond it a float32 step overflows
MAX_VIDEO_PIXELS = 8192 * 4320  # a video frame: H.264's largest level (8K)


def check_regular(path: str | Path, field: str) -> None:
    """Refuse anything but a regular file (a FIFO would block a reader, a device never end)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise ValueError(f"{field}: cannot read {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{field}: {path} is not a regular file")


def read_text(path: str | Path, field: str, limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes; a FIFO, a device or a
    directory is refused before it is opened for reading (no read blocks)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise ValueError(f"{field}: cannot read {path}: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{field}: {path} is not a regular file; expected a text file")
        if info.st_size > limit:
            raise ValueError(f"{field}: {path} holds {info.st_size} bytes; expected at most {limit}")  # fmt: skip
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew since fstat
        raise ValueError(f"{field}: {path} holds over {limit} bytes; expected at most {limit}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{field}: {path} is not UTF-8 text ({error})") from None


def parse_json(text: str, field: str) -> Any:
    """JSON within the bounds: at most :data:`MAX_DEPTH` deep (checked before parsing, so that
    the parser never recurses past it), finite numbers only."""
    if len(text) > MAX_TEXT_BYTES:
        raise ValueError(f"{field}: {len(text)} characters of JSON; expected at most {MAX_TEXT_BYTES}")  # fmt: skip
    _check_json_depth(text, field)
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int)
    except json.JSONDecodeError as error:
        raise ValueError(f"{field}: not valid JSON ({error})") from None
    except ValueError as error:  # a number refused while parsing
        raise ValueError(f"{field}: not JSON within vqclip's bounds ({error})") from None
    check_tree(value, field)
    return value


def _check_json_depth(text: str, field: str) -> None:
    """Nesting counted over brackets outside strings, in one pass without recursion."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"{field}: nested over {MAX_DEPTH} levels deep; expected a flat config")  # fmt: skip
        elif char in "]}":
            depth -= 1


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows; expected a finite number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:  # beyond 64 bits: a crafted number, not a setting
        raise ValueError(f"the integer {text[:24]}... has {len(text)} digits; expected at most 20")
    return int(text)


def parse_yaml(text: str, field: str) -> Any:
    """YAML through the safe loader within the bounds; aliases count as what they expand to."""
    import yaml

    if len(text) > MAX_TEXT_BYTES:
        raise ValueError(f"{field}: {len(text)} characters of YAML; expected at most {MAX_TEXT_BYTES}")  # fmt: skip
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{field}: not YAML ({' '.join(str(error).split())})") from None
    except RecursionError:
        raise ValueError(f"{field}: nested too deep; expected a flat file") from None
    check_tree(value, field)
    return value


def check_tree(value: Any, field: str) -> None:
    """Refuse a parsed tree deeper than :data:`MAX_DEPTH`, with more than :data:`MAX_NODES`
    values (shared ones counted at each use, as anything that walks it will), a float that is
    not finite or an integer beyond 64 bits; an explicit stack, no recursion."""
    stack, seen = [(value, 0)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ValueError(f"{field}: over {MAX_NODES} values (counting aliases as used); expected a smaller file")  # fmt: skip
        if depth > MAX_DEPTH:
            raise ValueError(f"{field}: nested over {MAX_DEPTH} levels deep; expected a flat file")  # fmt: skip
        if isinstance(node, dict):
            stack.extend((item, depth + 1) for pair in node.items() for item in pair)
        elif isinstance(node, list | tuple):
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"{field}: {node} is not a finite number")
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) >= 2**64:
            raise ValueError(
                f"{field}: an integer of {node.bit_length()} bits; expected at most 64"
            )
        elif isinstance(node, str):
            check_text(node, field)


def check_text(value: str, field: str) -> None:
    """Refuse text that cannot be written as UTF-8 (a lone surrogate) or holds a NUL."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field}: {value[:40]!r} holds a lone surrogate; expected valid Unicode text") from None  # fmt: skip
    if "\0" in value:
        raise ValueError(f"{field}: expected text without NUL characters, got {value[:40]!r}")
