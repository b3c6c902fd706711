"""The run driver: generate, resume and restyle, into a run directory, keeping what was made.

:func:`generate` resolves a config (seed, preset, precision), checks it, and drives a new run;
:func:`resume` drives a stopped one on from its saved state. One driver, :func:`drive`, owns
what every run shares: frames and state at display steps, Ctrl-C between steps, the final
images. What it drives is a :class:`_Job`: the optimisation of one image (a plain run, a story,
a zoom video, an animation), the sampling of a diffusion image, or the restyling of a video, a
run per frame.
"""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from vqclip.core import presets
from vqclip.core.config import GenerationConfig, resolve_seed
from vqclip.core.files import write_atomic
from vqclip.core.images import to_uint8
from vqclip.core.limits import read_text
from vqclip.loop.diffusion import clip_guidance
from vqclip.loop.optimise import Callback, best_candidates, render
from vqclip.loop.processes import ONE_PROCESS, Processes
from vqclip.models.acquire import RunFiles, acquire
from vqclip.models.flow import flow_estimator
from vqclip.models.tuning import keep_freed_memory, measure_precision
from vqclip.run.build import check_inputs, prepare, prepare_loop, prepare_sample, resolve_device
from vqclip.run.coherence import ColorKeeper
from vqclip.run.frames import TILED, FrameWriter, create_run_dir, frame_iteration, set_aside_from
from vqclip.run.motion import CameraPath, Tweens
from vqclip.run.restyle import Remote, frames_to_restyle, last_frames, restyle_frames, saved_frame
from vqclip.run.runstate import STATE, read_state, save_state, stop_between_steps
from vqclip.run.stories import loop_at, run_schedule

__all__ = [
    "generate", "resume", "drive", "from_main", "resolve_config", "read_run_config", "RunResult",
    "Progress", "progress_of",
]  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a generation produced."""

    run_dir: Path | None  # holds config.json, frames/, final.png and state.pt; None off rank 0
    image: torch.Tensor  # (B, 3, H, W) in [0, 1], on the CPU
    config: GenerationConfig  # the resolved config (seed filled in)
    frames: tuple[Path, ...]  # saved frames, in order (NNNNNN-K.png: image K of a batch)
    interrupted: bool  # stopped by KeyboardInterrupt; everything made so far is kept
    finals: tuple[Path, ...]  # final.png, or final-K.png per image of a batch
    upscaled: tuple[Path, ...] = ()  # final_x4.png (with upscale 4), ... beside them


@dataclass(frozen=True)
class Progress:
    """A run's steps for a progress bar, the one formula of every frontend (the CLI's bar, the
    notebook's, the web page's): per frame of a restyled video (else the run's) and in all
    (None: a run until stopped); ``frames``: each sampled frame's of a diffusion animation,
    which differ (the first a whole sample, each later one from its frame_strength on)."""

    per_frame: int
    total: int | None
    frames: tuple[int, ...] = ()
    every: int = 1  # frames per frame that takes steps (a diffusion animation's cadence)
    # the steps before each of ``frames``, summed once: done() runs at every step
    _before: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_before", (0, *itertools.accumulate(self.frames)))

    def done(self, info: dict) -> int:
        """Steps done once the step that ``info`` reports (its ``frame``, ``iteration``) ends:
        a resumed run or restyle starts part-way."""
        frame = info.get("frame", 0) // self.every
        before = self._before[frame] if self.frames else frame * self.per_frame
        return before + info["iteration"] + 1


def progress_of(config: GenerationConfig, max_iterations: int | None = None) -> Progress:
    """The :class:`Progress` of a run of ``config`` (resumed up to ``max_iterations``, if
    given): a diffusion sample skips its ``skip_timesteps``, a restyle has a run per frame."""
    config = presets.apply(config)
    iterations = max_iterations or config.max_iterations
    if iterations == -1:
        return Progress(0, None)
    per_frame = iterations - config.skip_timesteps
    if _sampled_frames(config):  # the first frame a sample; each later one from its frame_skip on
        taken = range(config.cadence, config.max_frames, config.cadence)
        frames = (per_frame, *(iterations - config.frame_skip(frame) for frame in taken))
        return Progress(per_frame, sum(frames), frames, config.cadence)
    return Progress(per_frame, per_frame * frames_to_restyle(config))


def resolve_config(config: GenerationConfig, device: torch.device) -> GenerationConfig:
    """The config a run records: its seed picked, its preset applied, ``precision="auto"``
    replaced by what it picks here, so that a rerun of ``config.json`` repeats it."""
    config = presets.apply(resolve_seed(config))
    if config.precision == "auto":
        choice = measure_precision(device)
        config = config.replace(precision=choice.precision, precision_choice=choice.why)
    return config


def generate(
    config: GenerationConfig,
    callback: Callback | None = None,
    *,
    processes: Processes = ONE_PROCESS,
    remote: Remote | None = None,
) -> RunResult:
    """Run one generation; frames, ``config.json`` and ``final.png`` go to a new run directory.

    ``callback`` receives the loop's reports (see :func:`vqclip.loop.optimise.run_loop`) after the
    frame for that step is saved. Ctrl-C stops the run after the step under way (a second one
    at once) and keeps what was made; :func:`resume` goes on from there. Scale-out is handed
    in: ``processes`` share each step (:func:`vqclip.scale.distributed.join` under torchrun),
    ``remote`` restyles ``init_video``'s frames elsewhere
    (:func:`vqclip.scale.cluster.on_ray`).
    """
    device = resolve_device(processes.device_name(config.device))
    config = from_main(processes, lambda: resolve_config(config, device))
    processes.check(config)
    _check_remote(config, remote)
    files = acquire(config)
    check_inputs(config, files, device)
    return drive(config, None, device, None, callback, processes=processes, remote=remote, files=files)  # fmt: skip


def from_main(processes: Processes, resolve: Callable[[], GenerationConfig]) -> GenerationConfig:
    """``resolve()`` on rank 0, its result on every rank: sent as the config's JSON (nothing
    unpickled), so that each rank runs with rank 0's seed and precision."""
    data = processes.share_from_main(lambda: resolve().to_json().encode())
    return GenerationConfig.from_json(data.decode())


