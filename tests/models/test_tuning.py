import json
import platform
import time
from pathlib import Path

import pytest
import torch

from vqclip.models import tuning


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_applies_on_glibc() -> None:
    assert tuning.keep_freed_memory() is True
    x = torch.ones(64, 2**20)  # 256 MiB allocated and freed under the new settings
    assert float(x.sum()) == 64 * 2**20
    del x


def test_auto_precision_is_measured_once_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timings = {"fp32": 1.0, "bf16": 0.4}
    probes = []

    def timed(device: torch.device, precision: str, **options: float) -> float:
        probes.append(precision)
        return timings[precision]

    monkeypatch.setattr(tuning, "_time_probe", timed)
    choice = tuning.measure_precision(torch.device("cpu"), tmp_path)
    assert choice.precision == "bf16" and "bf16 400.0 ms" in choice.why
    assert probes == ["fp32", "bf16"] * tuning._ROUNDS  # alternately: load slows both alike
    again = tuning.measure_precision(torch.device("cpu"), tmp_path)
    assert (
        again.precision == "bf16"
        and again.why.endswith("(cached)")
        and len(probes) == 2 * tuning._ROUNDS
    )
    cached = json.loads((tmp_path / "precision.json").read_text())
    (key,) = cached
    assert torch.__version__ in key and "cpu" in key  # per machine and torch version
    monkeypatch.setattr(torch, "__version__", "9.9.9")  # another torch measures again
    timings["bf16"] = 0.9  # only 10% faster: fp32, the exact one, stays
    assert tuning.measure_precision(torch.device("cpu"), tmp_path).precision == "fp32"
    assert (
        len(probes) == 4 * tuning._ROUNDS
        and len(json.loads((tmp_path / "precision.json").read_text())) == 2
    )


def test_the_probe_keeps_each_precisions_fastest_round_and_stops_on_an_emulated_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = {"fp32": [1.0, 1.0, 1.0], "bf16": [5.0, 0.5, 0.5]}  # the first bf16 run under load
    probes = []

    def timed(device: torch.device, precision: str, **options: float) -> float:
        probes.append(precision)
        return runs[precision].pop(0)

    monkeypatch.setattr(tuning, "_time_probe", timed)
    choice = tuning.measure_precision(torch.device("cpu"), tmp_path / "a")
    assert choice.precision == "bf16" and choice.seconds == {"fp32": 1.0, "bf16": 0.5}
    runs.update(fp32=[1.0, 1.0, 1.0], bf16=[9.0, 0.1, 0.1])  # 9x fp32: emulated, one round
    probes.clear()
    choice = tuning.measure_precision(torch.device("cpu"), tmp_path / "b")
    assert choice.precision == "fp32" and probes == ["fp32", "bf16"]


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"k": {"precision": "int4"}}'])
def test_a_crafted_precision_cache_is_measured_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    monkeypatch.setattr(tuning, "_time_probe", lambda device, precision, **options: 1.0)
    (tmp_path / "precision.json").write_text(content)
    assert tuning.measure_precision(torch.device("cpu"), tmp_path).precision == "fp32"
    assert tuning._is_choice(next(iter(json.loads((tmp_path / "precision.json").read_text()).values())))  # fmt: skip


def test_the_probe_runs_each_precision_on_this_cpu_and_gives_up_on_a_slow_one() -> None:
    for precision in ("fp32", "bf16"):
        seconds = tuning._time_probe(torch.device("cpu"), precision, repeats=1)
        assert 0 < seconds < 60
    started = time.perf_counter()  # a precision slower than the limit is timed by one run
    seconds = tuning._time_probe(torch.device("cpu"), "fp32", repeats=50, give_up=0.0)
    assert time.perf_counter() - started < 20 * seconds + 1


def test_a_planted_cache_symlink_is_replaced_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``precision.json`` in a shared cache: a link there is neither read nor written through."""
    victim = tmp_path / "victim.json"
    victim.write_text('{"planted": {"precision": "fp16", "why": "x", "seconds": {}}}')
    (tmp_path / "precision.json").symlink_to(victim)
    monkeypatch.setattr(tuning, "_time_probe", lambda device, precision, **options: 1.0)
    choice = tuning.measure_precision(torch.device("cpu"), tmp_path)
    assert choice.precision == "fp32" and not choice.why.endswith("(cached)")
    assert victim.read_text().startswith('{"planted"')
    assert not (tmp_path / "precision.json").is_symlink()
