"""A foreign checkpoint's tokenizer and chat template, its hub id, and serving it in a worker.

The checkpoint is a tiny random one in LLaDA-8B-Instruct's own layout (tests/tiny_llada.py),
loaded through the same public path a user takes. Nothing here touches a network.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
from huggingface_hub import constants

from assistant.agent.decoding import DEFAULT_MODE, decoding_modes, for_model
from assistant.agent.loop import AgentLoop, DraftUpdate, TurnFinished
from assistant.agent.prompting import HistoryItem
from assistant.checkpoints import model_dir, uses_entity_slots
from assistant.core.config import Settings
from assistant.core.errors import UserError
from assistant.demo.shop import build_shop
from assistant.tools.base import ToolContext
from assistant.tools.runner import ToolRunner
from assistant.tools.shop import MemoryShop
from dlm_runtime import CheckpointError
from dlm_runtime.chat_format import chat_format
from dlm_runtime.decoding import Pattern
from dlm_runtime.hub import resolve_checkpoint
from dlm_runtime.tokenizer import encode_chat, load_tokenizer, train_tokenizer
from tests.tiny_llada import write_tiny_llada
from workers.generator import load_generator


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llada(tmp_path_factory.mktemp("llada") / "LLaDA-tiny-Instruct")


def test_native_format_is_encode_chat_byte_for_byte() -> None:
    tok = train_tokenizer(["hello there", '{"name": "x"}'] * 5, vocab_size=300)
    fmt = chat_format(tok)
    assert fmt.native and fmt.tool_call_open is not None
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi <|end|>"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "x", "arguments": {}}]},
        {"role": "tool", "content": "{}"},
    ]
    assert fmt.encode(messages, tools=[{"type": "function"}]) == encode_chat(tok, messages)


def test_foreign_tokenizer_loads_with_its_template_and_end_tokens(checkpoint: Path) -> None:
    tok = load_tokenizer(checkpoint)
    fmt = chat_format(tok)
    assert not fmt.native and not fmt.tool_format  # LLaDA's template has no tool format
    eot, eos = (tok.convert_tokens_to_ids(t) for t in ("<|eot_id|>", "<|endoftext|>"))
    assert fmt.end_ids == {eot, eos}
    ids = fmt.encode([{"role": "user", "content": "Hi"}])
    text = tok.decode(ids, skip_special_tokens=False)
    assert text == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert fmt.reply_text(tok.encode("Fine.<|eot_id|>junk", add_special_tokens=False)) == "Fine."


def test_tokenizer_without_a_chat_template_is_refused_at_load(tmp_path: Path) -> None:
    path = write_tiny_llada(tmp_path / "c", template=None)
    with pytest.raises(ValueError, match=r"no chat template.*chat_template\.jinja"):
        load_tokenizer(path)
    with pytest.raises(UserError, match="chat template"):
        load_generator(Settings(model_path=str(path), device="cpu"))


def test_local_directory_is_used_as_it_is(checkpoint: Path) -> None:
    assert resolve_checkpoint(checkpoint) == checkpoint
    assert model_dir(str(checkpoint)) == checkpoint
    assert not uses_entity_slots(checkpoint)  # a foreign model gets real values


def test_hub_id_downloads_only_the_checkpoint_files(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_download(**kwargs: Any) -> str:
        calls.append(kwargs)
        local = tmp_path / "snapshot"
        shutil.copytree(checkpoint, local)
        return str(local)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert resolve_checkpoint("GSAI-ML/LLaDA-8B-Instruct") == tmp_path / "snapshot"
    assert calls[0]["repo_id"] == "GSAI-ML/LLaDA-8B-Instruct"
    assert "tokenizer.json" in calls[0]["allow_patterns"]
    assert "*.py" not in calls[0]["allow_patterns"]  # no remote code


def test_hub_id_without_network_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline mode and an empty cache: huggingface_hub itself refuses, without a request."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="downloading it from the Hugging Face Hub failed"):
        resolve_checkpoint("someone/not-cached-model")
    with pytest.raises(UserError, match="someone/not-cached-model"):
        load_generator(Settings(model_path="someone/not-cached-model", device="cpu"))


@pytest.mark.parametrize(
    "mode_name", [DEFAULT_MODE, pytest.param("vanilla-diffusion", marks=pytest.mark.slow)]
)
async def test_worker_engine_answers_with_the_foreign_checkpoint(
    checkpoint: Path, mode_name: str
) -> None:
    """load_generator -> Engine -> agent loop: drafts stream and the turn completes."""
    generator, tokenizer = load_generator(Settings(model_path=str(checkpoint), device="cpu"))
    try:
        mode = for_model(decoding_modes()[mode_name], generator.engine.info.default_pattern)
        assert mode.pattern is Pattern.DEFAULT_DIFFUSION  # LLaDA's own: bidirectional
        loop = AgentLoop(
            generator.submit,
            tokenizer,
            ToolRunner(MemoryShop(build_shop())),
            mode,
            context=generator.context,
            entity_slots=False,
        )
        history = [HistoryItem("user", "where is my order?")]
        events = [e async for e in loop.run("widget", history, ToolContext(tenant_id="t"), seed=0)]
    finally:
        await generator.close()
    final = events[-1]
    assert isinstance(final, TurnFinished) and final.status == "complete", final
    assert any(isinstance(e, DraftUpdate) for e in events)
    assert final.text


def test_left_to_right_modes_are_refused_for_a_bidirectional_model() -> None:
    modes = decoding_modes()
    assert for_model(modes["speculative"], Pattern.PREFIX_CAUSAL) is modes["speculative"]
    assert for_model(modes[DEFAULT_MODE], Pattern.PREFIX_CAUSAL) is modes[DEFAULT_MODE]
    for name in ("autoregressive", "speculative"):
        with pytest.raises(UserError, match="ASSISTANT_DECODING_MODE"):
            for_model(modes[name], Pattern.BIDIRECTIONAL)
    vanilla = for_model(modes["vanilla-diffusion"], Pattern.BIDIRECTIONAL)
    assert vanilla.policy == modes["vanilla-diffusion"].policy


def test_serve_checks_a_hub_id_before_starting_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assistant.app.serve import check_model_path

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="someone/not-cached-model: not a local directory"):
        check_model_path(Settings(model_path="someone/not-cached-model"))
    with pytest.raises(UserError, match="is not a directory"):
        check_model_path(Settings(model_path=str(tmp_path / "no" / "such" / "dir")))
