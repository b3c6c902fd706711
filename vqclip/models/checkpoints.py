"""Reading checkpoints so that no file can run code: torch's weights-only unpickler for
``torch.save`` files, and an inert reader of TorchScript archives' tensors.

``torch.jit.load`` compiles an archive's code and runs its scripted ``__setstate__``, which can
create and write files (``torch.from_file(path, shared=True)``); OpenAI's published CLIPs are such
archives. :func:`read_torchscript_state` reads only the pickled attribute tree and the tensor
storages, with an unpickler that builds nothing but tensors, containers and inert records, and
keeps the attributes each class declares as parameters or buffers (the ``__parameters__`` and
``__buffers__`` lines of its code, read as text), which is ``ScriptModule.state_dict()``.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "UnsafeCheckpointError",
    "STAND_INS",
    "load_checkpoint",
    "load_weights",
    "is_torchscript",
    "read_torchscript_state",
    "MAX_PARAMETERS",
    "check_fits",
]

MAX_PARAMETERS = 2_000_000_000  # weights a model may have: OpenCLIP's bigG holds 2.5B / 2


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds a pickled object that could run code when loaded."""


class _InertStandIn:
    """Stands in for harmless non-tensor objects of old Lightning checkpoints; holds no code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


# Objects that old Lightning checkpoints pickle beside the weights, allowed only as stand-ins.
STAND_INS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "argparse.Namespace",
)


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def load_checkpoint(path: str | Path) -> Any:
    """Read a ``torch.save`` file with the weights-only unpickler; raise ``ValueError`` naming
    the file if it is not one, and :class:`UnsafeCheckpointError` if it asks to run code."""
    if is_torchscript(path):
        raise UnsafeCheckpointError(
            f"refused to load {path}: it is a TorchScript archive, whose code runs when loaded; "
            "expected a file written by torch.save"
        )
    if zipfile.is_zipfile(path):  # torch.save's format: its members are stored, not deflated
        try:
            with zipfile.ZipFile(path) as archive:
                _check_sizes(archive, Path(path))
        except (ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is not a checkpoint vqclip reads: {error}") from None
    stand_ins = [(type(n.rsplit(".", 1)[1], (_InertStandIn,), {}), n) for n in STAND_INS]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise _explain(path, error) from None


def load_weights(path: str | Path, field: str) -> dict[str, torch.Tensor]:
    """A model's state dict from a ``.safetensors`` file or a ``torch.save`` file (read
    weights-only; a ``state_dict`` entry and ``module.`` prefixes unwrapped). ``field`` names
    the setting in the errors."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{field}: {path} is not a safetensors file ({error})") from None
    state = load_checkpoint(path)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{field}: {path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_fits(
    build: Callable[[], torch.nn.Module],
    state: dict[str, torch.Tensor],
    field: str,
    path: Path,
    source: str = "its config describes",
) -> None:
    """Build the model that a config describes on the meta device (no memory) and compare it
    with the file's own tensors, name by name and shape by shape; raise ``ValueError`` before
    anything is allocated if it is larger than :data:`MAX_PARAMETERS` or does not fit."""
    with torch.device("meta"):
        try:
            model = build()
        except (ValueError, TypeError, KeyError, ZeroDivisionError, RuntimeError, AssertionError) as error:  # fmt: skip
            detail = " ".join(str(error).split())[:200] or type(error).__name__
            raise ValueError(f"{field}: the config beside {path} builds no model ({detail})") from None  # fmt: skip
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    count = sum(math.prod(shape) for shape in expected.values())
    if count > MAX_PARAMETERS:
        raise ValueError(f"{field}: the config beside {path} describes {count:,} weights; expected at most {MAX_PARAMETERS:,}")  # fmt: skip
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
    if missing or unexpected or wrong:
        shapes = [f"{k} {got[k]} (config: {expected[k]})" for k in wrong[:3]]
        raise ValueError(
            f"{field}: {path} does not fit the architecture {source}: missing "
            f"keys {missing[:5]}, unexpected keys {unexpected[:5]}, shapes {shapes}"
        )


def _explain(path: str | Path, error: Exception) -> ValueError:
    expected = f"only tensors, containers and the inert stand-ins {list(STAND_INS)}"
    if "Unsupported global" in str(error):
        return UnsafeCheckpointError(
            f"refused to load {path}: it holds a pickled object that is not plain weights and "
            f"could run code ({_first_line(error)}); vqclip loads {expected}"
        )
    if "Weights only" in str(error):  # pickle opcodes the safe reader lacks
        return UnsafeCheckpointError(
            f"refused to load {path}: the weights-only unpickler cannot read it "
            f"({_first_line(error)}); expected a file written by torch.save that holds {expected}"
        )
    return ValueError(  # empty, truncated, or not a checkpoint at all
        f"{path} is not a readable checkpoint (empty, truncated or corrupt?): "
        f"{_first_line(error)}; expected a complete file written by torch.save"
    )


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if "Unsupported" in line]
    return (lines or str(error).splitlines() or [type(error).__name__])[0].strip()


