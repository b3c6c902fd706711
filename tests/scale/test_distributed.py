"""One image across processes: real torchrun, gloo on 127.0.0.1, the shapes models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import free_port, png_pixels
from vqclip.loop.processes import ONE_PROCESS
from vqclip.run.frames import frame_paths
from vqclip.scale import distributed

BIN = Path(sys.executable).parent
FLAGS = ["--seed", "0", "--display_frequency", "3", "--precision", "fp32", "--device", "cpu"]
PROMPT = "a red circle on a blue background"


def _run(
    command: list[str], processes: int, out: Path, cwd_by_rank: Path | None = None, ok: bool = True
) -> subprocess.CompletedProcess:
    """``vqclip COMMAND`` in ``processes`` processes under torchrun (gloo on loopback), or in
    one plain process; each with one thread, as torchrun gives its workers. ``cwd_by_rank``:
    each rank starts in ``{cwd_by_rank}{LOCAL_RANK}``, as ranks on separate machines would."""
    scratch = out.parent / "tmp"  # torchrun writes torchelastic_* folders here, not in /tmp
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)}
    if processes > 1:
        launcher = [str(BIN / "torchrun"), "--nproc_per_node", str(processes),
                    "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "vqclip"]  # fmt: skip
        if cwd_by_rank is not None:
            launcher[-2:] = ["--no-python", "sh", "-c", 'cd "$0$LOCAL_RANK" && exec "$@"', str(cwd_by_rank), str(BIN / "vqclip")]  # fmt: skip
    else:
        launcher = [str(BIN / "vqclip")]
    done = subprocess.run(
        [*launcher, *command], env=env, capture_output=True, text=True, timeout=600
    )
    assert (done.returncode == 0) == ok, done.stderr[-3000:]
    return done


def _same_run(a: Path, b: Path) -> None:
    names = [p.name for p in frame_paths(a)]
    assert names == [p.name for p in frame_paths(b)] and names
    for path in [*frame_paths(a), a / "final.png"]:
        assert np.array_equal(png_pixels(path), png_pixels(b / path.relative_to(a)))
    for x, y in zip(*(torch.load(r / "state.pt", weights_only=True)["levels"] for r in (a, b)), strict=True):  # fmt: skip
        assert torch.equal(x, y)


@pytest.mark.slow
def test_two_processes_make_the_single_process_image_and_only_rank_0_writes(
    tmp_path: Path,
) -> None:
    """Issue 35's check: torchrun --nproc_per_node 2 over the shapes models makes, bit for bit,
    what one process makes with the cutouts in 2 batches; rank 0 alone writes; resume works."""
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    done = _run(["generate", PROMPT, *FLAGS, "--max_iterations", "6", "--output_dir", str(shared)], 2, shared)  # fmt: skip
    assert done.stdout.count("run directory:") == 1  # rank 0 reports, once
    (run,) = shared.iterdir()  # rank 1 made no directory, wrote no file
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "final.png", "frames", "state.pt"]  # fmt: skip
    _run(["generate", PROMPT, *FLAGS, "--max_iterations", "6", "--cutn_batches", "2", "--output_dir", str(alone)], 1, alone)  # fmt: skip
    (single,) = alone.iterdir()
    _same_run(run, single)
    # Resumed in two processes, extended to 9 steps: as one process extends its own. Each rank
    # names "run" in its own folder, and rank 1's holds none (issue 45: rank 1 read its own,
    # and rank 0 died on a closed connection): rank 0 reads the run and shares what it read.
    (tmp_path / "rank0").mkdir()
    (tmp_path / "rank1").mkdir()
    run = run.rename(tmp_path / "rank0" / "run")
    _run(["resume", "run", "--max_iterations", "9"], 2, shared, cwd_by_rank=tmp_path / "rank")
    _run(["resume", str(single), "--max_iterations", "9"], 1, alone)
    _same_run(run, single)
    # What rank 0 cannot read, every rank reports (rank 1 had waited for a broadcast).
    (run / "state.pt").write_bytes(b"not a state")
    done = _run(["resume", "run", "--max_iterations", "12"], 2, shared, cwd_by_rank=tmp_path / "rank", ok=False)  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("vqclip resume: error:")]
    assert len(errors) == 2 and all("refused to load run/state.pt" in e for e in errors), done.stderr[-3000:]  # fmt: skip
    assert "rank 0: " in errors[0] + errors[1]
    assert [p.name for p in frame_paths(run)][-1] == "000009.png"


def test_batches_are_shared_out_in_runs_and_one_process_takes_all() -> None:
    whole = [b.tolist() for b in ONE_PROCESS.my_batches(10, 3, torch.device("cpu"))]
    assert whole == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]  # cutn_batches 3 in one process
    for rank, expected in ((0, [[0, 1, 2], [3, 4, 5]]), (1, [[6, 7], [8, 9]])):
        ranks = distributed.Ranks(world=2, rank=rank)
        assert [b.tolist() for b in ranks.my_batches(10, 3, torch.device("cpu"))] == expected


def test_what_several_processes_cannot_share_is_refused(tiny_config) -> None:  # noqa: ANN001
    for changes, message in (
        ({"generator": "diffusion"}, "generator: 'diffusion' runs in one process"),
        ({"init_video": "in.mp4"}, "init_video: a restyle runs in one process"),
        ({"cutn": 1}, "cutn: 1 cutouts cannot be shared among 2 processes"),
        (
            {
                "animation_mode": "2D",
                "max_frames": 2,
                "max_iterations": None,
                "color_coherence": "lab",
            },
            "color_coherence: an animation that keeps frame 0's colours runs in one process",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            distributed.Ranks(world=2, rank=0).check(tiny_config.replace(**changes))
