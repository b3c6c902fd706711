"""Image priors: saved and loaded safely and strictly, and a pull toward the redrawing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vqclip.models.prior import (
    Scores,
    letterbox,
    load_prior,
    prior_loss,
    prior_pull,
    redraw,
    save_prior,
)
from vqclip.shapes.data import Scene, render
from vqclip.shapes.prior import ScenePrior, scene_targets


def _prior(seed: int = 0) -> ScenePrior:
    torch.manual_seed(seed)
    return ScenePrior().eval()


def test_save_and_load_round_trip_in_fp16(tmp_path: Path) -> None:
    model = _prior()
    save_prior(model, tmp_path / "prior.pt")
    loaded = load_prior(tmp_path / "prior.pt")
    assert isinstance(loaded, ScenePrior) and loaded.resolution == 64
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.half().float()), key
    assert not any(p.requires_grad for p in loaded.parameters())


def test_a_file_that_is_not_a_prior_is_refused(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="expected a dict with 'kind' and 'state_dict'"):
        load_prior(tmp_path / "other.pt")
    torch.save({"kind": "unet", "state_dict": {}}, tmp_path / "unknown.pt")
    with pytest.raises(
        ValueError, match=r"unknown kind 'unet'; known kinds are \['shapes-scene'\]"
    ):
        load_prior(tmp_path / "unknown.pt")
    state = {k: v for k, v in _prior().state_dict().items() if not k.startswith("encoder.0")}
    torch.save({"kind": "shapes-scene", "state_dict": state}, tmp_path / "mismatch.pt")
    with pytest.raises(
        ValueError, match="does not fit the architecture of its kind 'shapes-scene'"
    ):
        load_prior(tmp_path / "mismatch.pt")
    for crafted in ({"kind": ["x"], "state_dict": {}}, {"kind": "shapes-scene", "state_dict": [1]}):
        torch.save(crafted, tmp_path / "crafted.pt")  # were TypeError and AttributeError
        with pytest.raises(ValueError, match="unknown kind|not names mapped to tensors"):
            load_prior(tmp_path / "crafted.pt")
    with pytest.raises(ValueError, match="Linear is not a known prior kind"):
        save_prior(torch.nn.Linear(2, 2), tmp_path / "linear.pt")


def _reading(scene: Scene) -> ScenePrior:
    """A prior whose last layer's bias alone decides: it reads ``scene`` in any image."""
    prior = _prior()
    with torch.no_grad():
        last = prior.encoder[-1]
        last.weight.zero_()
        colour, background, shape, geometry = scene_targets([scene])
        last.bias.copy_(torch.cat([
            F.one_hot(colour[0], 6), F.one_hot(background[0], 6), F.one_hot(shape[0], 3), geometry[0],
        ]).float() * torch.tensor([10.0] * 15 + [1.0] * 3))  # fmt: skip
    return prior


def test_the_scene_prior_redraws_the_scene_it_reads() -> None:
    scenes = [Scene("red", "blue", "square", 30.0, 34.0, 15.0), Scene("white", "black", "triangle", 20.0, 40.0, 12.0)]  # fmt: skip
    prior = _reading(scenes[0])
    image = render(scenes)
    read = prior.scenes(image)
    assert [(s.color, s.background, s.shape) for s in read] == [("red", "blue", "square")] * 2
    assert read[0].cx == pytest.approx(30.0) and read[0].radius == pytest.approx(15.0)
    assert torch.allclose(prior(image), render(read[:1]).expand(2, -1, -1, -1))


def test_the_alternatives_are_the_scenes_one_change_away() -> None:
    read = Scene("red", "blue", "square", 30.0, 34.0, 15.0)
    options = _reading(read).alternatives(torch.rand(2, 3, 64, 64))
    pairs = [
        ("red", "blue"), ("green", "blue"), ("yellow", "blue"), ("white", "blue"), ("black", "blue"),
        ("red", "green"), ("red", "yellow"), ("red", "white"), ("red", "black"), ("blue", "red"),
    ]  # fmt: skip
    assert options.shape == (2, 3 * len(pairs), 3, 64, 64)
    expected = render([
        replace(read, shape=shape, color=color, background=background)
        for color, background in pairs
        for shape in ("circle", "square", "triangle")
    ])  # fmt: skip
    assert torch.equal(options[0], expected) and torch.equal(options[1], expected)


