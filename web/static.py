"""The pages and static files the gateway serves from ``web/static/``.

Names are checked against a strict pattern and the resolved path must stay inside the
directory, so no request reaches another file. HTML gets the demo tenant's public key and
the WebSocket path filled in (``{{PUBLIC_KEY}}``, ``{{WS_PATH}}``), HTML-escaped; scripts get
the tools' labels (``/*{{TOOL_LABELS}}*/ {}``) that the gateway reads from the tool registry,
so a new tool needs no edit of the pages. Nothing here reads the domain: the caller passes both.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from web.protocol import WS_PATH

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
STATIC_PREFIX: Final = "/static/"
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
PAGES: Final = {"/": "demo.html", "/console": "console.html", "/tutor": "tutor.html"}
# Pages carry a key that may be rotated: always revalidate. Assets may be cached briefly.
PAGE_CACHE: Final = "no-cache"
ASSET_CACHE: Final = "public, max-age=300"

TOOL_LABELS_SLOT: Final = b"/*{{TOOL_LABELS}}*/ {}"

_SEGMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    cache_control: str


def resolve(directory: Path, name: str) -> Path | None:
    """The file ``name`` (``a.js`` or ``img/a.png``) inside ``directory``, or None."""
    segments = name.split("/")
    if not all(_SEGMENT.fullmatch(s) and ".." not in s for s in segments):
        return None
    if Path(name).suffix not in CONTENT_TYPES:
        return None
    root = directory.resolve()
    path = (root / name).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


def render_page(body: bytes, public_key: str, ws_path: str = WS_PATH) -> bytes:
    text = body.decode("utf-8")
    text = text.replace("{{PUBLIC_KEY}}", html.escape(public_key, quote=True))
    text = text.replace("{{WS_PATH}}", html.escape(ws_path, quote=True))
    return text.encode("utf-8")


def render_script(body: bytes, labels: Mapping[str, str]) -> bytes:
    """A script with the tools' labels filled in (a JSON object literal is a JS literal)."""
    return body.replace(TOOL_LABELS_SLOT, json.dumps(labels, sort_keys=True).encode("ascii"))


def load(
    path: str,
    public_key: str,
    directory: Path = STATIC_DIR,
    tool_labels: Mapping[str, str] | None = None,
) -> StaticFile | None:
    """The response body for a request path, or None when it is not a page or asset here."""
    if path in PAGES:
        name, cache = PAGES[path], PAGE_CACHE
    elif path.startswith(STATIC_PREFIX):
        name, cache = path[len(STATIC_PREFIX) :], ASSET_CACHE
    else:
        return None
    file = resolve(directory, name)
    if file is None:
        return None
    body = file.read_bytes()
    content_type = CONTENT_TYPES[file.suffix]
    if file.suffix == ".html":
        body = render_page(body, public_key)
        cache = PAGE_CACHE
    elif file.suffix == ".js":
        body = render_script(body, tool_labels or {})
    return StaticFile(body, content_type, cache)
