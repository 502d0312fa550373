"""Dream, loaded through load_model, against its published code's outputs.

``dream_data/checkpoint/`` is a tiny random checkpoint in Dream's own layout (config.json keys and
weight names of Dream-org/Dream-v0-Instruct-7B, shrunk). ``dream_data/expected.json`` holds what
Dream's published ``diffusion_generate`` returned on it (its "provenance" entry says how it was
run); the upstream code itself is not in the repository.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dlm_runtime import CheckpointError, load_model
from dlm_runtime.decoding import DecodingMode, Pattern
from dlm_runtime.dream import DreamModel
from dlm_runtime.dream_generate import diffusion_generate
from dlm_runtime.dream_policy import dream_policy
from dlm_runtime.engine import Engine, Final, GenerationRequest
from dlm_runtime.tokenizer import train_tokenizer
from tests.runtime.recorded import copy_checkpoint, load_dtypes, skip_bfloat16_elsewhere

DATA = Path(__file__).parent / "dream_data"
CHECKPOINT = DATA / "checkpoint"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())
MASK = 127


def _case_id(case: dict[str, Any]) -> str:
    extras = [f"{k}={case[k]}" for k in ("top_p", "top_k", "alg_temp") if k in case]
    shape = "batch" if case["batch"] else "single"
    head = [case["dtype"], case["alg"], shape, f"T={case['temperature']}", f"seed={case['seed']}"]
    return "-".join([*head, *extras])


@pytest.fixture(scope="module")
def models() -> dict[str, DreamModel]:
    return load_dtypes(CHECKPOINT, DreamModel)


@pytest.fixture(scope="module")
def recording_arithmetic(models: dict[str, DreamModel]) -> bool:
    """Whether this CPU's kernels give the recorded float32 logits bit for bit, i.e. do the
    arithmetic of the machine that ran upstream's code. Elsewhere the sums round differently
    (another instruction set), which float32 argmaxes survive but bfloat16 ties need not."""
    ids = torch.tensor(EXPECTED["forward_input"])
    raw = torch.tensor(EXPECTED["forward_logits_first_rows"], dtype=torch.float32)
    logits = models["float32"](ids).logits[0, :, :8]
    return bool(torch.equal(logits[1:], raw[:-1]))


@pytest.mark.parametrize("case", EXPECTED["cases"], ids=_case_id)
def test_token_exact_to_published_diffusion_generate(
    models: dict[str, DreamModel], case: dict[str, Any], recording_arithmetic: bool
) -> None:
    """Every alg, float32 and bfloat16, alone and as a left-padded mixed-length batch."""
    skip_bfloat16_elsewhere(case["dtype"], recording_arithmetic)
    kwargs = {k: case[k] for k in ("alg", "steps", "max_new_tokens", "temperature")}
    kwargs |= {k: case[k] for k in ("top_p", "top_k", "alg_temp") if k in case}
    generator = torch.Generator().manual_seed(case["seed"])
    if case["batch"]:
        ids = torch.tensor(EXPECTED["batch_input_ids"])
        attention = torch.tensor(EXPECTED["batch_attention_mask"])
    else:
        ids, attention = torch.tensor(EXPECTED["prompt"]), None
    out = diffusion_generate(
        models[case["dtype"]],
        ids,
        attention,
        mask_token_id=MASK,
        generator=generator,
        **kwargs,
    )
    assert out.tolist() == case["output"]


def test_logits_are_unshifted(models: dict[str, DreamModel], recording_arithmetic: bool) -> None:
    """Position i reads Dream's output at i - 1 (position 0 its own): bit for bit where this
    CPU does the recording machine's arithmetic, to float32 rounding elsewhere."""
    ids = torch.tensor(EXPECTED["forward_input"])
    raw = torch.tensor(EXPECTED["forward_logits_first_rows"], dtype=torch.float32)  # [T, 8]
    logits = models["float32"](ids).logits[0, :, :8]
    tolerance = 0.0 if recording_arithmetic else 1e-5
    torch.testing.assert_close(logits[0], raw[0], rtol=0, atol=tolerance)
    torch.testing.assert_close(logits[1:], raw[:-1], rtol=0, atol=tolerance)


