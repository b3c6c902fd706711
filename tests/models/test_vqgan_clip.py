import pickle
import resource
import sys
import types
from pathlib import Path

import pytest
import taming.modules.diffusionmodules.model as taming_blocks
import torch
import torch.nn.functional as F
import yaml

from tests.conftest import TINY_CLIP, tiny_vqgan_spec
from vqclip.models.checkpoints import UnsafeCheckpointError, load_checkpoint, read_torchscript_state
from vqclip.models.vqgan_clip import (
    build_clip,
    build_vqgan,
    clip,
    load_clip,
    load_vqgan,
    read_vqgan_spec,
    save_vqgan,
)


def test_vqgan_round_trip_is_exact(tiny_models: dict[str, Path]) -> None:
    model = load_vqgan(tiny_models["yaml"], tiny_models["ckpt"])
    saved = torch.load(tiny_models["ckpt"], weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    x = torch.rand(1, 3, 32, 32)
    assert model.decode(model.encode(x * 2 - 1)).shape == (1, 3, 32, 32)
    assert model.spec.factor == 2


def test_prepare_for_loop_keeps_both_functions_and_the_loop_gets_it(
    tiny_models: dict[str, Path], tiny_config
) -> None:
    from vqclip.loop.latents import decode_latent
    from vqclip.models.vqgan_clip import prepare_for_loop, tokenize
    from vqclip.run.build import load_models, resolve_device

    vqgan = load_vqgan(tiny_models["yaml"], tiny_models["ckpt"])
    clip_model = load_clip(tiny_models["clip"])
    latent = torch.randn(2, vqgan.spec.embed_dim, 4, 4, generator=torch.Generator().manual_seed(0))
    image = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = tokenize(clip_model, ["a red circle", "a blue square"])

    def run() -> tuple[torch.Tensor, ...]:
        pixels, codes = image.clone().requires_grad_(True), latent.clone().requires_grad_(True)
        embeds = clip_model.encode_image(pixels)
        embeds.square().sum().backward()
        decoded = decode_latent(vqgan, codes)
        decoded.square().sum().backward()
        text = clip_model.encode_text(tokens)
        return decoded, codes.grad, embeds, pixels.grad, text, vqgan.encode(image * 2 - 1)

    before = run()
    prepare_for_loop(vqgan, clip_model)
    prepare_for_loop(vqgan, clip_model)  # a second call changes nothing more
    assert vqgan.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in clip_model.visual.modules())
    assert sum(isinstance(m, torch.nn.SiLU) for m in clip_model.modules()) == 2  # image + text
    assert not any(isinstance(m, taming_blocks.AttnBlock) for m in vqgan.modules())
    # taming's swish runs as F.silu in this instance's blocks only, not in taming's module.
    blocks = [m for m in vqgan.modules() if isinstance(m, taming_blocks.ResnetBlock)]
    assert blocks and all(b.forward.__func__.__globals__["nonlinearity"] is F.silu for b in blocks)
    assert taming_blocks.nonlinearity is not F.silu
    assert "forward" not in load_vqgan(tiny_models["yaml"], tiny_models["ckpt"]).decoder.__dict__
    assert set(vqgan.state_dict()) == set(
        load_vqgan(tiny_models["yaml"], tiny_models["ckpt"]).state_dict()
    )
    for old, new in zip(before, run(), strict=True):
        assert torch.allclose(new, old, rtol=1e-4, atol=1e-5), (new - old).abs().max()
    loaded_vqgan, (perceptor,) = load_models(tiny_config, resolve_device("cpu"))
    loaded_clip = perceptor.model
    assert loaded_vqgan.decoder.conv_out.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in loaded_clip.visual.modules())


def _resnet_clips() -> list[torch.nn.Module]:
    """A tiny CLIP ResNet tower of OpenAI's classes and one of OpenCLIP's, with batch-norm
    statistics and affine parameters that are not the identity."""
    from vqclip.models.openclip import build_open_clip

    torch.manual_seed(0)
    shape = {**TINY_CLIP, "vision_layers": (1, 1, 1, 1), "vision_width": 16}
    openai = build_clip(**shape)
    open_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }
    models = [openai, build_open_clip(open_cfg)]
    for model in models:
        for norm in model.visual.modules():
            if isinstance(norm, torch.nn.BatchNorm2d):
                for buffer, low in ((norm.running_mean, -0.5), (norm.running_var, 0.2)):
                    buffer.copy_(torch.rand_like(buffer) + low)
                torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
                torch.nn.init.uniform_(norm.bias, -0.3, 0.3)
        model.eval().requires_grad_(False)
    return models


