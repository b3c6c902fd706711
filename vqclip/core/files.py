"""Writing a file so that a reader never sees half of it and a planted link is never followed:
a new temporary file beside it, then a rename. Used by run directories, downloads and caches."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["temp_beside", "write_atomic"]


def temp_beside(path: Path, suffix: str = ".part") -> Path:
    """A new, empty temporary file in ``path``'s folder: created exclusively (``O_EXCL``) under a
    unique name, so that no file or symlink planted there is written through."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return Path(name)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a new temporary file beside ``path``, then rename it into place (a
    symlink at ``path`` is replaced, not followed)."""
    tmp = temp_beside(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
