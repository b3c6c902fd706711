"""vqclip: text and image prompts to images and videos with VQGAN+CLIP."""

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

from vqclip.core.config import GenerationConfig
from vqclip.core.prompts import Prompt, parse_prompt, parse_prompts

__all__ = [
    "GenerationConfig",
    "Prompt",
    "parse_prompt",
    "parse_prompts",
    "generate",
    "resume",
    "assemble_video",
]


# Where each module of the flat layout before issue 47 lives now: scripts and notebooks that
# import an old name (``vqclip.pipeline``, ``from vqclip import zoo``) get the same module object.
MOVED = {
    "config": "core.config",
    "presets": "core.presets",
    "prompts": "core.prompts",
    "limits": "core.limits",
    "files": "core.files",
    "images": "core.images",
    "plugins": "core.plugins",
    "zoo": "models.registry",
    "download": "models.download",
    "checkpoints": "models.checkpoints",
    "models": "models.vqgan_clip",
    "openclip": "models.openclip",
    "unet": "models.unet",
    "prior": "models.prior",
    "tuning": "models.tuning",
    "loop": "loop.optimise",
    "objective": "loop.objective",
    "cutouts": "loop.cutouts",
    "perceptors": "loop.perceptors",
    "generators": "loop.generators",
    "latents": "loop.latents",
    "losses": "loop.losses",
    "optimizers": "loop.optimizers",
    "embeddings": "loop.embeddings",
    "diffusion": "loop.diffusion",
    "prepare": "run.build",
    "pipeline": "run.driver",
    "schedule": "run.stories",
    "restyle": "run.restyle",
    "runstate": "run.runstate",
    "frames": "run.frames",
    "video": "run.video",
    "upscale": "run.upscale",
    "memory": "run.memory",
    "distributed": "scale.distributed",
    "cluster": "scale.cluster",
    "sweep": "scale.sweep",
    "cli": "frontends.cli",
    "notebook": "frontends.notebook",
    "ui": "frontends.webpage",
    "forms": "frontends.forms",
    "webguard": "frontends.webguard",
}


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object = None, target: object = None):  # noqa: ANN201
        old = fullname.removeprefix("vqclip.")
        if fullname.startswith("vqclip.") and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(f"vqclip.{MOVED[spec.name.removeprefix('vqclip.')]}")
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._own_spec  # the import machinery set the alias's; keep its own


sys.meta_path.append(_Moved())


def __getattr__(name: str):  # noqa: ANN202 -- lazy, so that importing vqclip needs no torch
    if name in ("generate", "resume"):
        from vqclip.run import driver

        return getattr(driver, name)
    if name == "assemble_video":
        from vqclip.run.video import assemble_video

        return assemble_video
    if name in MOVED:
        return importlib.import_module(f"vqclip.{name}")
    raise AttributeError(f"module 'vqclip' has no attribute {name!r}")
