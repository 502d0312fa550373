"""Per-request decoding state, one class per pattern: the rows it adds to a forward and
what it makes of their logits."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from dlm_runtime.decoding import Pattern
from dlm_runtime.engine.batching import CacheWrite, Query, causal_ranks, prefix_ranks
from dlm_runtime.engine.draft_text import DraftDecoder
from dlm_runtime.engine.requests import (
    Draft,
    EngineStats,
    Event,
    Final,
    FinishReason,
    GenerationRequest,
    Usage,
)
from dlm_runtime.parallelism import Parallelism
from dlm_runtime.policies import (
    BlockState,
    DecodingPolicy,
    StepResult,
    TorchRandom,
    masked_rows_suffice,
)


@dataclass(frozen=True)
class ModelInfo:
    """What request states need to know about the model."""

    mask_id: int
    end_id: int | None
    fill_id: int | None
    vocab_size: int
    context: int | None
    device: torch.device
    default_pattern: Pattern  # what Pattern.DEFAULT_DIFFUSION means for this model
    # Chooses ADAPTIVE requests' block lengths from the load (None until calibrated).
    parallelism: Parallelism | None = None


class RowCache:
    """A request's handle on its cache row for the step being consumed."""

    def __init__(self, row: int, writes: list[CacheWrite]) -> None:
        self._row = row
        self._writes = writes

    def keep(self, start: int, count: int) -> None:
        """Append this step's K/V of query rows ``start:start+count`` to the cache."""
        if count > 0:
            self._writes.append(CacheWrite(self._row, start, count))

    def stage(self, start: int, count: int, at: int) -> None:
        """Stage this step's K/V of query rows ``start:start+count`` ``at`` slots after the
        cache for the row's next queries (not its causal prefix: the next :meth:`keep` goes
        over them)."""
        if count > 0:
            self._writes.append(CacheWrite(self._row, start, count, staged_at=at))

    def replace(self, start: int, count: int) -> None:
        """Make query rows ``start:start+count`` the whole cache."""
        self._writes.append(CacheWrite(self._row, start, count, reset=True))


@dataclass(frozen=True)
class DraftUpdate:
    """A :class:`Draft` before its text exists (the scheduler thread makes these)."""

    step: int
    token_ids: list[int]
    stable: int  # leading token_ids that never change again
    committed: list[int]
    revised: list[int]
    block: int


@dataclass(frozen=True)
class FinalUpdate:
    """A :class:`Final` before its text exists."""

    token_ids: list[int]
    finish_reason: FinishReason
    usage: Usage
    error: str | None = None


Update = DraftUpdate | FinalUpdate


