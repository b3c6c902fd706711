"""vqclip: text and image prompts to images and videos with VQGAN+CLIP."""

from vqclip.config import GenerationConfig
from vqclip.prompts import Prompt, parse_prompt, parse_prompts

__all__ = [
    "GenerationConfig",
    "Prompt",
    "parse_prompt",
    "parse_prompts",
    "generate",
    "resume",
    "assemble_video",
]


def __getattr__(name: str):  # noqa: ANN202 -- lazy, so that importing vqclip needs no torch
    if name in ("generate", "resume"):
        from vqclip import pipeline

        return getattr(pipeline, name)
    if name == "assemble_video":
        from vqclip.video import assemble_video

        return assemble_video
    raise AttributeError(f"module 'vqclip' has no attribute {name!r}")
