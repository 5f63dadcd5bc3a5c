"""A Wan 2.2-shaped VAE at diffusers' own test size (DESIGN.md): 48 latent channels, 16× space, 4× time."""

import torch
from diffusers import AutoencoderKLWan


def wan22_tiny_vae(mean: float = 0.0, std: float = 1.0) -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=48,
        in_channels=12,
        out_channels=12,
        is_residual=True,
        patch_size=2,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        temperal_downsample=[False, True, True],
        latents_mean=[mean] * 48,
        latents_std=[std] * 48,
    ).eval()
