"""Videos through imageio-ffmpeg: frames -> H.264 MP4 (yuv420p, even dimensions), VP9 WebM or
GIF, and a video's frames (or a folder of frames) read back, to restyle it. Needs torch only to
upscale frames or make frames in between (along the flow or by RIFE)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vqclip.core.files import temp_beside
from vqclip.core.images import image_size, read_pixels
from vqclip.core.limits import MAX_VIDEO_PIXELS, check_regular, read_text
from vqclip.run.frames import FRAMES, frame_iteration, frame_paths

if TYPE_CHECKING:
    import torch

__all__ = [
    "assemble_video",
    "select_frames",
    "tile_images",
    "watchable_length",
    "default_fps",
    "count_video_frames",
    "check_video",
    "video_fps",
    "frame_stride",
    "read_video_frames",
]


def _even(pixels: np.ndarray) -> np.ndarray:
    """Pad (H, W, 3) by edge replication to even height and width (yuv420p needs them)."""
    height, width = pixels.shape[:2]
    return np.pad(pixels, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def select_frames(
    run_dir: str | Path, first: int = 0, last: int | None = None, image: int | None = None
) -> list[list[Path]]:
    """The run's frames from iteration ``first`` to ``last`` (inclusive), one list per saved
    iteration holding the batch's images in order, or only image ``image`` of the batch."""
    run_dir = Path(run_dir)
    steps: dict[int, list[Path]] = {}
    for path in frame_paths(run_dir):
        steps.setdefault(frame_iteration(path), []).append(path)
    if not steps:
        raise ValueError(f"no frames in {run_dir / FRAMES}: expected PNGs saved by a run")
    if first < 0 or (last is not None and last < first):
        raise ValueError(f"first, last: expected 0 <= first <= last, got {first}, {last}")
    end = max(steps) if last is None else last
    chosen = [paths for step, paths in steps.items() if first <= step <= end]
    if not chosen:
        raise ValueError(
            f"first, last: no frames from iteration {first} to {last} in {run_dir / FRAMES}; "
            f"it holds iterations {min(steps)} to {max(steps)}"
        )
    if image is None:
        return chosen
    batch = len(chosen[0])
    if not 0 <= image < batch:
        raise ValueError(f"image: expected 0 to {batch - 1} (the run made {batch}), got {image}")
    return [[paths[image]] for paths in chosen]


