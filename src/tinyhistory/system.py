"""Assemble a run's modules from its config: codec, DiT adapter and history producers.

``HistoryDiT`` is the trainable whole: the backbone adapter plus zero or more history producers (several rates mean
several encoders whose tokens are concatenated). The history producers call the backbone's own patch embedding for
the LR branch, so no weight lives twice.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from torch import nn

from tinyhistory.backbones import ContextTokens, WanBackbone
from tinyhistory.codecs import PixelUnshuffleCodec, WanVAECodec
from tinyhistory.config import RunConfig
from tinyhistory.history import EncoderConfig, HistoryEncoder, LargePatchifier


def build_codec(cfg: RunConfig):
    c = cfg.codec
    if c.kind == "wan":
        path = Path(c.path)
        subfolder = "vae" if (path / "vae").is_dir() else None
        return WanVAECodec.from_pretrained(path, subfolder=subfolder, tiling=c.tiling, slicing=c.slicing)
    return PixelUnshuffleCodec(factor=c.factor)


def build_transformer(cfg: RunConfig) -> WanTransformer3DModel:
    b = cfg.backbone
    return WanTransformer3DModel(
        patch_size=tuple(b.patch_size),
        num_attention_heads=b.num_attention_heads,
        attention_head_dim=b.attention_head_dim,
        in_channels=b.in_channels,
        out_channels=b.in_channels,
        text_dim=b.text_dim,
        ffn_dim=b.ffn_dim,
        num_layers=b.num_layers,
        rope_max_seq_len=1024,
    )


def build_producers(cfg: RunConfig, backbone: WanBackbone) -> nn.ModuleList:
    h = cfg.history
    if h.method == "no_history":
        return nn.ModuleList()
    producers = []
    for rate in h.rates:
        if h.method == "large_patchifier":
            producers.append(LargePatchifier(rate, backbone.transformer.patch_embedding))
        else:
            enc_cfg = EncoderConfig(
                rate=rate,
                variant=h.method,
                channels=tuple(h.channels),
                attention_blocks=h.attention_blocks,
                attention_heads=h.attention_heads,
            )
            producers.append(
                HistoryEncoder(enc_cfg, cfg.backbone.in_channels, backbone.hidden_dim, backbone.patch_size[1])
            )
    return nn.ModuleList(producers)


class HistoryDiT(nn.Module):
    """Backbone + history producers: ``velocity = model(x_t, t, text, history, frame_positions)``."""

    def __init__(self, backbone: WanBackbone, producers: nn.ModuleList):
        super().__init__()
        self.backbone = backbone
        self.producers = producers

    @classmethod
    def from_config(cls, cfg: RunConfig, transformer: WanTransformer3DModel | None = None) -> HistoryDiT:
        backbone = WanBackbone(transformer if transformer is not None else build_transformer(cfg))
        return cls(backbone, build_producers(cfg, backbone))

    @property
    def rates(self) -> list:
        return [p.rate for p in self.producers]

    def encode_history(
        self, hr_latents: torch.Tensor, lr_latents: list[torch.Tensor | None], frame_offset: int = 0
    ) -> ContextTokens | None:
        """History latents (and one LR latent per producer) → concatenated context tokens, or None."""
        if len(self.producers) == 0:
            return None
        parts = [
            producer(hr_latents, lr, self.backbone.patch_embed, frame_offset)
            for producer, lr in zip(self.producers, lr_latents, strict=True)
        ]
        return ContextTokens.concat(parts)

    def forward(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        context: ContextTokens | None,
        frame_positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.backbone(latents, t, text, context, frame_positions)