@pytest.mark.parametrize("which", [0, 1], ids=["openai", "open_clip"])
def test_prepared_resnet_clip_folds_its_batch_norms_and_keeps_its_function(which: int) -> None:
    from vqclip.models.vqgan_clip import prepare_for_loop

    model = _resnet_clips()[which]
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        pixels = image.clone().requires_grad_(True)
        embeds = model.encode_image(pixels)
        embeds.square().sum().backward()
        return embeds, pixels.grad

    before = run()
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.visual.modules())
    prepare_for_loop(None, model)
    prepare_for_loop(None, model)  # a second call changes nothing more
    assert norms >= 9 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.visual.modules())  # fmt: skip
    convs = [m for m in model.visual.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    for old, new in zip(before, run(), strict=True):
        assert torch.allclose(new, old, rtol=1e-4, atol=1e-5), (new - old).abs().max()


def test_prepared_vqgan_attention_does_not_overflow_fp16(tiny_models: dict[str, Path]) -> None:
    from vqclip.loop.latents import decode_latent
    from vqclip.models.vqgan_clip import prepare_for_loop

    vqgan = load_vqgan(tiny_models["yaml"], tiny_models["ckpt"])
    attention = vqgan.decoder.mid.attn_1
    with torch.no_grad():  # large query and key weights: products past fp16's 65504
        attention.q.weight.mul_(300)
        attention.k.weight.mul_(300)
    latent = torch.randn(1, vqgan.spec.embed_dim, 4, 4, generator=torch.Generator().manual_seed(0))
    exact = decode_latent(vqgan, latent)

    def in_fp16() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.float16):
            return decode_latent(vqgan, latent)

    assert not torch.isfinite(in_fp16()).all()  # taming's own block: inf, then NaN
    prepare_for_loop(vqgan, load_clip(tiny_models["clip"]))
    fast = in_fp16()
    assert torch.isfinite(fast).all()
    assert (fast - exact).abs().max() < 0.05
    assert torch.allclose(decode_latent(vqgan, latent), exact, atol=1e-5)  # and fp32 unchanged


def test_gumbel_vqgan_loads(tmp_path: Path) -> None:
    spec = tiny_vqgan_spec("taming.models.vqgan.GumbelVQ")
    save_vqgan(build_vqgan(spec), tmp_path / "g.yaml", tmp_path / "g.ckpt")
    model = load_vqgan(tmp_path / "g.yaml", tmp_path / "g.ckpt")
    assert model.spec.gumbel and model.codebook.shape == (64, 32)
    assert "quantize.proj.weight" in model.state_dict()


def test_net2net_first_stage_loads_and_drops_other_stages(tmp_path: Path) -> None:
    spec = tiny_vqgan_spec()
    model = build_vqgan(spec)
    state = {f"first_stage_model.{k}": v for k, v in model.state_dict().items()}
    state["transformer.tok_emb.weight"] = torch.zeros(3)
    state["cond_stage_model.encoder.conv_in.weight"] = torch.zeros(3)
    state["first_stage_model.loss.discriminator.main.0.weight"] = torch.zeros(3)
    params = {"embed_dim": 16, "n_embed": 64, "ddconfig": spec.ddconfig}
    config = {
        "model": {
            "target": "taming.models.cond_transformer.Net2NetTransformer",
            "params": {
                "first_stage_config": {"target": "taming.models.vqgan.VQModel", "params": params}
            },
        }
    }
    (tmp_path / "n.yaml").write_text(yaml.safe_dump(config))
    torch.save({"state_dict": state}, tmp_path / "n.ckpt")
    loaded = load_vqgan(tmp_path / "n.yaml", tmp_path / "n.ckpt")
    assert torch.equal(loaded.codebook, model.codebook)


def test_strict_loading_lists_missing_and_unexpected_keys(
    tiny_models: dict, tmp_path: Path
) -> None:
    state = torch.load(tiny_models["ckpt"], weights_only=True)["state_dict"]
    del state["decoder.conv_out.weight"]
    state["decoder.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(
        ValueError,
        match=r"missing keys \['decoder.conv_out.weight'\].*unexpected keys \['decoder.extra.weight'\]",
    ):
        load_vqgan(tiny_models["yaml"], tmp_path / "bad.ckpt")
    # Issue 45: a YAML whose sizes describe a far larger model is refused on the meta device.
    config = yaml.safe_load(tiny_models["yaml"].read_text())
    config["model"]["params"]["ddconfig"].update(ch=1 << 14, num_res_blocks=64)
    (tmp_path / "huge.yaml").write_text(yaml.safe_dump(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="describes .* weights; expected at most"):
        load_vqgan(tmp_path / "huge.yaml", tiny_models["ckpt"])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_unknown_yaml_target_is_refused(tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text(
        yaml.safe_dump({"model": {"target": "os.system", "params": {}}})
    )
    with pytest.raises(ValueError, match="refused target 'os.system'"):
        read_vqgan_spec(tmp_path / "evil.yaml")


def test_clip_file_loads_with_our_loader_and_with_clip_load(tiny_models: dict) -> None:
    ours = load_clip(tiny_models["clip"])
    theirs, _ = clip.load(str(tiny_models["clip"]), device="cpu", jit=False)
    tokens = clip.tokenize(["a red circle"], context_length=ours.context_length)
    assert torch.allclose(ours.encode_text(tokens), theirs.float().encode_text(tokens), atol=1e-2)
    assert ours.visual.input_resolution == TINY_CLIP["image_resolution"]
    assert next(ours.parameters()).dtype == torch.float32


def test_clip_torchscript_archive_loads(tmp_path: Path) -> None:
    model = build_clip(**TINY_CLIP).eval()
    tokens = clip.tokenize(["x"], context_length=16)
    traced = torch.jit.trace_module(model, {"encode_text": tokens})
    traced.save(str(tmp_path / "clip_jit.pt"))
    loaded = load_clip(tmp_path / "clip_jit.pt")
    assert torch.allclose(loaded.encode_text(tokens), model.encode_text(tokens), atol=1e-5)
    ours = read_torchscript_state(tmp_path / "clip_jit.pt")  # inert: the tensors, not the code
    theirs = torch.jit.load(str(tmp_path / "clip_jit.pt")).state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(_Boom.marker),))


