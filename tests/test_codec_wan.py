"""The Wan VAE codec on diffusers' tiny test configs, saved and loaded locally (nothing downloaded)."""

import pytest
import torch
from diffusers import AutoencoderKLWan
from tiny_vaes import wan22_tiny_vae

from tinyhistory.assemble import build_codec
from tinyhistory.codecs import Codec, WanVAECodec
from tinyhistory.config import load_config


def test_wan22_shapes_and_normalisation():
    pixels = torch.rand(1, 3, 5, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain, shifted = WanVAECodec(wan22_tiny_vae()), WanVAECodec(wan22_tiny_vae(mean=0.5, std=2.0))
    assert isinstance(plain, Codec)
    assert (plain.latent_channels, plain.spatial_factor, plain.temporal_factor) == (48, 16, 4)
    z = plain.encode(pixels)
    assert z.shape == (1, 48, 2, 4, 4)  # 1 + 4k frames → 1 + k latent frames
    torch.testing.assert_close(shifted.encode(pixels), (z - 0.5) / 2.0)
    assert shifted.decode(shifted.encode(pixels)).shape == (1, 3, 5, 64, 64)
    torch.testing.assert_close(shifted.decode(shifted.encode(pixels)), plain.decode(z))


def test_wan21_tiny_is_8x_spatial():
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    codec = WanVAECodec(vae, tiling=True, slicing=True)
    assert codec.encode(torch.zeros(2, 3, 1, 32, 48)).shape == (2, 16, 1, 4, 6)
    with pytest.raises(ValueError, match="not divisible by the Wan VAE's factor 8"):
        codec.encode(torch.zeros(1, 3, 1, 30, 32))


def test_from_pretrained_round_trip_through_the_config(tmp_path):
    vae = wan22_tiny_vae()
    vae.save_pretrained(tmp_path / "model" / "vae")
    cfg = load_config("tiny", overrides=['codec.kind="wan"', f'codec.path="{tmp_path / "model"}"'])
    codec = build_codec(cfg.codec)
    pixels = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(codec.encode(pixels), WanVAECodec(vae).encode(pixels))
    with pytest.raises(ValueError, match="codec.path must name a local diffusers folder"):
        build_codec(load_config("tiny", overrides=['codec.kind="wan"']).codec)
    with pytest.raises(FileNotFoundError, match="Wan VAE folder not found"):
        WanVAECodec.from_pretrained(tmp_path / "missing")