def _check_remote(config: GenerationConfig, remote: Remote | None) -> None:
    if remote is None:
        return
    if not config.init_video:
        raise ValueError("--ray: spreads a restyle's frames over a cluster (give init_video); for many images, vqclip sweep")  # fmt: skip
    if config.frame_init_weight or config.temporal_weight or config.follows_flow():
        raise ValueError(
            "--ray: frames that follow the previous result (frame_init_weight, temporal_weight, "
            "flow_warp, flow_weight) are made one after another; leave them off to restyle on "
            "a cluster"
        )


def resume(
    run_dir: str | Path,
    max_iterations: int | None = None,
    callback: Callback | None = None,
    *,
    processes: Processes = ONE_PROCESS,
) -> RunResult:
    """Go on with a stopped run in its own directory, from its last saved state (the step it
    was stopped after, or its last display step); ``max_iterations`` extends a finished run.

    What the run made from that step on (frames, final image, video) moves to a
    ``superseded-NNNNNN`` directory first; on a CPU the run's frames and final image then come
    out bit-identical to those of a run that was never stopped. A restyled video goes on from
    its first frame not yet made.
    """
    run_dir = Path(run_dir)
    # Rank 0 reads the run; every rank resumes what it read (their own copies may differ).
    shared = processes.share_from_main(lambda: _read_resumable(run_dir, max_iterations))
    config, saved = _unpack(shared)
    processes.check(config)
    device = resolve_device(processes.device_name(config.device))
    files = acquire(config)
    check_inputs(config, files, device)
    return drive(config, run_dir, device, saved, callback, processes=processes, files=files)


