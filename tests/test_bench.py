"""The benchmark's behaviour on tiny models (its speed figures come from `vqclip bench`)."""

import json

import pytest
import taming.modules.diffusionmodules.model as taming_blocks
import torch

from vqclip.bench import loops as bench
from vqclip.frontends.cli import main


def test_quick_bench_reports_both_loops_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    main(["bench", "--quick", "--json"])
    results = json.loads(capsys.readouterr().out)
    assert results["models"] == "tiny shapes models" and results["precision"] in ("fp32", "bf16")
    assert results["precision_choice"].startswith("auto: measured on cpu: fp32 ")  # the probe's
    (row,) = results["rows"]
    assert (row["size"], row["cutn"], row["batch"]) == (64, 4, 2)
    for key in ("classic_s", "fast_s", "fast_batch_s"):
        assert row[key] > 0, key
    assert row["speedup"] == pytest.approx(row["classic_s"] / row["fast_s"])
    assert row["classic_peak_mb"] > 0 and row["fast_peak_mb"] > 0
    # Only the prepared instances run the fused swish: taming's module keeps its own.
    assert taming_blocks.nonlinearity is not torch.nn.functional.silu


def test_quick_bench_table_has_a_row_per_case(capsys: pytest.CaptureFixture[str]) -> None:
    main(["bench", "--quick", "--case", "64x2", "--case", "64x3"])
    table = capsys.readouterr().out
    assert "| 64² | 2 |" in table and "| 64² | 3 |" in table
    assert "precision: auto: measured on cpu" in table  # which precision, and why


def test_classic_cutouts_are_per_cutout_crops_of_the_right_size() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 3, 48, 40)
    cutouts = bench._classic_cutouts(image, 16, 5)
    assert cutouts.shape == (5, 3, 16, 16)
    assert 0 <= float(cutouts.min()) and float(cutouts.max()) <= 1.2  # Lanczos rings a little
    kernel = bench._lanczos_kernel(0.5)
    assert kernel.sum().item() == pytest.approx(1.0) and kernel.argmax() == len(kernel) // 2


def test_quick_batches_bench_reports_each_case_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    main(["bench", "--quick", "--batches", "--json", "--precision", "fp32"])
    results = json.loads(capsys.readouterr().out)
    cases = [(r["models"], r["cutn"], r["batches"]) for r in results["rows"]]
    assert cases == [(1, c, n) for c in (4, 8) for n in (1, 2, 4)] + [(2, 4, 1), (2, 4, 2)]
    assert all(r["s"] > 0 and r["peak_mb"] > 0 for r in results["rows"])


def test_quick_diffusion_bench_times_a_guided_step_per_cutn(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["bench", "--quick", "--diffusion", "--json", "--precision", "fp32"])
    results = json.loads(capsys.readouterr().out)
    assert [r["cutn"] for r in results["rows"]] == [4, 8]
    assert all(r["s"] > 0 and r["peak_mb"] > 0 for r in results["rows"])
    assert results["size"] == 32 and results["precision"] == "fp32"
    main(["bench", "--quick", "--diffusion", "--precision", "fp32"])
    assert "| cutn | s per guided step |" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_scaling_bench_times_processes_and_ray_workers(capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    main(["bench", "--scaling", "--quick", "--json"])
    results = json.loads(capsys.readouterr().out)
    assert list(results["seconds"]) == [
        "1 process, 2 threads", "1 process, 1 thread, cutn_batches 2",
        "torchrun, 2 processes of 1 thread", "sweep of 2 images, Ray with 1 CPU(s)",
        "sweep of 2 images, Ray with 2 CPU(s)",
    ]  # fmt: skip
    assert all(seconds > 0 for seconds in results["seconds"].values())


def test_quick_animation_bench_times_a_frame_of_each_mode(capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    main(["bench", "--animation", "--quick", "--device", "cpu", "--json"])
    results = json.loads(capsys.readouterr().out)
    assert [row["case"] for row in results["rows"]] == ["shapes 64², 2D", "shapes 64², 3D"]
    assert all(0 < row["frame_s"] < 60 for row in results["rows"])


def test_quick_flow_bench_times_each_estimator(capsys: pytest.CaptureFixture[str]) -> None:
    main(["bench", "--flow", "--quick", "--device", "cpu", "--json"])
    results = json.loads(capsys.readouterr().out)
    assert [row["estimator"] for row in results["rows"]] == ["dis", "raft_small", "raft_large", "rife"]  # fmt: skip
    assert all(row["in_between_s"] > 0 for row in results["rows"])
    assert all(row["pair_s"] > 0 for row in results["rows"][:3]) and results["rows"][3]["pair_s"] is None  # fmt: skip