@dataclass(eq=False)  # compared and hashed by identity: an id may be reused later
class Handle:
    """Where a request's events go; renders their text (scheduler thread only)."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event]
    submitted: float
    pattern: Pattern  # resolved: never DEFAULT_DIFFUSION
    decoder: DraftDecoder

    def render(self, update: Update) -> Event:
        """The public event for ``update`` (called in step order)."""
        rid = self.request.request_id
        if isinstance(update, FinalUpdate):
            ids = update.token_ids
            text = self.decoder.decode(ids, len(ids)).text
            return Final(rid, ids, text, update.finish_reason, update.usage, update.error)
        draft = self.decoder.decode(update.token_ids, update.stable)
        return Draft(
            rid,
            update.step,
            update.token_ids,
            draft.text,
            draft.spans,
            update.committed,
            update.revised,
            update.block,
        )


class CausalRow:
    """A request whose cache row holds the causal K/V of prompt + reply tokens fed so far.

    Such a row can start from a stored prefix (:class:`CausalPrefixCache`) and be stored in turn.
    """

    prompt: torch.Tensor
    reply: list[int]
    pending: torch.Tensor  # tokens not in the cache yet (prefilled with the next step)
    cached: int
    info: ModelInfo

    def _feed_pending(self, cache: RowCache) -> None:
        """The pending tokens (this step's first query rows) join the cache row."""
        n = int(self.pending.shape[0])
        cache.keep(0, n)
        self.cached += n
        self.pending = self.prompt[:0]

    def _causal_query(self) -> Query:
        """The pending tokens with causal ranks; logits of the last one (the next token's)."""
        n = int(self.pending.shape[0])
        ranks = causal_ranks(n, self.info.device)
        return Query(self.pending, self.cached, self.cached, ranks, logits_from=n - 1)

    def _block_query(self, block: BlockState) -> Query:
        """The pending tokens (causal) followed by ``block``, which attends to all of them."""
        n, device = int(self.pending.shape[0]), self.info.device
        tokens = torch.cat([self.pending, block.x]) if n else block.x
        ranks = prefix_ranks(n, block.block_len, device)
        return Query(tokens, self.cached, self.cached, ranks, logits_from=n)

    def start_after(self, reused: int) -> None:
        """The first ``reused`` prompt tokens are in the cache row already (a prefix hit)."""
        self.cached = reused
        self.pending = self.prompt[reused:]

    def cached_tokens(self) -> torch.Tensor:
        """The tokens whose K/V fill the row: the prompt, then the fed reply tokens."""
        if self.cached <= int(self.prompt.shape[0]):
            return self.prompt[: self.cached]
        done = torch.tensor(self.reply, dtype=torch.long, device=self.prompt.device)
        return torch.cat([self.prompt, done])[: self.cached]


class RequestState(ABC):
    """Decoding state of one request; the scheduler calls :meth:`query` then :meth:`consume`."""

    def __init__(self, handle: Handle, info: ModelInfo, stats: EngineStats) -> None:
        self.handle = handle
        self.request = handle.request
        self.policy = handle.request.decoding.policy
        self.info = info
        self.stats = stats
        self.prompt = torch.tensor(self.request.prompt_ids, dtype=torch.long, device=info.device)
        self.reply: list[int] = []  # final tokens (finished blocks / accepted tokens)
        self.generator = torch.Generator(device=info.device)
        if self.request.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(self.request.seed)
        self.steps = 0
        self.forward_passes = 0
        self.drafts = 0
        self.done = False

    @abstractmethod
    def query(self) -> Query:
        """The rows this request adds to the next forward."""

    @abstractmethod
    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        """Apply the forward's logits (``[T - logits_from, V]``: this request's rows from its
        query's ``logits_from`` on); return its events."""

    def consume_guided(
        self, logits: torch.Tensor, un_logits: torch.Tensor, cache: RowCache
    ) -> list[Update]:
        """:meth:`consume` with classifier-free guidance (``un_logits``: the guidance row's)."""
        raise NotImplementedError(f"{type(self).__name__} offers no classifier-free guidance")

    # --- shared helpers -----------------------------------------------------------------

    def _new_block(self, length: int, x: torch.Tensor | None = None) -> BlockState:
        """A block of ``length`` masks at the reply's end (or the given ``x``, whose masks alone
        the schedule counts)."""
        policy, info = self.policy, self.info
        plen = len(self.request.prompt_ids)
        return BlockState(
            policy,
            length,
            info.mask_id,
            end_id=info.end_id if policy.early_stop else None,
            fill_id=info.fill_id,
            offset=plen + len(self.reply),
            seq_len=plen + policy.max_new_tokens,
            x=x,
            device=info.device,
        )

    def _choose(self, logits: torch.Tensor) -> list[int]:
        """The policy's token chooser on rows ``[k, V]`` (autoregressive sampling)."""
        mask_id = self.info.mask_id
        if self.policy.forbid_mask_token and 0 <= mask_id < logits.shape[-1]:
            logits = logits.clone()
            logits[:, mask_id] = float("-inf")
        started = time.perf_counter()
        chosen = self.policy.chooser.choose(logits, TorchRandom(self.generator))
        self.stats.policy_seconds += time.perf_counter() - started
        tokens: list[int] = chosen.tolist()
        return tokens

    def _draft(
        self,
        token_ids: list[int],
        stable: int,
        committed: list[int],
        revised: list[int],
        block: int,
    ) -> DraftUpdate:
        self.drafts += 1
        return DraftUpdate(self.drafts, token_ids, stable, committed, revised, block)

    def final(self, reason: FinishReason, error: str | None = None) -> FinalUpdate:
        """Finish now with the reply so far."""
        self.done = True
        usage = Usage(
            steps=self.steps,
            forward_passes=self.forward_passes,
            tokens=len(self.reply),
            milliseconds=(time.perf_counter() - self.handle.submitted) * 1000.0,
        )
        return FinalUpdate(list(self.reply), reason, usage, error)

    def _step_block(
        self, block: BlockState, block_logits: torch.Tensor, index: int, masked_only: bool = False
    ) -> tuple[StepResult, DraftUpdate]:
        """One policy step on ``block`` and the Draft showing it after the finished reply
        (``masked_only``: the logits are the masked positions' only)."""
        started = time.perf_counter()
        result = block.step(block_logits, generator=self.generator, masked_only=masked_only)
        self.stats.policy_seconds += time.perf_counter() - started
        self.steps += 1
        start = len(self.reply)
        draft = self._draft(
            self.reply + block.x.tolist(),
            self._settled(),
            [start + j for j in result.committed],
            [start + j for j in result.revised],
            index,
        )
        return result, draft

    def _settled(self) -> int:
        """Leading reply tokens that never change again (a Draft's ``stable``)."""
        return len(self.reply)

    def _append_token(self, token: int, block: int) -> list[Update]:
        """One causally chosen token onto the reply: its Draft, and the Final if it ends it."""
        self.steps += 1
        self.reply.append(token)
        position = len(self.reply) - 1
        events: list[Update] = [
            self._draft(list(self.reply), len(self.reply), [position], [], block)
        ]
        if self.policy.early_stop and token == self.info.end_id:
            self.reply.pop()
            events.append(self.final("end"))
        elif len(self.reply) >= self.policy.max_new_tokens:
            events.append(self.final("length"))
        return events


class _BlockDiffusion(RequestState):
    """Diffusion over the policy's blocks; subclasses say how a step's rows are built."""

    def __init__(self, handle: Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.block_index = 0
        self.block = self._new_block(self.policy.block_lengths()[0])

    def _advance(self, block_logits: torch.Tensor, masked_only: bool = False) -> list[Update]:
        block = self.block
        result, draft = self._step_block(block, block_logits, self.block_index, masked_only)
        self._stepped(block)
        events: list[Update] = [draft]
        if not result.block_done:  # block.done, without recomputing it from block.x
            return events
        tokens = block.x.tolist()
        if result.reply_done and block.end_index is not None:
            self.reply.extend(tokens[: block.end_index])
            events.extend(self._finish("end", tokens[: block.end_index + 1]))
            return events
        self.reply.extend(tokens)
        self.block_index += 1
        room = self.policy.max_new_tokens - len(self.reply)
        if room <= 0:
            events.extend(self._finish("length", tokens))
            return events
        self._block_finished(block)
        self._next_block(room)
        return events

    def _next_block(self, room: int) -> None:
        """Start the next block (``room`` reply positions are left): the policy's blocks,
        the last one shorter (``DecodingPolicy.block_lengths``)."""
        self.block = self._new_block(min(self.policy.block_size, room))

    def _finish(self, reason: FinishReason, tokens: list[int]) -> list[Update]:
        """Hook: the last block is final, ``tokens`` its reply tokens (and the end token)."""
        return [self.final(reason)]

    def _stepped(self, block: BlockState) -> None:
        """Hook: ``block`` just took a step."""

    def _block_finished(self, block: BlockState) -> None:
        """Hook: ``block`` is final and another block follows."""


class PrefixCausalState(CausalRow, _BlockDiffusion):
    """Exact causal cache of prompt + finished blocks; the block attends bidirectionally."""

    def __init__(self, handle: Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.pending = self.prompt
        self.cached = 0

    def query(self) -> Query:
        return self._block_query(self.block)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        self._feed_pending(cache)
        self.forward_passes += 1
        return self._advance(logits[: self.block.block_len])

    def _block_finished(self, block: BlockState) -> None:
        self.pending = block.x.clone()


class BlockCacheState(PrefixCausalState):
    """APPROXIMATE: PREFIX_CAUSAL whose block steps after the first compute only what changed.

    A block's first step is PREFIX_CAUSAL's (pending rows and every position of the block).
    A later step's rows are the positions the previous step committed, now with their tokens,
    then the positions still masked; they attend to the cache, to the K/V staged for the
    block's earlier commits and to each other. The committed rows' K/V are staged after the
    step (``RowCache.stage``) and reused by every later step of the block; only the masked
    rows' logits are computed. The approximation is that a committed position's K/V stay as
    computed in the step after its commit (with its token, not the mask the committing step
    saw), although the positions masked then were masked differently from later steps: the
    delayed caching of dKV-Cache and d2Cache, here within the block only, since the prefix is
    cached exactly already. When the block ends its tokens are fed causally with the next
    block's first step, as in PREFIX_CAUSAL, and the staged K/V are dropped. A policy that
    reads committed positions' logits (revision, sampling) decodes as PREFIX_CAUSAL.
    """

    def __init__(self, handle: Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.reuse = masked_rows_suffice(self.policy)
        self.fresh = self.prompt[:0]  # block positions the last step committed
        self.staged = 0  # block positions whose K/V the cache row holds after ``cached``
        self.rows = 0  # block rows in the query being consumed (0: the full block)

    def query(self) -> Query:
        block = self.block
        if not self.reuse or block.step_index == 0:
            self.rows = 0
            return super().query()
        masked = torch.nonzero(block.masked).flatten()
        rows = torch.cat([self.fresh, masked])
        self.rows = int(rows.shape[0])
        return Query(
            block.x[rows],
            self.cached,
            self.cached + self.staged,
            None,  # the rows see each other, the cache and the staged K/V
            logits_from=int(self.fresh.shape[0]),
            positions=rows + self.cached,
        )

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        if not self.rows:
            self.staged = 0  # the last block's: its tokens are pending rows of this step
            return super().consume(logits, cache)
        fresh = int(self.fresh.shape[0])
        cache.stage(0, fresh, at=self.staged)
        self.staged += fresh
        self.forward_passes += 1
        return self._advance(logits[: self.rows - fresh], masked_only=True)

    def _stepped(self, block: BlockState) -> None:
        self.fresh = torch.nonzero(block.committed_at == block.step_index - 1).flatten()


class PrefixCausalNoCacheState(_BlockDiffusion):
    """The prefix-causal pattern recomputed from scratch at every step (no cache)."""

    def query(self) -> Query:
        done = torch.tensor(self.reply, dtype=torch.long, device=self.info.device)
        prefix = torch.cat([self.prompt, done]) if self.reply else self.prompt
        n = int(prefix.shape[0])
        tokens = torch.cat([prefix, self.block.x])
        ranks = prefix_ranks(n, self.block.block_len, self.info.device)
        return Query(tokens, 0, 0, ranks, logits_from=n)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        self.forward_passes += 1
        return self._advance(logits[: self.block.block_len])


class BidirectionalState(_BlockDiffusion):
    """No cache: prompt + every block (future ones masked) with full attention each step."""

    def __init__(self, handle: Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        masks = torch.full(
            (self.policy.max_new_tokens,), info.mask_id, dtype=torch.long, device=info.device
        )
        self.canvas = torch.cat([self.prompt, masks])

    @property
    def _offset(self) -> int:
        return int(self.prompt.shape[0]) + len(self.reply)

    def query(self) -> Query:
        guidance = None
        if self.policy.cfg_scale > 0:
            # LLaDA's generate(): the prompt's (non-mask) positions become masks.
            guidance = self.canvas.clone()
            guidance[: int(self.prompt.shape[0])] = self.info.mask_id
        return Query(self.canvas, 0, 0, None, logits_from=self._offset, guidance=guidance)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        self.forward_passes += 1
        return self._advance(logits[: self.block.block_len])

    def consume_guided(
        self, logits: torch.Tensor, un_logits: torch.Tensor, cache: RowCache
    ) -> list[Update]:
        """:meth:`consume` with guidance, combined as LLaDA's generate() does (logits dtype)."""
        scale = self.policy.cfg_scale
        return self.consume(un_logits + (scale + 1) * (logits - un_logits), cache)

    def _stepped(self, block: BlockState) -> None:
        self.canvas[self._offset : self._offset + block.block_len] = block.x


class PrefixCacheState(BidirectionalState):
    """APPROXIMATE (Fast-dLLM prefix cache): prefix K/V refreshed only at each block's start."""

    def __init__(self, handle: Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.refresh = True  # next step runs the whole sequence and re-caches the prefix

    def query(self) -> Query:
        offset = self._offset
        if self.refresh:
            return Query(self.canvas, 0, 0, None, logits_from=offset)
        return Query(self.canvas[offset:], offset, offset, None)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        if self.refresh:
            cache.replace(0, self._offset)
            self.refresh = False
        self.forward_passes += 1
        return self._advance(logits[: self.block.block_len])

    def _block_finished(self, block: BlockState) -> None:
        self.refresh = True


class AutoregressiveState(CausalRow, RequestState):
    """Causal decoding, one token per forward; the first forward prefills the prompt."""

    def __init__(self, handle: Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.pending = self.prompt
        self.cached = 0

    def query(self) -> Query:
        return self._causal_query()

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        self._feed_pending(cache)
        self.forward_passes += 1
        token = self._choose(logits[:1])[0]
        events = self._append_token(token, block=len(self.reply))
        if not self.done:
            self.pending = torch.tensor([token], dtype=torch.long, device=self.info.device)
        return events


class AdaptiveState(PrefixCausalState):
    """Prefix-causal diffusion whose every new block has the length the load calls for.

    :class:`~dlm_runtime.parallelism.Parallelism` picks it from the rows the engine runs:
    the policy's whole block while rows are few, shorter blocks as forwards grow costly,
    and at saturation a causal step (length 1): one token from the autoregressive logits of
    the last fed position, the AUTOREGRESSIVE pattern on the same weights. At temperature 0
    the reply depends on the block lengths chosen, so on the load, as fast diffusion's
    depends on its block size; a causal step is the autoregressive choice.
    """

    def __init__(self, handle: Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        if info.parallelism is None:
            raise ValueError("the engine has no parallelism model for the ADAPTIVE pattern")
        self.parallelism = info.parallelism
        # Chosen at the query that starts it, when the scheduler has counted this step's rows.
        self.causal = False
        self.room: int | None = self.policy.max_new_tokens

    def _next_block(self, room: int) -> None:
        self.room = room

    def _choose_block(self, room: int) -> None:
        length = self.parallelism.block_length(min(self.policy.block_size, room))
        self.causal = length == 1
        if not self.causal:
            self.block = self._new_block(length)
        self.room = None

    def query(self) -> Query:
        if self.room is not None:
            self._choose_block(self.room)
        return self._causal_query() if self.causal else super().query()

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        if not self.causal:
            return super().consume(logits, cache)
        self._feed_pending(cache)
        self.forward_passes += 1
        token = self._choose(logits[:1])[0]
        events = self._append_token(token, block=self.block_index)
        self.block_index += 1
        if not self.done:
            self.pending = torch.tensor([token], dtype=torch.long, device=self.info.device)
            self.room = self.policy.max_new_tokens - len(self.reply)
        return events

    def _block_finished(self, block: BlockState) -> None:
        super()._block_finished(block)
        self.parallelism.rates.observe(block.block_len, block.block_len, block.step_index)


class VerifiedState(PrefixCausalState):
    """Prefix-causal diffusion whose finished blocks the causal mode of the same weights checks.

    A finished block's tokens are fed with causal ranks in the next block's first forward (as
    in PREFIX_CAUSAL), which also returns their logits: each one's is the autoregressive
    prediction of the token after it, and the block's first token's is the last fed row of the
    forward that started the block. The block's tokens are kept left to right while each is
    the causal argmax or has causal probability at least the policy's ``verify_floor``. At the
    first that fails, only the kept ones join the cache, the failing one becomes the causal
    choice (the policy's chooser), and the rest are dropped with the new block's step (it saw
    them): a fresh block starts after the corrected token. The last block gets one causal
    forward of its own, unless each of its tokens was committed with probability at least the
    policy's ``verify_trust`` (below 1). At temperature 0, ``verify_floor`` 1 (argmax only)
    with ``verify_trust`` 1 is the autoregressive reply token for token, and floor 0
    (everything kept) the PREFIX_CAUSAL reply with its forwards.
    """

    def __init__(self, handle: Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.floor = float(self.policy.params.get("verify_floor", 0.0) or 0.0)
        self.trust = float(self.policy.params.get("verify_trust", 1.0))
        self.first_target: torch.Tensor | None = None  # causal logits at the block's start
        self.unverified: list[int] = []  # the finished block's tokens, from reply[checked]
        self.checked = 0  # leading reply tokens verified
        self.closing: FinishReason | None = None  # the last block awaits its verify forward
        self.rejections = 0

    def _settled(self) -> int:
        return self.checked if self.floor > 0 else len(self.reply)

    def query(self) -> Query:
        if self.floor <= 0:
            return super().query()
        n = int(self.pending.shape[0])
        if self.closing is not None:  # the last block's tokens but its last, causally
            ranks = causal_ranks(n, self.info.device)
            return Query(self.pending, self.cached, self.cached, ranks, logits_from=0)
        query = self._block_query(self.block)
        if n == 0:
            return query
        # The pending rows' logits too: all of a finished block's, else the last (the target
        # of the new block's first token).
        return dataclasses.replace(query, logits_from=0 if self.unverified else n - 1)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        if self.floor <= 0:
            return super().consume(logits, cache)
        self.forward_passes += 1
        n = int(self.pending.shape[0])
        if self.closing is not None:
            verdict = self._verify(logits[:n], cache)
            return verdict if verdict is not None else [self.final(self.closing)]
        if n:
            length = self.block.block_len
            head, logits = logits[:-length], logits[-length:]
            if self.unverified:
                verdict = self._verify(head[:-1], cache)
                if verdict is not None:
                    return verdict
            self.first_target = head[-1].clone()
        self._feed_pending(cache)
        return self._advance(logits)

    def _block_finished(self, block: BlockState) -> None:
        super()._block_finished(block)
        self.unverified = block.x.tolist()

    def _finish(self, reason: FinishReason, tokens: list[int]) -> list[Update]:
        if self.floor <= 0 or (len(tokens) > 1 and self._trusted(len(tokens))):
            return super()._finish(reason, tokens)
        self.unverified, self.closing = tokens, reason
        self.pending = torch.tensor(tokens[:-1], dtype=torch.long, device=self.info.device)
        if len(tokens) > 1:
            return []  # the next forward feeds them and verifies
        assert self.first_target is not None
        verdict = self._verify(None, None)
        return verdict if verdict is not None else [self.final(reason)]

    def _trusted(self, count: int) -> bool:
        """Whether the last block's first ``count`` tokens were all committed confidently
        enough (``verify_trust``) to skip the causal forward that would verify them."""
        if self.trust >= 1.0:
            return False
        return bool((self.block.commit_confidence[:count] >= self.trust).all())

    def _verify(self, rows: torch.Tensor | None, cache: RowCache | None) -> list[Update] | None:
        """Judge the unverified tokens by their causal logits (the block's first target, then
        ``rows``, those of this forward's first query rows); None when all are kept, else the
        events of correcting the first that fails."""
        assert self.first_target is not None
        started = time.perf_counter()
        tokens, start = self.unverified, self.checked
        targets = self.first_target[None]
        if len(tokens) > 1:
            assert rows is not None
            targets = torch.cat([targets, rows[: len(tokens) - 1]])
        judged = targets.float()
        mask_id = self.info.mask_id
        if self.policy.forbid_mask_token and 0 <= mask_id < judged.shape[-1]:
            judged = judged.clone()
            judged[:, mask_id] = float("-inf")
        ids = torch.tensor(tokens, dtype=torch.long, device=judged.device)
        probs = torch.softmax(judged, dim=-1).gather(1, ids[:, None])[:, 0]
        kept = (judged.argmax(dim=-1) == ids) | (probs >= self.floor)
        j = int(kept.long().cumprod(0).sum())
        self.stats.policy_seconds += time.perf_counter() - started
        self.unverified = []
        if j == len(tokens):
            self.checked = len(self.reply)
            return None
        self.rejections += 1
        if j:
            assert cache is not None
            cache.keep(0, j)  # causal K/V of the kept tokens
            self.cached += j
        del self.reply[start + j :]
        self.checked = start + j
        self.closing = None
        self.pending = self.prompt[:0]
        token = self._choose(targets[j : j + 1])[0]
        events = self._append_token(token, block=self.block_index)
        self.checked = len(self.reply)
        self.block_index += 1
        if not self.done:
            self.pending = torch.tensor([token], dtype=torch.long, device=self.info.device)
            self._next_block(self.policy.max_new_tokens - len(self.reply))
        return events


# An adaptive speculative row that had this many drafts in a row rejected outright rests
# (plain causal steps) for REST_STEPS, twice as long at each further rejection (up to 16x).
REJECTED_BEFORE_REST = 3
REST_STEPS = 4


class SpeculativeState(CausalRow, RequestState):
    """Self-speculation: each forward verifies the last draft causally and drafts the next.

    A forward's rows are the pending tokens (the prompt at first, then the last emitted
    token), the drafted tokens after them with causal ranks, and a block of masks ranked after
    all of those (the prefix-causal diffusion pattern). Row ``i``'s logits before the masks are
    the autoregressive prediction after pending + drafted tokens ``< i``: the targets. The
    drafted tokens are kept while they equal their targets, and the target after the last
    kept one follows, so every forward emits at least one token and every emitted token is a
    target drawn by the policy's chooser given the emitted prefix: the output follows the
    autoregressive sampler exactly (token for token at temperature 0). When the whole draft
    was kept, the masks stand right after it, so one diffusion step on them (argmax, kept up
    to the first guess below the policy's threshold) is the next draft; the first mask sits
    where the bonus target goes, so the draft is its followers. Otherwise the next forward
    drafts afresh (and still emits its first target). The cache row holds only causal K/V
    (the prompt and the emitted tokens but the last), so a request can start from a stored
    prompt prefix as an autoregressive one does.

    With the policy param ``adaptive`` (once the engine has a parallelism model) the number of
    masks follows the load: :meth:`~dlm_runtime.parallelism.Parallelism.draft_masks` weighs
    what the drafts have emitted per forward against this device's forward costs, so while
    rows are few every row drafts the policy's block and as the batch grows compute-bound it
    drafts fewer, down to no masks (a plain causal step). Only the drafts change, never the
    tokens emitted.
    """

    def __init__(self, handle: Handle, info: ModelInfo, stats: EngineStats) -> None:
        super().__init__(handle, info, stats)
        self.pending = self.prompt
        self.cached = 0
        self.draft: list[int] = []
        self.masks = 0  # masks in the query being consumed
        self.threshold = float(self.policy.params.get("threshold", 0.0) or 0.0)
        self.rounds = 0
        self.accepted = 0  # drafted tokens accepted, over all rounds
        # Adaptive only once the engine has measured its forwards; until then the whole block.
        adaptive = bool(self.policy.params.get("adaptive"))
        self.parallelism = info.parallelism if adaptive else None
        self.drafted_with: int | None = None  # masks of the forward that made self.draft
        self.offered = 0  # positions self.draft could have filled (0 after a rejection)
        # Adaptive rows judge their own drafts too: after REJECTED_BEFORE_REST drafts in a
        # row with nothing kept, the row takes causal steps for a while (doubling each time
        # it fails again), since the engine's shared draft rate speaks for the other rows.
        self.rejected = 0  # drafts in a row with nothing kept
        self.resting = 0  # causal steps left before this row drafts again

    def _draft_len(self) -> int:
        """Masks after the draft: the policy's block (or, adaptive, what the load calls for),
        never past what is left of the reply (the last pending token's position plus drafted
        tokens plus masks stays below the prompt + ``max_new_tokens``)."""
        left = self.policy.max_new_tokens - len(self.reply) - len(self.draft)
        longest = max(0, min(self.policy.block_size, left))
        if self.parallelism is None:
            return longest
        if self.resting:
            self.resting -= 1
            return 0
        return self.parallelism.draft_masks(longest)

    def query(self) -> Query:
        device, n = self.info.device, int(self.pending.shape[0])
        self.masks = self._draft_len()
        parts = [self.pending]
        if self.draft:
            parts.append(torch.tensor(self.draft, dtype=torch.long, device=device))
        if self.masks:
            parts.append(
                torch.full((self.masks,), self.info.mask_id, dtype=torch.long, device=device)
            )
        tokens = torch.cat(parts) if len(parts) > 1 else self.pending
        ranks = prefix_ranks(n + len(self.draft), self.masks, device)
        # Logits from the last pending row: the targets, then the masks' guesses.
        return Query(tokens, self.cached, self.cached, ranks, logits_from=n - 1)

    def consume(self, logits: torch.Tensor, cache: RowCache) -> list[Update]:
        self.forward_passes += 1
        self.steps += 1
        n, drafted = int(self.pending.shape[0]), self.draft
        k = len(drafted)
        targets = self._choose(logits[: k + 1])
        j = 0
        while j < k and drafted[j] == targets[j]:
            j += 1
        self.rounds += 1
        self.accepted += j
        if k and self.parallelism is not None:
            self.rejected = 0 if j else self.rejected + 1
            if self.rejected >= REJECTED_BEFORE_REST:
                self.resting = REST_STEPS << min(self.rejected - REJECTED_BEFORE_REST, 4)
        if self.parallelism is not None and self.drafted_with is not None:
            self.parallelism.draft_rates.observe(self.drafted_with, self.offered, k, j)
        self.drafted_with, self.offered = self.masks, 0
        cache.keep(0, n + j)  # causal K/V of the pending and the accepted drafted tokens
        self.cached += n + j
        new = targets[: j + 1]
        start = len(self.reply)
        self.reply.extend(new)
        events: list[Update] = [
            self._draft(
                list(self.reply), len(self.reply), list(range(start, len(self.reply))), [], start
            )
        ]
        end_id = self.info.end_id
        if self.policy.early_stop and end_id in new:
            del self.reply[start + new.index(end_id) :]
            events.append(self.final("end"))
            return events
        if len(self.reply) >= self.policy.max_new_tokens:
            del self.reply[self.policy.max_new_tokens :]
            events.append(self.final("length"))
            return events
        self.pending = torch.tensor([new[-1]], dtype=torch.long, device=self.info.device)
        self.draft = []
        if j == k and self.masks > 1:
            self.draft = self._next_draft(logits[k + 2 : k + 1 + self.masks])
        return events

    def _next_draft(self, guesses: torch.Tensor) -> list[int]:
        """The masks' argmax tokens up to the first one below the threshold (or the mask id),
        at most what is left of the reply after the bonus token."""
        started = time.perf_counter()
        left = self.policy.max_new_tokens - len(self.reply) - 1
        guesses = guesses[: max(0, left)]
        self.offered = int(guesses.shape[0])
        if guesses.shape[0] == 0:
            return []
        probs = torch.softmax(guesses.float(), dim=-1)
        best, tokens = probs.max(dim=-1)
        keep = (best >= self.threshold) & (tokens != self.info.mask_id)
        count = int(keep.long().cumprod(0).sum())
        self.stats.policy_seconds += time.perf_counter() - started
        draft: list[int] = tokens[:count].tolist()
        return draft


def needs_parallelism(pattern: Pattern, policy: DecodingPolicy) -> bool:
    """Whether a request decodes by the load, so the engine must first measure its forwards:
    ADAPTIVE, and SPECULATIVE with the policy param ``adaptive``."""
    if pattern is Pattern.SPECULATIVE:
        return bool(policy.params.get("adaptive"))
    return pattern is Pattern.ADAPTIVE


STATES: dict[Pattern, type[RequestState]] = {
    Pattern.PREFIX_CAUSAL: PrefixCausalState,
    Pattern.PREFIX_CAUSAL_NOCACHE: PrefixCausalNoCacheState,
    Pattern.BIDIRECTIONAL: BidirectionalState,
    Pattern.PREFIX_CACHE: PrefixCacheState,
    Pattern.BLOCK_CACHE: BlockCacheState,
    Pattern.AUTOREGRESSIVE: AutoregressiveState,
    Pattern.SPECULATIVE: SpeculativeState,
    Pattern.ADAPTIVE: AdaptiveState,
    Pattern.VERIFIED: VerifiedState,
}
