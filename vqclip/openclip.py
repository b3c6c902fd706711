"""OpenCLIP models (LAION's CLIPs) through open-clip-torch: the only module that imports it.

A model is open_clip's hub format: ``open_clip_config.json`` (architecture and preprocessing)
beside its weights (``*.safetensors``, or a state dict read weights-only). vqclip builds the
model from the config with open_clip's own classes and loads the weights strictly; nothing in
either file runs code, and a config that would fetch more (a Hugging Face text tower or
tokenizer, pretrained timm weights) is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vqclip.checkpoints import load_weights

__all__ = ["CONFIG", "is_open_clip", "load_open_clip", "save_open_clip", "build_open_clip"]

CONFIG = (
    "open_clip_config.json"  # open_clip's hub format: {"model_cfg": ..., "preprocess_cfg": ...}
)
_MAX_CONFIG_BYTES = 1 << 20
_FETCHING = ("hf_model_name", "hf_tokenizer_name", "timm_model_pretrained")  # would download


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
    if config_path.stat().st_size > _MAX_CONFIG_BYTES:
        raise ValueError(f"clip_model: {config_path} is over 1 MB; expected an open_clip config")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"clip_model: {config_path} is not JSON ({error})") from None
    model_cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("text_cfg", {}), dict):
        raise ValueError(
            f"clip_model: {config_path} has no 'model_cfg' object; expected open_clip's hub "
            "config ({'model_cfg': {...}, 'preprocess_cfg': {...}})"
        )
    towers = {**model_cfg.get("vision_cfg", {}), **model_cfg.get("text_cfg", {})}
    fetching = sorted(k for k in _FETCHING if towers.get(k))
    if fetching:
        raise ValueError(
            f"clip_model: {config_path} names {fetching}, which open_clip would download; "
            "expected a model of open_clip's own towers"
        )
    return config


def load_open_clip(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...], Callable[[list[str]], torch.Tensor]]:
    """The OpenCLIP model whose weights are ``path`` (fp32, eval mode), its input mean and
    deviation, and its tokenizer."""
    import open_clip

    path = Path(path)
    config = _read_config(path)
    model = build_open_clip(config["model_cfg"])
    state = {
        k: v.float() if v.is_floating_point() else v
        for k, v in load_weights(path, "clip_model").items()
    }
    missing, unexpected = _key_mismatch(model, state)
    if missing or unexpected:
        raise ValueError(
            f"clip_model: {path} does not fit its {CONFIG}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # shapes that differ from the config's
        detail = " ".join(str(error).split())  # one line
        raise ValueError(f"clip_model: {path} does not fit its {CONFIG}: {detail}") from None
    preprocess = config.get("preprocess_cfg", {})
    mean = tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD))
    text_cfg = config["model_cfg"].get("text_cfg", {})
    tokenizer = open_clip.SimpleTokenizer(
        context_length=text_cfg.get("context_length", 77), **text_cfg.get("tokenizer_kwargs", {})
    )
    return model.eval().requires_grad_(False).to(device), mean, std, tokenizer


def _key_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list, list]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


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
