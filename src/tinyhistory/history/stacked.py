"""The stacked tier layout (``history.tier_layout = "stacked"``, issue 24): tiers whose cache never recomputes.

Why: under the block-causal cache the ``"recompute"`` layout (history/tiers.py) shows the context each tier's span
and nothing else, so a block's keys/values depend on which tier every older block is in; when a chunk moves to a
coarser tier, every newer block's keys/values change and are recomputed, and a new block attends to every cached
key, so appending a second costs more as the history grows.

The stacked layout separates what the context attends to from what the targets see:

* **the context holds every rate's tokens of every temporal block** (the session encodes every rate anyway, and a
  block needs its coarse tokens later); a context token attends to the tokens of all rates in its own block and the
  ``window − 1`` blocks before it (``history.context_window``), never to a later block, whatever the tiers;
* **the targets see each block at its tier's rate only** (``ContextTokens.visible``): the same spans, tokens and
  positions as the recompute layout's context, oldest tier first.

So a block's keys/values never change once computed; a move changes only which of them the targets read (nothing is
recomputed), and an append attends to at most one window of keys, so its cost does not grow with the history. The
price is in what the context sees: a block reads only the last ``window`` of history (the recompute layout lets it
read every older block at its tier's rate) and the coarse tokens read fine ones of their window. Training (stage I and
II) sees the same masks: :meth:`~tinyhistory.assemble.HistoryDiT.encode_history` gives the stacked context with its
visibility, and the backbone's attention processor applies both masks (backbones/wan.py).

:class:`StackedTierCache` is the session's cache: one :class:`~tinyhistory.backbones.wan.ContextCache` per rate over
a contiguous run of blocks, grown block by block and cut at the front where no target and no future block reads a
rate any more, so it holds what the targets see plus one window.
"""

from __future__ import annotations

from dataclasses import replace

from tinyhistory.backbones.base import ContextTokens
from tinyhistory.history.tiers import TierPlan


def stack_tiers(plan: TierPlan, contexts: list[ContextTokens], frames: int) -> ContextTokens:
    """The stacked context of every rate's tokens ``contexts`` (in the order of ``plan.rates``, each in block order
    from frame 0 over ``frames`` frames, whole blocks): coarsest rate first, with ``visible`` set on the tokens of
    each rate's tier span (what the targets see: the recompute layout's context, :func:`~.tiers.select_tiers`).
    Temporal blocks are the caller's (``HistoryDiT.with_blocks``)."""
    blocks = frames // plan.block
    parts = []
    for context, (start, end) in reversed(list(zip(contexts, plan.spans(frames), strict=True))):
        per_block = context.num_tokens // blocks
        visible = context.tokens.new_zeros(context.tokens.shape[:2], dtype=bool)  # (B, K_rate)
        visible[:, start // plan.block * per_block : end // plan.block * per_block] = True
        parts.append(replace(context, visible=visible))
    return ContextTokens.concat(parts)


class StackedTierCache:
    """The stacked layout's block-causal keys/values, one cache per rate, each over blocks ``first[i] … end − 1``.

    Counted in temporal blocks of ``plan.block`` latent frames; Python integers only (the cost model runs it on the
    meta device, where tensors hold no values)."""

    def __init__(self, plan: TierPlan, start_block: int = 0):
        if not plan.stacked:
            raise ValueError("a StackedTierCache needs the stacked tier layout (history.tier_layout)")
        self.plan = plan
        self.start = start_block  # the block the given tokens start at (0 in a session: the whole history)
        self.end = start_block  # blocks start … end − 1 have been appended
        n = len(plan.rates)
        self.first = [start_block] * n  # per rate: the first block still kept
        self.per_block = [0] * n  # per rate: tokens per block (known at the first append)
        self.kv: list = [None] * n  # per rate: ContextCache of blocks first[i] … end − 1

    def grow(self, model, tokens: list[ContextTokens], frames: int) -> None:
        """Append the blocks of ``tokens`` not cached yet and cut what no one reads any more.

        ``tokens``: every rate's tokens (order of ``plan.rates``) of blocks ``start`` … through ``frames`` latent
        frames of history (a session: every encoder's whole context). One pass per window of blocks at most, so
        rebuilding a resumed session's cache never attends more than two windows at once."""
        total = frames // self.plan.block
        if total <= self.end:
            return
        if not any(self.per_block):
            self.per_block = [t.num_tokens // (total - self.start) for t in tokens]
        while self.end < total:
            self._append(model, tokens, min(total, self.end + self.plan.window_blocks))
            self._prune(frames)

    def _append(self, model, tokens: list[ContextTokens], stop: int) -> None:
        """Blocks ``end … stop − 1`` of every rate through the DiT, attending to one window of cached blocks."""
        new = [
            t.narrow((self.end - self.start) * n, (stop - self.end) * n)
            for t, n in zip(tokens, self.per_block, strict=True)
        ]
        added = model.with_blocks(ContextTokens.concat(new))  # (1, Σ new tokens, D), rate after rate
        prior = self.window(self.end - self.plan.window_blocks + 1)
        built = model.build_context_cache(added, None, prior)  # prior's tokens, then the new ones
        recorded = built.narrow(prior.num_tokens if prior is not None else 0)
        offset = 0
        for i, part in enumerate(new):
            kv = recorded.narrow(offset, part.num_tokens)
            offset += part.num_tokens
            self.kv[i] = kv if self.kv[i] is None else self.kv[i].extended(kv)
        self.end = stop

    def _prune(self, frames: int) -> None:
        """Cut each rate's blocks that the targets will never see again (they moved to a coarser tier; tiers only
        move forward) and that no future block attends to (before the next block's window)."""
        next_window = self.end - self.plan.window_blocks + 1
        for i, (start, _) in enumerate(self.plan.spans(frames)):
            keep = max(self.first[i], min(start // self.plan.block, next_window))
            if keep > self.first[i] and self.kv[i] is not None:
                self.kv[i] = self.kv[i].narrow((keep - self.first[i]) * self.per_block[i])
                self.first[i] = keep

    def window(self, first_block: int):
        """Every rate's cached keys/values from block ``first_block`` on (what a new block may attend to), or None."""
        parts = []
        for kv, first, n in zip(self.kv, self.first, self.per_block, strict=True):
            if kv is not None:
                parts.append(kv.narrow(max(0, first_block - first) * n))
        return _concat(parts)

    def view(self, frames: int):
        """What the targets attend to after ``frames`` latent frames: each rate's cache over its tier's span, oldest
        (coarsest) tier first — the keys/values of the tokens ``stack_tiers`` marks visible, in the same order."""
        parts = []
        spans = list(zip(self.kv, self.first, self.per_block, self.plan.spans(frames), strict=True))
        for kv, first, n, (start, end) in reversed(spans):
            a, b = start // self.plan.block, end // self.plan.block
            if b > a:
                if a < first or b > self.end:
                    raise RuntimeError(f"blocks {a}-{b} of a rate are not in its cache ({first}-{self.end})")
                parts.append(kv.narrow((a - first) * n, (b - a) * n))
        return _concat(parts)

    @property
    def num_tokens(self) -> int:
        """Tokens kept, all rates (bounded by what the targets see plus one window of every rate)."""
        return sum(kv.num_tokens for kv in self.kv if kv is not None)


def _concat(caches: list):
    """The caches' tokens one after the other in every DiT block (empty ones skipped), or None if all are empty."""
    caches = [c for c in caches if c is not None and c.num_tokens]
    if not caches:
        return None
    out = caches[0]
    for cache in caches[1:]:
        out = out.extended(cache)
    return out
