"""Many images at once on a Ray cluster: sweeps.

A sweep (``vqclip sweep SWEEP.yaml``) is a list of generations, prompts x seeds x a grid of
settings and/or explicit configs, each run as a Ray task (one GPU each where there are GPUs)
into the sweep's directory under a name made from its settings' hash, so that a sweep started
again skips what is finished and resumes what was stopped. A task that fails for a passing
reason (a download, the file system, a lost worker) is retried a bounded number of times; one
that fails on its input is reported at once; the others' runs are kept either way. At the end
``gallery.html`` shows every final image with its prompt, seed and settings.
Ray is the engine (:mod:`vqclip.scale.cluster`); vqclip only describes the tasks.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vqclip.core.config import GenerationConfig
from vqclip.core.limits import parse_yaml, read_text
from vqclip.scale.cluster import connect, ray_module

__all__ = ["Sweep", "read_sweep", "run_sweep", "write_gallery", "MAX_RUNS"]

log = logging.getLogger(__name__)

_KEYS = {"name", "output_dir", "settings", "prompts", "seeds", "grid", "configs", "retries"}
MAX_RUNS = 10_000  # a sweep larger than this is more likely a mistake in the YAML


@dataclass(frozen=True)
class Sweep:
    """The runs of a sweep file and where they go."""

    directory: Path
    runs: tuple[dict[str, Any], ...]  # each a config's values, its output_dir and run_name set
    retries: int = 2
    varied: tuple[str, ...] = field(default=())  # the settings that differ between runs


def read_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file (YAML, safe loader); raise ``ValueError`` naming what is
    wrong and what was expected."""
    path = Path(path)
    spec = parse_yaml(read_text(path, "sweep"), f"sweep: {path}")  # aliases counted, bounded
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"sweep: {path} holds no sweep; expected a mapping with prompts, seeds, grid or configs")  # fmt: skip
    unknown = sorted(set(map(str, spec)) - _KEYS)
    if unknown:
        raise ValueError(f"sweep: unknown keys {unknown} in {path}; valid keys are {sorted(_KEYS)}")
    settings = _mapping(spec.get("settings", {}), "settings")
    grid = _mapping(spec.get("grid", {}), "grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep: grid.{key} is {values!r}; expected a list of values")
    prompts, seeds = (
        _list(spec.get("prompts", []), "prompts"),
        _list(spec.get("seeds", []), "seeds"),
    )
    configs = _list(spec.get("configs", []), "configs")
    count = len(prompts or [0]) * len(seeds or [0]) * math.prod(map(len, grid.values())) + len(configs)  # fmt: skip
    if count > MAX_RUNS:  # counted before the grid is built
        raise ValueError(f"sweep: {count} runs, over {MAX_RUNS}; expected a smaller sweep")
    runs = []
    if prompts or seeds or grid:
        for prompt, seed, combo in itertools.product(
            prompts or [settings.get("prompts", "")], seeds or [settings.get("seed", 0)],
            itertools.product(*grid.values()),
        ):  # fmt: skip
            runs.append({**settings, "prompts": prompt, "seed": seed, **dict(zip(grid, combo, strict=True))})  # fmt: skip
    for n, values in enumerate(configs):
        runs.append({**settings, **_mapping(values, f"configs[{n}]")})
    if not runs:
        raise ValueError(f"sweep: {path} describes no runs; give prompts, seeds, grid or configs")
    retries = spec.get("retries", 2)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        raise ValueError(f"sweep: retries is {retries!r}; expected 0 to 10")
    name = spec.get("name", path.stem)
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"sweep: name {name!r} is not a plain folder name")
    directory = Path(spec.get("output_dir", "outputs")) / name
    varied = _varied(runs)
    named = []
    for n, values in enumerate(runs):
        if "output_dir" in values or "run_name" in values:
            raise ValueError(f"sweep: run {n} sets output_dir or run_name; the sweep names its runs")  # fmt: skip
        values = {**values, "output_dir": str(directory), "run_name": _run_name(values)}
        try:
            GenerationConfig.from_dict(values)
        except (ValueError, TypeError) as error:
            raise ValueError(f"sweep: run {n} ({_describe(values, varied)}): {error}") from None
        named.append(values)
    return Sweep(directory, tuple(named), retries, tuple(varied))


def _varied(runs: list[dict[str, Any]]) -> list[str]:
    """The settings whose values differ between runs: one pass over them (a pairwise
    comparison was quadratic in the runs)."""
    values: dict[str, set[str]] = {}
    for run in runs:
        for key in run:
            values.setdefault(key, set()).add(json.dumps(run[key], sort_keys=True, default=str))
    return sorted(k for k, seen in values.items() if len(seen) > 1 or any(k not in r for r in runs))  # fmt: skip


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"sweep: {name} is {value!r}; expected a mapping of settings")
    return value


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"sweep: {name} is {value!r}; expected a list")
    return value


def _run_name(values: dict[str, Any]) -> str:
    """A run's folder: a slug of its prompt, its seed and its settings' hash (stable across
    restarts; other settings, another folder)."""
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
    first = str(values.get("prompts") or "image").split("|")[0].split(":")[0]
    slug = "".join(c if c.isalnum() else "-" for c in first.lower()).strip("-")[:32] or "image"
    return f"{slug}-s{values.get('seed', 0)}-{digest[:10]}"


def _describe(values: dict[str, Any], varied: tuple[str, ...] | list[str]) -> str:
    """The run's prompt, seed and the settings that vary in its sweep, as ``key=value``."""
    keys = ["prompts", "seed", *(k for k in varied if k not in ("prompts", "seed"))]
    return ", ".join(f"{k}={values.get(k)!r}" for k in keys)


