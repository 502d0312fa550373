"""Nemotron-Labs-Diffusion's three published samplers, on
:class:`~dlm_runtime.nemotron.NemotronModel`.

Re-written from the checkpoint's ``modeling_nemotron_labs_diffusion.py`` (methods of its
``NemotronLabsDiffusionModel``), same arithmetic and the same order of random draws, each
returning ``(ids, nfe)``: the prompt followed by the reply, and the number of forward passes
upstream counts.

* :func:`ar_generate`: causal prefill, then one token per forward (the prefill is not counted);
  a batch stops only when every row wrote the end token on the same step.
* :func:`generate`: block diffusion. A causal prefill writes the cache and seeds the first block
  with its next token; each block of ``block_length`` starts masked (but for the seed) and is
  denoised bidirectionally against the cache, up to ``block_length`` steps, committing the
  ``threshold``-confident positions (at least the most confident one) or, without a threshold,
  an even share per step; then one causal forward writes the block to the cache and seeds the
  next. Every forward is counted. With ``causal_context=False`` the prefill and the cache
  writes are bidirectional and nothing is seeded (upstream's model keeps its attention switch
  between calls; this is what a freshly loaded model does).
* :func:`linear_spec_generate`: self-speculation, one row. Causal prefill (counted); then per
  round a bidirectional draft of the block after the last accepted token, one causal pass that
  verifies it, the longest prefix where the draft equals the causal prediction plus the causal
  "bonus" token accepted, the cache cut back to what was accepted.

Sampling (``temperature > 0``) draws from torch's global generator exactly where upstream does:
seed it with ``torch.manual_seed`` for a reproducible run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlm_runtime.attention import KV, causal_mask, kv_concat, kv_length, kv_slice
from dlm_runtime.llada_generate import add_gumbel_noise, get_num_transfer_tokens
from dlm_runtime.nemotron import NemotronModel

__all__ = ["ar_generate", "generate", "linear_spec_generate"]


def _causal(past: KV | None, t_len: int, device: torch.device) -> torch.Tensor:
    """Causal mask for ``t_len`` new positions after ``past``: ``[1, 1, T, P + T]``."""
    start = kv_length(past)
    positions = torch.arange(start + t_len, device=device)
    return causal_mask(positions[start:], positions)


def _pick(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Upstream's next token from ``[B, V]`` logits: argmax, or a multinomial draw."""
    if temperature > 0:
        return torch.multinomial(torch.softmax(logits / temperature, dim=-1), num_samples=1)
    return torch.argmax(logits, dim=-1, keepdim=True)


def _end_id(model: NemotronModel, eos_token_id: int | None) -> int | None:
    # Upstream: None means the config's end token, so a run cannot disable stopping.
    return model.config.eos_token_id if eos_token_id is None else eos_token_id


@torch.no_grad()
def ar_generate(
    model: NemotronModel,
    prompt_ids: torch.Tensor,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    eos_token_id: int | None = None,
    max_thinking_tokens: int | None = None,
    end_think_token_id: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Upstream's ``ar_generate``: ``(prompt + reply [B, P + n], nfe)``."""
    eos = _end_id(model, eos_token_id)
    device = prompt_ids.device
    batch, prompt_len = prompt_ids.shape
    last = torch.full((batch, 1), prompt_len - 1, device=device)
    out = model(prompt_ids, attention_mask=_causal(None, prompt_len, device), logits_index=last)
    cache = out.new_key_values
    next_logit = out.logits[:, 0]
    generated: list[torch.Tensor] = []
    nfe = 0
    for step in range(max_new_tokens):
        nfe += 1
        token = _pick(next_logit, temperature)
        thinking_over = max_thinking_tokens is not None and step >= max_thinking_tokens
        if end_think_token_id is not None and thinking_over:
            if generated:
                done = (torch.cat(generated, dim=1) == end_think_token_id).any(dim=1)
            else:
                done = torch.zeros(batch, dtype=torch.bool, device=device)
            for b in range(batch):
                if not done[b]:
                    token[b] = end_think_token_id
        generated.append(token)
        if eos is not None and bool((token == eos).all()):
            break
        if step < max_new_tokens - 1:
            zero = torch.zeros((batch, 1), dtype=torch.long, device=device)
            mask = _causal(cache, 1, device)
            out = model(token, attention_mask=mask, past_key_values=cache, logits_index=zero)
            cache = kv_concat(cache, out.new_key_values)
            next_logit = out.logits[:, 0]
    return torch.cat([prompt_ids, *generated], dim=1), nfe


def _transfer_index(
    logits: torch.Tensor,
    temperature: float,
    masked: torch.Tensor,
    x: torch.Tensor,
    count: torch.Tensor,
    threshold: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's ``_get_transfer_index``: candidate tokens and which positions to commit.

    The confidence is the softmax in the logits' dtype; with a threshold every masked position
    is a candidate and all but the most confident must reach it (compared in that dtype).
    """
    x0 = torch.argmax(add_gumbel_noise(logits, temperature=temperature), dim=-1)
    p = F.softmax(logits, dim=-1)
    x0_p = torch.gather(p, dim=-1, index=x0.unsqueeze(-1)).squeeze(-1)
    x0 = torch.where(masked, x0, x)
    confidence = torch.where(masked, x0_p, float("-inf"))
    chosen = torch.zeros_like(x0, dtype=torch.bool)
    if threshold is not None:
        count = masked.sum(dim=1, keepdim=True)
    for j in range(confidence.shape[0]):
        k = int(count[j])
        _, index = torch.topk(confidence[j], k=k)
        chosen[j, index] = True
        if threshold is not None:
            for i in range(1, k):
                if bool(confidence[j, index[i]] < threshold):
                    chosen[j, index[i]] = False
    return x0, chosen


@torch.no_grad()
def generate(
    model: NemotronModel,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    block_length: int,
    threshold: float | None = None,
    causal_context: bool = True,
    temperature: float = 0.0,
    eos_token_id: int | None = None,
    max_thinking_tokens: int | None = None,
    end_think_token_id: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Upstream's ``generate`` (block diffusion): ``(prompt + reply, nfe)``.

    ``max_new_tokens`` must be a multiple of ``block_length``. The reply is cut after the last
    row's first end token once every row has written one.
    """
    if max_new_tokens % block_length:
        raise ValueError("max_new_tokens must be a multiple of block_length")
    eos = _end_id(model, eos_token_id)
    mask_id = model.config.mask_token_id
    device = prompt_ids.device
    batch, prompt_len = prompt_ids.shape
    steps = block_length  # one denoising step per token at most, as upstream

    def write(tokens: torch.Tensor, past: KV | None) -> tuple[torch.Tensor, KV]:
        """The pass that writes ``tokens`` to the cache: causal, or bidirectional without
        causal context; returns the logits of its last position and the longer cache."""
        mask = _causal(past, tokens.shape[1], device) if causal_context else None
        out = model(tokens, attention_mask=mask, past_key_values=past)
        return out.logits[:, -1], kv_concat(past, out.new_key_values)

    last_logit, cache = write(prompt_ids, None)
    next_token = _pick(last_logit, temperature) if causal_context else None
    x = prompt_ids.clone()
    nfe = 0
    for n in range(max_new_tokens // block_length):
        block = torch.full((batch, block_length), mask_id, dtype=x.dtype, device=device)
        if next_token is not None:
            block[:, 0] = next_token[:, 0]
        x = torch.cat([x, block], dim=1)
        start = prompt_len + n * block_length
        span = slice(start, start + block_length)
        if end_think_token_id is not None and max_thinking_tokens is not None:
            before = n * block_length
            if before + block_length > max_thinking_tokens:
                so_far = x[:, prompt_len:start]
                done = (
                    (so_far == end_think_token_id).any(dim=1)
                    if so_far.shape[1] > 0
                    else torch.zeros(batch, dtype=torch.bool, device=device)
                )
                if not bool(done.all()):
                    at = start + max(0, max_thinking_tokens - before)
                    for b in range(batch):
                        if not done[b]:
                            x[b, at] = end_think_token_id
        counts = get_num_transfer_tokens(x[:, span] == mask_id, steps)
        for i in range(steps):
            masked = x[:, span] == mask_id
            if not bool(masked.any()):
                break
            nfe += 1
            logits = model(x[:, span], past_key_values=cache).logits  # bidirectional draft
            x0, chosen = _transfer_index(
                logits, temperature, masked, x[:, span], counts[:, i], threshold
            )
            current = x[:, span].clone()
            current[chosen] = x0[chosen]
            x[:, span] = current
            if eos is not None:
                tokens = x[:, span]
                is_eos = tokens == eos
                if bool(is_eos.any()):
                    open_before = (tokens == mask_id) & ~is_eos.cumsum(dim=1).bool()
                    if bool((is_eos.any(dim=1) & ~open_before.any(dim=1)).any()):
                        break
        last_logit, cache = write(x[:, span], cache)
        nfe += 1
        if causal_context:
            next_token = _pick(last_logit, temperature)
        if eos is not None:
            is_eos = x[:, prompt_len:] == eos
            if bool(is_eos.any(dim=1).all()):
                first = is_eos.to(torch.int64).argmax(dim=1)
                return x[:, : prompt_len + int(first.max()) + 1], nfe
    return x, nfe


@torch.no_grad()
def linear_spec_generate(
    model: NemotronModel,
    prompt_ids: torch.Tensor,
    max_new_tokens: int = 128,
    block_length: int = 32,
    temperature: float = 0.0,
    mask_token_id: int | None = None,
    eos_token_id: int | None = None,
    max_thinking_tokens: int | None = None,
    end_think_token_id: int | None = None,
    threshold: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """Upstream's ``linear_spec_generate`` (no LoRA drafter): ``(prompt + reply, nfe)``.

    One row only, as upstream. The reply may run past ``max_new_tokens`` by the last round's
    accepted tokens (upstream does not trim it either).
    """
    if prompt_ids.shape[0] != 1:
        raise ValueError("linear speculative decoding requires batch_size == 1")
    mask_id = model.config.mask_token_id if mask_token_id is None else mask_token_id
    eos = _end_id(model, eos_token_id)
    device = prompt_ids.device
    prompt_len = prompt_ids.shape[1]
    last = torch.full((1, 1), prompt_len - 1, device=device)
    out = model(prompt_ids, attention_mask=_causal(None, prompt_len, device), logits_index=last)
    cache: KV = out.new_key_values
    nfe = 1
    next_token = _pick(out.logits[:, 0], temperature)
    if eos is not None and int(next_token) == eos:
        return torch.cat([prompt_ids, next_token], dim=1), nfe
    generated = [next_token]
    total = 1
    while total < max_new_tokens:
        cache_len = kv_length(cache)
        block = torch.full((1, block_length), mask_id, dtype=torch.long, device=device)
        block[0, 0] = int(next_token)
        while True:  # draft: bidirectional over cache + block
            is_mask = block == mask_id
            if not bool(is_mask.any()):
                break
            logits = model(block, past_key_values=cache).logits
            nfe += 1
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                draft = torch.multinomial(probs.view(-1, probs.shape[-1]), num_samples=1)
                draft = draft.view(1, block_length)
            else:
                draft = logits.argmax(dim=-1)
                probs = torch.softmax(logits, dim=-1)
            if threshold > 0:
                conf = torch.gather(probs, -1, draft.unsqueeze(-1)).squeeze(-1)
                conf = torch.where(is_mask, conf, float("-inf"))
                reveal = conf >= threshold
                if not bool(reveal.any()):
                    reveal = torch.zeros_like(is_mask)
                    reveal.view(-1)[conf.view(-1).argmax()] = True
                block[reveal] = draft[reveal]
            else:
                block[is_mask] = draft[is_mask]
                break
        out = model(
            block, attention_mask=_causal(cache, block_length, device), past_key_values=cache
        )
        nfe += 1
        logits = out.logits
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1).view(-1, logits.shape[-1])
            ar_tokens = torch.multinomial(probs, num_samples=1).view(1, block_length)
        else:
            ar_tokens = logits.argmax(dim=-1)
        accepted = 0
        for i in range(block_length - 1):
            if int(ar_tokens[0, i]) != int(block[0, i + 1]):
                break
            accepted += 1
        accepted += 1  # the verifier's own next token
        kept = ar_tokens[:, :accepted]
        generated.append(kept)
        total += accepted
        cache = kv_slice(kv_concat(cache, out.new_key_values), 0, cache_len + accepted)
        next_token = ar_tokens[:, accepted - 1 : accepted]
        if eos is not None:
            at = (kept[0] == eos).nonzero(as_tuple=True)[0]
            if len(at) > 0:
                first = int(at[0])
                generated[-1] = kept[:, : first + 1]
                total = total - accepted + first + 1
                break
        thinking_over = max_thinking_tokens is not None and total > max_thinking_tokens
        if (
            end_think_token_id is not None
            and thinking_over
            and not bool((torch.cat(generated, dim=1) == end_think_token_id).any())
        ):
            next_token = torch.tensor([[end_think_token_id]], device=device)
        if total >= max_new_tokens:
            break
    return torch.cat([prompt_ids, *generated], dim=1), nfe
