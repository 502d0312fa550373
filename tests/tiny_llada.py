"""A tiny random checkpoint in LLaDA-8B-Instruct's own layout, written at test time.

The directory holds what the published checkpoint holds: ``config.json`` (LLaDA's key names,
``model_type`` "llada"), ``model.safetensors`` (LLaDA's weight names), ``tokenizer.json`` (a
byte-level BPE with LLaDA's special tokens, trained offline with ``tokenizers``),
``tokenizer_config.json`` and ``chat_template.jinja`` (LLaDA's template, with
``<|start_header_id|>...<|end_header_id|>`` and ``<|eot_id|>``). Nothing touches a network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tests.runtime.test_llada import BASE_CONFIG, random_llada_weights

LLADA_SPECIALS = (
    "<|startoftext|>",
    "<|endoftext|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|mdm_mask|>",
)

# LLaDA-8B-Instruct's chat template (its tokenizer_config.json), verbatim.
LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

_TEXTS = [
    "Where is my order? It shipped yesterday and should arrive on Friday.",
    "Hello, how can I help you today? I can look up orders, returns and products.",
    "The rain jacket is waterproof and comes in three sizes.",
    '{"name": "order_status", "arguments": {"order_id": "NW-1001"}}',
] * 4


def build_tokenizer(vocab_size: int = 320) -> Tokenizer:
    """A byte-level BPE whose first ids are LLaDA's special tokens."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(LLADA_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_TEXTS, trainer=trainer)
    return backend


def write_tiny_llada(path: Path, template: str | None = LLADA_CHAT_TEMPLATE, **config: Any) -> Path:
    """Write the checkpoint directory ``path``; ``template=None`` leaves the template out."""
    path.mkdir(parents=True, exist_ok=True)
    backend = build_tokenizer()
    backend.save(str(path / "tokenizer.json"))
    vocab = backend.get_vocab_size(with_added_tokens=True)
    ids = {token: backend.token_to_id(token) for token in LLADA_SPECIALS}
    tokenizer_config = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|eot_id|>",
        "pad_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1000000000000000019884624838656,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    if template is not None:
        (path / "chat_template.jinja").write_text(template)
    cfg = {
        **BASE_CONFIG,
        "vocab_size": vocab,
        "embedding_size": vocab,
        "mask_token_id": ids["<|mdm_mask|>"],
        "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "max_sequence_length": 4096,
        **config,
    }
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(random_llada_weights(cfg), str(path / "model.safetensors"))
    return path
