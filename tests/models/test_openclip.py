"""OpenCLIP models: open_clip's own classes, its hub format, loaded safely, fetched by vqclip."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_OPEN_CLIP

from tests.conftest import assert_pickled_code_refused
from tests.models.test_download import _Handler, server  # noqa: F401  (the loopback server fixture)
from vqclip.core.config import GenerationConfig
from vqclip.models import registry
from vqclip.models.openclip import CONFIG, build_open_clip, load_open_clip
from vqclip.run.build import load_models, resolve_device
from vqclip.run.driver import generate


def test_a_tiny_openclip_model_loads_back_with_its_preprocessing(tiny_models: dict) -> None:
    import open_clip

    path = tiny_models["open_clip"]
    model, mean, std, tokenizer = load_open_clip(path)
    assert isinstance(model, open_clip.CLIP) and (mean, std) == ((0.5,) * 3, (0.5,) * 3)
    original = build_open_clip(TINY_OPEN_CLIP)
    from safetensors.torch import load_file

    original.load_state_dict(load_file(path))
    tokens = tokenizer(["a red circle on a blue background"])
    assert tokens.shape == (1, TINY_OPEN_CLIP["text_cfg"]["context_length"])
    assert torch.equal(tokens, open_clip.get_tokenizer("ViT-B-32", context_length=16)(["a red circle on a blue background"]))  # fmt: skip
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), original.eval().encode_image(images), atol=1e-5)  # fmt: skip


def test_a_run_guided_by_openclip_and_by_an_ensemble_with_it(
    tiny_config: GenerationConfig, tiny_models: dict
) -> None:
    path = str(tiny_models["open_clip"])
    (perceptor,) = load_models(tiny_config.replace(clip_model=path), resolve_device("cpu"))[1]
    assert perceptor.input_resolution == 32 and perceptor.mean == (0.5, 0.5, 0.5)
    result = generate(tiny_config.replace(clip_model=path))
    assert result.image.shape == (1, 3, 32, 32) and result.finals[0].is_file()
    both = generate(tiny_config.replace(clip_model=f"{tiny_config.clip_model} + {path}:0.5"))
    assert not torch.equal(both.image, result.image)


def test_state_dict_weights_load_weights_only(tmp_path: Path, tiny_models: dict) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(tiny_models["open_clip"].parent / CONFIG, folder / CONFIG)
    model = build_open_clip(TINY_OPEN_CLIP)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, folder / "open_clip_pytorch_model.bin")  # fmt: skip
    loaded, *_ = load_open_clip(folder / "open_clip_pytorch_model.bin")
    assert torch.equal(loaded.text_projection, model.text_projection)
    assert_pickled_code_refused(load_open_clip, folder / "open_clip_pytorch_model.bin")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["model_cfg"]["text_cfg"].update(hf_model_name="bert-base-uncased"),
            "may download it",
        ),  # fmt: skip
        (lambda c: c.pop("model_cfg"), "no 'model_cfg' object"),
        (lambda c: c["model_cfg"].update(embed_dim=16), "does not fit"),
        # Issue 45: timm reached the Hugging Face hub for this (five requests, 29 s).
        (
            lambda c: c["model_cfg"]["vision_cfg"].update(
                timm_model_name="hf-hub:timm/vit_tiny_patch16_224.augreg_in21k"
            ),
            "timm_model_name .* another library's model",
        ),  # fmt: skip
        # A 154 GB vision tower, refused on the meta device before any memory is taken.
        (
            lambda c: c["model_cfg"]["vision_cfg"].update(layers=128, width=16_384, head_width=128),
            "describes .* weights; expected at most",
        ),  # fmt: skip
        (
            lambda c: c["model_cfg"]["vision_cfg"].update(layers=10**6),
            "vision_cfg.layers is .1000000.; expected an integer from 0 to 128",
        ),  # fmt: skip
        (
            lambda c: c["model_cfg"].update(vision_cfg=[1, 2]),
            "vision_cfg is list; expected a mapping",
        ),  # fmt: skip
        (
            lambda c: c["model_cfg"]["text_cfg"].update(rope=True),
            "unknown setting model_cfg.text_cfg.'rope'",
        ),  # fmt: skip
        (
            lambda c: c["model_cfg"]["text_cfg"].update(
                tokenizer_kwargs={"bpe_path": "/etc/passwd"}
            ),
            "tokenizer_kwargs",
        ),  # fmt: skip
        (
            lambda c: c["model_cfg"]["vision_cfg"].update(mlp_ratio="4"),
            "mlp_ratio is '4'; expected a finite number",
        ),  # fmt: skip
        (lambda c: c.update(preprocess_cfg={"mean": [0.5]}), "preprocess_cfg.mean"),
    ],
)
def test_a_config_that_would_fetch_or_does_not_fit_is_refused(
    tmp_path: Path, tiny_models: dict, change, message: str
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_models["open_clip"].parent, folder)
    config = json.loads((folder / CONFIG).read_text())
    change(config)
    (folder / CONFIG).write_text(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=message):
        load_open_clip(folder / tiny_models["open_clip"].name)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_registry_rows_are_fetched_by_vqclips_downloader(
    server: str,  # noqa: F811
    tiny_models: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row like the LAION ones, served from 127.0.0.1: config and weights into the cache,
    each file's SHA-256 recorded, then a run guided by it."""
    monkeypatch.setenv("VQCLIP_HOME", str(tmp_path / "cache"))
    folder = tiny_models["open_clip"].parent
    _Handler.files = {name: (folder / name).read_bytes() for name in (CONFIG, "open_clip_model.safetensors")}  # fmt: skip
    entry = registry._open_clip("open_clip:tiny/test", "unused", 1)
    entry = registry.ModelEntry(entry.name, "clip", tuple(
        registry.ModelFile(f.name, (f"{server}/ok/{f.name}",), kind=f.kind) for f in entry.files
    ), 1)  # fmt: skip
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry)
    weights = registry.resolve_clip("open_clip:tiny/test")
    assert weights == tmp_path / "cache" / "open_clip:tiny-test" / "open_clip_model.safetensors"
    assert (weights.parent / f"{CONFIG}.sha256").is_file()
    result = generate(GenerationConfig(**{**_small(tiny_models, tmp_path), "clip_model": "open_clip:tiny/test"}))  # fmt: skip
    assert result.finals[0].is_file()
    assert {"open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip:ViT-H-14/laion2b_s32b_b79k"} <= set(registry.model_names("clip"))  # fmt: skip


def _small(tiny_models: dict, tmp_path: Path) -> dict:
    return dict(prompts="a red circle", vqgan=str(tiny_models["yaml"]), width=32, height=32,
                cutn=4, augments=(), max_iterations=2, seed=0, device="cpu", precision="fp32",
                output_dir=str(tmp_path / "out"))  # fmt: skip