def _read_resumable(run_dir: Path, max_iterations: int | None) -> bytes:
    """The config (as JSON) and the saved state (as torch.save bytes) of a run to go on
    with, checked; ``max_iterations`` applied."""
    if run_dir.is_symlink():  # its writes would land in the directory it points to
        raise ValueError(f"resume: {run_dir} is a symlink; give the run directory itself ({run_dir.resolve()})")  # fmt: skip
    config = read_run_config(run_dir)
    saved = None
    if config.init_video or _sampled_frames(config):  # frame by frame: the PNGs are the state
        _check_restyle_resumable(run_dir, config, max_iterations)
    else:
        saved = read_state(run_dir / STATE)
        if config.generator == "diffusion":
            _check_sample_resumable(run_dir, config, saved, max_iterations)
        elif max_iterations is not None:
            config = config.replace(max_iterations=max_iterations)
        if config.max_iterations != -1 and saved["iteration"] >= config.max_iterations:
            raise ValueError(
                f"max_iterations: the run in {run_dir} has done {saved['iteration']} of its "
                f"{config.max_iterations} iterations; give a larger max_iterations to go on"
            )
    buffer = io.BytesIO()
    torch.save(saved, buffer)  # what read_state returned: tensors and containers only
    return config.to_json().encode() + b"\0" + buffer.getvalue()


def _unpack(data: bytes) -> tuple[GenerationConfig, dict | None]:
    text, _, state = data.partition(b"\0")  # JSON holds no NUL: it escapes one as \\u0000
    saved = torch.load(io.BytesIO(state), map_location="cpu", weights_only=True)
    return GenerationConfig.from_json(text.decode(), "resume"), saved


def _sampled_frames(config: GenerationConfig) -> bool:
    """Whether a run is a diffusion animation: a sample per frame, each saved whole."""
    return config.generator == "diffusion" and config.animation_mode != "none"


def _check_restyle_resumable(
    run_dir: Path, config: GenerationConfig, max_iterations: int | None
) -> None:
    """A run made frame by frame (a restyle, a diffusion animation) goes on as it started."""
    if max_iterations is not None:
        what = "a restyled video" if config.init_video else "a diffusion animation"
        raise ValueError(
            f"max_iterations: {what} goes on with the iterations per frame it was started "
            f"with ({config.max_iterations}); leave max_iterations out"
        )
    if any(run_dir.glob("final*.png")):
        made = f"of {config.init_video!r} is restyled" if config.init_video else "of the animation is made"  # fmt: skip
        raise ValueError(f"resume: every frame {made} in {run_dir}")


def _check_sample_resumable(
    run_dir: Path, config: GenerationConfig, saved: dict, max_iterations: int | None
) -> None:
    if max_iterations not in (None, config.max_iterations):
        raise ValueError(
            f"max_iterations: a diffusion sample follows the schedule it was started on "
            f"({config.max_iterations} steps); leave max_iterations out"
        )
    if saved["iteration"] >= config.max_iterations - config.skip_timesteps:
        raise ValueError(f"resume: the sample in {run_dir} has taken every step of its schedule")


def read_run_config(run_dir: Path) -> GenerationConfig:
    """The resolved config a run directory was made with (its ``config.json``)."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"resume: {run_dir} is not a run directory (no config.json)")
    try:
        config = GenerationConfig.from_json(read_text(path, "resume"), f"resume: {path}")
    except (ValueError, TypeError) as error:
        message = str(error)
        raise ValueError(
            message if message.startswith("resume") else f"resume: {path}: {message}"
        ) from None
    if config.step_decay is None and config.step_size is not None:
        # an optimised run resolved before step_decay existed: it ran with a constant step
        config = replace(config, step_decay=0)
    return config


def drive(
    config: GenerationConfig,
    run_dir: Path | None,
    device: torch.device,
    saved: dict | None = None,
    callback: Callback | None = None,
    *,
    processes: Processes = ONE_PROCESS,
    remote: Remote | None = None,
    files: RunFiles | None = None,
) -> RunResult:
    """Run a resolved, checked config into ``run_dir`` (None: a new one, made once the models
    are ready), from the ``saved`` state of :func:`~vqclip.run.runstate.read_state` when resuming:
    the one driver of every run, from the config's ``files`` (default: :func:`acquire`'s).
    Under torch.distributed only rank 0 writes: the others' results have no run directory."""
    if device.type == "cpu":
        keep_freed_memory()
    files = files or acquire(config)
    if config.init_video:
        job: _Job = _Restyle(config, device, remote, files)
    elif config.generator == "diffusion" and config.animation_mode != "none":
        job = _AnimateSample(config, device, files)
    elif config.generator == "diffusion":
        job = _Sample(config, device, saved, processes, files)
    else:
        job = _Optimise(config, device, saved, processes, files)
    if processes.is_main():
        run_dir = run_dir or create_run_dir(config)
    job.start(run_dir if processes.is_main() else None)

    def report(info: dict) -> None:
        info = job.report(info)
        if callback:
            callback(info)
        stop_requested()
        job.between_steps = False

    interrupted = False
    with stop_between_steps() as stop_requested:
        try:
            job.run(report)
        except KeyboardInterrupt:
            interrupted = True
        except torch.OutOfMemoryError:
            raise MemoryError(_out_of_memory(config, device, job)) from None
    image, finals = job.finish(interrupted)
    frames = tuple(job.writer.saved)
    upscaled = _upscale(finals, config, device, files) if config.upscale > 1 and finals else []
    return RunResult(run_dir, image.cpu(), config, frames, interrupted, tuple(finals), tuple(upscaled))  # fmt: skip


