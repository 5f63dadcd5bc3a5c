"""Generation on real Wan folders: the first segment is the stock ``WanPipeline``'s video (golden), and later segments
stream through the causal VAE exactly (the whole latent sequence decoded at once gives the same frames)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import WanPipeline
from tiny_model_folders import wan21_t2v_folder, wan22_a14b_folder, wan22_ti2v_folder

from tinyhistory.assemble import HistoryDiT, build_codec
from tinyhistory.config import load_config
from tinyhistory.generate.run import session_setup
from tinyhistory.generate.session import GenerationSession, SamplingSettings
from tinyhistory.text.cache import encode_prompts

FOLDERS = {"wan2.1-t2v-1.3b": wan21_t2v_folder, "wan2.2-ti2v-5b": wan22_ti2v_folder}
# A14B: the high-noise expert with the history, the stock low-noise expert below the boundary, as WanPipeline does
GOLDEN = {**FOLDERS, "wan2.2-t2v-a14b": wan22_a14b_folder}
PROMPT = "a cat walks on the grass"


def _session(preset: str, folder, **settings) -> GenerationSession:
    cfg = load_config(
        preset,
        overrides=[
            f'model.path="{folder}"',
            'model.dtype="float32"',
            'history.method="no_history"',
            "data.height=64",
            "data.width=64",
        ],
    )
    model = HistoryDiT.from_config(cfg)
    sampling = SamplingSettings(**({"sampler": "unipc", "steps": 3, "guidance": 5.0, "segment_frames": 3} | settings))
    return GenerationSession(
        model, session_setup(cfg), build_codec(cfg.codec), lambda p: encode_prompts(cfg.text, p), sampling
    )


@pytest.mark.parametrize("preset", GOLDEN)
def test_first_segment_equals_the_stock_pipeline(preset, tmp_path):
    folder = GOLDEN[preset](tmp_path / "model")
    session = _session(preset, folder)
    if preset == "wan2.2-t2v-a14b":
        assert session.boundary == 0.875 and session.low_noise is not None
        from tinyhistory.generate.session import make_scheduler

        steps = make_scheduler(session.settings, session.recipe)
        steps.set_timesteps(3)
        assert steps.timesteps.max() >= 875 > steps.timesteps.min()  # both experts take steps
    frames = session.generate_segment(PROMPT)
    assert frames.shape == (1 + 4 * 2, 64, 64, 3)  # 3 latent frames from nothing: 1 + 4·2 frames

    pipe = WanPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    call = dict(prompt=PROMPT, negative_prompt="", height=64, width=64, num_frames=9, num_inference_steps=3)
    call |= dict(guidance_scale=5.0)
    latents = pipe(**call, generator=torch.Generator().manual_seed(0), output_type="latent").frames
    torch.testing.assert_close(session.latents, latents, atol=1e-5, rtol=1e-5)
    video = pipe(**call, generator=torch.Generator().manual_seed(0), output_type="np").frames[0]  # (T, H, W, 3)
    assert np.abs(frames.astype(np.float64) - np.round(video * 255)).max() <= 1


@pytest.mark.parametrize("preset", FOLDERS)
def test_segments_stream_through_the_causal_vae_exactly(preset, tmp_path):
    folder = FOLDERS[preset](tmp_path / "model")
    session = _session(preset, folder, steps=2, guidance=1.0, segment_frames=2)
    segments = [session.generate_segment(PROMPT) for _ in range(3)]
    assert [len(s) for s in segments] == [5, 8, 8]
    whole = session.codec.decode(session.latents)[0]  # one decode of the whole latent sequence
    expected = ((whole.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(np.concatenate(segments), expected)


@pytest.mark.parametrize("preset", FOLDERS)
def test_a_wan_session_with_history_pauses_and_resumes_bit_for_bit(preset, tmp_path):
    """Encoder caches, the LR streams, the decoder's causal cache and the generator are all in the saved state."""
    folder = FOLDERS[preset](tmp_path / "model")
    cfg = load_config(
        preset,
        overrides=[
            f'model.path="{folder}"',
            "data.height=128",
            "data.width=128",
            "history.channels=[8, 16, 32, 32]",
            "history.attention_heads=2",
            "history.sliding_window=1",
        ],
    )
    torch.manual_seed(0)
    model = HistoryDiT.from_config(cfg)
    codec = build_codec(cfg.codec)
    settings = SamplingSettings(sampler="unipc", steps=2, guidance=2.0, segment_frames=2)

    def text(prompts):
        return encode_prompts(cfg.text, prompts)

    session = GenerationSession(model, session_setup(cfg), codec, text, settings)
    video = np.random.default_rng(0).integers(0, 256, (11, 128, 128, 3), dtype=np.uint8)
    session.start_from_video(video)  # 11 frames: the last 9 make 3 latents... whole blocks: 2 latents, 5 frames
    assert session.history_frames == 2 and session.pixel_frames == 5
    session.generate_segment(PROMPT)
    session.save(tmp_path / "s.session")
    uninterrupted = [session.generate_segment(PROMPT) for _ in range(2)]
    assert session.records[-1].context_tokens > session.records[0].context_tokens
    resumed = GenerationSession.load(tmp_path / "s.session", model, session_setup(cfg), codec, text)
    for expected in uninterrupted:
        np.testing.assert_array_equal(resumed.generate_segment(PROMPT), expected)
    assert torch.equal(resumed.latents, session.latents)


def test_ti2v_image_start_is_the_pipelines_own_first_frame_conditioning(tmp_path):
    """Wan 2.2 TI2V-5B starts from an image as ``WanImageToVideoPipeline`` (expand_timesteps) does: the image latent is
    the clean first frame (time 0) of the first segment, not history."""
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    folder = wan22_ti2v_folder(tmp_path / "model")
    session = _session("wan2.2-ti2v-5b", folder)
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    session.start_from_image(image)
    assert session.history_frames == 0 and session.first_frame is not None
    frames = session.generate_segment(PROMPT)

    stock = WanPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    parts = {k: getattr(stock, k) for k in ("tokenizer", "text_encoder", "vae", "scheduler", "transformer")}
    pipe = WanImageToVideoPipeline(**parts, expand_timesteps=True)
    # (the I2V pipeline's own prompt cleaning needs ftfy, which is not installed: the T2V pipeline encodes the prompts)
    positive, negative = stock.encode_prompt(PROMPT, negative_prompt="", max_sequence_length=512)
    call = dict(image=Image.fromarray(image), prompt_embeds=positive, negative_prompt_embeds=negative)
    call |= dict(height=64, width=64, num_frames=9, num_inference_steps=3, guidance_scale=5.0, output_type="latent")
    latents = pipe(**call, generator=torch.Generator().manual_seed(0)).frames
    torch.testing.assert_close(session.latents, latents, atol=1e-5, rtol=1e-5)
    assert torch.equal(session.latents[:, :, :1], session.first_frame.cpu())
    assert frames.shape == (9, 64, 64, 3)
