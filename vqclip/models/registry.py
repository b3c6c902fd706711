"""Named models: the registry, the cache, and resolving a name or path to local files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vqclip.models.download import ModelFile, ensure_file

__all__ = [
    "ModelFile",  # defined with the downloader, which fetches it; named here for plugins
    "ModelEntry",
    "REGISTRY",
    "register_model",
    "registry",
    "cache_dir",
    "resolve_vqgan",
    "resolve_clip",
    "resolve_prior",
    "resolve_diffusion",
    "resolve_upscaler",
    "resolve_flow",
    "local_image",
    "model_names",
    "entry_paths",
    "is_cached",
]

_HEIBOX = "https://heibox.uni-heidelberg.de/d/{}/files/?p=%2F{}&dl=1"


@dataclass(frozen=True)
class ModelEntry:
    """A named model: a VQGAN (config + checkpoint), a CLIP, an image prior or an upscaler (one
    file), or a diffusion model (its weights, after its flags' JSON unless ``flags`` gives them)."""

    name: str
    family: str  # "vqgan", "clip", "prior", "diffusion", "upscaler", "flow", "depth", ...
    files: tuple[ModelFile, ...]
    size_mb: float  # approximate download size (`vqclip models` shows the real one once cached)
    directory: Path | None = None  # where a plugin ships the files; None: the cache
    flags: dict | None = None  # the architecture of weights that carry none (diffusion, depth)

    @property
    def bundled(self) -> bool:
        """Whether the files ship with a package (a plugin's), not through the cache."""
        return self.directory is not None


def _vqgan(
    name: str, config_urls: tuple[str, ...], ckpt_urls: tuple[str, ...], mb: float
) -> ModelEntry:
    return ModelEntry(
        name,
        "vqgan",
        (ModelFile(f"{name}.yaml", config_urls, kind="yaml"), ModelFile(f"{name}.ckpt", ckpt_urls)),
        mb,
    )


def _heibox(share: str, config: str, ckpt: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (_HEIBOX.format(share, config),), (_HEIBOX.format(share, ckpt),)


_MEHDIDC = "https://github.com/mehdidc/feed_forward_vqgan_clip/releases/download/0.1/"
_PIXRAY = "https://github.com/pixray/pixray/releases/download/v1.7.1/"
_f16_16384 = _heibox("a7530b09fed84f80a887", "configs%2Fmodel.yaml", "ckpts%2Flast.ckpt")
_CLIP_BASE = "https://openaipublic.azureedge.net/clip/models/"
# OpenAI's CLIP files, as clip-anytorch 2.6.0 lists them: (name, path under _CLIP_BASE; the path's directory is the file's SHA-256).
_CLIP_FILES = {
    "RN50": "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}
_CLIP_MB = {"RN50": 244, "RN101": 278, "RN50x4": 402, "RN50x16": 630, "RN50x64": 1260,
            "ViT-B/32": 338, "ViT-B/16": 335, "ViT-L/14": 890, "ViT-L/14@336px": 891}  # fmt: skip


# LAION's OpenCLIP models on the Hugging Face hub, in open_clip's own hub format: its config
# (architecture and preprocessing) and safetensors weights. No hash is published beside them:
# the first good download's SHA-256 is recorded and checked afterwards.
_HF = "https://huggingface.co/laion/{}/resolve/main/{}"
_OPEN_CLIP = {
    "open_clip:ViT-B-32/laion2b_s34b_b79k": ("CLIP-ViT-B-32-laion2B-s34B-b79K", 606),
    "open_clip:ViT-L-14/laion2b_s32b_b82k": ("CLIP-ViT-L-14-laion2B-s32B-b82K", 1710),
    "open_clip:ViT-H-14/laion2b_s32b_b79k": ("CLIP-ViT-H-14-laion2B-s32B-b79K", 3940),
}


def _open_clip(name: str, repo: str, mb: float) -> ModelEntry:
    config = ModelFile("open_clip_config.json", (_HF.format(repo, "open_clip_config.json"),), kind="json")  # fmt: skip
    weights = ModelFile("open_clip_model.safetensors", (_HF.format(repo, "open_clip_model.safetensors"),), kind="safetensors")  # fmt: skip
    return ModelEntry(name, "clip", (config, weights), mb)


# OpenAI's guided-diffusion models (plain state dicts; the flags are those the model was trained
# with, from its README), and Katherine Crowson's unconditional fine-tune of the 512x512 one that
# Disco Diffusion uses; the SHA-256 values are those Disco Diffusion checks.
_DIFFUSION_FLAGS = {"num_channels": 256, "num_res_blocks": 2, "attention_resolutions": [32, 16, 8],
                    "num_head_channels": 64, "learn_sigma": True, "use_scale_shift_norm": True,
                    "resblock_updown": True, "diffusion_steps": 1000, "noise_schedule": "linear"}  # fmt: skip
_DIFFUSION = (
    ("256x256_diffusion_uncond", 256, [1, 1, 2, 2, 4, 4], 553,
     ("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",),
     "983e3de6f95c88c81b2ca7ebb2c217933be1973b1ff058776b970f901584613a"),
    ("512x512_diffusion_uncond_finetune_008100", 512, [0.5, 1, 1, 2, 2, 4, 4], 559,
     ("https://v-diffusion.s3.us-west-2.amazonaws.com/512x512_diffusion_uncond_finetune_008100.pt",
      "https://huggingface.co/lowlevelware/512x512_diffusion_unconditional_ImageNet/resolve/main/512x512_diffusion_uncond_finetune_008100.pt"),
     "9c111ab89e214862b76e1fa6a1b3f1d329b1a88281885943d2cdbe357ad57648"),
)  # fmt: skip


def _diffusion(name: str, size: int, mult: list, mb: float, urls: tuple, sha: str) -> ModelEntry:
    flags = {**_DIFFUSION_FLAGS, "image_size": size, "channel_mult": mult}
    return ModelEntry(name, "diffusion", (ModelFile(f"{name}.pt", urls, sha),), mb, flags=flags)


# Real-ESRGAN's general-purpose upscalers (RRDBNet state dicts under "params_ema"), which
# spandrel builds from the keys; the SHA-256 values are of the release files.
_REAL_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download/"
_UPSCALERS = (
    ("RealESRGAN_x4plus", "v0.1.0", 67.0,
     "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"),
    ("RealESRGAN_x2plus", "v0.2.1", 67.1,
     "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb"),
)  # fmt: skip


def _upscaler(name: str, release: str, mb: float, sha: str) -> ModelEntry:
    file = ModelFile(f"{name}.pth", (f"{_REAL_ESRGAN}{release}/{name}.pth",), sha)
    return ModelEntry(name, "upscaler", (file,), mb)


# torchvision's RAFT weights (the defaults of its builders), fetched by vqclip's downloader;
# torchvision publishes the SHA-256's first 8 hex digits, in the file name.
_TORCHVISION = "https://download.pytorch.org/models/"
_RAFT = (
    ("raft_small", "raft_small_C_T_V2-01064c6d.pth", 3.9),
    ("raft_large", "raft_large_C_T_SKHT_V2-ff5fadd5.pth", 20.1),
)


def _raft(name: str, file: str, mb: float) -> ModelEntry:
    sha = file.rsplit("-", 1)[1].split(".")[0]
    return ModelEntry(name, "flow", (ModelFile(f"{name}.pth", (_TORCHVISION + file,), sha),), mb)


# Depth models for 3D animation, as transformers saves them on the Hugging Face Hub; the
# architecture is held here (vqclip.models.depth), never read from the download. Depth-
# Anything's file is pinned to a revision whose SHA-256 two unrelated projects publish (no
# network here but the package registries to read it from the Hub); DPT-Hybrid's, for which
# none was found, is recorded at the first download, as for the VQGAN rows, and checked later.
_HUB = "https://huggingface.co/{}/resolve/{}/model.safetensors"
_DEPTH = (
    ("depth-anything-v2-small", "depth-anything/Depth-Anything-V2-Small-hf", "depth-anything", 99,
     "5426e4f0f36572d16453bbda7a8389317b1bef99",
     "3152477ce0d8d6978d76b995120de97cb5b928701fd0f817769f59e249a16b70"),
    ("dpt-hybrid-midas", "Intel/dpt-hybrid-midas", "dpt-hybrid", 490, "main", None),
)  # fmt: skip


def _depth(name: str, repo: str, architecture: str, mb: float, revision: str, sha: str | None) -> ModelEntry:  # fmt: skip
    file = ModelFile(f"{name}.safetensors", (_HUB.format(repo, revision),), sha, kind="safetensors")  # fmt: skip
    return ModelEntry(name, "depth", (file,), mb, flags={"architecture": architecture})


# RIFE's interpolator (Practical-RIFE 4.25, MIT) as safetensors, pinned to the Hub revision
# whose commit publishes the file's SHA-256 (its Git LFS pointer); the network's layout is
# held here (vqclip.models.rife): the file's size is exactly that layout's, saved in fp32.
_RIFE = ModelFile(
    "rife.safetensors",
    ("https://huggingface.co/benjamin-paine/taproot-common/resolve/"
     "d556fe57524f691388df3d28a082a0ff1625e784/image-interpolation-rife-flownet.safetensors",),
    "e4638dde35c5467e3a29df4dfbd3b5972ab5919ecce39f8d9def482f70633368",
    kind="safetensors",
)  # fmt: skip


def _clip(name: str, path: str) -> ModelEntry:
    digest = path.split("/")[0]
    file = ModelFile(f"{name.replace('/', '-')}.pt", (_CLIP_BASE + path,), digest, kind="clip")
    return ModelEntry(name, "clip", (file,), _CLIP_MB[name])


REGISTRY: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        _vqgan(
            "imagenet_f16_16384",
            (_f16_16384[0][0], _MEHDIDC + "vqgan_imagenet_f16_16384.yaml"),
            (_f16_16384[1][0], _MEHDIDC + "vqgan_imagenet_f16_16384.ckpt"),
            935,
        ),
        _vqgan(
            "imagenet_f16_1024",
            *_heibox("8088892a516d4e3baf92", "configs%2Fmodel.yaml", "ckpts%2Flast.ckpt"),
            913,
        ),
        _vqgan(
            "openimages_f8_8192",
            *_heibox("2e5662443a6b4307b470", "configs%2Fmodel.yaml", "ckpts%2Flast.ckpt"),
            376,
        ),
        _vqgan(
            "wikiart_f16_16384",
            (_PIXRAY + "vqgan_wikiart_16384.yaml",),
            (_PIXRAY + "vqgan_wikiart_16384.ckpt",),
            958,
        ),
        _vqgan(
            "sflckr",
            *_heibox(
                "73487ab6e5314cb5adba",
                "configs%2F2020-11-09T13-31-51-project.yaml",
                "checkpoints%2Flast.ckpt",
            ),
            4100,
        ),
        _vqgan(
            "coco",
            ("https://dl.nmkd.de/ai/clip/coco/coco.yaml",),
            ("https://dl.nmkd.de/ai/clip/coco/coco.ckpt",),
            8000,
        ),
        *(_clip(name, path) for name, path in _CLIP_FILES.items()),
        *(_open_clip(name, *row) for name, row in _OPEN_CLIP.items()),
        *(_diffusion(*row) for row in _DIFFUSION),
        *(_upscaler(*row) for row in _UPSCALERS),
        *(_raft(*row) for row in _RAFT),
        *(_depth(*row) for row in _DEPTH),
        ModelEntry("rife", "interpolator", (_RIFE,), 22.7),
    )
}


def register_model(entry: ModelEntry) -> None:
    """Add a named model (a plugin's); a later entry of the same name replaces it."""
    REGISTRY[entry.name] = entry


def registry() -> dict[str, ModelEntry]:
    """Every named model: the core's and the plugins'."""
    from vqclip.core.plugins import load_plugins

    load_plugins()
    return REGISTRY


def model_names(family: str | None = None) -> list[str]:
    """Registry names, optionally of one family ("vqgan", "clip", "prior", ...)."""
    return [n for n, e in registry().items() if family in (None, e.family)]


def cache_dir() -> Path:
    """The model cache: ``$VQCLIP_HOME``, default ``~/.cache/vqclip``."""
    return Path(os.environ.get("VQCLIP_HOME") or Path.home() / ".cache" / "vqclip")


def entry_dir(entry: ModelEntry) -> Path:
    """Where an entry's files live: inside the package if bundled, else in the cache."""
    return entry.directory or cache_dir() / entry.name.replace("/", "-")


_FIELDS = {"vqgan": "vqgan", "clip": "clip_model", "prior": "prior", "diffusion": "diffusion_model",
           "upscaler": "upscaler", "flow": "flow_estimator", "depth": "depth_model",
           "interpolator": "interpolation"}  # fmt: skip


def _entry(name: str, family: str) -> ModelEntry:
    entry = registry().get(name)
    if entry is None or entry.family != family:
        raise ValueError(
            f"{_FIELDS[family]}: unknown model {name!r}; "
            f"give a file path or one of {model_names(family)}"
        )
    return entry


def entry_paths(entry: ModelEntry, fetch: bool = True, progress=None) -> tuple[Path, ...]:  # noqa: ANN001
    """Local paths of an entry's files, downloading missing ones when ``fetch``."""
    directory = entry_dir(entry)
    return tuple(
        ensure_file(f, directory, fetch, progress, max_file_bytes(entry, f)) for f in entry.files
    )


def max_file_bytes(entry: ModelEntry, file: ModelFile) -> int:
    """The most a download of ``file`` may be: a config 1 MB, a model file its entry's size with
    a margin (the registry's sizes are approximate)."""
    if file.kind in ("yaml", "json"):
        return 1 << 20
    return int(entry.size_mb * 1.25e6) + (32 << 20)


def is_cached(entry: ModelEntry) -> bool:
    """Whether all of an entry's files are present locally."""
    return all((entry_dir(entry) / f.name).is_file() for f in entry.files)


def local_size_mb(entry: ModelEntry) -> float | None:
    """The size on disk, in MB, of an entry whose files are all present; else ``None``."""
    if not is_cached(entry):
        return None
    return sum((entry_dir(entry) / f.name).stat().st_size for f in entry.files) / 1e6


def resolve_vqgan(
    name_or_yaml: str, checkpoint: str | None = None, fetch: bool = True
) -> tuple[Path, Path]:
    """A registry name or a YAML path (with ``checkpoint``, default: beside it as .ckpt)."""
    if name_or_yaml.endswith((".yaml", ".yml")) or Path(name_or_yaml).is_file():
        yaml_path = Path(name_or_yaml)
        ckpt_path = Path(checkpoint) if checkpoint else yaml_path.with_suffix(".ckpt")
        for field, path in (("vqgan", yaml_path), ("vqgan_checkpoint", ckpt_path)):
            if not path.is_file():
                raise ValueError(f"{field}: file {str(path)!r} does not exist")
        return yaml_path, ckpt_path
    yaml_path, ckpt_path = entry_paths(_entry(name_or_yaml, "vqgan"), fetch=fetch)
    return yaml_path, ckpt_path


def _resolve_one_file(name_or_path: str, family: str, fetch: bool) -> Path:
    """A registry name of a one-file ``family`` or a path to such a file."""
    if name_or_path not in registry() and Path(name_or_path).suffix:
        if not Path(name_or_path).is_file():
            raise ValueError(f"{_FIELDS[family]}: file {name_or_path!r} does not exist")
        return Path(name_or_path)
    (path,) = entry_paths(_entry(name_or_path, family), fetch=fetch)
    return path


def resolve_clip(name_or_path: str, fetch: bool = True) -> Path:
    """A registry name (``"ViT-B/32"``, ``"shapes-clip"``, ``"open_clip:ViT-B-32/..."``) or a
    path to a CLIP file: an OpenAI one, or OpenCLIP weights beside their
    ``open_clip_config.json``. Returns the weights' path."""
    entry = registry().get(name_or_path)
    if entry is not None and entry.family == "clip" and len(entry.files) > 1:
        return entry_paths(entry, fetch=fetch)[-1]  # the config, then the weights
    return _resolve_one_file(name_or_path, "clip", fetch)


def resolve_prior(name_or_path: str, fetch: bool = True) -> Path:
    """A registry name (``"shapes-prior"``) or a path to a prior file."""
    return _resolve_one_file(name_or_path, "prior", fetch)


def resolve_upscaler(name_or_path: str, fetch: bool = True) -> Path:
    """A registry name (``"RealESRGAN_x4plus"``, ``"shapes-upscaler"``) or a path to an
    upscaler's weights (``.pth``, ``.pt`` or ``.safetensors``)."""
    return _resolve_one_file(name_or_path, "upscaler", fetch)


def resolve_flow(name_or_path: str, fetch: bool = True) -> Path:
    """A registry name (``"raft_small"``, ``"raft_large"``) or a path to RAFT weights in
    torchvision's file format."""
    return _resolve_one_file(name_or_path, "flow", fetch)


def resolve_interpolator(name_or_path: str, fetch: bool = True) -> Path:
    """A registry name (``"rife"``) or a path to RIFE's weights."""
    return _resolve_one_file(name_or_path, "interpolator", fetch)


def resolve_diffusion(name_or_path: str, fetch: bool = True) -> tuple[Path, dict]:
    """A registry name (``"256x256_diffusion_uncond"``, ``"shapes-diffusion"``) or a path to a
    U-Net state dict with its flags in a JSON file of the same name beside it. Returns the
    weights' path and the flags (read, not yet checked)."""
    entry = registry().get(name_or_path)
    if entry is None and Path(name_or_path).suffix:
        weights, flags_path = Path(name_or_path), Path(name_or_path).with_suffix(".json")
        for path in (weights, flags_path):
            if not path.is_file():
                raise ValueError(
                    f"diffusion_model: file {str(path)!r} does not exist (a diffusion model is "
                    "its weights and, beside them, a .json of its flags: image_size, "
                    "num_channels, channel_mult, ...)"
                )
    elif entry is not None and entry.flags is not None and entry.family == "diffusion":
        (weights,) = entry_paths(entry, fetch=fetch)
        return weights, dict(entry.flags)
    else:
        flags_path, weights = entry_paths(_entry(name_or_path, "diffusion"), fetch=fetch)
    from vqclip.core.limits import parse_json, read_text

    flags = parse_json(read_text(flags_path, "diffusion_model"), f"diffusion_model: {flags_path}")
    if not isinstance(flags, dict):
        raise ValueError(f"diffusion_model: {flags_path} holds no flags (expected an object)")
    return weights, flags


def local_image(path_or_url: str) -> Path:
    """A local path for an image prompt; URLs are fetched into the cache first."""
    if path_or_url.startswith(("http://", "https://")):
        from vqclip.models import download

        return download.fetch_url(path_or_url, cache_dir() / "images")
    return Path(path_or_url)