def _upscale(
    finals: list[Path], config: GenerationConfig, device: torch.device, files: RunFiles
) -> list[Path]:
    from vqclip.run.upscale import load_upscaler, upscale_file

    upscaler = load_upscaler(config.upscaler, device, files.upscaler)
    return [upscale_file(path, config.upscale, upscaler) for path in finals]


def _out_of_memory(config: GenerationConfig, device: torch.device, job: _Job) -> str:
    """What to do when a step does not fit the device: the run ends, its frames are kept."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    batches = config.cutn_batches
    return (
        f"out of {device} memory at {config.width}x{config.height} with cutn {config.cutn} in "
        f"{batches} batch(es) and {config.batch_size * config.best_of} image(s) per step; try "
        f"cutn_batches {min(2 * batches, config.cutn)} or a smaller width and height. The "
        f"frames saved so far ({len(job.writer.saved)}, in {job.writer.run_dir}) are kept"
    )


class _Job:
    """What :func:`drive` drives: ``start(run_dir)``, then ``run(report)`` with
    ``report(info)`` for each step's report, then ``finish(interrupted)``: the final images."""

    between_steps = False  # True while the loop is between two steps: its state is whole
    writer: FrameWriter

    def report(self, info: dict) -> dict:
        return info


class _Optimise(_Job):
    """One optimisation (with its story and zooms): frames and state at display steps."""

    def __init__(
        self,
        config: GenerationConfig,
        device: torch.device,
        saved: dict | None,
        processes: Processes,
        files: RunFiles,
    ) -> None:
        self.config, self.saved = config, saved
        loop, self.state = self._prepare(config, device, files)
        self.loop = replace(loop, processes=processes)
        self.image: torch.Tensor | None = None
        # An animation's camera path (its depth model loaded once), and with a cadence the
        # frames between those that take steps.
        self.path = CameraPath(config, device) if config.animation_mode != "none" else None
        self.tweens = None
        if self.path is not None and config.cadence > 1:
            self.tweens = Tweens(self.path, config.cadence, self._saved_key)
        if self.path is not None and config.color_coherence != "none":
            self.path.keep_colors = ColorKeeper(config.color_coherence, lambda: self._saved_key(0))

    def _prepare(self, config: GenerationConfig, device: torch.device, files: RunFiles) -> tuple:
        return prepare(config, device, files)

    def start(self, run_dir: Path | None) -> None:
        if self.saved is not None:  # resuming: the state goes in, what came after goes aside
            self.state.load_state_dict(self.saved)
        if self.saved is not None and run_dir is not None:
            aside = set_aside_from(run_dir, self.state.iteration)
            if aside:
                log.info("resume: moved what the run made from iteration %d on to %s", self.state.iteration, aside)  # fmt: skip
            write_atomic(run_dir / "config.json", self.config.to_json().encode())
        self.writer = FrameWriter(run_dir, self.config)

    def report(self, info: dict) -> dict:
        self.between_steps = True
        if "image" in info:  # frames show each image's best candidate so far
            current = loop_at(self.loop, info["iteration"], self.config)
            info = {**info, "image": best_candidates(current, info["image"], self.config.best_of)}
            key = self.config.frame_ended(info["iteration"] + 1)
            if self.tweens is not None and key:  # the frames after the key before this one
                self._write_tweens(key - self.config.cadence, key)
            self.writer(info)
            self._save_state()
        return info

    def _saved_key(self, key: int) -> torch.Tensor:
        return saved_frame(self.writer.saved, self._named(key)).to(self.state.start.device)

    def _named(self, key: int) -> int:
        """The step a key frame (one that takes steps) is named by: its last."""
        return self.config.first_steps() - 1 + key // self.config.cadence * self.config.steps_per_frame  # fmt: skip

    def _write_tweens(self, key: int, end: int) -> None:
        """Frames ``key`` + 1 up to ``end`` (not included) of an animation with a cadence,
        named by the steps after ``key``'s (as many as there are steps per frame: the cadence
        is at most that), so that the frames sort in order. They are written with the next key
        frame, so that a run resumed from its state after ``key`` (which sets aside what was
        named from there on) writes them again."""
        if self.writer.run_dir is None:
            return
        for frame in range(key + 1, min(end, self.config.max_frames)):
            image = [to_uint8(x) for x in self.tweens(frame)]
            name, motion = self._named(key) + frame - key, self.path.values(frame)
            self.writer.saved += self.writer.save(f"frames/{name:06d}", image, name, motion)

    def _save_state(self) -> None:
        if self.writer.run_dir is not None:  # the process that writes
            save_state(self.state, self.writer.run_dir / STATE)

    def run(self, report: Callback) -> None:
        self.image = run_schedule(self.loop, self.state, self.config, report, self.path)

    def _render(self) -> torch.Tensor:
        return render(self.loop, self.state)

    def finish(self, interrupted: bool) -> tuple[torch.Tensor, list[Path]]:
        loop, state, writer = self.loop, self.state, self.writer
        if self.between_steps or not interrupted:  # else the last display step's state stays
            self._save_state()
        image = self._render() if self.image is None else self.image
        image = best_candidates(
            loop_at(loop, state.iteration, self.config), image, self.config.best_of
        )
        last = self.config.frame_ended(state.iteration)  # the frame that ends here, if one does
        if last is None and (not writer.saved or frame_iteration(writer.saved[-1]) != state.iteration):  # fmt: skip
            writer({"iteration": state.iteration, "image": image})
        if self.tweens is not None and last is not None and not interrupted:  # after the last key
            self._write_tweens(last, self.config.max_frames)
        finals = writer.save("final", [to_uint8(x) for x in image], state.iteration)
        if self.config.tile:  # the tile as it repeats, to see its seams: 2x2 copies
            writer.save(TILED, [np.tile(to_uint8(x), (2, 2, 1)) for x in image], state.iteration)
        return image, finals


