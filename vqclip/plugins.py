"""Plugins: packages that add models, presets, image priors and commands to vqclip.

A plugin is a function named under the ``vqclip.plugins`` entry-point group (see
``pyproject.toml``), called once, the first time vqclip looks up something a plugin may add: a
model name, a preset, a prior kind or a command. It registers its parts with
:func:`vqclip.zoo.register_model`, :func:`vqclip.presets.register_preset`,
:func:`vqclip.prior.register_prior_kind` and :func:`register_command`. The core never imports
a plugin, so that the shapes world and the benchmark stay beside it, not inside it.
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

__all__ = ["GROUP", "Command", "load_plugins", "register_command", "commands"]

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
