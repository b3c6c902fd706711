"""OpenCLIP models (LAION's CLIPs) through open-clip-torch: the only module that imports it.

A model is open_clip's hub format: ``open_clip_config.json`` (architecture and preprocessing)
beside its weights (``*.safetensors``, or a state dict read weights-only). vqclip builds the
model from the config with open_clip's own classes and loads the weights strictly; nothing in
either file runs code, and a config that would fetch more (a Hugging Face text tower or
tokenizer, pretrained timm weights) is refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vqclip.core.limits import parse_json, read_text
from vqclip.models.checkpoints import check_fits, load_weights

__all__ = [
    "CONFIG", "is_open_clip", "load_open_clip", "save_open_clip", "build_open_clip",
    "check_model_cfg",
]  # fmt: skip

CONFIG = (
    "open_clip_config.json"  # open_clip's hub format: {"model_cfg": ..., "preprocess_cfg": ...}
)


def is_open_clip(path: Path) -> bool:
    """Whether ``path`` is OpenCLIP weights: a file beside an ``open_clip_config.json``."""
    return path.suffix in (".safetensors", ".bin", ".pt", ".pth") and (path.parent / CONFIG).is_file()  # fmt: skip


def build_open_clip(model_cfg: dict[str, Any]) -> nn.Module:
    """A randomly initialised open_clip ``CLIP`` (or ``CustomTextCLIP``) from a ``model_cfg``."""
    import open_clip

    cfg = dict(model_cfg)
    custom = cfg.pop("custom_text", False)
    cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    return cls(**cfg).float()


def _read_config(path: Path) -> dict[str, Any]:
    config_path = path.parent / CONFIG
    config = parse_json(read_text(config_path, "clip_model"), f"clip_model: {config_path}")
    model_cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict):
        raise ValueError(
            f"clip_model: {config_path} has no 'model_cfg' object; expected open_clip's hub "
            "config ({'model_cfg': {...}, 'preprocess_cfg': {...}})"
        )
    check_model_cfg(model_cfg, config_path)
    _check_preprocess(config.get("preprocess_cfg", {}), config_path)
    return config


def check_model_cfg(model_cfg: dict[str, Any], where: Path | str) -> None:
    """Raise ``ValueError`` unless every key of ``model_cfg`` is one of open_clip's own
    settings, of the type its default has, within vqclip's bounds; nothing may name another
    library's model (a timm or Hugging Face tower or tokenizer, which would reach the network
    when built) or hand a library arbitrary keyword arguments."""
    import open_clip.model as oc

    towers = ("vision_cfg", "text_cfg")
    _check_keys({k: v for k, v in model_cfg.items() if k not in towers}, _TOP, where, "model_cfg")
    for tower, cls in (("vision_cfg", oc.CLIPVisionCfg), ("text_cfg", oc.CLIPTextCfg)):
        cfg = model_cfg.get(tower, {})
        if not isinstance(cfg, dict):
            raise ValueError(f"clip_model: {where}: model_cfg.{tower} is {type(cfg).__name__}; expected a mapping")  # fmt: skip
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        _check_keys(cfg, {k: v for k, v in defaults.items() if k not in _REFUSED}, where, f"model_cfg.{tower}")  # fmt: skip


def _check_keys(cfg: dict[str, Any], allowed: dict[str, Any], where: Path | str, name: str) -> None:
    for key, value in cfg.items():
        if key in _REFUSED and value not in (None, False):
            raise ValueError(
                f"clip_model: {where}: {name}.{key} is {str(value)[:60]!r}, which would build "
                "another library's model (and may download it); expected open_clip's own towers"
            )
        if key in _REFUSED:
            continue
        if key not in allowed:
            raise ValueError(f"clip_model: {where}: unknown setting {name}.{str(key)[:40]!r}; expected some of {sorted(allowed)}")  # fmt: skip
        _check_value(value, allowed[key], f"{name}.{key}", _INT_BOUNDS.get(key, 1_000_000), where)


def _check_value(value: Any, default: Any, name: str, top: int, where: Path | str) -> None:
    """``value`` of the kind ``default`` has: a bool, a bounded integer (or a short list of
    them: ResNet layers, image sizes), a finite number, or short text."""
    ints = value if isinstance(value, list) and len(value) <= 8 else [value]
    if isinstance(default, bool) or default is False:
        ok = isinstance(value, bool)
    elif isinstance(default, int) and name != "model_cfg.init_logit_scale":
        ok = all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top for v in ints)
        ok = ok and sum(ints) <= top
    elif isinstance(default, float):
        ok = _is_real(value) and abs(value) <= 1e6
    else:  # a string or None by default: short text, a number or nothing
        ok = value is None or _is_real(value) and abs(value) <= 1e6 or isinstance(value, str) and len(value) <= 64 and ":" not in value  # fmt: skip
    if not ok:
        raise ValueError(f"clip_model: {where}: {name} is {str(value)[:60]!r}; expected {_expected(default, top)}")  # fmt: skip


def _expected(default: Any, top: int) -> str:
    if isinstance(default, bool) or default is False:
        return "true or false"
    if isinstance(default, int):
        return f"an integer from 0 to {top} (or a short list of them)"
    if isinstance(default, float):
        return "a finite number"
    return "nothing, a number or a short name"


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_preprocess(preprocess: Any, where: Path) -> None:
    if not isinstance(preprocess, dict):
        raise ValueError(f"clip_model: {where}: preprocess_cfg is {type(preprocess).__name__}; expected a mapping")  # fmt: skip
    for key in ("mean", "std"):
        value = preprocess.get(key, (0.5, 0.5, 0.5))
        if not (isinstance(value, list | tuple) and len(value) == 3 and all(_is_real(v) and 0 < abs(v) <= 10 for v in value)):  # fmt: skip
            raise ValueError(f"clip_model: {where}: preprocess_cfg.{key} is {str(value)[:60]}; expected three numbers")  # fmt: skip


# Keys that name another library's model or hand it keyword arguments: building them reaches
# timm's or Hugging Face's hub (hf-hub: names), or runs what the kwargs say.
_REFUSED = {
    "timm_model_name", "timm_model_pretrained", "hf_model_name", "hf_tokenizer_name",
    "act_kwargs", "norm_kwargs", "cast_dtype", "tokenizer_kwargs", "tokenizer_mode",
}  # fmt: skip
_TOP = {
    "embed_dim": 512, "quick_gelu": False,
    "init_logit_scale": 2.66, "init_logit_bias": None, "nonscalar_logit_scale": False,
    "custom_text": False, "output_dict": False,
}  # fmt: skip
# The largest value of each size (1,000,000 for the others): OpenCLIP's bigG (48 layers of
# width 1664) inside; a 154 GB tower is refused here or by the weight count on the meta device.
_INT_BOUNDS = {
    "layers": 128, "width": 16_384, "head_width": 4_096, "heads": 256, "patch_size": 1_024,
    "image_size": 2_048, "context_length": 1_024, "embed_dim": 16_384,
    "attn_pooler_queries": 4_096, "attn_pooler_heads": 256,
}  # fmt: skip


def load_open_clip(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...], Callable[[list[str]], torch.Tensor]]:
    """The OpenCLIP model whose weights are ``path`` (fp32, eval mode), its input mean and
    deviation, and its tokenizer."""
    import open_clip

    path = Path(path)
    config = _read_config(path)
    state = load_weights(path, "clip_model")
    check_fits(lambda: build_open_clip(config["model_cfg"]), state, "clip_model", path)
    model = build_open_clip(config["model_cfg"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)  # fmt: skip
    preprocess = config.get("preprocess_cfg", {})
    mean = tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD))
    text_cfg = config["model_cfg"].get("text_cfg", {})
    tokenizer = open_clip.SimpleTokenizer(context_length=text_cfg.get("context_length", 77))
    return model.eval().requires_grad_(False).to(device), mean, std, tokenizer


def save_open_clip(
    model: nn.Module,
    folder: str | Path,
    model_cfg: dict[str, Any],
    preprocess_cfg: dict | None = None,
) -> Path:
    """Save ``model`` in open_clip's hub format into ``folder``; returns the weights' path."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}
    (folder / CONFIG).write_text(json.dumps(config, indent=2))
    path = folder / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path
