"""History producers: shapes, positions, initialisation, variants and exact incremental encoding."""

import pytest
import torch
from torch import nn

from tinyhistory.codecs import PixelUnshuffleCodec
from tinyhistory.geometry import Rate
from tinyhistory.history import EncoderConfig, HistoryEncoder, LargePatchifier, block_positions, lowres_latents
from tinyhistory.history.streaming import IncrementalHistory

SMALL = dict(channels=(8, 16, 32, 32), attention_heads=2)


def _patch_embed(d=24):
    torch.manual_seed(0)
    return nn.Conv3d(48, d, (1, 2, 2), stride=(1, 2, 2))


def _video(frames=16, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(1, 3, frames, size, size, generator=g) * 2 - 1
    codec = PixelUnshuffleCodec(4)
    return pixels, codec.encode(pixels), codec


@pytest.mark.parametrize("rate", ["1x1x1", "2x2x1", "4x4x2", "2x2x4", "8x8x8", "2x4x2"])
@pytest.mark.parametrize("variant", ["proposed", "only_lr", "without_lr"])
def test_encoder_shapes_and_positions(rate, variant):
    pixels, hr, codec = _video(frames=16)
    r = Rate.parse(rate)
    enc = HistoryEncoder(EncoderConfig(rate, variant, **SMALL), 48, 24, 2)
    ctx = enc(hr, lowres_latents(pixels, r, codec), _patch_embed())
    grid = (16 // r.t, 8 // r.h, 8 // r.w)
    assert ctx.tokens.shape == (1, grid[0] * grid[1] * grid[2], 24)
    assert ctx.positions.shape == (1, ctx.tokens.shape[1], 3)
    # the first token's position is the centre of the first block in DiT-token units
    assert ctx.positions[0, 0].tolist() == [(r.t - 1) / 2, (r.h - 1) / 2, (r.w - 1) / 2]


def test_block_centres_and_floor_on_odd_grids():
    pos = block_positions(1, (2, 1, 3), Rate(4, 4, 2), frame_offset=10)
    assert pos[0, :, 0].tolist() == [10.5] * 3 + [12.5] * 3
    assert pos[0, :3, 2].tolist() == [1.5, 5.5, 9.5]
    enc = HistoryEncoder(EncoderConfig("4x4x2", **SMALL), 48, 24, 2)
    hr = torch.randn(1, 48, 4, 15, 26)  # 15 latent rows at rate 4 with patch 2 → 1 row (floor), 26 → 3 columns
    lr = torch.randn(1, 48, 2, 3, 6)
    ctx = enc(hr, lr, _patch_embed())
    assert enc.grid_shape(hr.shape) == (2, 1, 3) and ctx.tokens.shape[1] == 6


def test_zero_initialised_projection_makes_proposed_start_as_only_lr():
    pixels, hr, codec = _video(frames=8)
    lr = lowres_latents(pixels, Rate(4, 4, 2), codec)
    pe = _patch_embed()
    proposed = HistoryEncoder(EncoderConfig("4x4x2", "proposed", **SMALL), 48, 24, 2)
    only_lr = HistoryEncoder(EncoderConfig("4x4x2", "only_lr", **SMALL), 48, 24, 2)
    assert torch.equal(proposed(hr, lr, pe).tokens, only_lr(hr, lr, pe).tokens)


def test_only_lr_needs_lr_latents():
    enc = HistoryEncoder(EncoderConfig("4x4x2", "only_lr", **SMALL), 48, 24, 2)
    with pytest.raises(ValueError, match="needs low-resolution latents"):
        enc(torch.randn(1, 48, 2, 16, 16), None, _patch_embed())


def test_encoder_config_validation():
    with pytest.raises(ValueError, match="variant 'both'"):
        EncoderConfig(variant="both")
    with pytest.raises(ValueError, match="not divisible by attention_heads"):
        EncoderConfig(channels=(8, 16, 30), attention_heads=4)


def test_large_patchifier_starts_as_the_average_patch():
    pe = _patch_embed()
    lp = LargePatchifier("4x4x2", pe)
    assert lp.conv.kernel_size == (2, 8, 8) and lp.conv.stride == (2, 8, 8)
    # a latent that is constant over each 2×8×8 block, but varies inside a 2×2 patch the same way everywhere
    patch = torch.randn(1, 48, 1, 2, 2)
    hr = patch.repeat(1, 1, 4, 8, 8)  # (1, 48, 4, 16, 16)
    tokens = lp(hr).tokens
    expected = pe(patch).flatten()
    torch.testing.assert_close(tokens[0, 0], expected, atol=1e-5, rtol=1e-5)
    assert lp(hr).positions[0, 0].tolist() == [0.5, 1.5, 1.5]


@pytest.mark.parametrize(("rate", "cuts"), [("4x4x2", [0, 2, 6, 8, 14, 16]), ("2x2x1", [0, 1, 4, 5, 11, 16])])
def test_incremental_encoding_equals_full_encode(rate, cuts):
    pixels, hr, codec = _video(frames=16, seed=3)
    r = Rate.parse(rate)
    lr = lowres_latents(pixels, r, codec)
    enc = HistoryEncoder(EncoderConfig(rate, **SMALL), 48, 24, 2).eval()
    nn.init.normal_(enc.hr.proj.weight, std=0.2)  # make the HR branch contribute (it starts at zero)
    pe = _patch_embed()
    with torch.no_grad():
        full = enc(hr, lr, pe)
    stream = IncrementalHistory(enc, pe)
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        stream.append(hr[:, :, a:b], lr[:, :, a // r.t : b // r.t])
    assert stream.frames_encoded == 16
    torch.testing.assert_close(stream.context.tokens, full.tokens, atol=1e-5, rtol=0)
    assert torch.equal(stream.context.positions, full.positions)
    # the HR branch really has a temporal receptive field, so the carry-over is what makes this exact
    assert enc.receptive_field >= 2


def test_incremental_rejects_misaligned_chunks():
    enc = HistoryEncoder(EncoderConfig("4x4x2", **SMALL), 48, 24, 2)
    with pytest.raises(ValueError, match="multiple of rT=2"):
        IncrementalHistory(enc, _patch_embed()).append(torch.randn(1, 48, 3, 16, 16), torch.randn(1, 48, 1, 4, 4))
