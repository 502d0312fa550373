"""A foreign checkpoint's tokenizer and chat template (dlm_runtime.chat_format), and hub ids.

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

from dlm_runtime import CheckpointError
from dlm_runtime.chat_format import chat_format
from dlm_runtime.hub import resolve_checkpoint
from dlm_runtime.tokenizer import encode_chat, load_tokenizer, train_tokenizer
from tests.tiny_llada import write_tiny_llada


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


def test_local_directory_is_used_as_it_is(checkpoint: Path) -> None:
    assert resolve_checkpoint(checkpoint) == checkpoint


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
