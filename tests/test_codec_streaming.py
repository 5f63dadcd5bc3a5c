"""Streaming VAE encode and decode equal one whole call, for Wan 2.1- and Wan 2.2-shaped VAEs, in uneven pieces."""

from __future__ import annotations

import pytest
import torch
from tiny_model_folders import wan21_tiny_vae
from tiny_vaes import wan22_tiny_vae

from tinyhistory.codecs import PixelUnshuffleCodec, WanVAECodec
from tinyhistory.codecs.streaming import LowResStream
from tinyhistory.geometry import Rate
from tinyhistory.history.base import downsample_pixels, lowres_latents

VAES = {"wan2.1": lambda: wan21_tiny_vae(), "wan2.2": lambda: wan22_tiny_vae(mean=0.1, std=0.7)}
PIECES = [3, 1, 7, 2, 4, 4]  # 21 frames = 1 + 4·5: latents 6; pieces that cut chunks anywhere


def _pixels(frames: int = 21, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, frames, size, size, generator=g) * 2 - 1


def _split(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return list(x.split(sizes, dim=2))


@pytest.fixture(params=list(VAES), ids=list(VAES))
def codec(request):
    return WanVAECodec(VAES[request.param]())


def test_streamed_encode_equals_one_encode(codec):
    pixels = _pixels()
    whole = codec.encode(pixels)
    stream = codec.stream_encoder()
    parts = [stream.push(p) for p in _split(pixels, PIECES)]
    assert [p.shape[2] for p in parts] == [1, 0, 2, 1, 1, 1]  # a latent appears once its chunk is complete
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, atol=1e-5, rtol=1e-5)


def test_streamed_decode_equals_one_decode(codec):
    latents = torch.randn(1, codec.latent_channels, 6, 2, 2, generator=torch.Generator().manual_seed(1))
    whole = codec.decode(latents)
    stream = codec.stream_decoder()
    parts = [stream.push(p) for p in _split(latents, [2, 1, 3])]
    assert [p.shape[2] for p in parts] == [5, 4, 12]  # 1 + 4, then 4 per latent frame
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, atol=1e-5, rtol=1e-5)


def test_a_stream_paused_and_restored_continues_exactly(codec):
    pixels = _pixels()
    first, second = pixels[:, :, :8], pixels[:, :, 8:]
    stream = codec.stream_encoder()
    head = stream.push(first)
    state = {k: v.clone() for k, v in stream.state_dict().items()}
    tail = stream.push(second)
    restored = codec.stream_encoder()
    restored.load_state_dict(state)
    assert torch.equal(restored.push(second), tail)
    decoder = codec.stream_decoder()
    decoder.push(head)
    resumed = codec.stream_decoder()
    resumed.load_state_dict(decoder.state_dict())
    assert torch.equal(resumed.push(tail), decoder.push(tail))


@pytest.mark.parametrize("rate", ["4x4x2", "2x2x1", "2x2x4"])
def test_lowres_stream_equals_the_whole_lowres_latents_and_aligns_with_hr_blocks(codec, rate):
    """LR latent b covers exactly the pixels of HR block b: block 0 is 1 + 4(rT − 1) frames, every later block 4·rT."""
    r = Rate.parse(rate)
    pixels = _pixels(frames=1 + 4 * 4 * r.t, size=64)  # 4 whole HR blocks after the first frame's group
    whole = lowres_latents(pixels, r, codec)
    hr_blocks = codec.encode(pixels).shape[2] // r.t
    assert whole.shape[2] == hr_blocks
    stream = LowResStream(codec, r)
    parts = [stream.push(p) for p in _split(pixels, [2, 9, 1, pixels.shape[2] - 12])]
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, atol=1e-5, rtol=1e-5)
    # the grouping itself: the first LR frame is the mean of the first 1 + 4(rT - 1) frames
    low = downsample_pixels(pixels, r, 4)
    first = 1 + 4 * (r.t - 1)
    expected = torch.nn.functional.avg_pool3d(pixels[:, :, :first], (first, r.h, r.w))
    torch.testing.assert_close(low[:, :, :1], expected)


def test_framewise_codec_streams_are_the_plain_calls():
    codec = PixelUnshuffleCodec(4)
    pixels = _pixels(frames=8, size=16)
    encoder = codec.stream_encoder()
    latents = torch.cat([encoder.push(p) for p in _split(pixels, [3, 5])], dim=2)
    assert torch.equal(latents, codec.encode(pixels))
    stream = LowResStream(codec, Rate.parse("4x4x2"))
    lr = torch.cat([stream.push(p) for p in _split(pixels, [1, 4, 3])], dim=2)
    torch.testing.assert_close(lr, lowres_latents(pixels, Rate.parse("4x4x2"), codec))


def test_lowres_frames_that_are_no_multiple_of_the_vae_factor_are_cropped_like_the_hr_grid():
    """480×832 at 4×4 gives 120×208 LR frames, which Wan 2.2's 16× VAE cannot encode: the remainder is cropped (the HR
    token grid floors it away too). Here 96×160 → 24×40 LR frames → 16×32."""
    codec = WanVAECodec(wan22_tiny_vae())
    rate = Rate.parse("4x4x2")
    pixels = _pixels(frames=1 + 4 * 3, size=96)[..., :96].repeat(1, 1, 1, 1, 2)[..., :160]  # (1, 3, 13, 96, 160)
    whole = lowres_latents(pixels, rate, codec)
    assert whole.shape[-2:] == (1, 2)
    stream = LowResStream(codec, rate)
    parts = torch.cat([stream.push(p) for p in _split(pixels, [6, 7])], dim=2)
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-5)
