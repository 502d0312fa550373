"""Run the ``assistant`` command line in-process, as a test sees it."""

from __future__ import annotations

import logging

from assistant.app.cli import main


def run_cli(argv: list[str]) -> int:
    """``main(argv)``, with the root logger as it was before (main() points logging at the
    captured stderr)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