def test_checkpoint_that_runs_code_is_refused(tmp_path: Path) -> None:
    _Boom.marker = str(tmp_path / "pwned")
    torch.save({"state_dict": {}, "payload": _Boom()}, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        load_checkpoint(tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()
    with open(tmp_path / "evil.pkl", "wb") as f:  # the legacy (non-zip) format too
        pickle.dump({"payload": _Boom()}, f)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()


def test_lightning_checkpoint_with_model_checkpoint_entry_loads(
    tiny_models: dict, tmp_path: Path
) -> None:
    # Build the class that old Lightning checkpoints pickle, under its real import path.
    names = [
        "pytorch_lightning",
        "pytorch_lightning.callbacks",
        "pytorch_lightning.callbacks.model_checkpoint",
    ]
    saved = {n: sys.modules.get(n) for n in names}
    module = types.ModuleType(names[-1])
    ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": names[-1]})
    module.ModelCheckpoint = ModelCheckpoint
    try:
        for name in names:
            sys.modules[name] = module
        state = torch.load(tiny_models["ckpt"], weights_only=True)["state_dict"]
        checkpoint = {
            "epoch": 3,
            "state_dict": state,
            "callbacks": {ModelCheckpoint: {"best_model_score": None}},
        }
        torch.save(checkpoint, tmp_path / "last.ckpt")
    finally:
        for name, old in saved.items():
            sys.modules.pop(name) if old is None else sys.modules.__setitem__(name, old)
    loaded = load_checkpoint(tmp_path / "last.ckpt")
    assert loaded["epoch"] == 3
    model = load_vqgan(tiny_models["yaml"], tmp_path / "last.ckpt")
    assert torch.equal(model.codebook, state["quantize.embedding.weight"])


@pytest.mark.parametrize(
    "params, message",
    [
        (None, r"expected params.ddconfig, a mapping"),  # was KeyError: 'ddconfig'
        ({"n_embed": "abc"}, r"expected params.n_embed to be a positive integer, got 'abc'"),
        ({"ddconfig": {"ch": 32}}, r"expected params.ddconfig.out_ch to be a positive integer"),
        ({"ddconfig_ch_mult": "12"}, r"expected params.ddconfig.ch_mult to be a list of pos"),
    ],
)
def test_a_malformed_vqgan_yaml_is_named(tmp_path: Path, params: dict | None, message: str) -> None:
    from tests.conftest import TINY_VQGAN

    full = {"embed_dim": 16, "n_embed": 64, "ddconfig": dict(TINY_VQGAN)}
    if params is None:
        model = {"target": "taming.models.vqgan.VQModel"}
    else:
        if "ddconfig_ch_mult" in params:
            full["ddconfig"]["ch_mult"] = params.pop("ddconfig_ch_mult")
        model = {"target": "taming.models.vqgan.VQModel", "params": {**full, **params}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"model": model}))
    with pytest.raises(ValueError, match=f"VQGAN config {tmp_path / 'bad.yaml'}: {message}"):
        read_vqgan_spec(tmp_path / "bad.yaml")


def test_our_tokenizer_is_clips_and_vqclip_starts_without_torchvision(tiny_models: dict) -> None:
    import subprocess

    from vqclip.models.vqgan_clip import tokenize

    model = load_clip(tiny_models["clip"])
    texts = ["a red circle", "Ünïcode & punctuation!", " ".join(["long"] * 40), ""]
    expected = clip.tokenize(texts, context_length=model.context_length, truncate=True)
    assert torch.equal(tokenize(model, texts), expected)
    code = "import sys, vqclip.run.driver; print('torchvision' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_clip_imports_without_pkg_resources() -> None:
    # setuptools 81 removed pkg_resources, which clip-anytorch imports; vqclip keeps working
    # with it gone, and leaves no stand-in behind for other code to find.
    import subprocess

    code = (
        "import sys; sys.modules['pkg_resources'] = None\n"
        "import vqclip.models.vqgan_clip, clip\n"
        "assert sys.modules['pkg_resources'] is None\n"
        "print(clip.available_models()[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RN50"
