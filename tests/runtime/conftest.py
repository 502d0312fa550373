"""Fixtures the runtime tests share: a tokenizer, a tiny random native model, a tiny LLaDA."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from dlm_runtime.modeling import DLMModel
from dlm_runtime.tokenizer import train_tokenizer
from tests.tiny_models import tiny_config

CORPUS = [
    "Hello world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé: café, naïve, 東京, Привет, 😀🎉",
    "def add(a, b):\n    return a + b\n",
] * 20


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from two threads, and OpenMP stalls when a core is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return train_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def dlm(tok: PreTrainedTokenizerFast) -> DLMModel:
    """A tiny random native model with peaked logits (so argmax is far from ties)."""
    torch.manual_seed(0)
    cfg = tiny_config(tok, max_position_embeddings=96, initializer_range=0.3)
    return DLMModel(cfg).eval()
