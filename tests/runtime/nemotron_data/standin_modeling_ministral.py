# STAND-IN for the checkpoint's own modeling_ministral.py, which no public source reachable from
# this machine holds. Built from transformers' own Ministral3 pieces (installed release: rotary
# incl. YaRN, RMSNorm, MLP, apply_rotary_pos_emb, repeat_kv, sdpa attention, create_causal_mask,
# DynamicCache) plus the remote attention's documented mode switch:
#   diffusion_lm=True  -> attention_mask=None, is_causal=False (bidirectional over cache + input)
#   diffusion_lm=False -> the causal mask Ministral3Model.forward builds
#   past_key_values with use_cache=True  -> cache.update (written)
#   past_key_values with use_cache=False -> cached k/v concatenated, cache left untouched
# (github.com/linyewei526/Nemotron-Labs-Diffusion configs/basis/
#  Nemotron_Labs_Diffusion_decode_code_guide_zh.md sections 3.2-3.3, and the axolotl-style
#  re-implementation of the remote attention forward indexed as "Native source loader for
#  Nemotron Labs Diffusion"), and _get_llama_4_attn_scale taking cache_position.
import torch
from torch import nn
from transformers.cache_utils import DynamicCache as _DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.models.ministral3 import modeling_ministral3 as hf

apply_rotary_pos_emb = hf.apply_rotary_pos_emb
repeat_kv = hf.repeat_kv


class DynamicCache(_DynamicCache):
    """transformers 5.0's crop(max_length): keep the first max_length positions (the release the
    checkpoint's code was written for; 5.25 made crop take a negative count instead)."""

    def crop(self, max_length):
        n = self.get_seq_length()
        if max_length < n:
            super().crop(max_length - n)


def _get_llama_4_attn_scale(positions_ids, beta, max_position_embeddings):
    scaling = 1 + beta * torch.log(1 + torch.floor(positions_ids / max_position_embeddings))
    return scaling.unsqueeze(-1)


class Ministral3Attention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = (
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.diffusion_lm = config.diffusion_lm
        self.q_proj = nn.Linear(
            config.hidden_size, config.num_attention_heads * self.head_dim, bias=False
        )
        self.k_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=False
        )
        self.v_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=False
        )
        self.o_proj = nn.Linear(
            config.num_attention_heads * self.head_dim, config.hidden_size, bias=False
        )

    def forward(
        self,
        hidden_states,
        position_embeddings,
        attention_mask,
        past_key_values=None,
        cache_position=None,
        use_cache=False,
        **kwargs,
    ):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        query_states = query_states * _get_llama_4_attn_scale(
            cache_position,
            self.config.rope_parameters.get("llama_4_scaling_beta"),
            self.config.rope_parameters.get("original_max_position_embeddings"),
        ).to(query_states.dtype)
        if past_key_values is not None:
            if use_cache:
                key_states, value_states = past_key_values.update(
                    key_states, value_states, self.layer_idx
                )
            else:
                cached = past_key_values.layers[self.layer_idx]
                key_states = torch.cat([cached.keys, key_states], dim=-2)
                value_states = torch.cat([cached.values, value_states], dim=-2)
        if self.diffusion_lm:
            out, _ = sdpa_attention_forward(
                self,
                query_states,
                key_states,
                value_states,
                None,
                dropout=0.0,
                scaling=self.scaling,
                is_causal=False,
            )
        else:
            out, _ = sdpa_attention_forward(
                self,
                query_states,
                key_states,
                value_states,
                attention_mask,
                dropout=0.0,
                scaling=self.scaling,
            )
        out = out.reshape(*input_shape, -1).contiguous()
        return self.o_proj(out), None


class Ministral3DecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.self_attn = config.attn_class(config, layer_idx)
        self.mlp = hf.Ministral3MLP(config)
        self.input_layernorm = hf.Ministral3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = hf.Ministral3RMSNorm(
            config.hidden_size, eps=config.rms_norm_eps
        )

    def forward(
        self,
        hidden_states,
        attention_mask,
        position_embeddings,
        past_key_values,
        use_cache,
        cache_position,
    ):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, _ = self.self_attn(
            hidden_states,
            position_embeddings,
            attention_mask,
            past_key_values=past_key_values,
            cache_position=cache_position,
            use_cache=use_cache,
        )
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class Ministral3PreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"
    _supports_sdpa = True
    _no_split_modules = ["Ministral3DecoderLayer"]


class Ministral3Model(Ministral3PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            Ministral3DecoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        self.norm = hf.Ministral3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = hf.Ministral3RotaryEmbedding(config=config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=None,
        cache_position=None,
        use_causal_mask=False,
        is_training=False,
        **kwargs,
    ):
        inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
        if cache_position is None:
            cache_position = torch.arange(
                past_seen, past_seen + inputs_embeds.shape[1], device=inputs_embeds.device
            )
        if position_ids is None:
            position_ids = cache_position.unsqueeze(0)
        causal_mask = create_causal_mask(
            self.config, inputs_embeds, attention_mask, past_key_values, position_ids=position_ids
        )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                causal_mask,
                position_embeddings,
                past_key_values,
                use_cache,
                cache_position,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, past_key_values=past_key_values
        )
