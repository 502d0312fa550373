"""Layers: no module imports one above it (lazy imports inside functions count too).

The rules are the design's: ``dlm_runtime`` is a standalone library; ``assistant`` may use it
and nothing above; ``web`` and ``workers`` stand on ``assistant``; ``web/protocol.py`` is pure.
Inside ``assistant`` each package may import only packages of a lower layer (and itself).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("assistant", "dlm_runtime", "web", "workers", "migrations")

# Top-level packages, and which of the project's top-level packages each may import.
ALLOWED = {
    "dlm_runtime": {"dlm_runtime"},
    "assistant": {"assistant", "dlm_runtime"},
    "web": {"web", "assistant"},
    "workers": {"workers", "assistant", "dlm_runtime"},
    "migrations": {"migrations", "assistant"},
}
# assistant/'s packages, lowest first; a package imports only those of a lower layer.
ASSISTANT_LAYERS = [
    {"core"},
    {"entities", "tutoring"},
    {"tools"},
    {"store", "bus", "checkpoints"},
    {"demo"},
    {"agent"},
    {"lab"},
    {"app"},
]
LAYER = {package: index for index, layer in enumerate(ASSISTANT_LAYERS) for package in layer}
# Gateway modules that must not import anything of assistant/: the protocol and what serves
# frames and files (the domain reaches them through web/service.py and web/gateway.py).
PURE = {"web/protocol.py", "web/relay.py", "web/auth.py", "web/static.py", "web/openai_api.py"}


def python_files() -> Iterator[Path]:
    for top in PROJECT:
        yield from sorted((ROOT / top).rglob("*.py"))


def imported_modules(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield module
            # ``from assistant import tools`` imports the sub-package ``assistant.tools``.
            yield from (f"{module}.{alias.name}" for alias in node.names)


def violations(path: Path) -> Iterator[str]:
    relative = path.relative_to(ROOT)
    top = relative.parts[0]
    sub = relative.parts[1] if top == "assistant" and len(relative.parts) > 2 else None
    for module in imported_modules(path):
        parts = module.split(".")
        if parts[0] not in PROJECT:
            continue
        if parts[0] not in ALLOWED[top]:
            yield f"{relative} imports {module}: {top}/ may not import {parts[0]}/"
        elif relative.as_posix() in PURE and parts[0] == "assistant":
            yield f"{relative} imports {module}: it must stay free of assistant/"
        elif sub is not None and parts[0] == "assistant" and len(parts) > 1 and parts[1] != sub:
            if parts[1] not in LAYER:
                continue  # a module directly in assistant/ (e.g. __main__) or a class name
            if LAYER[parts[1]] >= LAYER[sub]:
                yield f"{relative} imports {module}: assistant/{sub} may not import {parts[1]}"


def test_every_assistant_package_has_a_layer() -> None:
    packages = {p.name for p in (ROOT / "assistant").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYER), "place each package of assistant/ in ASSISTANT_LAYERS"


def test_no_module_imports_a_higher_layer() -> None:
    found = [problem for path in python_files() for problem in violations(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        ("dlm_runtime/x.py", "import assistant.core.errors", "dlm_runtime/ may not import"),
        ("assistant/store/x.py", "from assistant.agent import loop", "may not import agent"),
        ("assistant/tools/x.py", "from assistant.demo.shop import STORE_NAME", "import demo"),
        ("assistant/app/x.py", "def f():\n    from web.gateway import run", "import web/"),
        ("web/protocol.py", "from assistant.tutoring import exercises", "free of assistant"),
    ],
)
def test_the_check_catches_an_upward_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: str, source: str, expected: str
) -> None:
    """The check itself can fail: a planted upward import is reported."""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    path.write_text(source + "\n")
    assert any(expected in problem for problem in violations(path))