# --------------------------------------------------------------------------------------------
# TorchScript archives, read inertly

_STORAGE = re.compile(r"^(\w+)Storage$")
_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "restore_type_tag"): lambda value, _type: value,
}


class _ScriptObject:
    """A TorchScript object as data: its class name and its pickled state, nothing callable."""

    def __init__(self, *args: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ScriptUnpickler(pickle.Unpickler):
    """Builds tensors, containers and :class:`_ScriptObject` records; refuses anything else."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            key = f"{module}.{name}"
            return self.classes.setdefault(key, type(name, (_ScriptObject,), {"qualname": key}))
        if module == "torch" and (match := _STORAGE.match(name)) and match[1] in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[match[1]]  # the persistent id's storage type: a dtype
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise UnsafeCheckpointError(f"Unsupported global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise UnsafeCheckpointError(f"Unsupported persistent id {pid!r}")
        raw = bytearray(self.archive.read(f"{self.root}/data/{key}"))
        if len(raw) != numel * torch.empty(0, dtype=dtype).element_size():
            raise ValueError(f"storage {key} holds {len(raw)} bytes, not {numel} elements")
        storage = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else None
        storage = torch.UntypedStorage(0) if storage is None else storage  # frombuffer needs bytes
        return torch.storage.TypedStorage(wrap_storage=storage, dtype=dtype, _internal=True)


_STORAGE_DTYPES = {
    "Float": torch.float32, "Double": torch.float64, "Half": torch.float16,
    "BFloat16": torch.bfloat16, "Long": torch.int64, "Int": torch.int32, "Short": torch.int16,
    "Char": torch.int8, "Byte": torch.uint8, "Bool": torch.bool,
}  # fmt: skip
_DECLARED = re.compile(r"^class (\w+)\(Module\):\n  __parameters__ = \[(.*)\]\n  __buffers__ = \[(.*)\]", re.M)  # fmt: skip


def read_torchscript_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, read without running its code."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            _check_sizes(archive, path)
            root = archive.namelist()[0].split("/")[0]
            declared = _declared_tensors(archive, root)
            tree = _ScriptUnpickler(archive.read(f"{root}/data.pkl"), archive, root).load()
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(
            f"refused to load {path}: a TorchScript archive that holds more than modules and "
            f"tensors ({error})"
        ) from None
    except (KeyError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable TorchScript archive: {error}") from None
    state: dict[str, torch.Tensor] = {}
    _collect(tree, "", declared, state)
    return state


def _check_sizes(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse an archive whose entries unpack to far more than the file holds (a zip bomb):
    the readers allocate each member at its declared size before inflating it."""
    unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > 2 * path.stat().st_size + (1 << 20):
        raise ValueError(f"its entries unpack to {unpacked} bytes, more than the file could hold")


def _declared_tensors(archive: zipfile.ZipFile, root: str) -> dict[str, set[str]]:
    """Each class's parameter and buffer names, from the ``__parameters__`` and ``__buffers__``
    lines of the archive's code (``root/code/__torch__/a/b.py`` defines ``__torch__.a.b.X``)."""
    declared: dict[str, set[str]] = {}
    prefix = f"{root}/code/"
    for name in archive.namelist():
        if not (name.startswith(prefix) and name.endswith(".py")):
            continue
        module = name[len(prefix) : -3].replace("/", ".")
        text = archive.read(name).decode("utf-8", errors="replace")
        for cls, params, buffers in _DECLARED.findall(text):
            names = re.findall(r'"([^"]+)"', params + buffers)
            declared[f"{module}.{cls}"] = set(names)
    return declared


def _collect(node: Any, prefix: str, declared: dict[str, set[str]], out: dict) -> None:
    """Walk the attribute tree: a module's declared tensors, then its submodules."""
    if not isinstance(node, _ScriptObject) or not isinstance(node.state, dict):
        return
    names = declared.get(type(node).qualname, set())
    for name, value in node.state.items():
        if isinstance(value, torch.Tensor) and name in names:
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{name}.", declared, out)