def _state(run_dir: Path) -> str:
    """``done`` (it has its final image), ``stopped`` (a saved state to resume), or ``new``."""
    if any(run_dir.glob("final*.png")):
        return "done"
    return "stopped" if (run_dir / "state.pt").is_file() else "new"


def _make(values: dict[str, Any], resume_dir: str | None) -> dict[str, Any]:
    """One sweep run, in a Ray worker: generate it (or resume it), then its video."""
    from vqclip.run.driver import generate, resume
    from vqclip.run.video import assemble_video

    result = resume(resume_dir) if resume_dir else generate(GenerationConfig.from_dict(values))
    video = assemble_video(result.run_dir, overwrite=True)
    return {"run_dir": str(result.run_dir), "finals": [str(p) for p in result.finals], "video": str(video)}  # fmt: skip


def run_sweep(sweep: Sweep, address: str | None = None) -> dict[str, Any]:
    """Run every unfinished run of ``sweep`` as a Ray task; returns what was done, skipped
    and failed (with its error), and writes ``gallery.html``."""
    ray = ray_module()
    connect(address)
    _check_own_dir(sweep.directory)
    sweep.directory.mkdir(parents=True, exist_ok=True)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    remote = ray.remote(_make).options(
        num_gpus=gpus, num_cpus=0 if gpus else 1, max_retries=sweep.retries,
        retry_exceptions=_transient(),
    )  # fmt: skip
    pending, skipped = {}, []
    failed: dict[str, str] = {}
    for values in sweep.runs:
        run_dir = sweep.directory / values["run_name"]
        if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
            failed[values["run_name"]] = f"{run_dir} is a symlink or a file, not this sweep's run directory; left alone"  # fmt: skip
            continue
        state = _state(run_dir) if run_dir.is_dir() else "new"
        if state == "done":
            skipped.append(str(run_dir))
            continue
        if state == "new" and run_dir.is_dir():  # stopped before its first state: start afresh
            run_dir.rename(_free_name(run_dir.with_name(run_dir.name + ".incomplete")))
        pending[values["run_name"]] = remote.remote(values, str(run_dir) if state == "stopped" else None)  # fmt: skip
    done = []
    for name, ref in pending.items():
        try:
            done.append(ray.get(ref)["run_dir"])
        except Exception as error:  # reported; the other runs are kept
            failed[name] = _first_line(error)
    write_gallery(sweep)
    return {"done": done, "skipped": skipped, "failed": failed, "gallery": str(sweep.directory / "gallery.html")}  # fmt: skip


def _check_own_dir(directory: Path) -> None:
    """Refuse a sweep directory that is a symlink (its runs would be written elsewhere)."""
    if directory.is_symlink():
        raise ValueError(f"sweep: {directory} is a symlink; expected the sweep's own directory (or a new name)")  # fmt: skip


def _transient() -> list[type[BaseException]]:
    """What a retry may cure: the network, the disk, a worker lost with its machine. Bad input
    (ValueError) and a step too large (MemoryError) fail the same way again."""
    import ray.exceptions

    from vqclip.core.errors import DownloadError

    return [DownloadError, OSError, ray.exceptions.RayError]


def _free_name(path: Path) -> Path:
    for n in itertools.count():
        candidate = path if n == 0 else path.with_name(f"{path.name}-{n}")
        if not candidate.exists():
            return candidate
    raise AssertionError("unreachable")


def _first_line(error: BaseException) -> str:
    """A task's error as one line: the first of the exception Ray wraps (``cause``), else the
    last of Ray's traceback."""
    cause = getattr(error, "cause", None)
    lines = str(cause or error).strip().splitlines()
    if not lines:
        return type(cause or error).__name__
    return lines[0] if cause is not None else lines[-1]


def write_gallery(sweep: Sweep) -> Path:
    """``gallery.html`` in the sweep's directory: every finished run's final image(s), with
    its prompt, seed and the settings that vary, linking its run directory and video."""
    from vqclip.core.files import write_atomic

    cards = []
    for values in sweep.runs:
        run_dir = sweep.directory / values["run_name"]
        own = run_dir.is_dir() and not run_dir.is_symlink()
        finals = sorted(p for p in run_dir.glob("final*.png") if _is_own_file(p)) if own else []
        finals = [p for p in finals if "_x" not in p.stem]  # the upscaled copies are links away
        if not finals:
            continue
        name = html.escape(values["run_name"], quote=True)
        images = "".join(f'<img src="{name}/{html.escape(p.name, quote=True)}" alt="">' for p in finals)  # fmt: skip
        caption = html.escape(_describe(values, sweep.varied))
        video = f' · <a href="{name}/video.mp4">video</a>' if (run_dir / "video.mp4").is_file() else ""  # fmt: skip
        cards.append(f'<figure>{images}<figcaption>{caption}<br><a href="{name}/">{name}</a>{video}</figcaption></figure>')  # fmt: skip
    page = (
        "<!DOCTYPE html><meta charset=utf-8><title>vqclip sweep</title><style>"
        "body{font-family:sans-serif;display:flex;flex-wrap:wrap;gap:12px}"
        "figure{margin:0;width:256px}img{width:256px;image-rendering:pixelated}"
        "figcaption{font-size:12px}</style>" + "".join(cards)
    )
    path = sweep.directory / "gallery.html"
    write_atomic(path, page.encode())
    return path


def _is_own_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()
