"""The shared layers: where one piece serves several families, its parameters must keep each
family's arithmetic (the families' own tests check them against recorded upstream outputs)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from dlm_runtime.layers import DecoderLayer, apply_rotary, attend, rotary_cos_sin


@dataclass
class Shape:
    vocab_size: int = 16
    hidden_size: int = 16
    intermediate_size: int = 24
    num_hidden_layers: int = 1
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    rms_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def test_rotary_runs_in_the_dtype_of_cos() -> None:
    """float32 cos/sin rotate a bf16 x in float32 (LLaDA's, the native model's); cos/sin in
    bf16 rotate it in bf16 (Qwen2's and Ministral's); the result is in x's dtype either way."""
    x = torch.randn(1, 2, 5, 8, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    cos, sin = rotary_cos_sin(torch.arange(5)[None], 8, 10000.0)
    x1, x2 = x.float().chunk(2, dim=-1)
    in_f32 = (x.float() * cos + torch.cat((-x2, x1), dim=-1) * sin).to(torch.bfloat16)
    assert torch.equal(apply_rotary(x, cos, sin), in_f32)
    c, s = cos.to(torch.bfloat16), sin.to(torch.bfloat16)
    h1, h2 = x.chunk(2, dim=-1)
    in_bf16 = x * c + torch.cat((-h2, h1), dim=-1) * s
    assert torch.equal(apply_rotary(x, c, s), in_bf16)
    assert apply_rotary(x, cos, sin).dtype == torch.bfloat16


def test_attend_scale_none_is_the_kernel_default() -> None:
    q, k, v = torch.randn(3, 1, 4, 3, 8, generator=torch.Generator().manual_seed(1))
    expected = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(attend(q, k, v, None), expected)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_norms_first_orders_parameters_only(qkv_bias: bool) -> None:
    """The native model's order and Dream's/Nemotron's draw the same seeded weights."""
    torch.manual_seed(0)
    first = DecoderLayer.dense(Shape(), qkv_bias=qkv_bias, norms_first=True).state_dict()
    torch.manual_seed(0)
    last = DecoderLayer.dense(Shape(), qkv_bias=qkv_bias).state_dict()
    assert next(iter(first)) == "input_layernorm.weight"
    assert list(last)[-1] == "post_attention_layernorm.weight"
    assert sorted(first) == sorted(last)
    assert all(torch.equal(first[name], last[name]) for name in first)
