import pytest
import torch

from tinyhistory.codecs import Codec, PixelUnshuffleCodec


def test_pixel_codec_is_lossless_and_shaped_like_wan22():
    codec = PixelUnshuffleCodec(4)
    assert isinstance(codec, Codec)
    pixels = torch.rand(2, 3, 5, 64, 64) * 2 - 1
    latents = codec.encode(pixels)
    assert latents.shape == (2, 48, 5, 16, 16)
    assert torch.equal(codec.decode(latents), pixels)
    # frames stay independent: encoding one frame equals slicing the video's encoding
    assert torch.equal(codec.encode(pixels[:, :, 2:3]), latents[:, :, 2:3])


def test_pixel_codec_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match="not divisible by the codec factor 4"):
        PixelUnshuffleCodec(4).encode(torch.zeros(1, 3, 1, 30, 32))
