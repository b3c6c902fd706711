"""Model building, saving and safe loading: the only module that imports taming and clip.

A VQGAN is built from taming's own building blocks (Encoder, Decoder, quantisers) without
pytorch_lightning, and its weights are loaded strictly. Checkpoints are read with torch's
weights-only unpickler, and TorchScript archives by an inert reader (:mod:`vqclip.models.checkpoints`),
so no checkpoint can run code.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import importlib.util
import io
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import packaging.version
import taming.modules.diffusionmodules.model as taming_blocks
import torch
import torch.nn.functional as F
import yaml
from taming.modules.diffusionmodules.model import Decoder, Encoder
from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vqclip.core.limits import parse_yaml, read_text
from vqclip.models.checkpoints import (
    check_fits,
    is_torchscript,
    load_checkpoint,
    read_torchscript_state,
)


def _import_clip() -> types.ModuleType:
    """clip-anytorch's ``clip`` package with its model classes and tokenizer, without running the
    package's ``__init__`` until an attribute only it defines is used (``clip.load``).

    That ``__init__`` imports torchvision's transforms (for ``clip.load``'s preprocessing, which
    vqclip does not use), and torchvision imports torch's compiler: ``import vqclip.run.driver``
    took 2.4 s with it, 1.3 s without (a generation's optimizer imports the compiler anyway,
    docs/performance.md). When it does run, it gets a stand-in for its ``from pkg_resources import
    packaging`` (only to compare torch versions): setuptools 81 removed pkg_resources, and
    pinning an older setuptools would downgrade the user's.
    """
    if "clip" not in sys.modules:
        spec = importlib.util.find_spec("clip")
        if spec is None or spec.loader is None:
            raise ImportError("clip-anytorch is not installed: pip install clip-anytorch")
        package = importlib.util.module_from_spec(spec)
        package.__getattr__ = functools.partial(_run_clip_init, package, spec)
        sys.modules["clip"] = package
    import clip.model
    import clip.simple_tokenizer  # noqa: F401  (tokenize's)

    return sys.modules["clip"]


def _run_clip_init(
    package: types.ModuleType, spec: importlib.machinery.ModuleSpec, name: str
) -> Any:
    """``clip``'s module ``__getattr__``: run its ``__init__`` once, then look ``name`` up."""
    if name.startswith("__"):  # probes such as inspect's, not clip's API
        raise AttributeError(name)
    del package.__getattr__
    stand_in = types.ModuleType("pkg_resources")
    stand_in.packaging = packaging
    before = sys.modules.get("pkg_resources", _MISSING)
    sys.modules["pkg_resources"] = stand_in
    try:
        spec.loader.exec_module(package)
    finally:
        if before is _MISSING:
            del sys.modules["pkg_resources"]
        else:
            sys.modules["pkg_resources"] = before
    return getattr(package, name)


_MISSING = object()
clip = _import_clip()

__all__ = [
    "VQGAN",
    "VQGANSpec",
    "read_vqgan_spec",
    "build_vqgan",
    "load_vqgan",
    "save_vqgan",
    "build_clip",
    "load_clip",
    "save_clip",
    "tokenize",
    "compile_for_loop",
    "prepare_for_loop",
]

log = logging.getLogger(__name__)

VQ_TARGET = "taming.models.vqgan.VQModel"
GUMBEL_TARGET = "taming.models.vqgan.GumbelVQ"
NET2NET_TARGET = "taming.models.cond_transformer.Net2NetTransformer"
KNOWN_TARGETS = (VQ_TARGET, GUMBEL_TARGET, NET2NET_TARGET)
# Keys of training-only parts (the GAN/LPIPS loss) that a VQGAN checkpoint carries and we drop.
_TRAINING_ONLY_PREFIXES = ("loss.",)


def compile_for_loop(vqgan: nn.Module | None, clip_model: nn.Module | None) -> None:
    """``torch.compile`` the parts the loop runs every step, in place: the VQGAN's decoder and
    CLIP's image tower (``VQGAN.decode`` and ``CLIP.encode_image`` call them). The first step
    then compiles (minutes on a CPU); later steps run the fused kernels."""
    if vqgan is not None:
        vqgan.decoder = torch.compile(vqgan.decoder)
    if clip_model is not None:
        clip_model.visual = torch.compile(clip_model.visual)


