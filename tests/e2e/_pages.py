"""Helpers of the browser tests: pages with error capture, the widget and console drivers."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# A model turn on a shared 2-core CPU, with a tool round, can take a while; these are upper
# bounds for waiting, never claims about speed.
REPLY_TIMEOUT_MS = 90_000
UI_TIMEOUT_MS = 20_000


@dataclass
class PageErrors:
    """Uncaught exceptions and console errors of one page; a test fails on any of them."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console.{msg.type}: {msg.text}")
                if msg.type == "error"
                else None
            ),
        )


def open_page(browser: Any, url: str, **context_options: Any) -> tuple[Any, Any, PageErrors]:
    """A fresh context (own localStorage) with one page at url."""
    context = browser.new_context(**context_options)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    errors = PageErrors()
    errors.attach(page)
    page.goto(url)
    return context, page, errors


class WidgetDriver:
    """The support widget inside its shadow root (Playwright's CSS locators pierce it)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.host = page.locator("#dlm-widget")
        self.bubble = self.host.locator("button.bubble")
        self.panel = self.host.locator("section.panel")
        self.input = self.host.locator("textarea#dlm-input")
        self.log = self.host.locator(".log")
        self.status = self.host.locator(".conn")

    def open(self) -> None:
        self.bubble.click()
        self.panel.wait_for(state="visible")

    def reload(self) -> None:
        """Reload the page and reopen the widget once it is online again."""
        self.page.reload()
        self.open()
        self.wait_online()

    def wait_online(self) -> None:
        self.page.wait_for_function(
            "() => window.DlmWidget && window.DlmWidget.connection"
            " && window.DlmWidget.connection.isReady()",
            timeout=UI_TIMEOUT_MS,
        )

    def send(self, text: str) -> None:
        self.input.fill(text)
        self.input.press("Enter")

    def user_messages(self) -> Any:
        return self.log.locator(".msg.user")

    def finals(self) -> Any:
        """Finished assistant replies (not drafts)."""
        return self.log.locator(".msg.assistant[data-status]")

    def operator_messages(self) -> Any:
        return self.log.locator(".msg.operator")

    def wait_finals(self, count: int) -> str:
        """Wait for the count-th finished reply; return its text."""
        self.page.wait_for_function(
            "n => { const h = document.querySelector('#dlm-widget');"
            " return h && h.shadowRoot.querySelectorAll('.msg.assistant[data-status]').length >= n"
            " && !h.shadowRoot.querySelector('.msg.assistant.draft'); }",
            arg=count,
            timeout=REPLY_TIMEOUT_MS,
        )
        return str(self.finals().nth(count - 1).locator(".text").inner_text())

    def conversation_id(self) -> str:
        return str(self.page.evaluate("() => window.DlmWidget.saved.conversation_id"))


def screenshot(page: Any, directory: Path, name: str) -> Path:
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def query(database: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the SQLite file of a running system (read-only)."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return list(connection.execute(sql, params).fetchall())
    finally:
        connection.close()


@contextmanager
def serve_html(body: str) -> Iterator[str]:
    """Serve one HTML page from a second local HTTP server; yield its URL (another origin)."""
    data = body.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/shop"
    finally:
        httpd.shutdown()
        httpd.server_close()
