"""Depth from real models, for 3D animation: Depth-Anything-V2-Small and Intel's DPT-Hybrid
MiDaS, as transformers builds them.

Each is a registry row of family ``depth``: one ``.safetensors`` file (fetched by vqclip's
downloader, read as plain tensors) and, in the row itself, the architecture and its settings,
so that nothing the download holds (no ``config.json``, no remote code, nothing pickled)
decides what is built, and the file's tensors must fill it exactly (no name missing, none
left over, every shape the same), else it is refused. transformers is the ``depth`` extra: it
is imported only here, when such a model is asked for.

Both predict relative inverse depth (larger is nearer); the estimator returns its negative, a
distance up to scale and shift, which :func:`vqclip.run.motion.normalised_depth` maps onto the
animation's fixed range per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vqclip.models.checkpoints import load_weights

__all__ = [
    "ARCHITECTURES", "architecture", "depth_models", "load_depth_model", "as_estimator", "depth_estimator",
]  # fmt: skip

DepthFn = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) in [0, 1] -> (B, 1, H, W)

# The architectures vqclip builds, each with the settings of its published checkpoint (as
# transformers' conversion scripts make them), the side its input is resized to, and the
# normalisation it was trained with. Depth-Anything-V2 reads DINOv2-small's layers 3, 6, 9
# and 12, where transformers' defaults are V1's 9-12: the same tensors, so a file of either
# fills the model, but V1's layers give a wrong depth. DPT-Hybrid's neck takes its BiT
# backbone's 256- and 512-channel stages.
_DINOV2_SMALL = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6,
                 "mlp_ratio": 4, "image_size": 518, "patch_size": 14, "layerscale_value": 1.0,
                 "apply_layernorm": True, "reshape_hidden_states": False,
                 "out_indices": [3, 6, 9, 12]}  # fmt: skip
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "depth-anything": {
        "classes": ("DepthAnythingConfig", "DepthAnythingForDepthEstimation"),
        "backbone": "dinov2",
        "config": {
            "backbone_config": _DINOV2_SMALL,
            "reassemble_hidden_size": _DINOV2_SMALL["hidden_size"],
            "patch_size": _DINOV2_SMALL["patch_size"],
            "neck_hidden_sizes": [48, 96, 192, 384],
            "fusion_hidden_size": 64,
        },  # fmt: skip
        "size": 518,  # a multiple of its 14-pixel patches
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    },
    "dpt-hybrid": {
        "classes": ("DPTConfig", "DPTForDepthEstimation"),
        "backbone": "bit",
        "config": {"is_hybrid": True, "neck_hidden_sizes": [256, 512, 768, 768]},
        "size": 384,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    },
}


def depth_models() -> dict[str, str]:
    """The registry's depth models, by name, with what ``--help`` says of each."""
    from vqclip.models.registry import registry

    return {
        name: f"{entry.flags['architecture']} ({entry.size_mb:.0f} MB from the registry)"
        for name, entry in registry().items()
        if entry.family == "depth"
    }


def architecture(name: str, settings: dict[str, Any]) -> tuple[type, Any]:
    """transformers' model class of architecture ``name`` and its config, with ``settings``
    over the published checkpoint's (a tiny instance in the tests, say)."""
    import transformers

    spec = ARCHITECTURES[name]
    config_class, model_class = (getattr(transformers, n) for n in spec["classes"])
    config = {**spec["config"], **settings}
    if isinstance(config.get("backbone_config"), dict):  # a tiny or changed backbone
        config["backbone_config"] = {**config["backbone_config"], "model_type": spec["backbone"]}
    # No backbone by name: a name would make transformers look it up on the Hub.
    config.update(backbone=None, use_pretrained_backbone=False, use_timm_backbone=False)
    return model_class, config_class(**config)


def load_depth_model(path: Path, flags: dict[str, Any], device: torch.device | str = "cpu") -> DepthFn:  # fmt: skip
    """The depth model of a registry row's ``flags`` (``architecture``, its ``config``
    settings, optionally its input ``size``) with the weights at ``path``, as an estimator."""
    name = flags["architecture"]
    try:
        model_class, config = architecture(name, dict(flags.get("config", {})))
        from transformers.utils import logging as transformers_logging
    except ImportError:
        raise ValueError(
            "depth_model: the real depth models need transformers; install vqclip[depth]"
        ) from None
    state = load_weights(path, "depth_model")
    transformers_logging.disable_progress_bar()
    try:  # transformers' loader: it renames the tensors of files saved in its older layouts
        model, info = model_class.from_pretrained(
            None, config=config, state_dict=state, output_loading_info=True, local_files_only=True
        )
    except (RuntimeError, ValueError) as error:
        detail = " ".join(str(error).split())[:200]
        raise ValueError(f"depth_model: {path} does not fit the architecture of {name} in its registry row ({detail})") from None  # fmt: skip
    wrong = {k: sorted(v)[:5] for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if (v := info[k])}  # fmt: skip
    if wrong:
        raise ValueError(f"depth_model: {path} does not fit the architecture of {name} in its registry row: {wrong}")  # fmt: skip
    return as_estimator(model, name, int(flags.get("size", ARCHITECTURES[name]["size"])), device)


def as_estimator(model: torch.nn.Module, name: str, size: int, device: torch.device | str) -> DepthFn:  # fmt: skip
    """A model of architecture ``name`` as a depth estimator: images resized to ``size``
    square and normalised as it was trained, its inverse depth back at the images' size."""
    model = model.eval().requires_grad_(False).to(device)
    spec = ARCHITECTURES[name]
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (spec["mean"], spec["std"]))  # fmt: skip

    @torch.no_grad()
    def estimate(image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        x = F.interpolate(image.float().to(device), (size, size), mode="bicubic", align_corners=False)  # fmt: skip
        inverse = model(pixel_values=(x.clamp(0, 1) - mean) / std).predicted_depth  # (B, h, w)
        inverse = F.interpolate(inverse[:, None], (height, width), mode="bilinear", align_corners=False)  # fmt: skip
        return (-inverse).to(image.device, image.dtype)  # nearer is smaller

    return estimate


def depth_estimator(name: str, device: torch.device | str = "cpu") -> DepthFn:
    """The registry's depth model ``name``, fetched (hashed) if missing, as an estimator."""
    from vqclip.models.registry import entry_paths, registry

    entry = registry()[name]
    (path,) = entry_paths(entry)
    return load_depth_model(path, dict(entry.flags), device)
