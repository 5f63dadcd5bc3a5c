"""HunyuanVideo-specific behaviour of the backbone adapter (the shared contract is in test_backbone_contract.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from tiny_model_folders import hunyuan_folder

from tinyhistory.backbones import ContextTokens
from tinyhistory.backbones.base import grid_positions
from tinyhistory.registry import BACKBONES
from tinyhistory.text.condition import TextCondition


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    folder = hunyuan_folder(tmp_path_factory.mktemp("hunyuan"))
    return BACKBONES.get("hunyuan").from_pretrained(folder).eval()


def _inputs(backbone, b: int = 2):
    g = torch.Generator().manual_seed(0)
    cfg = backbone.transformer.config
    x = torch.randn(b, backbone.in_channels, 3, 8, 8, generator=g)
    mask = torch.ones(b, 5, dtype=torch.long)
    mask[1:, 4:] = 0
    text = TextCondition(
        torch.randn(b, 5, cfg.text_embed_dim, generator=g) * mask[..., None],
        mask,
        torch.randn(b, cfg.pooled_projection_dim, generator=g),
    )
    return x, torch.tensor([0.3, 0.8])[:b], text


def _one(text: TextCondition, i: int) -> TextCondition:
    return TextCondition(text.states[i : i + 1], text.mask[i : i + 1], text.pooled[i : i + 1])


def test_samples_at_different_positions_match_their_own_forwards(backbone):
    x, t, text = _inputs(backbone)
    ctx = ContextTokens(torch.randn(2, 4, backbone.hidden_dim), torch.rand(2, 4, 3) * 4)
    frames = torch.tensor([[0, 1, 2], [3, 5, 7]])
    seen = []

    def after_block(i, tokens):
        seen.append((i, tokens.shape[0]))
        return tokens

    with torch.no_grad():
        both = backbone(x, t, text, ctx, frames, after_block=after_block)
        for i in range(2):
            mine = ContextTokens(ctx.tokens[i : i + 1], ctx.positions[i : i + 1])
            one = backbone(x[i : i + 1], t[i : i + 1], _one(text, i), mine, frames[i : i + 1])
            torch.testing.assert_close(both[i : i + 1], one, atol=1e-5, rtol=1e-5)
    # after_block sees the whole batch after every dual- and single-stream block
    assert seen == [(i, 2) for i in range(len(backbone.blocks))]


def test_target_positions_reach_the_rope(backbone):
    x, t, text = _inputs(backbone)
    with torch.no_grad():
        a = backbone(x, t, text)
        b = backbone(x, t, text, frame_positions=torch.arange(3).expand(2, 3) + 4)
    assert (a - b).abs().max() > 1e-4
    pos = grid_positions(torch.arange(3)[None], 8, 8)
    assert backbone.rotary(pos)[0].shape == (1, 3 * 64, backbone.transformer.config.attention_head_dim)


def test_embedded_guidance_is_an_attribute(backbone):
    x, t, text = _inputs(backbone)
    with torch.no_grad():
        a = backbone(x, t, text)
        backbone.guidance = 1.0
        try:
            b = backbone(x, t, text)
        finally:
            backbone.guidance = 6.0
    assert (a - b).abs().max() > 1e-5


def test_per_frame_times_must_be_equal(backbone):
    x, t, text = _inputs(backbone)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x, t[:, None].expand(2, 3), text), backbone(x, t, text))
        with pytest.raises(ValueError, match="per sample"):
            backbone(x, torch.tensor([[0.0, 0.3, 0.3], [0.8, 0.8, 0.8]]), text)


def test_pooled_is_required_and_mask_defaults_to_all_tokens(backbone):
    x, t, text = _inputs(backbone)
    with pytest.raises(ValueError, match="pooled"):
        backbone(x, t, TextCondition(text.states))
    full = TextCondition(text.states[:1], torch.ones(1, 5, dtype=torch.long), text.pooled[:1])
    with torch.no_grad():
        torch.testing.assert_close(
            backbone(x[:1], t[:1], TextCondition(text.states[:1], None, text.pooled[:1])),
            backbone(x[:1], t[:1], full),
        )


def test_portable_lora_is_the_diffusers_state():
    adapter = BACKBONES.get("hunyuan")
    state = {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(2, 3)}
    out = adapter.portable_lora(None, state, 2.0)
    assert out.keys() == state.keys() and out is not state


def test_from_config_builds_a_small_dit():
    b = SimpleNamespace(
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        ffn_dim=64,
        text_dim=8,
        in_channels=4,
        patch_size=[1, 2, 2],
    )
    backbone = BACKBONES.get("hunyuan").from_config(b)
    assert backbone.patch_size == (1, 2, 2) and backbone.hidden_dim == 32
    assert sum(backbone.transformer.config.rope_axes_dim) == 16
    x = torch.randn(1, 4, 2, 4, 4)
    text = TextCondition(torch.randn(1, 3, 8), torch.ones(1, 3), torch.randn(1, 8))
    with torch.no_grad():
        assert backbone(x, torch.tensor([0.5]), text).shape == x.shape