def prepare_for_loop(vqgan: nn.Module | None, clip_model: nn.Module | None) -> None:
    """Rearrange the models given (either may be None), in place, for the loop's speed; each
    computes the same function (to float rounding; the tests check it).

    The VQGAN goes channels-last (oneDNN's and cuDNN's fast convolution and group-norm kernels
    work in that layout), runs taming's swish as ``F.silu`` (:func:`_fuse_swish`), its
    attention by SDPA (:class:`_Attention`) and its group norms in fp32 under autocast
    (:class:`_FloatGroupNorm`); a CLIP ViT's patch embedding becomes one matrix product
    (:class:`_PatchEmbedding`) and its QuickGELU a fused SiLU (:func:`_fuse_quick_gelu`); a
    CLIP ResNet's batch norms are folded into its convolutions and it goes channels-last
    (:func:`_fold_batch_norms`). What
    each bought: docs/performance.md. Only for the loop: the folded CLIP weights are not the
    file's, so a prepared CLIP must not be saved.
    """
    if vqgan is not None:
        _prepare_vqgan(vqgan)
    if clip_model is not None:
        _prepare_clip(clip_model)


def _prepare_vqgan(vqgan: nn.Module) -> None:
    vqgan.to(memory_format=torch.channels_last)
    _fuse_swish(vqgan)
    for parent in list(vqgan.modules()):
        for name, child in parent.named_children():
            if isinstance(child, taming_blocks.AttnBlock):
                setattr(parent, name, _Attention(child))
            elif type(child) is nn.GroupNorm:
                child.__class__ = _FloatGroupNorm  # in place: the same parameters and state dict


def _prepare_clip(clip_model: nn.Module) -> None:
    visual = clip_model.visual
    if isinstance(visual, clip.model.VisionTransformer) and isinstance(visual.conv1, nn.Conv2d):
        visual.conv1 = _PatchEmbedding(visual.conv1)  # once: a second call finds it replaced
    if (type(visual).__module__, type(visual).__name__) in _RESNET_TOWERS:
        _fold_batch_norms(visual)
        visual.to(memory_format=torch.channels_last)
    for block in clip_model.modules():
        if isinstance(block, clip.model.ResidualAttentionBlock):
            _fuse_quick_gelu(block.mlp)


class _Attention(nn.Module):
    """taming's AttnBlock (one head over the latent's cells, with a residual) by
    :func:`F.scaled_dot_product_attention`: the same function, with its parameters under the
    same names. taming multiplies queries by keys and scales the product afterwards, which
    overflows fp16 (65504) once the products grow: a block whose query and key weights were
    scaled by 60 gave inf and NaN under fp16 autocast, and finite values, 0.08 from fp32's,
    this way. On a GPU it is also the fused attention kernel."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.norm, self.q, self.k, self.v = block.norm, block.q, block.k, block.v
        self.proj_out = block.proj_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape  # (B, C, h, w), channels-last in the loop: the views are free
        normed = self.norm(x)
        q, k, v = (
            t.permute(0, 2, 3, 1).reshape(b, 1, h * w, c)
            for t in (self.q(normed), self.k(normed), self.v(normed))
        )  # (B, 1 head, cells, C)
        # One kernel on a CPU whatever the caller's context, so that the same latent decodes
        # to the same bits inside and outside the loop; a GPU picks its fused kernel.
        with sdpa_kernel(SDPBackend.MATH) if x.is_cpu else contextlib.nullcontext():
            out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(out.reshape(b, h, w, c).permute(0, 3, 1, 2))


# The CLIP ResNet image towers (OpenAI's and OpenCLIP's copy of it): each batch norm follows the
# convolution of its number (bn2 after conv2) or, in a downsample, the convolution before it.
_RESNET_TOWERS = {("clip.model", "ModifiedResNet"), ("open_clip.modified_resnet", "ModifiedResNet")}


def _fold_batch_norms(tower: nn.Module) -> None:
    """Fold each batch norm of a CLIP ResNet tower (frozen: its running statistics) into the
    convolution before it, which gains a bias: the same function without the norm's pass and
    its backward. The caller puts the tower channels-last, where a CPU's average pooling is
    vectorised; what the two bought: docs/performance.md."""
    for parent in list(tower.modules()):
        children = list(parent.named_children())
        for index, (name, norm) in enumerate(children):
            if not isinstance(norm, nn.BatchNorm2d) or norm.training:
                continue
            if isinstance(parent, nn.Sequential):
                conv = children[index - 1][1] if index else None
            else:
                conv = getattr(parent, "conv" + name.removeprefix("bn"), None)
            if not isinstance(conv, nn.Conv2d) or conv.out_channels != norm.num_features:
                continue
            with torch.no_grad():
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                shift = norm.bias - norm.running_mean * scale
                if conv.bias is not None:
                    shift = shift + conv.bias * scale
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(shift, requires_grad=conv.weight.requires_grad)
            setattr(parent, name, nn.Identity())


class _FloatGroupNorm(nn.GroupNorm):
    """A group norm of fp32 inputs, whatever autocast made of its input, as CUDA's autocast
    already runs group norms (a CPU's autocast passes bf16 through): torch's channels-last
    bf16 group-norm kernel is a CPU's slow one (docs/performance.md). In fp32 it is the stock
    group norm, bit for bit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps)


