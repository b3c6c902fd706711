"""The errors a user can cause, in one place: every frontend shows these as one line."""

from __future__ import annotations

__all__ = ["DownloadError", "USER_ERRORS"]


class DownloadError(RuntimeError):
    """A file could not be fetched or verified; the message says how to place it by hand."""


# The mistakes a user can make, which the CLI, the notebook and the web page show as one line:
# bad input, files that exist or are missing, a download, a loss that diverged, a step that
# does not fit the device (each message says what to change).
USER_ERRORS = (ValueError, OSError, DownloadError, FloatingPointError, MemoryError)