def test_a_score_picks_the_redrawing_among_the_alternatives() -> None:
    prior = _reading(Scene("red", "blue", "square", 30.0, 34.0, 15.0))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    # What the image should show, by the score: a blue triangle on red for the first image (the
    # roles swapped), a white circle on blue for the second (another colour). The score sees the K alternatives of both images.
    wanted = render([Scene("blue", "red", "triangle", 30.0, 34.0, 15.0), Scene("white", "blue", "circle", 30.0, 34.0, 15.0)])  # fmt: skip
    calls = []

    def score(options: torch.Tensor) -> torch.Tensor:
        calls.append(len(options))
        per_image = options.view(2, -1, *options.shape[1:])
        return (per_image - wanted[:, None]).pow(2).flatten(2).mean(2).flatten()

    assert torch.allclose(redraw(images, prior, Scores(score)), wanted)
    assert calls == [60]  # one batched call for all images and alternatives
    assert torch.allclose(redraw(images, prior), prior(images))  # no score: its own reading
    pulls = prior_pull(images, prior, 2.0, Scores(score))
    assert torch.allclose(pulls, 2.0 * (images - wanted).pow(2).flatten(1).mean(1))
    assert torch.allclose(pulls.sum(), prior_loss(images, prior, 2.0, Scores(score)))


def test_each_region_is_redrawn_as_a_scene_of_its_own() -> None:
    """A region prompt's box is read and redrawn alone, picked by its own score on the box seen
    as a picture of its own; the rest of the image is the whole image's redrawing, or where no
    prompt is for the whole image, the regions' background."""
    scene = Scene("red", "blue", "circle", 32.0, 32.0, 12.0)
    prior = _reading(scene)
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    green, white = render([replace(scene, color="green")]), render([replace(scene, color="white")])
    seen = []

    def left_score(options: torch.Tensor) -> torch.Tensor:  # (K, 3, 64, 32): the left half's
        seen.append(options.shape)
        return (letterbox(options)[0] - green).pow(2).flatten(1).mean(1)

    left = ((0.0, 0.0, 0.5, 1.0), left_score)
    alone = redraw(images, prior, Scores(None, (left,)))
    assert seen == [(30, 3, 64, 32)]
    # The half letterboxed is a 64x64 picture: the prior draws its scene whole inside the half.
    assert torch.equal(alone[..., :32], green[..., 16:48])
    assert torch.equal(alone[..., 32:], green[..., :1].expand(-1, -1, -1, 32))  # only its blue
    with_whole = redraw(images, prior, Scores(lambda x: (x - white).pow(2).flatten(1).mean(1), (left,)))  # fmt: skip
    assert torch.equal(with_whole[..., :32], green[..., 16:48])
    assert torch.equal(with_whole[..., 32:], white[..., 32:])
    # A shape read near the half's edge: where no other region is, its scene runs on past the
    # box, so that the disc is drawn whole, not cut flat where the half ends.
    near = replace(scene, cx=44.0)  # in the half's 64-pixel square: x 32 to 56, so 16 to 40 here
    edge = render([replace(near, color="green")])

    def wants_edge(options: torch.Tensor) -> torch.Tensor:
        return (letterbox(options)[0] - edge).pow(2).flatten(1).mean(1)

    whole_disc = redraw(images, _reading(near), Scores(None, (((0.0, 0.0, 0.5, 1.0), wants_edge),)))
    assert torch.equal(whole_disc[..., :48], edge[..., 16:])  # the square's columns 16 on
    assert torch.equal(whole_disc[..., 48:], edge[..., :1].expand(-1, -1, -1, 16))
    assert (whole_disc[..., 32:40] != edge[..., :1]).any()  # the disc's part past the half


def test_a_prior_without_alternatives_ignores_the_score() -> None:
    class Grey(torch.nn.Module):
        resolution = 64

        def forward(self, image: torch.Tensor, size: int) -> torch.Tensor:
            return torch.full((len(image), 3, size, size), 0.5)

    images = torch.rand(2, 3, 64, 64)
    assert torch.equal(
        redraw(images, Grey(), Scores(lambda x: x.sum((1, 2, 3)))), torch.full_like(images, 0.5)
    )


