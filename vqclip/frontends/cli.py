"""The ``vqclip`` command: the only module that prints or exits."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import textwrap
import threading
import types
import typing
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from vqclip.core import plugins
from vqclip.core.config import GenerationConfig
from vqclip.core.plugins import commands

PROMPT_HELP = """\
prompt syntax (as in the classic VQGAN+CLIP notebooks, parsed from the right):
  "text:weight:stop | text:weight | text"
  weight  defaults to 1; negative pushes away ("blurry:-0.5")
  stop    defaults to -inf; the prompt stops pulling once its distance is below it
  Colons inside the text and in URLs are kept: "https://host/img.png:0.5" is an image
  prompt with weight 0.5. A suffix counts as a weight only when it starts like a number.
  "a forest ^ a city at night | neon:0.5" is a story of two phases, each a prompt list,
  each holding for --prompt_every iterations (default: max_iterations shared out).

model presets: the flags marked "the model's preset" take the values of the preset that
  matches the run's generator and models (each flag given overrides its own):
{presets}

examples:
  vqclip generate "a red circle on a blue background" --seed 7
  vqclip generate "a lighthouse in a storm:1 | blurry:-0.5" --vqgan imagenet_f16_16384 \\
      --clip_model ViT-B/32 --width 256 --height 256 --max_iterations 300
  vqclip generate "a red circle on a blue background ^ a green square on a white background" \\
      --zoom_every 5 --zoom_scale 1.05 --zoom_rotate 2 --display_frequency 5 --video
  vqclip generate "an oil painting" --init_video in.mp4 --max_iterations 20 --init_weight 0.5 \\
      --video
  vqclip generate --config outputs/RUN_DIR/final.png --seed 8   # its settings, another seed
  vqclip resume outputs/RUN_DIR --max_iterations 500
  vqclip video outputs/RUN_DIR --fps 10
  vqclip video outputs/RUN_DIR --length 8 --interpolate 30 --overwrite
  vqclip upscale outputs/RUN_DIR --scale 4 --model RealESRGAN_x4plus
"""


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per config field, in an argument group per section, with the field's help."""
    hints = typing.get_type_hints(GenerationConfig)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(GenerationConfig):
        if f.name == "prompts" or not f.metadata["flag"]:
            continue
        group = f.metadata["group"]
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        hint = _without_none(hints[f.name])
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if typing.get_origin(hint) is tuple:
            kwargs.update(nargs="*", type=typing.get_args(hint)[0])
        elif hint in (int, float):
            kwargs["type"] = hint
        elif hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        unset = f.default in (None, "auto") and "preset" in f.metadata["help"]
        shown = "" if unset else f" (default: {f.default!r})"
        shown += _installed(f.name)
        groups[group].add_argument(*names, help=f.metadata["help"] + shown, **kwargs)


def _installed(name: str) -> str:
    """For the fields that name a plugin's parts, the parts installed, with their help."""
    kinds = {"terms": plugins.term_kinds, "transforms": plugins.transform_kinds}.get(name)
    if kinds is None:
        return ""
    found = "; ".join(f"{kind.name}: {kind.help}" for kind in kinds().values())
    return f"; installed: {found or 'none'}"