class _Sample(_Optimise):
    """One diffusion sample, guided by the loop's objective: frames and state at display steps."""

    def _prepare(self, config: GenerationConfig, device: torch.device, files: RunFiles) -> tuple:
        loop, self.sampler, state = prepare_sample(config, device, files)
        return loop, state

    def run(self, report: Callback) -> None:
        guidance = clip_guidance(self.loop, lambda step: loop_at(self.loop, step, self.config))
        cond = self.sampler.condition(self.loop, len(self.state.sample))
        self.image = self.sampler.run(self.state, guidance, self.config.display_frequency, report, cond)  # fmt: skip

    def _render(self) -> torch.Tensor:
        return self.state.image()


class _AnimateSample(_Job):
    """A diffusion animation: frame 0 a sample; each later frame the previous one moved along
    the camera path, noised ``frame_strength`` of the way into the schedule and sampled back
    (Deforum's and Disco's way). With ``cadence`` N only every Nth frame is sampled; the frames
    after one are the last two sampled frames moved on along the path and cross-faded toward
    the newer. Each frame's draws come from the seed and the frame, and the frames it starts
    from are read back from their PNGs, so that a stopped animation goes on from its first
    missing frame exactly as it would have."""

    def __init__(self, config: GenerationConfig, device: torch.device, files: RunFiles) -> None:
        self.config, self.device = config, device
        self.loop, self.sampler, self.first = prepare_sample(config, device, files)
        self.path = CameraPath(config, device)
        self.tweens = Tweens(
            self.path, config.cadence, lambda k: saved_frame(self.writer.saved, k).to(device)
        )
        if config.color_coherence != "none":
            self.path.keep_colors = ColorKeeper(config.color_coherence, lambda: self.tweens.load(0))

    def start(self, run_dir: Path | None) -> None:
        self.writer = FrameWriter(run_dir, self.config)
        done = len({frame_iteration(path) for path in self.writer.saved})
        set_aside_from(run_dir, done)  # an earlier video of the frames

    def run(self, report: Callback) -> None:
        config = self.config
        done = {frame_iteration(path) for path in self.writer.saved}
        batch, size = config.batch_size * config.best_of, (config.height, config.width)
        for frame in range(config.max_frames):
            if frame in done:
                continue
            if frame % config.cadence:
                self._tween(frame)
                continue
            state = self.first
            if frame:  # the previous frame, as saved, moved into this one
                rng = torch.Generator(device=self.device).manual_seed((config.seed + frame) % 2**63)  # fmt: skip
                moved = self.path.move(last_frames(self.writer.saved).to(self.device), frame)
                moved = self.path.start(moved, frame)
                state = self.sampler.start(batch, *size, rng, moved, config.frame_skip(frame))

            def step(info: dict, frame: int = frame) -> None:
                report({**{k: v for k, v in info.items() if k != "image"}, "frame": frame})

            loop = self.loop  # with the prompts keyed at or before this frame (or blending)
            if loop.objective.prompts.phases:
                loop = loop.at_phase(*config.prompt_at(frame))
            cond = self.sampler.condition(loop, batch)
            image = self.sampler.run(state, clip_guidance(loop), config.display_frequency, step, cond)  # fmt: skip
            motion = self.path.values(frame)
            if frame:  # what the frame kept of the one before
                motion["frame_strength"] = config.schedule_at("frame_strength", frame)
            name = f"frames/{frame:06d}"
            self.writer.saved += self.writer.save(name, [to_uint8(x) for x in image], frame, motion)  # fmt: skip

    def _tween(self, frame: int) -> None:
        """A frame between sampled ones (:class:`vqclip.run.motion.Tweens`)."""
        image = self.tweens(frame)
        name, motion = f"frames/{frame:06d}", self.path.values(frame)
        self.writer.saved += self.writer.save(name, [to_uint8(x) for x in image], frame, motion)

    def finish(self, interrupted: bool) -> tuple[torch.Tensor, list[Path]]:
        if not self.writer.saved:
            return self.first.image(), []
        image = last_frames(self.writer.saved)
        if interrupted:
            return image, []
        return image, self.writer.save("final", [to_uint8(x) for x in image], self.config.max_frames - 1)  # fmt: skip


