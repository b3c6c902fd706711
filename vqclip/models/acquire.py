"""Every file a config's run reads, resolved and fetched in one call before any model is built.

Checking a config and building its models then read only local files: nothing called "check"
downloads, and a run that cannot get a file fails before it has made anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vqclip.core.config import GenerationConfig
from vqclip.core.errors import DownloadError
from vqclip.core.prompts import REGIONS, parse_prompts, split_prompts
from vqclip.models import registry

__all__ = ["RunFiles", "acquire", "image_sources"]

LANCZOS = "lanczos"  # the upscaler that is no file


@dataclass(frozen=True)
class RunFiles:
    """The local files of a config's models and images, keyed by the names the config gives."""

    clips: dict[str, Path] = field(default_factory=dict)  # clip_model name -> weights
    vqgan: tuple[Path, Path] | None = None  # config, checkpoint
    diffusion: tuple[Path, dict] | None = None  # weights, flags (read, not yet checked)
    prior: Path | None = None
    upscaler: Path | None = None  # None for "lanczos" or no upscale
    flow: Path | None = None  # a restyle's flow estimator's weights (RAFT's); None: none needed
    depth: Path | None = None  # a 3D animation's depth model's weights, if from the registry
    images: dict[str, Path] = field(default_factory=dict)  # path or URL -> local file

    def image(self, source: str) -> Path:
        """The local file of an image the config names (a path, or a URL fetched)."""
        return self.images[source]


def image_sources(config: GenerationConfig) -> list[tuple[str, str]]:
    """Every image the config names, with the field it is named in: the init image, image
    prompts, target images and region masks (in every phase of every story)."""
    sources = [("init_image", config.init_image)] if config.init_image else []
    image_prompts = parse_prompts(config.image_prompts)
    sources += [("image_prompts", p.text) for p in image_prompts]
    sources += [("target_images", path) for path in split_prompts(config.target_images)]
    texts = [p for story in config.stories() for phase in story for p in parse_prompts(phase)]
    for prompt in [*texts, *image_prompts]:
        if prompt.region and prompt.region.lower() not in REGIONS:
            sources.append(("prompts", prompt.region))  # a mask image
    return list(dict.fromkeys(sources))


def _local_image(source: str, field_name: str) -> Path:
    try:
        return registry.local_image(source)
    except DownloadError as error:
        raise DownloadError(f"{field_name}: {error}") from None


def acquire(config: GenerationConfig) -> RunFiles:
    """Resolve every model and image ``config`` names to a local file, fetching (bounded and
    hashed, into the cache) what is missing."""
    images = {source: _local_image(source, name) for name, source in image_sources(config)}
    clips = {name: registry.resolve_clip(name) for name, _ in config.clip_models()}
    vqgan = diffusion = prior = upscaler = None
    if config.generator == "vqgan":
        vqgan = registry.resolve_vqgan(config.vqgan, config.vqgan_checkpoint)
    elif config.generator == "diffusion":
        diffusion = registry.resolve_diffusion(config.diffusion_model)
    if config.prior:
        prior = registry.resolve_prior(config.prior)
    if config.upscale > 1 and config.upscaler and config.upscaler != LANCZOS:
        upscaler = registry.resolve_upscaler(config.upscaler)
    flow = None
    if config.follows_flow() and config.flow_estimator in registry.model_names("flow"):
        flow = registry.resolve_flow(config.flow_estimator)
    depth = None
    if config.animation_mode == "3D" and config.depth_model in registry.model_names("depth"):
        (depth,) = registry.entry_paths(registry.registry()[config.depth_model])
    return RunFiles(
        clips=clips, vqgan=vqgan, diffusion=diffusion, prior=prior, upscaler=upscaler,
        flow=flow, depth=depth, images=images,
    )  # fmt: skip
