"""The bounded readers every file vqclip reads goes through: crafted files cannot block,
recurse past the stack, or expand in memory."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.conftest import TINY_OPEN_CLIP
from vqclip.core.config import GenerationConfig
from vqclip.core.errors import USER_ERRORS
from vqclip.core.limits import MAX_NODES, parse_json, parse_yaml, read_text
from vqclip.frontends import cli
from vqclip.run import driver

# A "billion laughs" YAML: 9 levels of 9 aliases, 623 bytes that expand to 9**9 strings.
LAUGHS = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{chr(98 + n)}: &{chr(98 + n)} [{','.join(['*' + chr(97 + n)] * 9)}]\n" for n in range(8)
)


def test_a_fifo_or_a_directory_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "sweep.yaml"
    os.mkfifo(fifo)
    outcome: list[str] = []
    reader = threading.Thread(target=lambda: outcome.append(_error(read_text, fifo, "sweep")))
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "read_text blocked on a FIFO"
    assert outcome == [f"sweep: {fifo} is not a regular file; expected a text file"]
    assert "is not a regular file" in _error(read_text, tmp_path, "sweep")


def test_a_file_over_the_bound_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "config.json"
    big.write_bytes(b" " * (2 << 20))
    assert _error(read_text, big, "resume") == f"resume: {big} holds {2 << 20} bytes; expected at most {1 << 20}"  # fmt: skip


def test_yaml_aliases_count_as_what_they_expand_to() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert f"over {MAX_NODES} values" in _error(parse_yaml, LAUGHS, "sweep")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB
    assert grown < 50_000, f"peak RSS grew {grown} KiB"
    assert parse_yaml("a: &x [1, 2]\nb: *x\n", "sweep") == {"a": [1, 2], "b": [1, 2]}


def test_deep_nesting_is_refused_before_the_parser_recurses() -> None:
    for depth, ok in ((32, True), (33, False), (200_000, False)):
        text = "[" * depth + "]" * depth
        if ok:
            parse_json(text, "config")
        else:
            assert "nested over 32 levels" in _error(parse_json, text, "config")
    assert "nested" in _error(parse_yaml, "[" * 100_000 + "]" * 100_000, "sweep")
    assert parse_json('{"a": "\\"' + "[" * 40 + '"}', "config") == {"a": '"' + "[" * 40}


def _error(function, *args) -> str:  # noqa: ANN001
    with pytest.raises(ValueError) as error:
        function(*args)
    return str(error.value)


def test_the_suite_fails_a_test_that_leaves_loopback() -> None:
    """The socket guard of conftest.py: a connection or a lookup beyond loopback is refused and
    recorded (the test making it fails at teardown, even if a library swallowed the error)."""
    import socket

    reached = socket.getaddrinfo.reached
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 443), timeout=1)  # TEST-NET-1
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("huggingface.co", 443)
    with pytest.raises(ConnectionRefusedError):
        socket.socket().connect(("192.0.2.1", 443))
    assert reached == ["getaddrinfo '192.0.2.1'", "getaddrinfo 'huggingface.co'", "connect ('192.0.2.1', 443)"]  # fmt: skip
    reached.clear()  # seen: this test passes


# ---------------------------------------------------------------------------------------------
# Every file vqclip reads, fuzzed: one line and exit 2 (or ValueError from the loaders), or a
# correct run; never a traceback, a hang, or memory beyond a bound.

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from([10**30, -1, 0, 2**63, 1e308, "", "\ud800", "a|" * 300]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),  # fmt: skip
    max_leaves=8,
)
_FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


class _Reached(Exception):
    """Raised where models would be built or a sweep would start: the file got through."""


def _one_line_or_through(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    try:
        cli.main(argv)
    except _Reached:
        return
    except SystemExit as stop:
        lines = capsys.readouterr().err.strip().splitlines()
        assert stop.code == 2 and len(lines) == 1 and ": error: " in lines[0], (stop.code, lines)


def _mutated(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` put in, a key path ``a.b`` reaching into nested mappings."""
    result = json.loads(json.dumps(base))
    for path, value in changes.items():
        *parents, key = path.split(".")
        node = result
        for parent in parents:
            node = node.setdefault(parent, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node[key] = value
    return result


@contextlib.contextmanager
def _peak_rss_below(kib: int) -> Iterator[None]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < kib, f"peak RSS grew {grown} KiB"


@_FUZZ
@given(changes=st.dictionaries(st.sampled_from(sorted(f.name for f in fields(GenerationConfig))) | st.text(max_size=6), _JSON, max_size=3), as_png=st.booleans())  # fmt: skip
def test_fuzzed_config_json_and_png_text(
    tiny_config: GenerationConfig, tmp_path_factory: pytest.TempPathFactory, capsys, monkeypatch, changes: dict, as_png: bool  # noqa: ANN001
) -> None:  # fmt: skip
    """A run's config.json (or a frame's PNG text) with any values: ``--config`` takes it."""
    monkeypatch.setattr(driver, "prepare", _raise_reached)
    root = tmp_path_factory.mktemp("config")
    text = json.dumps(_mutated(tiny_config.to_dict(), changes))
    path = root / ("frame.png" if as_png else "config.json")
    if as_png:
        info = PngInfo()
        info.add_text("config", text)
        Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    else:
        path.write_text(text, errors="surrogatepass")
    with _peak_rss_below(500_000):
        _one_line_or_through(["generate", "--config", str(path)], capsys)


def _raise_reached(*args: object, **kwargs: object) -> None:
    raise _Reached


_STATE_VALUES = _JSON | st.builds(
    lambda shape, dtype: torch.zeros(shape, dtype=dtype),
    st.lists(st.integers(0, 5), max_size=4),
    st.sampled_from([torch.float32, torch.int64, torch.uint8, torch.bool]),
)


@pytest.fixture(scope="module")
def stopped_run(tiny_models: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vqclip.run.driver import generate

    out = tmp_path_factory.mktemp("stopped")
    config = GenerationConfig(prompts="a red circle", vqgan=str(tiny_models["yaml"]), clip_model=str(tiny_models["clip"]), width=32, height=32, cutn=4, augments=(), max_iterations=4, display_frequency=2, seed=1, device="cpu", precision="fp32", output_dir=str(out))  # fmt: skip
    return generate(config).run_dir


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(changes=st.dictionaries(st.sampled_from(["iteration", "levels", "start", "optimizer", "generator", "average", "sample", "extra"]), _STATE_VALUES, max_size=2))  # fmt: skip
def test_fuzzed_state_pt(stopped_run: Path, tmp_path_factory: pytest.TempPathFactory, capsys, changes: dict) -> None:  # noqa: ANN001  # fmt: skip
    """A run's state.pt with fields of any type and shape: resume goes on, or says why not."""
    run = tmp_path_factory.mktemp("state") / "run"
    shutil.copytree(stopped_run, run)
    saved = torch.load(run / "state.pt", weights_only=True)
    saved["iteration"] = 2
    torch.save({**saved, **changes}, run / "state.pt")
    with _peak_rss_below(500_000):
        _one_line_or_through(["resume", str(run), "--max_iterations", "6"], capsys)


_SWEEP_KEYS = ["name", "settings", "prompts", "seeds", "grid", "configs", "retries", "other"]


@_FUZZ
@given(spec=st.dictionaries(st.sampled_from(_SWEEP_KEYS), _JSON, max_size=4), raw=st.none() | st.text(max_size=80))  # fmt: skip
def test_fuzzed_sweep_yaml(tmp_path_factory: pytest.TempPathFactory, capsys, monkeypatch, spec: dict, raw: str | None) -> None:  # noqa: ANN001  # fmt: skip
    from vqclip.scale import sweep

    monkeypatch.setattr(sweep, "run_sweep", _raise_reached)
    path = tmp_path_factory.mktemp("sweep") / "s.yaml"
    spec.setdefault("prompts", ["a red circle"])
    spec["output_dir"] = str(path.parent / "out")
    path.write_text(raw if raw is not None else yaml.safe_dump(spec, allow_unicode=True), errors="surrogatepass")  # fmt: skip
    with _peak_rss_below(500_000):
        _one_line_or_through(["sweep", str(path)], capsys)


def _loaded_or_one_line(load: Callable[[], object]) -> None:
    try:
        load()
    except USER_ERRORS as error:
        assert "\n" not in str(error).strip(), str(error)


@_FUZZ
@given(changes=st.dictionaries(st.sampled_from(["embed_dim", "vision_cfg", "text_cfg", "vision_cfg.layers", "vision_cfg.width", "vision_cfg.timm_model_name", "text_cfg.heads", "text_cfg.vocab_size", "text_cfg.hf_model_name", "quick_gelu"]) | st.text(max_size=6), _JSON, max_size=2))  # fmt: skip
def test_fuzzed_open_clip_config(tiny_models: dict, tmp_path_factory: pytest.TempPathFactory, changes: dict) -> None:  # fmt: skip
    from vqclip.models.openclip import CONFIG, load_open_clip

    folder = tmp_path_factory.mktemp("oc")
    weights = tiny_models["open_clip"]
    shutil.copy(weights, folder / weights.name)
    config = _mutated({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}}, {f"model_cfg.{k}": v for k, v in changes.items()})  # fmt: skip
    (folder / CONFIG).write_text(json.dumps(config), errors="surrogatepass")
    with _peak_rss_below(500_000):
        _loaded_or_one_line(lambda: load_open_clip(folder / weights.name))


_UNET = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2", "attention_resolutions": "16", "num_head_channels": 16}  # fmt: skip


@pytest.fixture(scope="module")
def small_unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vqclip.models.unet import UNetSpec, build_unet, save_unet

    path = tmp_path_factory.mktemp("unet") / "tiny.pt"
    save_unet(build_unet(UNetSpec.from_dict(_UNET)), path)
    return path


@_FUZZ
@given(changes=st.dictionaries(st.sampled_from([*_UNET, "num_heads", "diffusion_steps", "learn_sigma", "noise_schedule", "other"]), _JSON, max_size=2))  # fmt: skip
def test_fuzzed_diffusion_flags(small_unet: Path, changes: dict) -> None:
    from vqclip.models.unet import UNetSpec, load_unet

    with _peak_rss_below(500_000):
        _loaded_or_one_line(lambda: load_unet(small_unet, UNetSpec.from_dict({**_UNET, **changes})))


@_FUZZ
@given(changes=st.dictionaries(st.sampled_from(["ch", "ch_mult", "num_res_blocks", "z_channels", "resolution", "attn_resolutions", "out_ch", "other"]), _JSON, max_size=2), raw=st.none() | st.text(max_size=60))  # fmt: skip
def test_fuzzed_vqgan_yaml(tiny_models: dict, tmp_path_factory: pytest.TempPathFactory, changes: dict, raw: str | None) -> None:  # fmt: skip
    from vqclip.models.vqgan_clip import load_vqgan

    config = yaml.safe_load(tiny_models["yaml"].read_text())
    config = _mutated(config, {f"model.params.ddconfig.{k}": v for k, v in changes.items()})
    path = tmp_path_factory.mktemp("vqgan") / "vqgan.yaml"
    path.write_text(raw if raw is not None else yaml.safe_dump(config, allow_unicode=True), errors="surrogatepass")  # fmt: skip
    with _peak_rss_below(500_000):
        _loaded_or_one_line(lambda: load_vqgan(path, tiny_models["ckpt"]))
