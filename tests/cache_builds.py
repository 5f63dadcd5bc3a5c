"""A probe for the context-cache tests: how many context tokens each cache build runs through the DiT blocks."""

from __future__ import annotations

from tinyhistory.assemble import HistoryDiT


def record_cache_builds(model: HistoryDiT) -> list[int]:
    """Wrap ``model.backbone.build_context_cache``; the returned list grows by each build's context length."""
    sizes: list[int] = []
    build = model.backbone.build_context_cache

    def recorded(context, *args, **kwargs):
        sizes.append(context.num_tokens)
        return build(context, *args, **kwargs)

    model.backbone.build_context_cache = recorded
    return sizes