def _without_none(hint: Any) -> Any:
    """``int | None`` -> ``int``; other hints as they are."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint


def _presets_text() -> str:
    from vqclip.core.presets import presets

    lines = []
    for preset in presets():
        match = ", ".join(f"--{k} {v}" for k, v in preset.match.items()) or "any other run"
        flags = textwrap.fill(_as_flags(preset.settings), 88, initial_indent="    ",
                              subsequent_indent="    ")  # fmt: skip
        lines.append(f"  {preset.name} ({match}):\n{flags}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake reported as one line (and where to read more), not the usage."""

    def error(self, message: str) -> typing.NoReturn:
        # argparse quotes the user's words as they are: a "\r" or "\n" in one would split the line
        message = _one_line(message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line(message: str) -> str:
    """An error message as one line: characters that would break it (a newline or carriage
    return from a file's key or value) written escaped, as Python writes them."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vqclip", description="VQGAN+CLIP: prompts to images and videos.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    gen = sub.add_parser(
        "generate",
        help="generate an image (and frames) from prompts",
        description="Optimise a generator (a VQGAN latent, or the pixels) so that CLIP sees the "
        "prompts in its image.",
        epilog=PROMPT_HELP.replace("{presets}", _presets_text()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("prompts", nargs="?", default="", help='e.g. "a red circle:1 | blurry:-0.5"')
    gen.add_argument(
        "--config",
        type=Path,
        help="start from a run's config.json, or from a PNG it wrote (its settings are in the "
        "PNG's text: the same seed makes the same image); flags and a prompt override it",
    )
    gen.add_argument("--video", action="store_true", help="also assemble the frames into video.mp4")
    gen.add_argument(
        "--preview_motion",
        "--preview-motion",
        action="store_true",
        help="an animation's camera path alone, in seconds: the init image (or a test card) "
        "moved frame by frame, each frame's values printed; no model is loaded",
    )
    gen.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="restyle init_video's frames on a Ray cluster: a local instance, or the one at "
        'ADDRESS ("auto", "HOST:PORT", "ray://HOST:PORT")',
    )
    _add_config_flags(gen)
    resume = sub.add_parser(
        "resume",
        help="go on with a stopped run, or extend a finished one",
        description="Go on with a run from its last saved state, in its own directory: the "
        "step it was stopped after, or its last display step. What it made from there on moves "
        "to RUN_DIR/superseded-NNNNNN first.",
    )
    resume.add_argument("run_dir", type=Path)
    resume.add_argument(
        "--max_iterations",
        "--max-iterations",
        type=int,
        help="a new total for the run (default: its config's); -1 runs until interrupted",
    )
    resume.add_argument("--video", action="store_true", help="also assemble the frames")
    resume.add_argument(
        "--fps", type=float, help="frame rate of --video (default: init_video's, or 10)"
    )
    video = sub.add_parser(
        "video",
        help="assemble a run's saved frames into an MP4, WebM or GIF",
        description="Assemble a run's saved frames into an H.264 MP4, a VP9 WebM or a GIF. A "
        "batch run's images are tiled side by side unless --image picks one.",
    )
    video.add_argument("run_dir", type=Path)
    rate = video.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=float, help="frame rate (default: a restyled video's, else 10)")
    rate.add_argument("--length", type=float, help="seconds: the frame rate that fits the frames")
    video.add_argument("--first", type=int, default=0, help="first iteration (restyle: frame) kept")
    video.add_argument("--last", type=int, help="last iteration (restyle: frame) kept")
    video.add_argument("--image", type=int, help="a batch run's image K alone (from 0)")
    video.add_argument(
        "--interpolate", type=float, metavar="FPS", help="motion-interpolate up to FPS (e.g. 30)"
    )
    video.add_argument("--interpolation", choices=["minterpolate", "flow", "rife"], default="minterpolate", help="how --interpolate makes frames: ffmpeg's minterpolate, warping both neighbours along the optical flow, or RIFE's network (its 23 MB of weights fetched once; as many between each pair as FPS / the frame rate)")  # fmt: skip
    video.add_argument("--flow_estimator", "--flow-estimator", default="dis", help="the flow of --interpolation flow: dis, raft_small, raft_large or a plugin's")  # fmt: skip
    video.add_argument("--format", choices=["mp4", "webm", "gif"], help="default: --output's suffix, else mp4")  # fmt: skip
    video.add_argument("--loop", action="store_true", help="ping-pong: the frames forward, then back")  # fmt: skip
    video.add_argument("--max_gif_mb", "--max-gif-mb", type=float, default=8.0, help="a GIF is scaled down until it fits (default 8)")  # fmt: skip
    video.add_argument("--output", type=Path, help="default: RUN_DIR/video.FORMAT")
    video.add_argument("--overwrite", action="store_true", help="replace an existing video")
    video.add_argument(
        "--upscale", type=int, default=1, help="enlarge each frame this many times (2, 3, 4)"
    )
    video.add_argument("--upscaler", help="what enlarges them (default: the run's upscaler)")
    video.add_argument("--soundtrack", type=Path, help="a sound file under the video (default: the run's; a restyle keeps its source's sound)")  # fmt: skip
    video.add_argument("--soundtrack_offset", "--soundtrack-offset", type=float, help="seconds into the soundtrack at which the video starts")  # fmt: skip
    up = sub.add_parser(
        "upscale",
        help="enlarge an image, or a run's final image(s)",
        description="Enlarge an image (or RUN_DIR's final images) with an ESRGAN-family model "
        "or Lanczos; the copy goes beside it as NAME_xN.png, carrying its PNG text and what "
        "upscaled it.",
    )
    up.add_argument("path", type=Path, help="an image, or a run directory")
    up.add_argument("--scale", type=int, default=4, help="factor: 2, 3 or 4 (default 4)")
    up.add_argument(
        "--model",
        help='registry name (e.g. "RealESRGAN_x4plus"), a path to ESRGAN-family weights, or '
        '"lanczos"; default: the upscaler of the run that made the image',
    )
    up.add_argument("--output", type=Path, help="an image's copy (default: beside it, _xN)")
    sweep = sub.add_parser(
        "sweep",
        help="many generations as Ray tasks, skipping what is done; a gallery at the end",
        description="Run a sweep file's generations (prompts x seeds x a grid of settings, "
        "and/or a list of configs) as Ray tasks into OUTPUT_DIR/NAME; started again, it skips "
        "finished runs and resumes stopped ones. Writes gallery.html there.",
        epilog="""sweep file (YAML):
  name: castles                 # the folder under output_dir (default: the file's name)
  output_dir: outputs
  settings: {max_iterations: 100, vqgan: imagenet_f16_16384, clip_model: ViT-B/32}
  prompts: ["a castle", "a castle at night"]
  seeds: [0, 1, 2]
  grid: {step_size: [0.1, 0.2]}  # every combination, crossed with prompts and seeds
  configs: [{prompts: "a moat", seed: 7, cutn: 64}]   # and runs of their own
  retries: 2                    # for passing failures (downloads, disk, lost workers)""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("file", type=Path)
    sweep.add_argument(
        "--address",
        help='a Ray cluster ("auto", "HOST:PORT", "ray://HOST:PORT"); default: a local one',
    )
    models = sub.add_parser("models", help="list known models, or download one")
    models.add_argument("action", nargs="?", choices=["list", "download"], default="list")
    models.add_argument("name", nargs="?", help="registry name to download")
    ui = sub.add_parser(
        "ui",
        help="a local web page: prompts, live preview, stop and resume, a gallery of runs",
        description="Serve vqclip's web page (gradio; pip install 'vqclip[ui]') on this machine.",
    )
    ui.add_argument("--output_dir", "--output-dir", default="outputs", help="where runs go")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (this machine)")
    ui.add_argument("--port", type=int, default=7860, help="port to listen on")
    for command in commands().values():  # the plugins' (the benchmark's among them)
        command.configure(sub.add_parser(command.name, help=command.help))
    return parser


def _as_flags(settings: dict[str, Any]) -> str:
    """Settings as the command line gives them: ``--cutn 16 --start palette``."""

    def shown(value: Any) -> str:
        if isinstance(value, tuple | list):
            return " ".join(map(str, value))
        return "none" if value is None else str(value)

    return " ".join(f"--{key} {shown(value)}" for key, value in settings.items())


def _config_file(path: Path) -> dict[str, Any]:
    """The settings saved in a run's ``config.json``, or in the text of a PNG that vqclip wrote
    (every frame and final image carries its run's whole config)."""
    from vqclip.core.limits import parse_json, read_text
    from vqclip.run.frames import read_png_metadata

    if path.suffix.lower() == ".png":
        try:
            text = read_png_metadata(path).get("config")
        except OSError as error:  # missing, unreadable, or not a PNG at all
            raise ValueError(f"--config: cannot read {path}: {error}") from error
        if text is None:
            raise ValueError(
                f"--config: {path} carries no vqclip config; expected a frame or final image "
                "that vqclip wrote, or a run's config.json"
            )
    else:
        text = read_text(path, "--config")
    try:
        values = parse_json(text, f"--config: {path}")
    except ValueError as error:
        raise ValueError(
            f"{error}; expected a run's config.json or a PNG that vqclip wrote"
        ) from None
    if not isinstance(values, dict):
        raise ValueError(f"--config: {path} holds {type(values).__name__}, expected an object")
    return values


def _config_from_args(args: argparse.Namespace) -> tuple[GenerationConfig, dict[str, Any]]:
    """The config the flags (over ``--config``) describe, and what its preset fills in for the
    fields left out (a ``--config`` file's config is complete: nothing)."""
    from vqclip.core import presets

    values = _config_file(args.config) if args.config else {}
    values.update(
        {
            f.name: getattr(args, f.name)
            for f in fields(GenerationConfig)
            if f.name != "prompts" and hasattr(args, f.name)
        }
    )
    if args.prompts or "prompts" not in values:
        values["prompts"] = args.prompts
    for key in ("init_image", "init_video", "vqgan_checkpoint", "prior", "run_name"):
        if values.get(key) == "":
            values[key] = None
    config = GenerationConfig.from_dict(values)
    resolved = presets.apply(config)
    return resolved, {name: getattr(resolved, name) for name in presets.unset_fields(config)}


def _generate(args: argparse.Namespace) -> None:
    from vqclip.core.presets import preset_for
    from vqclip.run.driver import generate
    from vqclip.scale import cluster, distributed

    config, filled = _config_from_args(args)
    if args.preview_motion:
        return _preview_motion(config, args)
    note = filled and f"preset {preset_for(config).name!r} (a flag overrides each): {_as_flags(filled)}"  # fmt: skip
    processes = distributed.join(config.device)  # under torchrun: its ranks share each step
    remote = cluster.on_ray(args.ray) if args.ray is not None else None
    result = _with_progress(
        config,
        None,
        lambda cb: generate(config, cb, processes=processes, remote=remote),
        note,
        processes,
    )
    _report(result, args)


def _preview_motion(config: GenerationConfig, args: argparse.Namespace) -> None:
    from vqclip.core.config import resolve_seed
    from vqclip.run.motion import describe, preview_motion
    from vqclip.run.video import assemble_video

    def report(frame: int, values: dict[str, float]) -> None:
        print(describe(frame, values), flush=True)

    run_dir, frames = preview_motion(resolve_seed(config), report)
    print(f"preview: {len(frames)} frames in {run_dir}")
    if args.video:
        print(f"video:         {assemble_video(run_dir, fps=getattr(args, 'fps', None))}")


def _sweep(args: argparse.Namespace) -> None:
    from vqclip.scale.sweep import read_sweep, run_sweep

    sweep = read_sweep(args.file)
    print(f"sweep: {len(sweep.runs)} runs into {sweep.directory}", flush=True)
    outcome = run_sweep(sweep, args.address)
    print(f"done {len(outcome['done'])}, skipped {len(outcome['skipped'])} (finished before), failed {len(outcome['failed'])}")  # fmt: skip
    for name, error in outcome["failed"].items():
        print(f"failed:        {name}: {error}")
    print(f"gallery:       {outcome['gallery']}")
    if outcome["failed"]:
        sys.stdout.flush()
        sys.exit(1)


def _resume(args: argparse.Namespace) -> None:
    from vqclip.run.driver import from_main, read_run_config, resume
    from vqclip.scale import distributed

    processes = distributed.join()  # under torchrun: rank 0's run, read once, for every rank
    config = from_main(processes, lambda: read_run_config(args.run_dir))
    result = _with_progress(
        config,
        args.max_iterations,
        lambda cb: resume(args.run_dir, args.max_iterations, cb, processes=processes),
        processes=processes,
    )
    _report(result, args)


def _with_progress(
    config: GenerationConfig,
    max_iterations: int | None,
    run: Callable[[Callable], Any],
    note: str | None = None,
    processes: Any = None,
) -> Any:
    """``run(callback)`` under a progress bar (over every frame of a restyled video) that shows
    the loss at display steps; ``note`` (what the preset filled in) is printed above it."""
    from tqdm import tqdm

    from vqclip.run.driver import progress_of

    steps = progress_of(config, max_iterations)
    bar = None  # drawn at the first step, so that an input error comes with no empty bar

    def progress(info: dict) -> None:  # a resumed run starts part-way
        nonlocal bar
        if processes is not None and not processes.is_main():  # one progress bar: rank 0's
            return
        done = steps.done(info)
        if bar is None:  # from the first step on: its rate counts from there
            if note:
                print(note, file=sys.stderr)
            bar = tqdm(total=steps.total, initial=done, unit="it", dynamic_ncols=True)
        else:
            bar.update(done - bar.n)
        if "image" in info:  # read the loss only at display steps: no per-step device sync
            bar.set_postfix(loss=f"{info['loss'].item():.4f}")

    try:
        return run(progress)
    finally:
        if bar is not None:
            bar.close()


def _report(result: Any, args: argparse.Namespace) -> None:
    if result.run_dir is None:  # a torch.distributed process other than rank 0: rank 0 reports
        return
    state = "stopped; kept" if result.interrupted else "done"
    images = result.config.batch_size
    count = f"{len(result.frames) // images} frames" + (
        f" of {images} images" if images > 1 else ""
    )
    print(f"{state}: {count}, seed {result.config.seed}")
    print(f"run directory: {result.run_dir}")
    for n, path in enumerate(result.finals):
        print(f"{'final image:' if n == 0 else '':14} {path}")
    for n, path in enumerate(result.upscaled):
        print(f"{'upscaled:' if n == 0 else '':14} {path}")
    if result.interrupted:
        print(f"go on:         vqclip resume {result.run_dir}")
    if args.video:
        from vqclip.run.video import assemble_video

        config = result.config
        path = assemble_video(
            result.run_dir,
            fps=getattr(args, "fps", None),
            upscale=config.upscale,
            upscaler=config.upscaler,
        )
        print(f"video:         {path}")
    else:
        print(f"make a video:  vqclip video {result.run_dir}")
    if result.interrupted:  # everything is kept; the status tells a shell it was interrupted
        sys.stdout.flush()
        sys.exit(130)


def _video(args: argparse.Namespace) -> None:
    from vqclip.run.video import assemble_video

    names = ("length", "first", "last", "image", "interpolate", "interpolation", "flow_estimator", "upscale", "upscaler", "soundtrack", "soundtrack_offset", "format", "max_gif_mb")  # fmt: skip
    options = {k: getattr(args, k) for k in names}
    options["ping_pong"] = args.loop
    path = assemble_video(args.run_dir, args.fps, args.output, args.overwrite, **options)
    print(f"video: {path}")


def _upscale(args: argparse.Namespace) -> None:
    from vqclip.run.upscale import (
        check_upscale,
        default_upscaler,
        load_upscaler,
        upscale_file,
        upscale_run,
    )

    check_upscale(1, 1, args.scale)
    if not args.path.exists():
        raise ValueError(f"upscale: {args.path} does not exist; expected an image or a run directory")  # fmt: skip
    if args.path.is_dir() and args.output:
        raise ValueError("--output: names one image's copy; a run directory's go beside its finals")  # fmt: skip
    upscaler = load_upscaler(args.model or default_upscaler(args.path))
    if args.path.is_dir():
        paths = upscale_run(args.path, args.scale, upscaler)
    else:
        paths = [upscale_file(args.path, args.scale, upscaler, args.output)]
    for path in paths:
        print(f"upscaled ({upscaler.name}, x{args.scale}): {path}")


def _ui(args: argparse.Namespace) -> None:
    # gradio's cache (previews, uploads) in a folder of this server's own, removed at the end;
    # set before gradio is imported, which reads it then.
    cache = tempfile.mkdtemp(prefix="vqclip-ui-")
    os.environ["GRADIO_TEMP_DIR"] = cache
    try:
        try:
            from vqclip.frontends.webpage import serve
        except ModuleNotFoundError as error:
            raise ValueError(
                f"ui: needs the package {error.name!r}; install the ui extra: pip install 'vqclip[ui]'"
            ) from None
        print(f"vqclip ui: http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
        serve(args.output_dir, args.host, args.port)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _models(args: argparse.Namespace) -> None:
    from vqclip.models import registry

    if args.action == "download":
        if not args.name:
            raise ValueError(f"models download: give a name, one of {registry.model_names()}")
        print("\n".join(str(p) for p in _download(args.name)))
        return
    width = max(map(len, registry.registry()))
    print(f"{'name':{width}} {'family':12} {'size':>9}  cached  (cache: {registry.cache_dir()})")
    for name, entry in registry.registry().items():
        local = registry.local_size_mb(entry)  # the real size once present; else the registry's
        cached = "bundled" if entry.bundled else ("yes" if local is not None else "no")
        size = f"{entry.size_mb if local is None else local:.1f}MB"
        print(f"{name:{width}} {entry.family:12} {size:>9}  {cached}")


def _download(name: str) -> tuple[Path, ...]:
    from tqdm import tqdm

    from vqclip.models import registry

    entry = registry.registry().get(name)
    if entry is None:
        raise ValueError(f"unknown model {name!r}; known models: {registry.model_names()}")
    with tqdm(unit="B", unit_scale=True, dynamic_ncols=True) as bar:

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return registry.entry_paths(entry, progress=progress)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``vqclip`` command."""
    args = _parser().parse_args(argv)
    from vqclip.core.errors import USER_ERRORS

    handlers = {
        "generate": _generate,
        "resume": _resume,
        "video": _video,
        "upscale": _upscale,
        "sweep": _sweep,
        "models": _models,
        "ui": _ui,
        **{name: command.run for name, command in commands().items()},
    }
    try:
        handlers[args.command](args)
        sys.stdout.flush()  # here, so that a closed pipe (`vqclip models | head -3`) is caught
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        sys.exit(1)
    except USER_ERRORS as error:
        # one write: under torchrun every rank's line shares the one stderr
        sys.stderr.write(f"vqclip {args.command}: error: {_one_line(str(error))}\n")
        sys.stderr.flush()
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def run() -> None:
    """The ``vqclip`` command: :func:`main`, then out of the process without the interpreter's
    teardown, which frees every module's objects one by one: 0.3 s after importing torch, 0.7
    s after a generation (docs/performance.md). The exit handlers still run (Ray's shutdown,
    logging's flush); with a thread still working, the usual exit waits for it."""
    try:
        main()
        code = 0
    except SystemExit as stop:
        if stop.code is not None and not isinstance(stop.code, int):
            raise
        code = stop.code or 0
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or 1
    os._exit(code)
