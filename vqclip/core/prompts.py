"""Prompt strings: ``text:weight:stop | text:weight | text`` (the classic notebooks' syntax).

Parsed from the right, so colons inside the text and in URLs survive: a suffix counts as a
weight (or a stop) only when it starts like a number and is not a URL's port. A prompt may end
its text with where it applies: ``a red circle @left:1.5``, ``a castle @mask.png`` (a region of
:data:`REGIONS`, or a mask image, white where it applies); an ``@word`` that is neither stays
part of the text. Standard library only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["Prompt", "parse_prompt", "parse_prompts", "split_prompts", "split_phases", "REGIONS"]

# Where a prompt may apply: (left, top, right, bottom) as fractions of the image.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left": (0, 0, 0.5, 1), "right": (0.5, 0, 1, 1), "top": (0, 0, 1, 0.5),
    "bottom": (0, 0.5, 1, 1), "centre": (0.25, 0.25, 0.75, 0.75),
    "center": (0.25, 0.25, 0.75, 0.75), "left-third": (0, 0, 1 / 3, 1),
    "middle-third": (1 / 3, 0, 2 / 3, 1), "right-third": (2 / 3, 0, 1, 1),
    "top-third": (0, 0, 1, 1 / 3), "bottom-third": (0, 2 / 3, 1, 1),
    "top-left": (0, 0, 0.5, 0.5), "top-right": (0.5, 0, 1, 0.5),
    "bottom-left": (0, 0.5, 0.5, 1), "bottom-right": (0.5, 0.5, 1, 1),
}  # fmt: skip
_MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_REGION = re.compile(r"^(.*\S)\s+@(\S+)$", re.DOTALL)

# A suffix that is one token starting like a number ("1", "-0.5", ".5", "+2", "-inf", "nan",
# and the typos "1.5x", "-abc") is meant as a weight; anything else ("//host/x.png",
# " sunset", "9 poster") is part of the text.
_NUMBERISH = re.compile(r"^\s*([-+]|\d|\.\d|inf|nan)\S*\s*$", re.IGNORECASE)
# Text ending in "scheme://host": the colon after it starts a port ("http://host:8080/x.png").
_URL_HOST = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s]*$", re.IGNORECASE)


@dataclass(frozen=True)
class Prompt:
    """One weighted prompt: the CLIP pull of ``text`` times ``weight`` until distance < ``stop``."""

    text: str
    weight: float = 1.0
    stop: float = -math.inf
    region: str | None = None  # a name of REGIONS or a mask image's path; None: everywhere


def _to_float(part: str, what: str, prompt: str) -> float:
    try:
        value = float(part)
    except ValueError:
        raise ValueError(
            f"prompt {prompt!r}: {what} {part.strip()!r} is not a number "
            "(expected 'text:weight:stop', e.g. 'a red circle:1.5' or 'blurry:-0.5')"
        ) from None
    if math.isnan(value):
        raise ValueError(f"prompt {prompt!r}: {what} is NaN (expected a real number)")
    return value


def _peel_numbers(prompt: str) -> tuple[str, list[str]]:
    """Split up to two number-like ``:suffix`` parts off the right of ``prompt``."""
    text, suffixes = prompt, []
    while len(suffixes) < 2 and ":" in text:
        head, tail = text.rsplit(":", 1)
        if not _NUMBERISH.match(tail) or _URL_HOST.search(head):
            break
        text, suffixes = head, [tail, *suffixes]
    return text, suffixes


def parse_prompt(prompt: str) -> Prompt:
    """Parse one ``text[:weight[:stop]]`` into a :class:`Prompt`; raises ``ValueError``."""
    text, suffixes = _peel_numbers(prompt)
    text = text.strip()
    if not text:
        raise ValueError(
            f"prompt {prompt!r} has no text before its weight (expected 'text:weight')"
        )
    weight = _to_float(suffixes[0], "weight", prompt) if suffixes else 1.0
    stop = _to_float(suffixes[1], "stop", prompt) if len(suffixes) > 1 else -math.inf
    if math.isinf(weight):
        raise ValueError(f"prompt {prompt!r}: weight must be finite, got {weight}")
    region = None
    if (found := _REGION.match(text)) and _is_region(found.group(2)):
        text, region = found.group(1), found.group(2)
    return Prompt(text, weight, stop, region)


def _is_region(word: str) -> bool:
    """A region's name, or a mask image's path (a URL is not a mask)."""
    return word.lower() in REGIONS or (word.lower().endswith(_MASK_SUFFIXES) and "://" not in word)


def split_prompts(prompts: str) -> list[str]:
    """Split ``a | b | c`` into its non-empty, stripped parts."""
    return [part.strip() for part in prompts.split("|") if part.strip()]


def parse_prompts(prompts: str) -> list[Prompt]:
    """Parse a ``|``-separated prompt string; empty parts are ignored."""
    return [parse_prompt(part) for part in split_prompts(prompts)]


_KEYED = re.compile(r"^\s*(\d{1,7})\s*:")
_NEXT_KEY = re.compile(r"\|(?=\s*\d{1,7}\s*:)")


def is_keyed(prompts: str) -> bool:
    """Whether ``prompts`` is keyed by frame (``"0: a forest | 50: a city"``): a prompt's text
    never starts with a number and a colon, which would be a prompt ``N`` weighted by text."""
    return bool(_KEYED.match(prompts))


def split_keyed(prompts: str) -> list[tuple[int, str]]:
    """``"0: a forest | 50: a city:1.2 | neon"`` -> ``[(0, "a forest"), (50, "a city:1.2 |
    neon")]``: a key runs to the next ``| N:``, so each is a full prompt list; sorted by frame.
    """
    keys: dict[int, str] = {}
    for piece in _NEXT_KEY.split(prompts):
        match = _KEYED.match(piece)
        if not match:
            raise ValueError(f"prompts: {piece.strip()[:40]!r} has no frame; expected \"0: a forest | 50: a city\"")  # fmt: skip
        frame = int(match.group(1))
        if frame in keys:
            raise ValueError(f"prompts: frame {frame} keyed twice")
        text = piece[match.end() :].strip()
        if not text:
            raise ValueError(f"prompts: frame {frame} has no prompt")
        keys[frame] = text
    return sorted(keys.items())


def split_phases(prompts: str) -> list[str]:
    """Split a story ``a | b ^ c`` into its phases (``["a | b", "c"]``), each a prompt list;
    empty phases are dropped, and a string without ``^`` is one phase."""
    if is_keyed(prompts):
        return [text for _, text in split_keyed(prompts)]
    phases = [phase.strip() for phase in prompts.split("^") if phase.strip()]
    return phases or [prompts]