class _Restyle(_Job):
    """A video restyled frame by frame (:mod:`vqclip.run.restyle`), keeping the frames a stopped
    run made; ``final.png`` is the last frame's result."""

    def __init__(
        self, config: GenerationConfig, device: torch.device, remote: Remote | None, files: RunFiles
    ) -> None:
        self.config, self.remote = config, remote
        self.loop, self.rng = (None, None) if remote else prepare_loop(config, device, files)
        self.estimate = None
        if config.follows_flow():
            self.estimate = flow_estimator(config.flow_estimator, device, files.flow)

    def start(self, run_dir: Path) -> None:
        self.writer = FrameWriter(run_dir, self.config)
        done = len({frame_iteration(path) for path in self.writer.saved})
        set_aside_from(run_dir, done)  # an earlier video of the frames

    def run(self, report: Callback) -> None:
        restyle_frames(
            self.config, self.loop, self.rng, self.writer, report, self.remote, self.estimate
        )

    def finish(self, interrupted: bool) -> tuple[torch.Tensor, list[Path]]:
        if not self.writer.saved:
            raise ValueError(f"init_video: no frames could be read from {self.config.init_video!r}")
        image = last_frames(self.writer.saved)
        if interrupted:
            return image, []
        pixels = [to_uint8(x) for x in image]
        return image, self.writer.save("final", pixels, self.config.max_iterations)