class _PatchEmbedding(nn.Module):
    """A ViT's patch convolution (kernel = stride, no bias) as one matrix product on the
    patches: the same sums, and its input gradient is one product too, not oneDNN's slow
    strided-convolution backward. Keeps the parameter's name, ``weight``, which ``CLIP.dtype``
    reads."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        assert conv.bias is None and conv.kernel_size == conv.stride, conv
        self.weight = conv.weight  # (width, 3, p, p)
        self.patch = conv.kernel_size[0]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b, c, h, w = image.shape  # (B, 3, H, W)
        p = self.patch
        patches = image.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, h // p, w // p, c * p * p)  # (B, H/p, W/p, 3 p p)
        return F.linear(patches, self.weight.flatten(1)).permute(0, 3, 1, 2)  # (B, width, ., .)


_GELU_SCALE = 1.702  # QuickGELU(x) = x * sigmoid(1.702 x) = silu(1.702 x) / 1.702


def _fuse_quick_gelu(mlp: nn.Sequential) -> None:
    """Fold QuickGELU's scale into the linear layers around it, so that it becomes ``F.silu``:
    c_fc's output is scaled by 1.702 and c_proj's input by 1 / 1.702, and the activation is one
    fused kernel forward and backward instead of three and four. Done once per block."""
    if not isinstance(mlp.gelu, clip.model.QuickGELU):
        return
    with torch.no_grad():
        mlp.c_fc.weight.mul_(_GELU_SCALE)
        mlp.c_fc.bias.mul_(_GELU_SCALE)
        mlp.c_proj.weight.div_(_GELU_SCALE)
    mlp.gelu = nn.SiLU()


def _fuse_swish(vqgan: nn.Module) -> None:
    """Run taming's swish as ``F.silu`` in this VQGAN's blocks: the same function in one fused
    kernel, forward and backward, instead of three kernels and three buffers for ``x *
    sigmoid(x)``. taming's blocks look ``nonlinearity`` up in their module's globals, so each
    block of this instance gets its forward with those globals and ``F.silu`` in its place;
    taming's module, and every other instance, keep taming's own."""
    for block in vqgan.modules():
        kinds = (taming_blocks.ResnetBlock, taming_blocks.Encoder, taming_blocks.Decoder)
        if isinstance(block, kinds) and "forward" not in block.__dict__:
            block.forward = types.MethodType(_with_silu(type(block).forward), block)


@functools.cache
def _with_silu(forward: types.FunctionType) -> types.FunctionType:
    namespace = {**forward.__globals__, "nonlinearity": F.silu}
    return types.FunctionType(
        forward.__code__, namespace, forward.__name__, forward.__defaults__, forward.__closure__
    )


# --------------------------------------------------------------------------------------------
# VQGAN


@dataclass(frozen=True)
class VQGANSpec:
    """What a VQGAN YAML says: the family, the autoencoder shape and the codebook."""

    target: str  # one of KNOWN_TARGETS
    ddconfig: dict[str, Any]  # taming Encoder/Decoder arguments
    n_embed: int  # codebook entries
    embed_dim: int  # codebook vector size
    gumbel: bool  # GumbelQuantize (openimages f8) instead of VectorQuantizer2
    prefix: str  # state-dict prefix of the first stage ("" or "first_stage_model.")

    @property
    def factor(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)


def read_vqgan_spec(config_path: str | Path) -> VQGANSpec:
    """Parse a taming YAML (VQModel, GumbelVQ, or a Net2Net's first stage) without building it."""
    config = parse_yaml(read_text(config_path, "vqgan"), f"VQGAN config {config_path}")
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or "target" not in model:
        raise ValueError(f"VQGAN config {config_path}: expected a 'model' with a 'target'")
    target, params, prefix = model["target"], model.get("params", {}), ""
    _check_target(target, config_path)
    if target == NET2NET_TARGET:
        stage = params.get("first_stage_config") if isinstance(params, dict) else None
        stage = stage if isinstance(stage, dict) else {}
        target, params, prefix = stage.get("target"), stage.get("params", {}), "first_stage_model."
        _check_target(target, config_path)
        if target == NET2NET_TARGET:
            raise ValueError(f"VQGAN config {config_path}: a Net2Net first stage must be a VQGAN")
    if not isinstance(params, dict):
        raise ValueError(f"VQGAN config {config_path}: expected 'params' to be a mapping")
    return VQGANSpec(
        target=target,
        ddconfig=_checked_ddconfig(params.get("ddconfig"), config_path),
        n_embed=_yaml_int(params, "n_embed", config_path),
        embed_dim=_yaml_int(params, "embed_dim", config_path),
        gumbel=target == GUMBEL_TARGET,
        prefix=prefix,
    )


_DDCONFIG_INTS = ("ch", "out_ch", "num_res_blocks", "in_channels", "resolution", "z_channels")


def _checked_ddconfig(ddconfig: Any, config_path: str | Path) -> dict[str, Any]:
    """The autoencoder's arguments, checked to be what taming's Encoder and Decoder take."""
    if not isinstance(ddconfig, dict):
        raise ValueError(
            f"VQGAN config {config_path}: expected params.ddconfig, a mapping of the "
            f"autoencoder's shape ({', '.join(_DDCONFIG_INTS)}, ch_mult, attn_resolutions), "
            f"got {ddconfig!r}"
        )
    for key in _DDCONFIG_INTS:
        _yaml_int(ddconfig, key, config_path, "ddconfig.")
    for key in ("ch_mult", "attn_resolutions"):
        value = ddconfig.get(key)
        if not isinstance(value, list) or not all(_is_count(v) for v in value):
            raise ValueError(
                f"VQGAN config {config_path}: expected params.ddconfig.{key} to be a list of "
                f"positive integers, got {value!r}"
            )
    if not ddconfig["ch_mult"]:
        raise ValueError(f"VQGAN config {config_path}: params.ddconfig.ch_mult is empty")
    return dict(ddconfig)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1 << 20


def _yaml_int(params: dict, key: str, config_path: str | Path, where: str = "") -> int:
    value = params.get(key)
    if not _is_count(value):
        raise ValueError(
            f"VQGAN config {config_path}: expected params.{where}{key} to be a positive "
            f"integer, got {value!r}"
        )
    return value


def _check_target(target: Any, config_path: str | Path) -> None:
    if not isinstance(target, str) or target not in KNOWN_TARGETS:
        raise ValueError(
            f"VQGAN config {config_path}: refused target {target!r}; "
            f"only the known VQGAN classes may be named: {list(KNOWN_TARGETS)}"
        )


class VQGAN(nn.Module):
    """A taming VQGAN autoencoder (no loss, no Lightning), with the parts the loop needs."""

    def __init__(self, spec: VQGANSpec) -> None:
        super().__init__()
        self.spec = spec
        z_channels = spec.ddconfig["z_channels"]
        self.encoder = Encoder(**spec.ddconfig)
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints its z shape
            self.decoder = Decoder(**spec.ddconfig)
        if spec.gumbel:
            self.quantize = GumbelQuantize(z_channels, spec.embed_dim, n_embed=spec.n_embed)
        else:
            self.quantize = VectorQuantizer2(spec.n_embed, spec.embed_dim, beta=0.25)
        self.quant_conv = nn.Conv2d(z_channels, spec.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(spec.embed_dim, z_channels, 1)

    @property
    def codebook(self) -> torch.Tensor:
        """The codebook, (n_embed, embed_dim)."""
        return self.quantize.embed.weight if self.spec.gumbel else self.quantize.embedding.weight

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> quantised latent (B, embed_dim, H/f, W/f)."""
        h = self.quant_conv(self.encoder(image))
        if self.spec.gumbel:  # the most likely code, not a Gumbel sample: deterministic
            codes = self.quantize.proj(h).argmax(1)  # (B, h, w)
        else:
            flat = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])  # (B*h*w, D)
            codes = torch.cdist(flat, self.codebook).argmin(1).view(h.shape[0], *h.shape[2:])
        return self.codebook[codes].permute(0, 3, 1, 2)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim, h, w) -> (B, 3, h*f, w*f), roughly in [-1, 1]."""
        return self.decoder(self.post_quant_conv(latent))


def build_vqgan(spec: VQGANSpec) -> VQGAN:
    """A randomly initialised VQGAN of the given shape."""
    return VQGAN(spec)


def load_vqgan(
    config_path: str | Path, checkpoint_path: str | Path, device: str | torch.device = "cpu"
) -> VQGAN:
    """Build a VQGAN from a taming YAML and load its checkpoint strictly, in eval mode."""
    spec = read_vqgan_spec(config_path)
    checkpoint = load_checkpoint(checkpoint_path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"VQGAN checkpoint {checkpoint_path}: expected a state dict")
    state = _first_stage_weights(state, spec.prefix)
    check_fits(lambda: VQGAN(spec), state, "vqgan", Path(checkpoint_path))  # before any memory
    model = VQGAN(spec)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False).to(device)


def _first_stage_weights(state: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """The autoencoder's weights: strip ``prefix``, drop other stages and training-only parts."""
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in weights.items() if not k.startswith(_TRAINING_ONLY_PREFIXES)}


def save_vqgan(
    model: VQGAN, config_path: str | Path, checkpoint_path: str | Path, fp16: bool = False
) -> None:
    """Save in taming's format: a YAML naming the VQModel/GumbelVQ, and ``{"state_dict": ...}``."""
    spec = model.spec
    params = {"embed_dim": spec.embed_dim, "n_embed": spec.n_embed, "ddconfig": spec.ddconfig}
    config = {"model": {"target": spec.target, "params": params}}
    Path(config_path).write_text(yaml.safe_dump(config, sort_keys=False))
    state = {
        k: (v.half() if fp16 and v.is_floating_point() else v)
        for k, v in model.state_dict().items()
    }
    torch.save({"state_dict": state}, checkpoint_path)


# --------------------------------------------------------------------------------------------
# CLIP


def build_clip(**shape: int | tuple[int, ...] | None) -> clip.model.CLIP:
    """A randomly initialised ``clip.model.CLIP`` (arguments as its constructor's), in fp32."""
    return clip.model.CLIP(**shape).float()


def load_clip(path: str | Path, device: str | torch.device = "cpu") -> clip.model.CLIP:
    """Load an OpenAI CLIP file (TorchScript archive or state dict) safely, fp32, eval mode."""
    state = _read_clip_state(Path(path))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model = clip.model.build_model(dict(state)).float()
        # build_model rounds the weights through fp16; reload them exactly, strictly, in fp32.
        model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()})
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"CLIP file {path} is not a CLIP state dict: {error}") from None
    return model.eval().requires_grad_(False).to(device)


