"""The operator console's static files (``gateway/console/``), served at GET /ui and /ui/<path>.

Every file is read once, when the app is built, into a table keyed by its path under
``console/``: a request names a key of that table or gets a 404, so no request path ever reaches
the file system (``..``, encoded dots and NUL are just names that are not in the table).

Each answer carries a strict Content-Security-Policy (scripts, styles and requests from this
origin only; no inline code; never framed), ``nosniff`` and no referrer; ``Cache-Control:
no-cache`` with an ETag, so a browser revalidates (a 304 when unchanged) and an upgraded gateway's
files are used at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from switchgear.errors import NotFound
from switchgear.gateway.http import Receive, Scope, Send, header

#: Where the files are (a folder of the ``switchgear.gateway`` package, shipped as package data).
PACKAGE, FOLDER = "switchgear.gateway", "console"
#: The content type of each kind of file served; files of other kinds are not served.
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
}
#: The page /ui answers with.
INDEX = "index.html"
SECURITY_HEADERS = (
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
     b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-cache"),
)


@dataclass(frozen=True, slots=True)
class Asset:
    """One file as served: its bytes, content type and ETag."""

    body: bytes
    content_type: bytes
    etag: bytes

    @classmethod
    def of(cls, body: bytes, content_type: bytes) -> Asset:
        """The asset of ``body``, its ETag a digest of the bytes."""
        return cls(body, content_type, b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"')


def load_assets(root: Traversable | None = None) -> dict[str, Asset]:
    """Every servable file under ``root`` (the console folder of the installed package unless
    given), keyed by its path below it with ``/`` separators."""
    folder = root if root is not None else files(PACKAGE).joinpath(FOLDER)
    assets: dict[str, Asset] = {}
    pending: list[tuple[str, Traversable]] = [("", folder)]
    while pending:
        prefix, directory = pending.pop()
        for item in directory.iterdir():
            if item.is_dir():
                pending.append((f"{prefix}{item.name}/", item))
                continue
            content_type = CONTENT_TYPES.get("." + item.name.rpartition(".")[2].lower())
            if content_type is not None:
                assets[prefix + item.name] = Asset.of(item.read_bytes(), content_type)
    if INDEX not in assets:
        raise RuntimeError(f"the console's {INDEX} is missing from {folder}: the package was "
                           f"installed without its data files")
    return assets


class ConsoleFiles:
    """The GET /ui and GET /ui/<path> endpoints over the files loaded at start."""

    def __init__(self, assets: dict[str, Asset], prefix: str = "/ui/") -> None:
        self.assets = assets
        self.prefix = prefix

    async def index(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /ui: the console's page."""
        await self._send(scope, send, self.assets[INDEX], request_id)

    async def asset(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /ui/<path>: one of the console's files, or a 404."""
        name = scope["path"].removeprefix(self.prefix)
        asset = self.assets.get(name)
        if asset is None:
            raise NotFound(f"The console has no file {name!r}.")
        await self._send(scope, send, asset, request_id)

    @staticmethod
    async def _send(scope: Scope, send: Send, asset: Asset, request_id: str) -> None:
        """The asset, or a 304 when the browser's copy (If-None-Match) is current."""
        headers = [(b"content-type", asset.content_type), (b"etag", asset.etag),
                   (b"x-request-id", request_id.encode()), *SECURITY_HEADERS]
        if _matches(header(scope, b"if-none-match"), asset.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-length", str(len(asset.body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": asset.body})


def _matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """Whether an If-None-Match header names ``etag`` (weakly compared, as RFC 9110 says for
    GET) or is ``*``."""
    if if_none_match is None:
        return False
    tags = [tag.strip().removeprefix(b"W/") for tag in if_none_match.split(b",")]
    return b"*" in tags or etag in tags
