"""A tiny random DiffusionGemma checkpoint, written at test time by transformers itself.

``write_tiny_diffusion_gemma(path)`` saves a ``DiffusionGemmaForBlockDiffusion`` built from a
shrunk ``DiffusionGemmaConfig`` (``model_type`` "diffusion_gemma"; two text layers, one sliding
and one full attention, four experts, a one-layer vision tower; canvas of 8 tokens) with
``save_pretrained``, plus a tokenizer: a byte-level BPE trained offline whose first ids are
Gemma's ``<pad>``, ``<eos>``, ``<bos>`` and Gemma 4's turn markers ``<|turn>`` / ``<turn|>``,
and a chat template in the shape of Gemma 4's (not its verbatim text). Nothing touches a network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dlm_runtime.gpu_bench import ONE_LAYER_VISION

SPECIALS = ("<pad>", "<eos>", "<bos>", "<|turn>", "<turn|>")
TURN_END = 4
VOCAB = 300

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<|turn>' + role + '\n' + message['content'] | trim + '<turn|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|turn>model\n' }}{% endif %}"
)

_TEXTS = [
    "Where is my order? It shipped yesterday and should arrive on Friday.",
    "Hello, how can I help you today? I can look up orders, returns and products.",
    "The rain jacket is waterproof and comes in three sizes.",
] * 4


def text_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "global_head_dim": 16,
        "max_position_embeddings": 256,
        "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention"],
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "num_experts": 4,
        "top_k_experts": 2,
        "moe_intermediate_size": 32,
    }
    return config | changes


def write_tokenizer(path: Path) -> None:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_TEXTS, trainer=trainer)
    assert backend.get_vocab_size(with_added_tokens=True) <= VOCAB
    backend.save(str(path / "tokenizer.json"))
    tokenizer_config = {
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "clean_up_tokenization_spaces": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (path / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def write_tiny_diffusion_gemma(
    path: Path, seed: int = 0, context: int = 256, **generation: Any
) -> Path:
    """Write the checkpoint directory ``path``; ``context`` is its max_position_embeddings (a
    served prompt with the tools needs a few thousand); ``generation`` goes to
    generation_config.json."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
        DiffusionGemmaGenerationConfig,
    )

    path.mkdir(parents=True, exist_ok=True)
    config = DiffusionGemmaConfig(
        text_config=text_config(max_position_embeddings=context),
        vision_config=dict(ONE_LAYER_VISION),
        canvas_length=8,
    )
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(config).eval()
    with torch.no_grad():  # peaked logits, so low-entropy tokens exist and canvases get accepted
        model.lm_head.weight.mul_(40.0)
    model.generation_config = DiffusionGemmaGenerationConfig(**generation)
    model.save_pretrained(str(path))
    write_tokenizer(path)
    return path
