"""Which requests the local web page answers: only its user's, on this machine.

A page that any site the user visits can reach (DNS rebinding: ``evil.example`` resolving to
127.0.0.1) could read configs and outputs, start runs and upload. :class:`LocalOnly` wraps the
page's ASGI app and refuses, before the app sees it, a request whose ``Host`` is not the
page's own address or whose ``Origin`` is another site's; it serves files only as images and
videos (never HTML or script, never a URL fetched elsewhere), with headers that keep a browser
from running them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

__all__ = ["LocalOnly", "page_hosts", "SERVED_SUFFIXES"]

Scope, Message = dict[str, Any], dict[str, Any]
Send = Callable[[Message], Awaitable[None]]

SERVED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm")
_FILE_ROUTES = ("/gradio_api/file=", "/file=")
_CLOSED_ROUTES = ("/gradio_api/proxy=", "/proxy=")  # fetch another site's files for the page
_FILE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (
        b"content-security-policy",
        b"sandbox; default-src 'none'; img-src 'self'; media-src 'self'",
    ),  # fmt: skip
]


def page_hosts(host: str, port: int) -> set[str]:
    """The ``Host`` values of the page's own address: the bound host, and the loopback names
    when it is bound to loopback (the browser may say either)."""
    loopback = {"127.0.0.1", "localhost", "[::1]"}
    names = loopback if host in loopback | {"::1"} else {host}
    return {f"{name}:{port}" for name in names}


class LocalOnly:
    """ASGI middleware: answers only requests to ``hosts`` from the page itself."""

    def __init__(self, app: Callable, hosts: set[str]) -> None:
        self.app, self.hosts = app, {h.lower() for h in hosts}

    async def __call__(self, scope: Scope, receive: Callable, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        reason = self.refusal(scope)
        if reason is not None:
            await _refuse(scope, send, reason)
            return
        if scope["path"].startswith(_FILE_ROUTES):
            send = _with_headers(send, _FILE_HEADERS)
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> str | None:
        """Why the request is refused, or None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            return f"Host {host[:80]!r} is not this page's address ({', '.join(sorted(self.hosts))})"  # fmt: skip
        origin = headers.get("origin")
        if origin is not None and origin.lower().removeprefix("http://") not in self.hosts:
            return f"Origin {origin[:80]!r} is another site; only the page itself may call it"
        if headers.get("sec-fetch-site") == "cross-site":
            return "a request from another site"
        return _file_refusal(scope["path"])


def _file_refusal(path: str) -> str | None:
    if path.startswith(_CLOSED_ROUTES):
        return "the page fetches nothing from other sites"
    if not path.startswith(_FILE_ROUTES):
        return None
    target = unquote(path.split("=", 1)[1])
    if "://" in target:
        return "the page serves its own files, not URLs"
    if PurePosixPath(target).suffix.lower() not in SERVED_SUFFIXES:
        return f"the page serves images and videos only ({', '.join(SERVED_SUFFIXES)})"
    return None


async def _refuse(scope: Scope, send: Send, reason: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
        return
    body = f"refused: {reason}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending
