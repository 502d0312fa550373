"""Training a diffusion chat model: ``python -m dlm_runtime.train --config CONFIG.json``.

One pass trains both decoding modes of one checkpoint, as Nemotron-Labs-Diffusion does.
Each example's sequence (prompt + reply) appears twice under one attention mask:

* the **clean copy** attends causally and carries the next-token loss on the reply (the
  autoregressive mode, and the key/value cache that block diffusion decodes against);
* the **noised copy** holds only the reply, each token masked with probability t ~ U(0, 1);
  it attends bidirectionally within its block and to the clean copy before the block, and
  carries the masked-diffusion loss (cross-entropy on masked positions, weighted 1/t).

Prompt tokens are never masked. Block sizes are drawn per batch from ``block_sizes``. The
data is JSONL of ``{"messages": [...]}`` whose last message is the assistant reply to learn.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from dlm_runtime.loading import read_config, read_weights
from dlm_runtime.modeling import DLMConfig, DLMModel
from dlm_runtime.tokenizer import (
    SPECIAL_TOKENS,
    encode_chat,
    encode_text,
    extend_tokenizer,
    load_tokenizer,
    save_tokenizer,
    special_token_ids,
    train_tokenizer,
)


@dataclass
class TrainConfig:
    """Everything one training run needs; a JSON file with these keys (all optional)."""

    train_file: str = "data/corpus/train.jsonl"
    # Examples for the loss report (and keep_best): dev ones (corpus build --dev), never the
    # held-out set, which chooses nothing.
    eval_file: str = "data/corpus/dev.jsonl"
    out_dir: str = "data/train-run"
    # Existing tokenizer directory; empty trains one on train_file into out_dir/tokenizer.
    tokenizer_dir: str = ""
    # A trained model directory to continue from (fine-tuning): its weights, shape and
    # tokenizer, the tokenizer extended by the added words it lacks (their embedding rows
    # start at the mean of the others). The shape keys below are then ignored.
    init_from: str = ""
    vocab_size: int = 8192
    # JSON list of words that become single tokens (e.g. entity placeholders); optional.
    added_words_file: str = "data/corpus/added_words.json"
    # Model shape (a LLaMA-style transformer; see DLMConfig).
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    tie_word_embeddings: bool = True
    # Recorded in the exported config.json: whether the data's entities were placeholders
    # (the assistant's per-model slot setting; see assistant.entities.slots).
    entity_slots: bool = True
    max_len: int = 256  # prompt + reply tokens; longer examples are left out (and counted)
    # Optimisation.
    batch_size: int = 16
    lr: float = 1.5e-3
    min_lr: float = 1.5e-4
    warmup_steps: int = 200
    max_steps: int = 6000
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    block_sizes: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    ar_weight: float = 1.0
    diffusion_weight: float = 1.0
    # Next-token loss on the prompt's tokens too (user text, tool results), at this weight:
    # more signal per example about how users phrase things. 0 = replies only.
    prompt_ar_weight: float = 0.0
    # Weight of the certainty term (``certainty_loss``): entropy at masked positions that are
    # predicted right, so that more of a block clears the commit threshold per forward
    # (more tokens per forward in fast diffusion). 0 = off, the objective of runs 1-5.
    certainty_weight: float = 0.0
    # Share of the noised copy's unmasked reply tokens replaced by random tokens. Training to
    # restore them (and to keep the untouched ones) gives committed tokens a meaningful
    # probability, which self-revision uses to decide what to re-mask.
    corrupt_prob: float = 0.1
    seed: int = 1234
    device: str = "cpu"
    threads: int = 0  # 0 = torch's default
    eval_every: int = 250
    eval_batches: int = 8
    checkpoint_every: int = 100
    # Stop after this many seconds of training (checkpointed; run again to resume). 0 = off.
    time_budget_s: float = 0.0
    # Keep the weights with the lowest eval_file loss (ar + diffusion) in OUT_DIR/best and
    # export those at the end: the model that generalises best, not the last one.
    keep_best: bool = True
    # Also export a loadable fp16 model every this many steps to OUT_DIR/snapshots/step-N,
    # to choose among on dev dialogues (that loss is a poor guide to task accuracy).
    snapshot_every: int = 0
    # Training examples whose "domain" (written by the corpus builder) is a key here appear
    # that many times in the pool: more weight for a small domain without rebuilding the
    # corpus (the builder's draws, held-out ones included, stay as they are). {} = once each.
    domain_repeats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.domain_repeats.items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"domain_repeats must be whole numbers of at least 1, got {bad}")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(sorted(unknown))}")
        return cls(**raw)


@dataclass(frozen=True)
class Example:
    prompt: list[int]
    reply: list[int]  # ends with the end-of-reply token


def read_examples(
    path: str | Path, domain_repeats: Mapping[str, int] | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Each example's messages, repeated ``domain_repeats[domain]`` times (default once)."""
    repeats = domain_repeats or {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                for _ in range(repeats.get(record.get("domain", ""), 1)):
                    yield record["messages"]


def tokenize_examples(
    tokenizer: Any, conversations: Sequence[list[dict[str, Any]]], max_len: int
) -> tuple[list[Example], int]:
    """Split each conversation into prompt and reply ids; return examples and how many were
    left out for being longer than ``max_len``."""
    examples: list[Example] = []
    too_long = 0
    # A conversation gives one example per assistant turn, each repeating the turns before
    # it, and prompt and full chat share all but one message: encode each text once.
    memo: dict[str, list[int]] = {}

    def text_ids(text: str) -> list[int]:
        ids = memo.get(text)
        if ids is None:
            ids = memo[text] = encode_text(tokenizer, text)
        return ids

    for messages in tqdm(
        conversations, desc="tokenizing", unit="example", file=sys.stderr, leave=False
    ):
        prompt = encode_chat(
            tokenizer, messages[:-1], add_generation_prompt=True, text_ids=text_ids
        )
        full = encode_chat(tokenizer, messages, add_generation_prompt=False, text_ids=text_ids)
        if full[: len(prompt)] != prompt:
            raise ValueError("the chat encoding of a prompt is not a prefix of the full chat")
        if len(full) > max_len:
            too_long += 1
            continue
        examples.append(Example(prompt=prompt, reply=full[len(prompt) :]))
    return examples, too_long


# Random replacement tokens are drawn above the special tokens' ids, which come first.
SPECIAL_IDS_RESERVED = SPECIAL_TOKENS


@dataclass
class JointBatch:
    input_ids: torch.Tensor  # [B, L + R]: clean copy then noised reply copy
    position_ids: torch.Tensor  # [B, L + R]
    attention_mask: torch.Tensor  # [B, 1, L + R, L + R]
    ar_targets: torch.Tensor  # [B, L]: next-token target per clean position, -100 = none
    prompt_targets: torch.Tensor  # [B, L]: the same inside the prompt, -100 = none
    diffusion_targets: torch.Tensor  # [B, R]: target at masked noised positions, -100 = none
    diffusion_weights: torch.Tensor  # [B, R]: 1 / t at masked positions
    diffusion_masked: torch.Tensor  # [B, R]: True where the noised copy holds a mask
    reply_tokens: int  # reply tokens in the batch (normaliser of the diffusion loss)


def joint_batch(
    examples: Sequence[Example],
    block_size: int,
    mask_id: int,
    end_id: int,
    pad_id: int,
    generator: torch.Generator,
    corrupt_prob: float = 0.0,
    vocab_size: int = 0,
) -> JointBatch:
    """Build the two-copy training batch (pure: no model)."""
    batch = len(examples)
    # The noised reply is padded with end tokens to a whole number of blocks, so the model
    # learns to fill a block's positions after the reply ends with end tokens.
    reply_lens = [math.ceil(len(e.reply) / block_size) * block_size for e in examples]
    clean_len = max(len(e.prompt) + len(e.reply) for e in examples)
    noised_len = max(reply_lens)
    total = clean_len + noised_len
    input_ids = torch.full((batch, total), pad_id, dtype=torch.long)
    position_ids = torch.zeros((batch, total), dtype=torch.long)
    mask = torch.zeros((batch, total, total), dtype=torch.bool)
    ar_targets = torch.full((batch, clean_len), -100, dtype=torch.long)
    prompt_targets = torch.full((batch, clean_len), -100, dtype=torch.long)
    diffusion_targets = torch.full((batch, noised_len), -100, dtype=torch.long)
    diffusion_weights = torch.zeros((batch, noised_len))
    diffusion_masked = torch.zeros((batch, noised_len), dtype=torch.bool)
    causal = torch.ones(clean_len, clean_len, dtype=torch.bool).tril()
    for row, example in enumerate(examples):
        prompt_len, reply_len = len(example.prompt), len(example.reply)
        length = prompt_len + reply_len
        clean = torch.tensor(example.prompt + example.reply)
        input_ids[row, :length] = clean
        position_ids[row, :clean_len] = torch.arange(clean_len)
        mask[row, :length, :length] = causal[:length, :length]
        # Next-token targets for the reply (the prompt is given, never predicted).
        ar_targets[row, prompt_len - 1 : length - 1] = clean[prompt_len:]
        prompt_targets[row, : prompt_len - 1] = clean[1:prompt_len]

        padded = reply_lens[row]
        reply = torch.full((padded,), end_id, dtype=torch.long)
        reply[:reply_len] = torch.tensor(example.reply)
        t = float(torch.rand((), generator=generator)) * (1 - 1e-3) + 1e-3
        masked = torch.rand(padded, generator=generator) < t
        if not masked.any():
            masked[int(torch.randint(padded, (), generator=generator))] = True
        noised = torch.where(masked, torch.full_like(reply, mask_id), reply)
        weights = masked.float() / t
        if corrupt_prob > 0:
            corrupt = ~masked & (torch.rand(padded, generator=generator) < corrupt_prob)
            random_tokens = torch.randint(
                len(SPECIAL_IDS_RESERVED), vocab_size, (padded,), generator=generator
            )
            noised = torch.where(corrupt, random_tokens, noised)
            # Visible tokens, corrupted or not, are predicted too (at unit weight).
            weights = torch.where(masked, weights, torch.ones_like(weights))
        start = clean_len
        input_ids[row, start : start + padded] = noised
        position_ids[row, start : start + padded] = torch.arange(prompt_len, prompt_len + padded)
        in_loss = masked | torch.tensor(corrupt_prob > 0)
        diffusion_targets[row, :padded] = torch.where(in_loss, reply, torch.full_like(reply, -100))
        diffusion_weights[row, :padded] = torch.where(in_loss, weights, torch.zeros_like(weights))
        diffusion_masked[row, :padded] = masked
        for block_start in range(0, padded, block_size):
            q = slice(start + block_start, start + block_start + block_size)
            # The clean prompt and the clean reply before this block...
            mask[row, q, : prompt_len + block_start] = True
            # ...and the whole noised block, both directions.
            mask[row, q, q] = True
    # Padding rows attend to themselves so that attention stays finite.
    idle = ~mask.any(dim=-1)
    mask |= torch.diag_embed(idle)
    return JointBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=mask.unsqueeze(1),
        ar_targets=ar_targets,
        prompt_targets=prompt_targets,
        diffusion_targets=diffusion_targets,
        diffusion_weights=diffusion_weights,
        diffusion_masked=diffusion_masked,
        reply_tokens=sum(reply_lens),
    )


def joint_loss(
    model: DLMModel,
    batch: JointBatch,
    ar_weight: float = 1.0,
    diffusion_weight: float = 1.0,
    prompt_ar_weight: float = 0.0,
    certainty_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    out = model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        attention_mask=batch.attention_mask,
    )
    clean_len = batch.ar_targets.shape[1]
    logits = out.logits.float()
    ar = F.cross_entropy(
        logits[:, :clean_len].reshape(-1, logits.shape[-1]),
        batch.ar_targets.reshape(-1),
        ignore_index=-100,
    )
    per_token = F.cross_entropy(
        logits[:, clean_len:].reshape(-1, logits.shape[-1]),
        batch.diffusion_targets.reshape(-1),
        ignore_index=-100,
        reduction="none",
    )
    diffusion = (per_token * batch.diffusion_weights.reshape(-1)).sum() / batch.reply_tokens
    loss = ar_weight * ar + diffusion_weight * diffusion
    parts = {"ar": ar.item(), "diffusion": diffusion.item()}
    if prompt_ar_weight:
        prompt = F.cross_entropy(
            logits[:, :clean_len].reshape(-1, logits.shape[-1]),
            batch.prompt_targets.reshape(-1),
            ignore_index=-100,
        )
        loss = loss + prompt_ar_weight * prompt
        parts["prompt"] = prompt.item()
    if certainty_weight:
        certainty = certainty_loss(logits[:, clean_len:], batch)
        loss = loss + certainty_weight * certainty
        parts["certainty"] = certainty.item()
    return loss, parts


def certainty_loss(noised_logits: torch.Tensor, batch: JointBatch) -> torch.Tensor:
    """Mean entropy of the prediction at masked positions the model already gets right.

    Threshold decoding commits every position whose confidence clears the threshold, so a
    block finishes in fewer forwards when right guesses are confident ones. Lowering the
    entropy only where the argmax is the target (dParallel's certainty forcing) sharpens
    those without pushing wrong guesses towards confidence; the cross-entropy keeps moving
    the wrong ones.
    """
    targets = batch.diffusion_targets
    log_probs = noised_logits.log_softmax(dim=-1)
    right = batch.diffusion_masked & (targets >= 0) & (log_probs.argmax(dim=-1) == targets)
    if not right.any():
        return noised_logits.sum() * 0.0
    chosen = log_probs[right]
    return -(chosen.exp() * chosen).sum(dim=-1).mean()


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.out = Path(config.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.rng = random.Random(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        train_conversations = list(read_examples(config.train_file, config.domain_repeats))
        self.tokenizer = self._tokenizer(train_conversations)
        special = special_token_ids(self.tokenizer)
        self.mask_id, self.end_id, self.pad_id = special.mask, special.end, special.pad
        self.train, dropped = tokenize_examples(self.tokenizer, train_conversations, config.max_len)
        eval_conversations = list(read_examples(config.eval_file))
        self.eval, _ = tokenize_examples(self.tokenizer, eval_conversations, config.max_len)
        for pool in (self.train, self.eval):
            pool.sort(key=lambda e: (len(e.prompt) + len(e.reply), len(e.reply)))
        if not self.train:
            raise ValueError(f"no training examples fit in max_len={config.max_len}")
        self.log(
            f"{len(self.train)} training examples ({dropped} longer than "
            f"{config.max_len} left out), {len(self.eval)} for the loss report"
        )
        self.model = DLMModel(self._model_config()).to(config.device)
        if config.init_from:
            self._load_initial_weights()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.lr,
            betas=(0.9, 0.95),
            weight_decay=config.weight_decay,
        )
        self.step = 0
        self.seconds = 0.0
        self.best_loss = math.inf
        self.best_step = 0
        self._resume()

    @staticmethod
    def log(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    def _added_words(self) -> list[str]:
        words_file = Path(self.config.added_words_file)
        return json.loads(words_file.read_text()) if words_file.is_file() else []

    def _tokenizer(self, conversations: list[list[dict[str, Any]]]) -> Any:
        if self.config.tokenizer_dir:
            return load_tokenizer(self.config.tokenizer_dir)
        directory = self.out / "tokenizer"
        if (directory / "tokenizer.json").is_file():
            return load_tokenizer(directory)
        if self.config.init_from:
            tokenizer = extend_tokenizer(load_tokenizer(self.config.init_from), self._added_words())
            save_tokenizer(tokenizer, directory)
            return tokenizer
        texts = (
            message.get("content") or json.dumps(message.get("tool_calls", ""))
            for messages in conversations
            for message in messages
        )
        tokenizer = train_tokenizer(
            texts, vocab_size=self.config.vocab_size, added_words=self._added_words()
        )
        save_tokenizer(tokenizer, directory)
        return tokenizer

    def _model_config(self) -> DLMConfig:
        c = self.config
        special = special_token_ids(self.tokenizer)
        if c.init_from:
            config = DLMConfig.from_dict(read_config(c.init_from))
            config.vocab_size = len(self.tokenizer)
            config.entity_slots = c.entity_slots
            return config
        return DLMConfig(
            vocab_size=len(self.tokenizer),
            hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads,
            max_position_embeddings=max(512, c.max_len + max(c.block_sizes)),
            tie_word_embeddings=c.tie_word_embeddings,
            mask_token_id=special.mask,
            eos_token_id=special.end,
            pad_token_id=special.pad,
            entity_slots=c.entity_slots,
        )

    def _load_initial_weights(self) -> None:
        """Start from ``init_from``'s weights, embedding rows added for new tokens."""
        weights = read_weights(self.config.init_from)
        own = self.model.state_dict()
        for name, tensor in weights.items():
            tensor = tensor.float()
            rows = own[name].shape[0] if name in own and own[name].dim() else 0
            if tensor.dim() == 2 and rows > tensor.shape[0]:
                extra = tensor.mean(dim=0, keepdim=True).expand(rows - tensor.shape[0], -1)
                tensor = torch.cat([tensor, extra])
            weights[name] = tensor
        self.model.load_state_dict(weights, strict=not self.model.config.tie_word_embeddings)
        self.log(f"initialised from {self.config.init_from}")

    def save_snapshot(self) -> None:
        self.export(self.out / "snapshots" / f"step-{self.step}")

    # Checkpoints --------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoint"

    @property
    def best_dir(self) -> Path:
        return self.out / "best"

    def _save_weights_atomically(self, directory: Path, extra: Callable[[Path], None]) -> None:
        """Write the current weights, and what ``extra`` adds, as ``directory`` in one rename
        (an interrupted save leaves the previous one intact)."""
        tmp = directory.with_name(directory.name + ".tmp")
        tmp.mkdir(exist_ok=True)
        save_file(
            {k: v.detach().contiguous() for k, v in self.model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        extra(tmp)
        if directory.exists():
            for child in directory.iterdir():
                child.unlink()
            directory.rmdir()
        tmp.rename(directory)

    def save_best(self) -> None:
        """Write the current weights as the best ones (atomically, like checkpoints)."""
        record = {"step": self.best_step, "held_out_loss": self.best_loss}
        self._save_weights_atomically(
            self.best_dir, lambda tmp: (tmp / "best.json").write_text(json.dumps(record))
        )

    def note_held_out(self, loss: float) -> bool:
        """Record the eval_file loss; keep the weights when it is the lowest so far."""
        if not self.config.keep_best or loss >= self.best_loss:
            return False
        self.best_loss, self.best_step = loss, self.step
        self.save_best()
        return True

    def save_checkpoint(self) -> None:
        def write_state(tmp: Path) -> None:
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "step": self.step,
                    "seconds": self.seconds,
                    "rng": self.rng.getstate(),
                    "generator": self.generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "config": asdict(self.config),
                    "best_loss": self.best_loss,
                    "best_step": self.best_step,
                },
                tmp / "state.pt",
            )

        self._save_weights_atomically(self.checkpoint_dir, write_state)

    def _resume(self) -> None:
        if not (self.checkpoint_dir / "state.pt").is_file():
            return
        self.model.load_state_dict(load_file(str(self.checkpoint_dir / "model.safetensors")))
        state = torch.load(self.checkpoint_dir / "state.pt", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.seconds = state["step"], state["seconds"]
        self.rng.setstate(state["rng"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.best_loss = state.get("best_loss", math.inf)
        self.best_step = state.get("best_step", 0)
        self.log(f"resumed at step {self.step} ({self.seconds / 60:.1f} min trained)")

    def export(
        self, directory: Path, dtype: torch.dtype = torch.float16, best: bool = False
    ) -> None:
        """Write a loadable checkpoint: config.json, model.safetensors, tokenizer files.

        ``best``: the weights with the lowest eval_file loss, when they were kept.
        """
        from dlm_runtime.loading import save_model

        model = DLMModel(self.model.config)
        weights = self.best_dir / "model.safetensors"
        if best and weights.is_file():
            model.load_state_dict(load_file(str(weights)))
        else:
            model.load_state_dict(self.model.state_dict())
        save_model(model.to(dtype), directory)
        save_tokenizer(self.tokenizer, directory)

    # The loop ---------------------------------------------------------------------------

    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        progress = min(1.0, (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps))
        return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * progress))

    def _batch(self, pool: Sequence[Example], rng: random.Random) -> JointBatch:
        # Pool is sorted by length: drawing a batch from a window of neighbours keeps
        # padding (and wasted compute) small while every example stays reachable.
        size = min(self.config.batch_size, len(pool))
        window = min(len(pool), size * 4)
        start = rng.randrange(len(pool) - window + 1)
        examples = rng.sample(pool[start : start + window], size)
        block = rng.choice(self.config.block_sizes)
        batch = joint_batch(
            examples,
            block,
            self.mask_id,
            self.end_id,
            self.pad_id,
            self.generator,
            self.config.corrupt_prob,
            len(self.tokenizer),
        )
        device = self.config.device
        return JointBatch(
            **{
                k: v.to(device) if isinstance(v, torch.Tensor) else v
                for k, v in vars(batch).items()
            }
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        rng = random.Random(0)  # the same eval batches every time
        totals = {"ar": 0.0, "diffusion": 0.0}
        for _ in range(self.config.eval_batches):
            _, parts = joint_loss(self.model, self._batch(self.eval or self.train, rng))
            for key in totals:
                totals[key] += parts[key] / self.config.eval_batches
        self.model.train()
        return totals

    def run(self) -> None:
        c = self.config
        self.model.train()
        bar = tqdm(
            total=c.max_steps,
            initial=self.step,
            desc="training",
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        tokens_seen, window_start = 0, time.monotonic()
        session_start = time.monotonic()
        while self.step < c.max_steps:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(self.step)
            started = time.monotonic()
            batch = self._batch(self.train, self.rng)
            loss, parts = joint_loss(
                self.model,
                batch,
                c.ar_weight,
                c.diffusion_weight,
                c.prompt_ar_weight,
                c.certainty_weight,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.optimizer.step()
            self.step += 1
            self.seconds += time.monotonic() - started
            tokens_seen += int(batch.input_ids.numel())
            rate = tokens_seen / max(1e-6, time.monotonic() - window_start)
            bar.update(1)
            bar.set_postfix(
                {name: f"{value:.3f}" for name, value in parts.items()} | {"tok_s": f"{rate:.0f}"}
            )
            if self.step % c.eval_every == 0 or self.step == c.max_steps:
                held = self.evaluate()
                improved = self.note_held_out(held["ar"] + held["diffusion"])
                self.log(
                    f"step {self.step}: eval ar {held['ar']:.3f} "
                    f"diffusion {held['diffusion']:.3f}" + (" (best so far)" if improved else "")
                )
            if self.step % c.checkpoint_every == 0 or self.step == c.max_steps:
                self.save_checkpoint()
            if c.snapshot_every and self.step % c.snapshot_every == 0:
                self.save_snapshot()
            if c.time_budget_s and time.monotonic() - session_start > c.time_budget_s:
                self.save_checkpoint()
                self.log(f"time budget reached at step {self.step}; run again to resume")
                break
        bar.close()
        self.export(self.out / "model", best=self.config.keep_best)
        self.log(f"exported {self.out / 'model'}: {self.exported_what()}")

    def exported_what(self) -> str:
        if self.config.keep_best and (self.best_dir / "model.safetensors").is_file():
            return (
                f"best eval loss {self.best_loss:.3f} at step {self.best_step} "
                f"(trained to step {self.step})"
            )
        return f"step {self.step}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dlm_runtime.train",
        description="Train a diffusion chat model (joint autoregressive + masked-diffusion "
        "objective). Resumes from OUT_DIR/checkpoint when one exists.",
    )
    parser.add_argument("--config", required=True, help="JSON file with TrainConfig keys")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    parser.add_argument("--time-budget", type=float, help="override time_budget_s (seconds)")
    parser.add_argument(
        "--export-only",
        metavar="DIR",
        help="write the checkpoint as a loadable model to DIR and exit (no training): the "
        "best eval-loss weights when keep_best, else the latest",
    )
    args = parser.parse_args(argv)
    try:
        config = TrainConfig.load(args.config)
    except (OSError, ValueError, TypeError) as exc:
        parser.error(f"cannot read config {args.config}: {exc}")
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    if args.time_budget is not None:
        config.time_budget_s = args.time_budget
    trainer = Trainer(config)
    if args.export_only:
        trainer.export(Path(args.export_only), best=config.keep_best)
        trainer.log(f"exported {trainer.exported_what()} to {args.export_only}")
        return 0
    trainer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
