"""The pages and static files the gateway serves from ``web/static/``.

Names are checked against a strict pattern and the resolved path must stay inside the
directory, so no request reaches another file. HTML gets the demo tenant's public key and
the WebSocket path filled in (``{{PUBLIC_KEY}}``, ``{{WS_PATH}}``), HTML-escaped.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from assistant.demo.load import DEMO_KEYS_FILE
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


def load(path: str, public_key: str, directory: Path = STATIC_DIR) -> StaticFile | None:
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
    return StaticFile(body, content_type, cache)


def demo_public_key(configured: str, data_dir: Path) -> str:
    """The key the pages embed: the setting, else the demo tenant's from demo-keys.json."""
    if configured:
        return configured
    try:
        data = json.loads((data_dir / DEMO_KEYS_FILE).read_text())
    except (OSError, ValueError):
        return ""
    value = data.get("public_key") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""