def tile_images(images: list[np.ndarray]) -> np.ndarray:
    """(H, W, 3) images side by side in a grid of ceil(sqrt(n)) columns, blank cells black."""
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    height, width = images[0].shape[:2]
    _check_frame_size(columns * width, rows * height, f"{len(images)} images tiled")
    grid = np.zeros((rows * height, columns * width, 3), dtype=np.uint8)
    for n, pixels in enumerate(images):
        row, column = divmod(n, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = pixels
    return grid


MIN_VIDEO_SECONDS = 4.0  # a run's few frames at 10 a second would flash by in under a second


def watchable_length(run_dir: str | Path) -> float:
    """Seconds for a run's frames to be watched: 10 steps a second, and at least
    :data:`MIN_VIDEO_SECONDS`."""
    steps = len({frame_iteration(p) for p in frame_paths(run_dir)})  # a batch's tiles count once
    return max(MIN_VIDEO_SECONDS, steps / 10)


def _check_frame_size(width: int, height: int, what: str) -> None:
    if width * height > MAX_VIDEO_PIXELS:
        raise ValueError(
            f"video: {what} make {width}x{height} frames; expected at most {MAX_VIDEO_PIXELS} "
            "pixels a frame (8192x4320)"
        )


def _read_step(paths: list[Path], grow: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    """One video frame: the iteration's image, or its batch tiled, each image passed through
    ``grow`` (an upscaler) first; (H, W, 3) uint8, even sides."""
    images = [_read_image(path, "frames") for path in paths]
    images = [grow(pixels) for pixels in images] if grow else images
    if any(pixels.shape != images[0].shape for pixels in images):
        raise ValueError(f"frames {[p.name for p in paths]} differ in size")
    return _even(images[0] if len(images) == 1 else tile_images(images))


def _frame_rate(run_dir: Path, steps: int, fps: float | None, length: float | None) -> float:
    """The input frame rate: ``fps``, or ``steps`` spread over ``length`` seconds, or the run's
    default."""
    if fps is not None and length is not None:
        raise ValueError(f"fps and length: give one, not both (got {fps} and {length})")
    if length is not None:
        if not length > 0:
            raise ValueError(f"length: expected a positive number of seconds, got {length!r}")
        return steps / length
    if fps is not None and not fps > 0:
        raise ValueError(f"fps: expected a positive number, got {fps!r}")
    return fps or default_fps(run_dir)


FORMATS = ("mp4", "webm", "gif")
INTERPOLATIONS = ("minterpolate", "flow", "rife")
MAX_GIF_MB = 8.0  # a GIF's size budget: what chat services take (Discord's free limit)
# (codec, pixel format, options) of each format: H.264 and VP9 at a quality, not a bitrate.
_CODECS = {
    "mp4": ("libx264", "yuv420p", ["-crf", "18"]),
    "webm": ("libvpx-vp9", "yuv420p", ["-crf", "32", "-b:v", "0", "-row-mt", "1"]),
    "gif": ("gif", "pal8", []),
}


def _smoothing(fps: float, interpolate: float | None, size: tuple[int, int], how: str) -> list[str]:  # fmt: skip
    """ffmpeg filters that interpolate motion up to ``interpolate`` frames per second (none for
    ``how`` "flow" or "rife", which make their frames themselves)."""
    if interpolate is None:
        return []
    if how not in INTERPOLATIONS:
        raise ValueError(f"interpolation: {how!r}; expected one of {', '.join(INTERPOLATIONS)}")
    if not interpolate > fps:
        raise ValueError(
            f"interpolate: expected more than the input's {fps:g} fps, got {interpolate}"
        )
    if how != "minterpolate":
        return []
    if min(size) < 32:  # ffmpeg's minterpolate works on blocks
        raise ValueError(
            f"interpolate: needs frames of at least 32x32, these are {size[0]}x{size[1]}"
        )
    mode = "mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"  # motion-compensated, as generate.py
    # minterpolate ends at the last frame but one: two clones of the last frame keep it, and
    # the video as long as it is without interpolation.
    return [f"tpad=stop_mode=clone:stop=2,minterpolate=fps={interpolate:g}:{mode}"]


def _filters(chain: list[str], fmt: str, scale: float) -> list[str]:
    """The ``-vf`` option of a format: the chain, a GIF scaled by ``scale`` and given its own
    palette (generated from the frames, then applied with ordered dithering)."""
    if fmt == "gif":
        if scale < 1:
            chain = [*chain, f"scale=trunc(iw*{scale:.4f}/2)*2:-2:flags=lanczos"]
        palette = "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer:bayer_scale=3"  # fmt: skip
        chain = [*chain, palette]
    return ["-vf", ",".join(chain)] if chain else []


def _sequence(steps: list[list[Path]], ping_pong: bool) -> list[list[Path]]:
    """The frames in order, and for a ping-pong video back again (the ends not repeated)."""
    return steps + steps[-2:0:-1] if ping_pong and len(steps) > 2 else steps


def _gpu_or_cpu() -> torch.device:
    """Where a video's networks run: the GPU where there is one (as ``device auto``; the run
    modules' resolve_device sits above this one, which they import)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _in_betweens(how: str, estimator: str) -> Callable:
    """``between(a, b, times)``, the frames at ``times`` between two: along the flow of
    ``estimator`` ("flow"), or by RIFE's network ("rife", the registry's weights, fetched);
    the networks on the GPU where there is one (the frames come back to the CPU)."""
    device = _gpu_or_cpu()
    if how == "rife":
        from vqclip.models.registry import resolve_interpolator
        from vqclip.models.rife import load_rife

        return load_rife(resolve_interpolator("rife"), device)
    from vqclip.models.flow import check_flow_estimator, flow_estimator, in_between

    check_flow_estimator(estimator)
    estimate = flow_estimator(estimator, device)
    return lambda a, b, times: in_between(a, b, times, estimate)


def _frames_with_in_betweens(
    frames: Iterator[np.ndarray], count: int, between: Callable | None
) -> Iterator[np.ndarray]:
    """The frames, with ``count - 1`` made by ``between`` between each pair and the last held
    as long as the others (``count`` 1: the frames as they are)."""
    if count == 1:
        yield from frames
        return
    import torch

    def tensor(pixels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255

    previous = None
    for pixels in frames:
        if previous is not None:
            times = [k / count for k in range(1, count)]
            for image in between(tensor(previous), tensor(pixels), times):
                yield np.ascontiguousarray((image[0].permute(1, 2, 0) * 255).round().byte().numpy())
        yield pixels
        previous = pixels
    for _ in range(count - 1):
        yield previous


def assemble_video(
    run_dir: str | Path,
    fps: float | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    *,
    length: float | None = None,
    first: int = 0,
    last: int | None = None,
    image: int | None = None,
    interpolate: float | None = None,
    interpolation: str = "minterpolate",
    flow_estimator: str = "dis",
    upscale: int = 1,
    upscaler: str | None = None,
    soundtrack: str | Path | None = None,
    soundtrack_offset: float | None = None,
    format: str | None = None,  # noqa: A002  (the CLI's --format)
    ping_pong: bool = False,
    max_gif_mb: float = MAX_GIF_MB,
) -> Path:
    """Write the run's frames to ``output`` (default ``RUN_DIR/video.FORMAT``); returns its path.

    ``fps`` defaults to a restyled video's own rate, else 10; ``length`` (seconds) sets it from
    the frame count instead. ``first``/``last`` pick a range of iterations. A batch run's images
    are tiled side by side, or ``image`` picks one. ``interpolate`` raises the frame rate to that
    many fps by motion interpolation: ffmpeg's minterpolate, or with ``interpolation`` "flow"
    frames made along the optical flow (``flow_estimator``'s), or "rife" by RIFE's network, as
    many between each pair as the rates' ratio, rounded. ``upscale`` enlarges every frame that many times first, with
    ``upscaler`` (default: the run's). ``soundtrack`` (default: the run's, else a restyled
    video's own sound) plays under it from ``soundtrack_offset`` seconds, cut to the video's
    length. ``format``: mp4 (H.264), webm (VP9) or gif (its own palette, scaled down until it
    fits ``max_gif_mb``; no sound); default: ``output``'s suffix, else mp4. ``ping_pong``: the
    frames forward, then back.
    """
    run_dir = Path(run_dir)
    fmt = format or (Path(output).suffix.lstrip(".").lower() if output else "mp4")
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r}; expected one of {', '.join(FORMATS)}")
    output = Path(output) if output else run_dir / f"video.{fmt}"
    if output.suffix.lower() != f".{fmt}":
        raise ValueError(f"output: {output.name} does not end in .{fmt}, the format written")
    if not max_gif_mb > 0:
        raise ValueError(f"max_gif_mb: expected a positive size in MB, got {max_gif_mb!r}")
    sound, offset = _sound(run_dir, soundtrack, soundtrack_offset)
    if fmt == "gif" and sound is not None:
        if soundtrack is not None:
            raise ValueError("soundtrack: a GIF has no sound; give --format mp4 or webm")
        sound = None  # the run's own sound: a GIF goes without
    steps = select_frames(run_dir, first, last, image)
    rate = _frame_rate(run_dir, len(steps), fps, length)
    grow = _frame_upscaler(run_dir, upscale, upscaler)
    width, height = image_size(steps[0][0], "frames", MAX_VIDEO_PIXELS)  # before decoding any
    _check_frame_size(width * upscale, height * upscale, f"{steps[0][0].name} upscaled x{upscale}")
    first_frame = _read_step(steps[0], grow)
    size = (first_frame.shape[1], first_frame.shape[0])
    chain = _smoothing(rate, interpolate, size, interpolation)
    count, between = 1, None
    if interpolate is not None and interpolation != "minterpolate":
        count, between = max(2, round(interpolate / rate)), _in_betweens(interpolation, flow_estimator)  # fmt: skip
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    sequence = _sequence(steps, ping_pong)

    def frames() -> Iterator[np.ndarray]:
        for paths in sequence:
            pixels = _read_step(paths, grow)
            if (pixels.shape[1], pixels.shape[0]) != size:
                raise ValueError(
                    f"frame {paths[0]} is {pixels.shape[1]}x{pixels.shape[0]}, not {size}"
                )
            yield np.ascontiguousarray(pixels)

    tmp = temp_beside(output, f".part{output.suffix}")  # ffmpeg picks the format by suffix
    try:
        scale = 1.0
        for _ in range(4):  # a GIF over its budget is made again, smaller
            written = _encode(tmp, fmt, size, rate * count, _filters(chain, fmt, scale),
                              _frames_with_in_betweens(frames(), count, between))  # fmt: skip
            _check_written(tmp, written if count > 1 else len(sequence), output)
            megabytes = tmp.stat().st_size / 1e6
            if fmt != "gif" or megabytes <= max_gif_mb:
                break
            scale *= 0.9 * math.sqrt(max_gif_mb / megabytes)
        else:
            raise ValueError(f"max_gif_mb: the GIF is {megabytes:.1f} MB at {scale:.0%} of its size, over {max_gif_mb} MB; give fewer frames (--first, --last) or a larger budget")  # fmt: skip
        if sound is not None:
            add_soundtrack(tmp, sound, offset)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written video is left behind
        raise
    os.replace(tmp, output)
    return output


def _encode(
    path: Path,
    fmt: str,
    size: tuple[int, int],
    rate: float,
    filters: list[str],
    frames: Iterator[np.ndarray],
) -> int:
    """Encode ``frames`` into ``path`` as ``fmt``; returns how many were sent."""
    import imageio_ffmpeg

    codec, pixel_format, options = _CODECS[fmt]
    writer = imageio_ffmpeg.write_frames(
        str(path), size, fps=rate, codec=codec, pix_fmt_in="rgb24", pix_fmt_out=pixel_format,
        macro_block_size=1, quality=None, output_params=[*options, *filters],
    )  # fmt: skip
    writer.send(None)  # start ffmpeg
    sent = 0
    try:
        for pixels in frames:
            writer.send(pixels)
            sent += 1
    finally:
        writer.close()
    return sent


MAX_SOUNDTRACK_BYTES = 1 << 30  # a sound file: over an hour of WAV at CD quality


def _sound(run_dir: Path, given: str | Path | None, offset: float | None) -> tuple[Path | None, float]:  # fmt: skip
    """The sound under a run's video and where it starts: the one given, the run's
    ``soundtrack``, or a restyled video's own (a folder of frames has none)."""
    from vqclip.core.config import GenerationConfig

    path = run_dir / "config.json"
    config = GenerationConfig.from_json(read_text(path, "video"), f"video: {path}") if path.is_file() else None  # fmt: skip
    if given is None and config is not None:
        given = config.soundtrack or (config.init_video if config.init_video and not Path(config.init_video).is_dir() else None)  # fmt: skip
    if offset is None:
        offset = config.soundtrack_offset if config is not None else 0.0
    if not (isinstance(offset, int | float) and 0 <= offset < 1e6):
        raise ValueError(f"soundtrack_offset: {offset!r}; expected seconds from 0")
    if given is None:
        return None, 0.0
    check_regular(given, "soundtrack")  # a local file: no URL, FIFO or device
    if Path(given).stat().st_size > MAX_SOUNDTRACK_BYTES:
        raise ValueError(f"soundtrack: {given} is over {MAX_SOUNDTRACK_BYTES >> 20} MB")
    return Path(given), float(offset)


def add_soundtrack(video: Path, sound: Path, offset: float = 0.0) -> None:
    """Put ``sound`` (from ``offset`` seconds on) under the MP4 or WebM ``video``, in place: the
    frames copied, the sound as AAC (Opus in a WebM), cut to the video's length; a file with no sound leaves the video
    silent. ffmpeg may open local files only (``-protocol_whitelist file``, for every input and
    whatever a playlist inside one names), so no sound file reaches the network."""
    import subprocess

    import imageio_ffmpeg

    muxed = temp_beside(video, f".sound{video.suffix}")
    local = ["-protocol_whitelist", "file"]
    audio = ["-c:a", "libopus", "-b:a", "160k"] if video.suffix == ".webm" else ["-c:a", "aac", "-b:a", "192k"]  # fmt: skip
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error",
        *local, "-i", f"file:{video}", *local, "-ss", f"{offset:.3f}", "-i", f"file:{sound}",
        "-map", "0:v:0", "-map", "1:a:0?", "-c:v", "copy", *audio,
        "-shortest", f"file:{muxed}",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode or not muxed.is_file():
            last = (done.stderr.strip().splitlines() or ["no message"])[-1][:200]
            raise ValueError(f"soundtrack: {sound} could not be put under the video: {last}")
        os.replace(muxed, video)
    finally:
        muxed.unlink(missing_ok=True)


def has_sound(path: str | Path) -> bool:
    """Whether a media file holds an audio stream (ffmpeg's reading of its header)."""
    import subprocess

    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-protocol_whitelist", "file", "-i", f"file:{path}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    return " Audio: " in done.stderr


def _check_written(path: Path, frames: int, output: Path) -> None:
    """Raise ``OSError`` unless ``path`` holds at least ``frames`` decodable frames:
    imageio-ffmpeg ignores ffmpeg's exit status, so a full disk or a failing encoder left a
    truncated video that was reported as made."""
    import imageio_ffmpeg

    written = 0
    if path.is_file() and path.stat().st_size:
        try:
            written = imageio_ffmpeg.count_frames_and_secs(str(path))[0]
        except (RuntimeError, OSError, ValueError):
            written = 0
    if written < frames:
        raise OSError(f"ffmpeg wrote {written} of {frames} frames of {output} (a full disk, or an encoder error above); nothing was kept")  # fmt: skip


def _frame_upscaler(
    run_dir: Path, scale: int, name: str | None
) -> Callable[[np.ndarray], np.ndarray] | None:
    """What enlarges each frame ``scale`` times: ``name``, or the run's upscaler (on the GPU
    where there is one); None for 1."""
    if scale == 1:
        return None
    from vqclip.run.upscale import check_upscale, default_upscaler, load_upscaler, upscale_pixels

    check_upscale(1, 1, scale)
    upscaler = load_upscaler(name or default_upscaler(run_dir), _gpu_or_cpu())
    return lambda pixels: upscale_pixels(pixels, scale, upscaler)


def default_fps(run_dir: str | Path) -> float:
    """The frame rate for a run's video: the config's ``fps``, else a restyled video's own
    (over the frames it took), an animation's 12, or 10."""
    from vqclip.core.config import GenerationConfig

    path = Path(run_dir) / "config.json"
    config = GenerationConfig.from_json(read_text(path, "video"), f"video: {path}") if path.is_file() else None  # fmt: skip
    if config is not None and config.fps:
        return config.fps
    if config is None or not config.init_video:
        return 12.0 if config is not None and config.animation_mode != "none" else 10.0
    source = config.init_video
    return video_fps(source) / frame_stride(source, config.video_stride, config.video_fps)


def frame_stride(path: str | Path, stride: int = 1, fps: float = 0.0) -> int:
    """Every how many frames of the video at ``path`` a restyle takes one: ``stride``, or the
    stride that samples it nearest to ``fps`` frames a second (when ``fps`` is not 0)."""
    return max(1, round(video_fps(path) / fps)) if fps else stride


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _frame_files(folder: Path, field: str) -> list[Path]:
    """A folder's images in natural order (``2.png`` before ``10.png``)."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise ValueError(
            f"{field}: folder {str(folder)!r} holds no frames (expected {', '.join(IMAGE_SUFFIXES)} files)"
        )
    return sorted(
        files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]
    )


def _read_image(path: Path, field: str) -> np.ndarray:
    """(H, W, 3) uint8, of at most :data:`MAX_VIDEO_PIXELS` (checked before decoding)."""
    return read_pixels(path, field, MAX_VIDEO_PIXELS)


def count_video_frames(path: str | Path, limit: int = 0, stride: int = 1) -> int:
    """Frames in a video (counted by decoding it: container metadata may say inf) or a folder
    of frames, every ``stride``-th of them; at most ``limit`` when it is not 0."""
    import imageio_ffmpeg

    check_video(path, "video")
    if Path(path).is_dir():
        count = len(_frame_files(Path(path), "video"))
    else:
        count = imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    count = -(-count // stride)
    return min(count, limit) if limit else count


def _open_video(path: str | Path, field: str) -> tuple[Iterator[Any], dict[str, Any]]:
    """Start ffmpeg on a video: (its frame generator, its metadata); clear errors for bad files."""
    import imageio_ffmpeg

    if not Path(path).is_file():
        raise ValueError(f"{field}: video file {str(path)!r} does not exist, or is not a regular file")  # fmt: skip
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as error:
        reader.close()
        raise ValueError(
            f"{field}: {str(path)!r} is not a readable video (expected MP4, WebM, GIF, ...): "
            f"{str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__}"
        ) from None
    width, height = meta.get("size") or (0, 0)
    if width * height > MAX_VIDEO_PIXELS:
        reader.close()
        raise ValueError(f"{field}: {str(path)!r} has {width}x{height} frames; expected at most {MAX_VIDEO_PIXELS} pixels a frame (8192x4320)")  # fmt: skip
    return reader, meta


def check_video(path: str | Path, field: str = "init_video") -> None:
    """Raise ``ValueError`` naming ``field`` if ``path`` is neither a readable video nor a
    folder whose first frame is a readable image."""
    if Path(path).is_dir():
        _read_image(_frame_files(Path(path), field)[0], field)
        return
    reader, _ = _open_video(path, field)
    reader.close()


def video_fps(path: str | Path) -> float:
    """A video's frame rate; 10 for a folder of frames, which has none."""
    if Path(path).is_dir():
        return 10.0
    reader, meta = _open_video(path, "video")
    reader.close()
    return float(meta["fps"])


def read_video_frames(path: str | Path, limit: int = 0, stride: int = 1) -> Iterator[np.ndarray]:
    """A video's frames, or a folder's images in natural order (a video's frames saved one by
    one, as ``generate.py``'s video_style_dir takes them), as (H, W, 3) uint8 arrays: every
    ``stride``-th, at most ``limit`` of them (0: all)."""
    if Path(path).is_dir():
        files = _frame_files(Path(path), "init_video")[::stride]
        for file in files[:limit] if limit else files:
            yield _read_image(file, "init_video")
        return
    reader, meta = _open_video(path, "init_video")
    width, height = meta["size"]  # checked by _open_video
    try:
        for index, raw in enumerate(reader):
            if limit and index >= limit * stride:
                break
            if index % stride == 0:
                yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
    finally:
        reader.close()
