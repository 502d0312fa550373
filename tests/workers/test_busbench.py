"""The bus benchmark command runs end to end with tiny numbers (figures are not checked)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from workers.busbench import parse_args


def test_help_and_argument_checks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--turns", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--redis-url" in out and "--serve-worker" not in out


def test_benchmark_runs_with_tiny_numbers() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.busbench",
            "--turns=20",
            "--latency-turns=10",
            "--warmup=2",
            "--concurrency=4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "hardware:" in out and "included:" in out and "excluded:" in out
    assert "bus turn, 4 at a time" in out and "raw redis-py" in out
    assert "added by the bus per turn" in out
