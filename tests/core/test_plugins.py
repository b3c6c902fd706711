"""The plugin points for objective terms, image transforms and estimators, through the shapes
world's registrations (a third party's would look the same)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vqclip.core import plugins
from vqclip.core.config import GenerationConfig
from vqclip.frontends import cli
from vqclip.loop.composition import palette_distances
from vqclip.run.driver import generate
from vqclip.shapes.data import PALETTE, Scene, render


def test_the_shapes_world_registers_one_of_each() -> None:
    assert "shapes-palette" in plugins.term_kinds()
    assert "shapes-mirror" in plugins.transform_kinds()
    assert list(plugins.estimators("depth")) == ["shapes-depth"]
    assert plugins.estimators("flow") == {}
    with pytest.raises(ValueError, match="kind 'pose'"):
        plugins.register_estimator(plugins.Estimator("x", "pose", "", lambda device: None))


def test_a_term_and_a_transform_from_a_plugin_shape_the_run(tiny_config: GenerationConfig) -> None:
    """The mirror makes every frame and the final image symmetric, exactly; the palette term
    is reported with the others and recorded in config.json; both move the image."""
    config = tiny_config.replace(max_iterations=6, display_frequency=3)
    plain = generate(config.replace(run_name="plain"))
    reports: list[dict] = []
    shaped = generate(
        config.replace(run_name="shaped", terms="shapes-palette:20", transforms="shapes-mirror"),
        reports.append,
    )
    image = shaped.image
    assert torch.equal(image, image.flip(-1))
    assert not torch.equal(plain.image, plain.image.flip(-1))
    assert all("shapes-palette" in r["terms"] for r in reports)
    recorded = GenerationConfig.from_json((shaped.run_dir / "config.json").read_text())
    assert (recorded.terms, recorded.transforms) == ("shapes-palette:20", "shapes-mirror")
    first, last = (float(r["terms"]["shapes-palette"]) for r in (reports[0], reports[-1]))
    assert last < first  # the pull works: pixels near the palette


def test_unknown_or_malformed_plugin_names_are_one_line(
    tiny_config: GenerationConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["generate", "a red circle", "--vqgan", tiny_config.vqgan, "--clip_model",
            tiny_config.clip_model, "--device", "cpu", "--output_dir", str(tmp_path)]  # fmt: skip
    for flags, message in (
        (["--terms", "nowhere:1"], "terms: unknown term 'nowhere'; expected one of ["),
        (["--terms", "shapes-palette"], "terms: shapes-palette:''; expected NAME:WEIGHT"),
        (["--transforms", "shapes-mirror:2"], "shapes-mirror takes no argument"),
        (["--transforms", "Mirror"], "transforms: 'Mirror'; expected NAME or NAME:ARG"),
    ):
        with pytest.raises(SystemExit) as stopped:
            cli.main([*base, *flags])
        assert stopped.value.code == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert message in line
    assert not list(tmp_path.iterdir())  # nothing was made


def test_the_help_lists_what_the_plugins_installed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "installed: shapes-palette: pixels toward" in text
    assert "installed: shapes-mirror: the left half" in text


def test_the_shapes_depth_puts_the_shape_in_front() -> None:
    depth = plugins.estimators("depth")["shapes-depth"].load("cpu")
    image = render([Scene("red", "blue", "circle", 32.0, 32.0, 14.0)])
    found = depth(image)[0, 0]
    inside = found[32, 32].item(), found[2, 2].item()
    assert inside == (1.0, 2.0)
    assert 0.1 < (found == 1).float().mean().item() < 0.4
    assert (
        palette_distances(image, PALETTE).median().item() < 1e-6
    )  # a rendering sits on the palette
    assert (
        palette_distances(torch.full((1, 3, 2, 2), 0.5), PALETTE).min().item() > 0.1
    )  # grey does not
