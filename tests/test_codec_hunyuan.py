"""The HunyuanVideo VAE codec on diffusers' tiny test config, saved and loaded locally (nothing downloaded)."""

import pytest
import torch
from diffusers import AutoencoderKLHunyuanVideo

from tinyhistory.assemble import build_codec
from tinyhistory.codecs import Codec, HunyuanVAECodec
from tinyhistory.config import load_config


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
        codec = build_codec(cfg.codec)
        assert isinstance(codec, HunyuanVAECodec) and codec.scaling_factor == 0.5
        torch.testing.assert_close(codec.encode(pixels), expected)
    with pytest.raises(ValueError, match="codec.path must name a local diffusers folder when codec.kind = 'hunyuan'"):
        build_codec(load_config("tiny", overrides=['codec.kind="hunyuan"']).codec)
    with pytest.raises(FileNotFoundError, match="HunyuanVideo VAE folder not found"):
        HunyuanVAECodec.from_pretrained(tmp_path / "missing")


# -- streaming (generation): windowed, not exact; see codecs/streaming.py ------------------------------------------


def _video(frames: int, size: int = 16) -> torch.Tensor:
    """A smooth moving picture (a gradient drifting right), so the VAE sees content that changes slowly in time."""
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    x = torch.arange(size, dtype=torch.float32)[None, None, :]
    y = torch.arange(size, dtype=torch.float32)[None, :, None]
    channels = [torch.sin((x + t) / 3) * torch.cos(y / 4), torch.cos((x - y + t) / 5), torch.sin((y + t) / 3)]
    frame = torch.stack([c.expand(frames, size, size) for c in channels])
    return frame.unsqueeze(0) * 0.8  # (1, 3, T, size, size)


def test_the_stream_encoder_encodes_each_piece_after_its_context_and_the_first_piece_whole():
    codec = HunyuanVAECodec(_tiny_vae())
    assert codec.stream_context == 4  # diffusers' temporal tile: 16 frames = 4 latents
    video = _video(1 + 4 * 7)
    stream = codec.stream_encoder()
    first = stream.push(video[:, :, :7])  # 1 + 4 frames make a video; 2 wait for the next piece
    torch.testing.assert_close(first, codec.encode(video[:, :, :5]), rtol=0, atol=0)
    assert stream.push(video[:, :, 7:8]).shape[2] == 0  # 3 frames pending: no whole latent yet
    second = stream.push(video[:, :, 8:21])  # 16 frames → 4 latents, after the 5 frames already encoded
    torch.testing.assert_close(second, codec.encode(video[:, :, :21])[:, :, -4:], rtol=0, atol=0)
    # the context is capped at 4 latents' worth (17 frames): the next piece sees frames 4 … 20, not the start
    third = stream.push(video[:, :, 21:29])
    torch.testing.assert_close(third, codec.encode(video[:, :, 4:29])[:, :, -2:], rtol=0, atol=0)


def test_the_stream_decoder_decodes_each_piece_after_its_context_and_prime_skips_known_pixels():
    codec = HunyuanVAECodec(_tiny_vae())
    latents = codec.encode(_video(1 + 4 * 9))  # 10 latent frames
    stream = codec.stream_decoder()
    first = stream.push(latents[:, :, :3])
    torch.testing.assert_close(first, codec.decode(latents[:, :, :3]), rtol=0, atol=0)
    second = stream.push(latents[:, :, 3:6])  # 3 new latents → 12 frames, decoded after the 3 seen
    torch.testing.assert_close(second, codec.decode(latents[:, :, :6])[:, :, -12:], rtol=0, atol=0)
    third = stream.push(latents[:, :, 6:10])  # context capped at 4 latents
    torch.testing.assert_close(third, codec.decode(latents[:, :, 2:10])[:, :, -16:], rtol=0, atol=0)
    primed = codec.stream_decoder()
    primed.prime(latents[:, :, :6])  # a starting video's latents: nothing decoded, the last 4 kept
    torch.testing.assert_close(primed.push(latents[:, :, 6:10]), third, rtol=0, atol=0)


def test_a_paused_stream_resumes_bit_for_bit_and_the_deviation_from_one_call_is_bounded():
    codec = HunyuanVAECodec(_tiny_vae())
    video = _video(1 + 4 * 12)
    pieces = list(video.split([6, 9, 4, 11, 7, 12], dim=2))

    def run(pause_after: int | None):
        encoder, decoder = codec.stream_encoder(), codec.stream_decoder()
        latents, frames = [], []
        for i, piece in enumerate(pieces):
            z = encoder.push(piece)
            latents.append(z)
            frames.append(decoder.push(z))
            if i == pause_after:  # a saved session: only the states survive
                e, d = encoder.state_dict(), decoder.state_dict()
                encoder, decoder = codec.stream_encoder(), codec.stream_decoder()
                encoder.load_state_dict(e)
                decoder.load_state_dict(d)
        return torch.cat(latents, dim=2), torch.cat(frames, dim=2)

    latents, frames = run(None)
    paused_latents, paused_frames = run(2)
    assert torch.equal(latents, paused_latents) and torch.equal(frames, paused_frames)
    tiled = codec.encode(video)  # 49 frames: diffusers' own path for a long video (17-frame tiles, blended)
    assert latents.shape == tiled.shape and frames.shape == video.shape  # every latent and frame, in order
    # Not exact: the VAE's GroupNorms see the whole call, so one untiled call is the reference no split reaches. On
    # this random-weight VAE the stream is about as far from it as diffusers' own tiling is (1.03 vs 1.12, relative).
    codec.vae.use_framewise_encoding = False
    untiled = codec.encode(video)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a - b).norm() / b.norm()).item()

    assert 0 < rel(latents, untiled) <= rel(tiled, untiled), (rel(latents, untiled), rel(tiled, untiled))
