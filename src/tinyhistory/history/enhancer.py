"""The cross-attention enhancer (``history.cross_attention``, SPEC §3.4): an IP-Adapter-like extra cross-attention
from the DiT's tokens to the history encoder's features, one per DiT block.

It sits beside the history producers because it reads what they make (the encoder's last-stage features); the DiT
calls it after each of its blocks through the backbone's ``after_block`` hook
(:class:`~tinyhistory.assemble.HistoryDiT`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinyhistory.backbones.base import Backbone
from tinyhistory.config import HistoryConfig


class CrossAttentionEnhancer(nn.Module):
    """IP-Adapter-like extra cross-attention from DiT tokens to encoder features (SPEC §3.4), one per DiT block.

    ``tokens + out(attention(norm(tokens), features))`` with ``out`` zero-initialised, so a fresh enhancer leaves the
    DiT exactly as it was.
    """

    def __init__(self, dim: int, feature_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.feature_norm = nn.LayerNorm(feature_dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(feature_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """tokens ``(B, S, D)``, features ``(B, M, F)`` → ``(B, S, D)``."""
        b, s, d = tokens.shape
        q = self.q(self.norm(tokens)).reshape(b, s, self.heads, d // self.heads).transpose(1, 2)
        k, v = self.kv(self.feature_norm(features)).reshape(b, -1, 2, self.heads, d // self.heads).unbind(2)
        attended = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2))
        return tokens + self.out(attended.transpose(1, 2).reshape(b, s, d))


def build_enhancers(h: HistoryConfig, backbone: Backbone) -> nn.ModuleList:
    """One zero-initialised enhancer per DiT block with ``history.cross_attention``, attending to the encoder's
    last-stage features (``history.channels[-1]`` wide); an empty list without it."""
    if not h.cross_attention:
        return nn.ModuleList()
    feature_dim = h.channels[-1]
    heads = backbone.num_heads
    blocks = len(backbone.blocks)
    return nn.ModuleList(CrossAttentionEnhancer(backbone.hidden_dim, feature_dim, heads) for _ in range(blocks))
