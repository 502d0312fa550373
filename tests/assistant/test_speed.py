"""`assistant speed`: the served decoding modes side by side on the bundled checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import run_cli as run

MESSAGES = [
    [
        {"role": "system", "content": "You are the store's assistant."},
        {"role": "user", "content": "What is your return policy?"},
        {"role": "assistant", "content": "You can return items within 30 days."},
    ],
    [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ],
]


def test_speed_prints_every_mode_at_every_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"messages": m}) + "\n" for m in MESSAGES))
    modes = "autoregressive,adaptive-diffusion,speculative"
    argv = ["speed", "--prompts", str(prompts), "--modes", modes, "--loads", "1,2"]
    assert run([*argv, "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in table] == ["1", "2"]
    # Speculative decoding is lossless: both replies equal autoregressive mode's.
    assert all(row[-1] == "2/2" for row in table)
    assert "load 2, adaptive-diffusion: rows:block length" in out


def test_speed_refuses_unknown_modes_and_missing_prompts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.jsonl"
    assert run(["speed", "--prompts", str(missing)]) != 0
    assert "assistant corpus build" in capsys.readouterr().err
    missing.write_text("")
    assert run(["speed", "--prompts", str(missing), "--modes", "warp-drive"]) != 0
    assert "unknown decoding modes" in capsys.readouterr().err
