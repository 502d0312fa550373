"""dlm_runtime.gpu_bench, the GPU check of every family, kept working on a CPU.

No GPU is needed: ``--tiny`` runs the whole script (every family, its own sampler, the engine
at two loads, the id-for-id comparison) on shrunk configs in seconds, and ``--sizes`` builds the
real configs on the meta device, so a typo in a published config fails here, not on a GPU.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from dlm_runtime.gpu_bench import FAMILIES, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_RUN = [
    "--device",
    "cpu",
    "--tiny",
    "--requests",
    "1,3",
    "--exact",
    "2",
    "--new-tokens",
    "8",
    "--block",
    "4",
    "--prompt-lengths",
    "6,9",
]


def test_tiny_run_reports_every_family_exact(capsys: pytest.CaptureFixture[str]) -> None:
    """float32: the engine equals each family's own sampler on every compared request."""
    assert main([*TINY_RUN, "--dtype", "float32"]) == 0
    out, err = capsys.readouterr()
    for name, family in FAMILIES.items():
        assert re.search(rf"^{name} .*own: {re.escape(family.baseline_name)}", out, re.M), name
        assert f"[{name}] baseline" in err  # a progress line per phase
    engine_rows = re.findall(r"^\s+engine\s+(\d+)\s+[\d.]+\s+[\d.]+x\s+(\d+)/(\d+)$", out, re.M)
    # two loads for each family; DiffusionGemma's requests are seeded as its generate() is
    assert [(n, e, c) for n, e, c in engine_rows] == [("1", "1", "1"), ("3", "2", "2")] * 6


@pytest.mark.parametrize("padded", [False, True])
def test_tiny_run_in_bfloat16(capsys: pytest.CaptureFixture[str], padded: bool) -> None:
    """The GPU run's dtype goes through too, with the engine's exact batches or a worker's
    padded ones (exactness in bf16 is what the GPU run reports, so it is not asserted here)."""
    assert main([*TINY_RUN, "--families", "llada,dream", *(["--padded"] if padded else [])]) == 0
    out = capsys.readouterr().out
    assert "bfloat16" in out
    assert ("padded (as a worker)" in out) == padded
    assert len(re.findall(r"^\s+engine\s+\d+ ", out, re.M)) == 4


def test_real_configs_have_the_published_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sizes"]) == 0
    out = capsys.readouterr().out
    params = dict(re.findall(r"^([\w-]+)\s+\d+\s+([\d.]+[MB])", out, re.M))
    # LLaDA-8B 8.02B, Dream-7B (Qwen2.5-7B) 7.62B, Nemotron-Labs-Diffusion-8B (Ministral 3 8B,
    # 8.4B), DiffusionGemma 26B-A4B 25.2B (+ a tiny vision tower), the bundled native 4.5M.
    assert params == {
        "native": "4.5M",
        "llada": "8.02B",
        "dream": "7.62B",
        "nemotron-ar": "8.49B",
        "nemotron-spec": "8.49B",
        "diffusion_gemma": "25.25B",
    }


def test_layers_cuts_every_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sizes", "--layers", "4", "--families", "llada,diffusion_gemma"]) == 0
    rows = re.findall(r"^(\w+)\s+(\d+)\s", capsys.readouterr().out, re.M)
    assert rows == [("llada", "4"), ("diffusion_gemma", "4")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_asked_for_but_absent_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--families", "gpt2"], ["--new-tokens", "10", "--block", "4"]):
        with pytest.raises(SystemExit):
            main(argv)
    err = capsys.readouterr().err
    assert "unknown families ['gpt2']" in err
    assert "multiple of --block" in err


def test_a_failing_family_is_reported_and_the_next_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of memory on one family (here: any error building it) costs only that family."""

    def fail(*args: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setitem(FAMILIES, "llada", dataclasses.replace(FAMILIES["llada"], build=fail))
    assert main([*TINY_RUN, "--families", "llada,dream"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^llada\s+failed: OutOfMemoryError: CUDA out of memory", out, re.M)
    assert re.search(r"^dream .*own: ", out, re.M)
