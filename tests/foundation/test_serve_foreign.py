"""``assistant serve`` with a tiny foreign checkpoint (LLaDA's layout, and DiffusionGemma's)
answers a widget chat.

The checkpoint has random weights, so the text is gibberish: what is tested is the flow (the
worker loads the checkpoint's own tokenizer and chat template through ASSISTANT_MODEL_PATH),
the drafts streamed while it decodes, the final that ends the turn, and the reply stored in
SQL. Nothing touches a network (HF_HUB_OFFLINE is set for the processes too).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from assistant.app.embedded_redis import free_port
from tests.foundation._processes import wait_http
from tests.tiny_diffusion_gemma import SPECIALS as GEMMA_SPECIALS
from tests.tiny_diffusion_gemma import write_tiny_diffusion_gemma
from tests.tiny_llada import LLADA_SPECIALS, write_tiny_llada
from tests.web.conftest import Client

pytestmark = pytest.mark.slow


async def _conversation(port: int, public_key: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        c = Client(ws)
        assert (await c.hello(public_key, channel="widget"))["type"] == "ready"
        await c.send(type="user_message", id="m-1", text="Hello, where is my order?")
        final = await c.until(lambda f: f["type"] == "final")
        drafts = [f for f in c.seen if f["type"] == "draft"]
        # A second turn: the history (with the first reply) goes through the template again.
        await c.send(type="user_message", id="m-2", text="Thanks!")
        await c.until(lambda f: f["type"] == "final" and f.get("turn_id") != final["turn_id"])
        return drafts, final


def _llada(root: Path) -> Path:
    return write_tiny_llada(root / "LLaDA-tiny-Instruct")


def _diffusion_gemma(root: Path) -> Path:
    # A served prompt with the tools needs a few thousand positions; four denoising steps per
    # canvas keep the random model's replies (which never end early) short.
    return write_tiny_diffusion_gemma(root / "dgemma", context=4096, max_denoising_steps=4)


@pytest.mark.parametrize(
    ("write", "specials", "masked_drafts"),
    [(_llada, LLADA_SPECIALS, True), (_diffusion_gemma, GEMMA_SPECIALS, False)],
    ids=["llada", "diffusion-gemma"],
)
def test_serve_answers_a_widget_conversation_with_a_foreign_checkpoint(
    tmp_path: Path, write: Any, specials: Any, masked_drafts: bool
) -> None:
    """DiffusionGemma's canvases start as noise, not masks: its drafts show no placeholder."""
    checkpoint = write(tmp_path)
    data = tmp_path / "data"
    port = free_port()
    console = tmp_path / "serve.log"
    env = {
        **os.environ,
        "ASSISTANT_MODEL_PATH": str(checkpoint),
        "ASSISTANT_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    with console.open("wb") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "assistant", "serve", "--port", str(port)),
                *("--data-dir", str(data), "--log-format", "json"),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        ready = json.loads(wait_http(f"http://127.0.0.1:{port}/readyz", timeout=180))
        assert ready["ready"] is True, console.read_text()[-3000:]
        log = console.read_text()
        assert '"chat_format": "checkpoint template"' in log
        public_key = json.loads((data / "demo-keys.json").read_text())["public_key"]
        drafts, final = asyncio.run(_conversation(port, str(public_key)))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert final["status"] == "complete", final
    assert final["text"]
    assert not any(token in final["text"] for token in specials)
    assert drafts, "no draft streamed"
    # a draft while positions were still masked
    assert any("░" in d["text"] for d in drafts) == masked_drafts
    usage = final["usage"]
    assert usage["rounds"] >= 1 and usage["tokens"] > 0
    with sqlite3.connect(data / "assistant.db") as db:
        rows = db.execute(
            "SELECT text, status FROM messages WHERE role = 'assistant' ORDER BY created_at"
        ).fetchall()
    assert len(rows) == 2
    assert rows[0] == (final["text"], "complete")