def test_the_background_is_never_the_shapes_colour() -> None:
    prior = _prior()
    with torch.no_grad():  # colour and background both say "green" loudest
        last = prior.encoder[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[1], last.bias[6 + 1], last.bias[6 + 4] = 5.0, 5.0, 1.0
    (scene,) = prior.scenes(torch.rand(1, 3, 64, 64))
    assert (scene.color, scene.background) == ("green", "white")


def test_the_pull_moves_an_image_toward_the_redrawing() -> None:
    prior = _prior()
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    image.requires_grad_(True)
    loss = prior_loss(image, prior, weight=3.0)
    (grad,) = torch.autograd.grad(loss, image)
    redrawn = prior(image.detach())
    # The redrawing is held fixed: the gradient is exactly that of 3 * 2 * MSE toward it.
    expected = 3.0 * 2 * 2 * (image - redrawn) / image.numel()
    assert torch.allclose(grad, expected, atol=1e-9)
    stepped = (image - 0.1 * grad.sign()).detach()
    assert (stepped - redrawn).pow(2).mean() < (image.detach() - redrawn).pow(2).mean()


def test_the_pull_in_a_generators_parameters_goes_toward_the_redrawings_encoding() -> None:
    from vqclip.core import presets
    from vqclip.core.config import GenerationConfig
    from vqclip.loop.generators import VQGANGenerator
    from vqclip.loop.objective import PriorTerm
    from vqclip.run.build import prepare, prepare_sample, resolve_device

    prior = _prior()
    image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    params = torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(4))
    params.requires_grad_(True)

    def encode(images: torch.Tensor) -> torch.Tensor:  # a stand-in encoder: 4x4 blocks, 8 channels
        return F.avg_pool2d(images, 4).repeat(1, 3, 1, 1)[:, :8] * 2 - 1

    loss = prior_loss(image, prior, 3.0, params=params, encode=encode)
    (grad,) = torch.autograd.grad(loss, params)
    target = encode(prior(image))
    assert torch.allclose(grad, 3.0 * 2 * 2 * (params - target) / params.numel(), atol=1e-9)
    # The shapes VQGAN's preset pulls its latent; a diffusion sample is pulled in pixels.
    config = presets.apply(GenerationConfig(prompts="a red circle", device="cpu", max_iterations=1))
    loop, _ = prepare(config, resolve_device("cpu"))
    (term,) = [t for t in loop.objective.pulls if isinstance(t, PriorTerm)]
    assert isinstance(loop.generator, VQGANGenerator) and term.encode == loop.generator.encode
    config = config.replace(generator="diffusion", diffusion_model="shapes-diffusion", prior="shapes-prior", prior_weight=1.0)  # fmt: skip
    loop, _, _ = prepare_sample(presets.apply(config), resolve_device("cpu"))
    (term,) = [t for t in loop.objective.pulls if isinstance(t, PriorTerm)]
    assert term.encode is None and loop.generator is None


def test_the_per_image_pulls_add_up_to_the_loss() -> None:
    prior = _prior()
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    pulls = prior_pull(images, prior, 2.0)
    assert pulls.shape == (3,) and len(set(pulls.tolist())) == 3
    assert torch.allclose(pulls.sum(), prior_loss(images, prior, 2.0))
    assert torch.allclose(pulls[1], prior_loss(images[1:2], prior, 2.0))


def test_images_of_another_size_are_read_at_its_own_and_redrawn_at_theirs() -> None:
    prior = _prior()
    for height, width, top, left in ((128, 128, 0, 0), (48, 96, 24, 0), (96, 32, 0, 32)):
        images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(4))
        # A wide or tall image is read letterboxed into a square of its border's median colour.
        side = max(height, width)
        edges = (images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1])
        square = torch.cat(edges, -1).median(-1).values[..., None, None].repeat(1, 1, side, side)
        square[..., top : top + height, left : left + width] = images
        read = F.interpolate(square, (64, 64), mode="bilinear", antialias=True)
        rows, cols = slice(top, top + height), slice(left, left + width)
        expected = render(prior.scenes(read), side)[..., rows, cols]
        assert torch.equal(redraw(images, prior), expected)
        options = prior.alternatives(read, side)[..., rows, cols]
        assert options.shape == (2, 30, 3, height, width)
        # The score sees the alternatives at the image's size and picks among them.
        middle = images.mean()
        picked = redraw(images, prior, Scores(lambda x, m=middle: (x - m).abs().flatten(1).mean(1)))
        assert any(torch.equal(picked[0], option) for option in options[0])
        assert prior_loss(images, prior, 2.0).item() == pytest.approx(
            2.0 * 2 * (images - expected).pow(2).mean().item(), rel=1e-5
        )