def _read_clip_state(path: Path) -> dict[str, torch.Tensor]:
    if is_torchscript(path):  # OpenAI's published files: their tensors, none of their code
        state = read_torchscript_state(path)
    else:
        state = load_checkpoint(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or "visual.conv1.weight" not in state:
        raise ValueError(f"CLIP file {path}: expected a CLIP state dict with 'visual.conv1.weight'")
    return state


def save_clip(model: clip.model.CLIP, path: str | Path, fp16: bool = True) -> None:
    """Save an OpenAI-style state dict (what ``clip.load(path, jit=False)`` reads)."""
    state = {
        k: (v.half() if fp16 and v.is_floating_point() else v)
        for k, v in model.state_dict().items()
    }
    torch.save(state, path)


def tokenize(model: clip.model.CLIP, texts: list[str]) -> torch.Tensor:
    """Token ids (N, context_length) for this model's own context length, truncated as
    ``clip.tokenize(..., truncate=True)`` does (its last kept token made the end of text)."""
    tokenizer = _tokenizer()
    start, end = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    length = model.context_length
    tokens = torch.zeros(len(texts), length, dtype=torch.long)
    for row, text in zip(tokens, texts, strict=True):
        ids = [start, *tokenizer.encode(text)][: length - 1] + [end]
        row[: len(ids)] = torch.tensor(ids)
    return tokens


@functools.cache
def _tokenizer() -> clip.simple_tokenizer.SimpleTokenizer:
    return clip.simple_tokenizer.SimpleTokenizer()  # reads its vocabulary file: once
