"""Checkpoints cannot run code: a crafted TorchScript archive, through every entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from vqclip.models.checkpoints import UnsafeCheckpointError, load_checkpoint
from vqclip.models.vqgan_clip import load_clip


class _Payload(torch.nn.Module):
    """A CLIP-looking TorchScript module whose ``__setstate__`` creates the file it names
    (``torch.from_file(..., shared=True)`` makes it): what ``torch.jit.load`` would run."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.mapped = torch.zeros(2)  # a field, so that the compiler keeps the call setting it

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.marker = state[0]
        self.training = state[1]
        self.mapped = torch.from_file(self.marker, True, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Carrier(torch.nn.Module):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.payload = _Payload(marker)
        self.visual = torch.nn.Module()
        self.visual.conv1 = torch.nn.Conv2d(3, 8, 4, 4, bias=False)  # reads as a CLIP's key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual.conv1(self.payload(x))


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    """(the archive, the marker its code would create); checked to run under torch.jit.load."""
    marker, archive = tmp_path / "marker", tmp_path / "evil_clip.pt"
    torch.jit.script(_Carrier(str(marker))).save(str(archive))
    marker.unlink(missing_ok=True)
    torch.jit.load(str(archive))  # the attack is real: loading it the usual way runs it
    assert marker.exists()
    marker.unlink()
    return archive, marker


def test_a_torchscript_clip_is_read_without_running_its_code(crafted: tuple[Path, Path]) -> None:
    archive, marker = crafted
    with pytest.raises(ValueError):
        load_clip(archive)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match="TorchScript archive"):
        load_checkpoint(archive)  # state.pt, priors, VQGAN checkpoints: refused outright
    assert not marker.exists()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vqclip", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)


def test_no_entry_point_runs_a_crafted_archive(
    crafted: tuple[Path, Path], tiny_models: dict, tiny_config, tmp_path: Path
) -> None:
    """--clip_model PATH, --prior PATH, and a shared run's config.json or state.pt on resume."""
    archive, marker = crafted
    flags = ["--vqgan", str(tiny_models["yaml"]), "--width", "32", "--height", "32"]
    flags += ["--cutn", "4", "--max_iterations", "2", "--output_dir", str(tmp_path / "out")]
    for extra in (["--clip_model", str(archive)], ["--prior", str(archive), "--prior_weight", "1"]):
        result = _cli("generate", "a red circle", *flags, *extra, cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert str(archive) in result.stderr and not marker.exists()
    from vqclip.run.driver import generate

    run = generate(tiny_config.replace(max_iterations=2, display_frequency=1)).run_dir
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "clip_model": str(archive)}))
    result = _cli("resume", str(run), "--max_iterations", "4", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (run / "config.json").write_text(json.dumps(config))
    (run / "state.pt").write_bytes(archive.read_bytes())
    result = _cli("resume", str(run), "--max_iterations", "4", cwd=tmp_path)
    assert result.returncode == 2 and "TorchScript archive" in result.stderr, result.stderr
    assert not marker.exists()


def _deflated(source: Path, target: Path) -> None:
    """``source``'s members written again deflated, as no torch.save file is."""
    with zipfile.ZipFile(source) as plain, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as packed:  # fmt: skip
        for info in plain.infolist():
            packed.writestr(info.filename, plain.read(info.filename))


def test_a_deflated_checkpoint_is_refused_before_it_inflates(tmp_path: Path) -> None:
    """Issue 45: 400 KB of deflated zeros inflated to 400 MB in torch.load before any check;
    now refused from the archive's declared sizes, in a process whose peak RSS stays low."""
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(100_000_000, dtype=torch.uint8)}, plain)
    bomb = tmp_path / "state.pt"
    _deflated(plain, bomb)
    plain.unlink()
    assert bomb.stat().st_size < 1_000_000
    script = (
        "import resource, sys\n"
        "from vqclip.models.checkpoints import load_checkpoint\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    load_checkpoint(sys.argv[1])\nexcept ValueError as error:\n    print(error)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, timeout=120)  # fmt: skip
    message, grown = done.stdout.strip().splitlines()
    assert message.startswith(f"{bomb} is not a checkpoint vqclip reads: its entries unpack to")
    assert int(grown) < 50_000, f"peak RSS grew {grown} KiB while refusing it"
    small = tmp_path / "small.pt"
    torch.save({"weight": torch.arange(10)}, small)  # what torch.save writes still loads
    assert torch.equal(load_checkpoint(small)["weight"], torch.arange(10))