def test_logits_index_and_cache(models: dict[str, DreamModel]) -> None:
    """Selected positions give the same logits; a cached forward cannot give its first one."""
    model = models["float32"]
    ids = torch.tensor(EXPECTED["forward_input"])
    full = model(ids).logits
    index = torch.tensor([[0, 3, 7, 11]])
    picked = model(ids, logits_index=index).logits
    torch.testing.assert_close(picked, full[:, index[0]], rtol=1e-5, atol=1e-5)
    prefix = model(ids[:, :5])
    after = torch.tensor([[1, 3, 6]])
    rest = model(ids[:, 5:], past_key_values=prefix.new_key_values, logits_index=after)
    assert rest.logits.shape == (1, 3, full.shape[-1])
    with pytest.raises(ValueError, match="position before it"):
        model(ids[:, 5:], past_key_values=prefix.new_key_values)


def _copy_checkpoint(tmp_path: Path, **changes: Any) -> Path:
    return copy_checkpoint(CHECKPOINT, tmp_path / "dream", **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mask_token_id": None}, "missing required key 'mask_token_id'"),
        ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "rope_scaling"),
        ({"use_sliding_window": True}, "use_sliding_window"),
        ({"hidden_size": 30}, "hidden_size=30"),
    ],
)
def test_bad_config_is_a_checkpoint_error(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(CheckpointError, match=message):
        load_model(_copy_checkpoint(tmp_path, **changes))


def test_unknown_alg_is_refused(models: dict[str, DreamModel]) -> None:
    with pytest.raises(ValueError, match="unknown alg 'greedy'"):
        diffusion_generate(
            models["float32"],
            torch.tensor(EXPECTED["prompt"]),
            max_new_tokens=4,
            mask_token_id=MASK,
            alg="greedy",
        )


def _rows(case: dict[str, Any]) -> list[tuple[list[int], list[int]]]:
    """Each request of ``case`` unpadded, with upstream's reply for it."""
    n = case["max_new_tokens"]
    if not case["batch"]:
        return [(EXPECTED["prompt"][0], case["output"][0][-n:])]
    ids, attention = EXPECTED["batch_input_ids"], EXPECTED["batch_attention_mask"]
    return [
        ([t for t, keep in zip(row, am, strict=True) if keep], out[-n:])
        for row, am, out in zip(ids, attention, case["output"], strict=True)
    ]


ENGINE_CASES = [
    c
    for c in EXPECTED["cases"]
    if c["temperature"] == 0 and c["alg"] != "origin" and "alg_temp" not in c
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
async def test_engine_decodes_dream_as_diffusion_generate(
    models: dict[str, DreamModel], dtype: str
) -> None:
    """The engine's BIDIRECTIONAL state with dream_policy, all requests at once (mixed
    lengths, three algs): each equals diffusion_generate on that prompt alone, and upstream's
    recorded output wherever upstream's own run was unpadded or float32. (A bf16 left-padded
    batch is not always equal to its rows alone in upstream itself: padding changes the
    masked attention kernel's rounding.)"""
    model = models[dtype]
    tok = train_tokenizer(["Hello world! How are you today?"] * 20, vocab_size=300)
    requests, wants = [], []
    for i, case in enumerate(c for c in ENGINE_CASES if c["dtype"] == dtype):
        policy = dream_policy(case["steps"], case["max_new_tokens"], case["alg"])
        for j, (prompt, upstream) in enumerate(_rows(case)):
            alone = diffusion_generate(
                model,
                torch.tensor([prompt]),
                mask_token_id=MASK,
                max_new_tokens=case["max_new_tokens"],
                steps=case["steps"],
                alg=case["alg"],
                temperature=0.0,
            )[0, len(prompt) :].tolist()
            if dtype == "float32" or not case["batch"]:
                assert alone == upstream
            mode = DecodingMode("dream", Pattern.BIDIRECTIONAL, policy)
            requests.append(GenerationRequest(f"{i}-{j}", prompt, mode, 0))
            wants.append(alone)
    assert len(requests) == 12

    async def run(request: GenerationRequest) -> list[int]:
        events = [event async for event in await engine.submit(request)]
        last = events[-1]
        assert isinstance(last, Final)
        return last.token_ids

    async with Engine(model, tok) as engine:
        got = await asyncio.gather(*(run(r) for r in requests))
    assert got == wants
