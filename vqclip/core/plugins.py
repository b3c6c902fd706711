"""Plugins: packages that add models, presets, image priors, commands, objective terms, image
transforms and estimators to vqclip.

A plugin is a function named under the ``vqclip.plugins`` entry-point group (see
``pyproject.toml``), called once, the first time vqclip looks up something a plugin may add. It
registers its parts with :func:`vqclip.models.registry.register_model`,
:func:`vqclip.core.presets.register_preset`, :func:`vqclip.models.prior.register_prior_kind`,
and here :func:`register_command`, :func:`register_term`, :func:`register_transform` and
:func:`register_estimator`. The core never imports a plugin, so that the shapes world and the
benchmark stay beside it, not inside it; a user's own loss is a plugin, not a fork.
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

__all__ = [
    "GROUP", "Command", "load_plugins", "register_command", "commands", "TermKind",
    "register_term", "term_kinds", "TransformKind", "register_transform", "transform_kinds",
    "Estimator", "ESTIMATOR_KINDS", "register_estimator", "estimators",
]  # fmt: skip

log = logging.getLogger(__name__)

GROUP = "vqclip.plugins"


@dataclass(frozen=True)
class Command:
    """A ``vqclip NAME`` subcommand: ``configure`` adds its arguments, ``run`` does it."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


_COMMANDS: dict[str, Command] = {}


@functools.cache
def load_plugins() -> tuple[str, ...]:
    """Call every installed plugin once; returns their names, in the order they ran."""
    names = []
    for point in sorted(entry_points(group=GROUP), key=lambda p: p.name):
        point.load()()
        names.append(point.name)
        log.debug("plugin %s loaded from %s", point.name, point.value)
    return tuple(names)


def register_command(command: Command) -> None:
    """Add a ``vqclip`` subcommand (a plugin's, such as ``bench``)."""
    _COMMANDS[command.name] = command


def commands() -> dict[str, Command]:
    """The plugins' subcommands, by name."""
    load_plugins()
    return dict(_COMMANDS)


@dataclass(frozen=True)
class TermKind:
    """An objective term: ``--terms NAME:WEIGHT`` adds it to the pulls. ``make(weight, config,
    device)`` returns a :class:`vqclip.loop.objective.Term`, whose loss each step reports under
    its name as the core's terms do."""

    name: str
    help: str  # one line, for --help and the notebook
    make: Callable[..., Any]


@dataclass(frozen=True)
class TransformKind:
    """An image transform: ``--transforms NAME[:ARG]``. ``make(arg, config)`` (``arg`` the text
    after the colon, or "") returns ``transform(image, iteration) -> image``, applied to every
    rendered image, (B, 3, H, W) in [0, 1], before it is cut, scored and shown."""

    name: str
    help: str
    make: Callable[..., Any]


ESTIMATOR_KINDS = ("depth", "flow")


@dataclass(frozen=True)
class Estimator:
    """A depth or optical-flow estimator. ``load(device)`` returns the callable: depth,
    ``(B, 3, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` distance along the camera axis (> 0); flow,
    ``(a, b)`` -> ``(B, 2, H, W)``, where each pixel of ``a`` moved to in ``b``, in pixels."""

    name: str
    kind: str  # one of ESTIMATOR_KINDS
    help: str
    load: Callable[..., Any]


_TERMS: dict[str, TermKind] = {}
_TRANSFORMS: dict[str, TransformKind] = {}
_ESTIMATORS: dict[str, Estimator] = {}


def register_term(kind: TermKind) -> None:
    """Add an objective term kind (a plugin's, such as the shapes world's palette)."""
    _TERMS[kind.name] = kind


def term_kinds() -> dict[str, TermKind]:
    """The registered objective term kinds, by name."""
    load_plugins()
    return dict(_TERMS)


def register_transform(kind: TransformKind) -> None:
    """Add an image transform kind."""
    _TRANSFORMS[kind.name] = kind


def transform_kinds() -> dict[str, TransformKind]:
    """The registered image transform kinds, by name."""
    load_plugins()
    return dict(_TRANSFORMS)


def register_estimator(estimator: Estimator) -> None:
    """Add a depth or flow estimator."""
    if estimator.kind not in ESTIMATOR_KINDS:
        raise ValueError(f"estimator {estimator.name!r}: kind {estimator.kind!r}; expected one of {ESTIMATOR_KINDS}")  # fmt: skip
    _ESTIMATORS[estimator.name] = estimator


def estimators(kind: str) -> dict[str, Estimator]:
    """The registered estimators of ``kind`` ("depth" or "flow"), by name."""
    load_plugins()
    return {name: e for name, e in _ESTIMATORS.items() if e.kind == kind}
