"""The HunyuanVideo VAE codec on diffusers' tiny test config, saved and loaded locally (nothing downloaded)."""

import pytest
import torch
from diffusers import AutoencoderKLHunyuanVideo

from tinyhistory.codecs import Codec, HunyuanVAECodec
from tinyhistory.config import load_config
from tinyhistory.system import build_codec


def _tiny_vae(scaling_factor: float = 0.476986) -> AutoencoderKLHunyuanVideo:
    """diffusers' own test size for this VAE (8×8 spatial, 4× temporal), with 16 latent channels like the release."""
    torch.manual_seed(0)
    return AutoencoderKLHunyuanVideo(
        latent_channels=16,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=scaling_factor,
    ).eval()


def _pixels(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_shapes_and_scaling_match_the_vae_called_by_hand():
    vae = _tiny_vae()
    codec = HunyuanVAECodec(vae)
    assert isinstance(codec, Codec) and codec.framewise is False
    assert (codec.latent_channels, codec.spatial_factor, codec.temporal_factor) == (16, 8, 4)
    pixels = _pixels(1, 3, 5, 32, 48)
    z = codec.encode(pixels)
    assert z.shape == (1, 16, 2, 4, 6)  # 1 + 4k frames → 1 + k latent frames, 8× smaller
    with torch.no_grad():
        by_hand = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
        decoded_by_hand = vae.decode(z / vae.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(z, by_hand)
    frames = codec.decode(z)
    assert frames.shape == (1, 3, 5, 32, 48) and frames.abs().max() <= 1
    torch.testing.assert_close(frames, decoded_by_hand)


def test_tiling_and_slicing_options_and_shape_errors():
    codec = HunyuanVAECodec(_tiny_vae(), tiling=True, slicing=True)
    assert codec.vae.use_tiling and codec.vae.use_slicing
    assert codec.encode(_pixels(2, 3, 1, 16, 16)).shape == (2, 16, 1, 2, 2)
    with pytest.raises(ValueError, match="needs 1 \\+ 4k frames .* got 4 frames"):
        codec.encode(_pixels(1, 3, 4, 16, 16))
    with pytest.raises(ValueError, match="not divisible by the HunyuanVideo VAE's factor 8"):
        codec.encode(_pixels(1, 3, 1, 12, 16))
    with pytest.raises(ValueError, match="expected RGB pixels"):
        codec.encode(_pixels(1, 4, 1, 16, 16))
    with pytest.raises(ValueError, match="expected latents \\(B, 16, T, H, W\\)"):
        codec.decode(torch.zeros(1, 4, 1, 2, 2))


def test_from_pretrained_through_the_config(tmp_path):
    vae = _tiny_vae(scaling_factor=0.5)
    vae.save_pretrained(tmp_path / "HunyuanVideo" / "vae")
    vae.save_pretrained(tmp_path / "vae_only")
    pixels = _pixels(1, 3, 5, 16, 16)
    expected = HunyuanVAECodec(vae).encode(pixels)
    for folder in (tmp_path / "HunyuanVideo", tmp_path / "vae_only"):
        cfg = load_config("tiny", overrides=['codec.kind="hunyuan"', f'codec.path="{folder}"'])
        codec = build_codec(cfg)
        assert isinstance(codec, HunyuanVAECodec) and codec.scaling_factor == 0.5
        torch.testing.assert_close(codec.encode(pixels), expected)
    with pytest.raises(ValueError, match="codec.path must name a local diffusers folder when codec.kind = 'hunyuan'"):
        build_codec(load_config("tiny", overrides=['codec.kind="hunyuan"']))
    with pytest.raises(FileNotFoundError, match="HunyuanVideo VAE folder not found"):
        HunyuanVAECodec.from_pretrained(tmp_path / "missing")
