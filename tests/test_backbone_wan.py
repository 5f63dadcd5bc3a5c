"""The Wan adapter against the stock diffusers forward (golden), and the context path."""

import torch
from diffusers import WanTransformer3DModel

from tinyhistory.backbones import ContextTokens, WanBackbone
from tinyhistory.history import EncoderConfig, HistoryEncoder


def _inputs(b=2, frames=3):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, 48, frames, 8, 8, generator=g),
        torch.tensor([0.3, 0.8])[:b],
        torch.randn(b, 5, 16, generator=g),
    )


def test_golden_no_context_equals_stock_forward(tiny_wan):
    x, t, text = _inputs()
    with torch.no_grad():
        stock = tiny_wan(x, t * 1000, text).sample
        ours = WanBackbone(tiny_wan)(x, t, text)
    torch.testing.assert_close(ours, stock, atol=1e-6, rtol=1e-5)


def test_golden_with_empty_context_and_explicit_integer_positions(tiny_wan):
    x, t, text = _inputs()
    empty = ContextTokens(torch.zeros(2, 0, 24), torch.zeros(2, 0, 3))
    positions = torch.arange(3).expand(2, 3)
    with torch.no_grad():
        stock = tiny_wan(x, t * 1000, text).sample
        ours = WanBackbone(tiny_wan)(x, t, text, empty, positions)
    torch.testing.assert_close(ours, stock, atol=1e-6, rtol=1e-5)


def test_rope_from_integer_positions_equals_stock_table(tiny_wan):
    bb = WanBackbone(tiny_wan)
    x = torch.zeros(1, 48, 3, 8, 8)
    stock_cos, stock_sin = tiny_wan.rope(x)  # (1, 3·4·4, 1, 12)
    t, h, w = torch.meshgrid(torch.arange(3), torch.arange(4), torch.arange(4), indexing="ij")
    positions = torch.stack([t, h, w], -1).reshape(1, -1, 3)
    cos, sin = bb.rotary(positions)
    torch.testing.assert_close(cos, stock_cos)
    torch.testing.assert_close(sin, stock_sin)


def test_context_changes_output_and_positions_matter(tiny_wan):
    bb = WanBackbone(tiny_wan)
    x, t, text = _inputs()
    tokens = torch.randn(2, 4, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = bb(x, t, text)
        a = bb(x, t, text, ContextTokens(tokens, torch.zeros(2, 4, 3)))
        b = bb(x, t, text, ContextTokens(tokens, torch.full((2, 4, 3), 2.5)))
    assert a.shape == base.shape
    assert (a - base).abs().max() > 1e-3
    assert (a - b).abs().max() > 1e-4


def test_gradients_reach_the_history_encoder(tiny_wan):
    bb = WanBackbone(tiny_wan).train()
    enc = HistoryEncoder(EncoderConfig("4x4x2", channels=(8, 16, 32, 32), attention_heads=2), 48, 24, 2)
    hr = torch.randn(2, 48, 4, 16, 16)
    lr = torch.randn(2, 48, 2, 4, 4)
    context = enc(hr, lr, bb.patch_embed)
    x, t, text = _inputs()
    bb(x, t, text, context).square().mean().backward()
    # the projection is zero-initialised, so its weight gets gradient first; the LR path reaches the patch embedding
    assert enc.hr.proj.weight.grad.abs().sum() > 0
    assert tiny_wan.patch_embedding.weight.grad.abs().sum() > 0


def test_save_pretrained_round_trip(tiny_wan, tmp_path):
    tiny_wan.save_pretrained(tmp_path / "transformer")
    assert (tmp_path / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = WanTransformer3DModel.from_pretrained(tmp_path / "transformer").eval()
    x, t, text = _inputs()
    ctx = ContextTokens(torch.randn(2, 4, 24), torch.rand(2, 4, 3) * 4)
    with torch.no_grad():
        assert torch.equal(WanBackbone(tiny_wan)(x, t, text, ctx), WanBackbone(loaded)(x, t, text, ctx))
