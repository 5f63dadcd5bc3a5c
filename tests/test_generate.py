"""Streaming generation: incremental cache, pause/resume, seeds, samplers, and the ``generate`` command."""

import json

import av
import numpy as np
import pytest
import torch

from tinyhistory.assemble import HistoryDiT, build_codec
from tinyhistory.cli import main
from tinyhistory.generate.run import session_setup
from tinyhistory.generate.session import GenerationSession, SamplingSettings
from tinyhistory.history import lowres_latents
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.checkpoint import save_weights

SMALL_AR = ['train.stage="ar"', "train.history_frames=8", "train.segment_frames=2", "train.lora_rank=0"]


def _frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def _text(prompts):
    """Distinct fixed embeddings per prompt (the sessions' logic does not depend on the text encoder)."""
    return TextCondition(torch.stack([torch.full((64, 384), float(len(p)) / 100) for p in prompts]))


@pytest.fixture
def model_and_cfg(small_config):
    cfg = small_config(*SMALL_AR, "history.sliding_window=2")
    torch.manual_seed(0)
    model = HistoryDiT.from_config(cfg).eval()
    with torch.no_grad():  # the zero-initialised HR projection would hide the HR branch from the cache test
        for p in model.producers.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape) * 0.05)
    return model, cfg


def _session(model, cfg, **kw):
    settings = SamplingSettings(**({"steps": 3, "segment_frames": 2} | kw))
    return GenerationSession(model, session_setup(cfg), build_codec(cfg.codec), _text, settings)


def test_incremental_cache_equals_a_full_reencode_after_several_segments(model_and_cfg):
    model, cfg = model_and_cfg
    session = _session(model, cfg)
    history = _frames(5)
    session.start_from_video(history)  # 5 frames: the first is dropped, so history ends in whole blocks
    assert session.history_frames == 4 and session.origin == 4
    segments = [session.generate_segment(prompt) for prompt in ("a", "bb", "ccc")]
    assert session.history_frames == 10 and session.caches[0].frames_encoded == 10
    frames = np.concatenate([history[1:], *segments])
    pixels = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1)[None]
    codec = build_codec(cfg.codec)
    with torch.no_grad():
        # the history's latents (the sampled ones for generated frames) and the LR latents of the frames
        full = model.encode_history(session.latents, [lowres_latents(pixels, model.rates[0], codec)])
    cached = session.caches[0].context
    torch.testing.assert_close(cached.tokens, full.tokens, rtol=1e-5, atol=1e-5)
    assert torch.equal(cached.positions, full.positions)
    # the context also holds the sliding window: the last 2 latent frames (8, 9) uncompressed
    ctx = session.context()
    assert ctx.num_tokens == full.num_tokens + 2 * 8 * 8
    assert ctx.positions[0, -1, 0].item() == 9.0
    assert [r.context_tokens for r in session.records] == [8 + 128, 12 + 128, 16 + 128]


def test_pause_and_resume_continue_bit_for_bit(model_and_cfg, tmp_path):
    model, cfg = model_and_cfg
    session = _session(model, cfg, guidance=2.0)
    session.start_from_image(_frames(1)[0])
    session.extend("a rabbit", seconds=0.25)
    session.save(tmp_path / "s.session")
    uninterrupted = session.extend("a rabbit", seconds=0.5)
    resumed = GenerationSession.load(tmp_path / "s.session", model, session_setup(cfg), build_codec(cfg.codec), _text)
    assert resumed.history_frames == 4 and resumed.settings.guidance == 2.0 and len(resumed.records) == 1
    np.testing.assert_array_equal(resumed.extend("a rabbit", seconds=0.5), uninterrupted)
    with pytest.raises(ValueError, match="not a tinyhistory session file"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        GenerationSession.load(tmp_path / "other.safetensors", model, session_setup(cfg), build_codec(cfg.codec), _text)


@pytest.mark.parametrize("sampler", ["euler", "unipc"])
def test_same_seed_same_video_other_seed_other_video(model_and_cfg, sampler):
    model, cfg = model_and_cfg
    runs = []
    for seed in (0, 0, 1):
        session = _session(model, cfg, sampler=sampler, seed=seed)
        session.start_from_video(_frames(4))
        runs.append(session.extend("a", seconds=0.5))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_generate_command_writes_a_playable_mp4_contact_sheet_log_and_session(model_and_cfg, tmp_path):
    model, cfg = model_and_cfg
    save_weights(model, cfg, tmp_path / "ckpt")
    story = tmp_path / "story.json"
    story.write_text(
        json.dumps({"shots": [{"start": 0, "end": 0.5, "prompt": "a"}, {"start": 0.5, "end": 1.0, "prompt": "bb"}]})
    )
    from PIL import Image

    Image.fromarray(_frames(1)[0]).save(tmp_path / "still.png")
    out = tmp_path / "out" / "story.mp4"
    argv = [
        "generate",
        "--preset",
        "tiny",
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "--storyboard",
        str(story),
        "--out",
        str(out),
        "--steps",
        "2",
        "--segment-frames",
        "2",
        "--no-progress",
    ]
    assert main(argv + ["--image", str(tmp_path / "still.png")]) == 0
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 8 and decoded[0].shape == (64, 64, 3)  # 1 s at 8 fps
    assert (tmp_path / "out" / "story.mp4.png").stat().st_size > 1000
    log = [json.loads(line) for line in (tmp_path / "out" / "story.mp4.segments.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in log] == ["a", "a", "bb", "bb"] and all(r["latency_s"] > 0 for r in log)
    assert [r["context_tokens"] for r in log] == [4 + 128, 8 + 128, 12 + 128, 16 + 128]

    # a longer storyboard resumes the paused session instead of starting over
    story.write_text(json.dumps({"shots": [{"start": 0, "end": 1.5, "prompt": "a"}]}))
    resume = argv[:] + ["--resume", str(tmp_path / "out" / "story.mp4.session")]
    assert main(resume) == 0
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12

    fresh = [a if a != str(out) else str(tmp_path / "other.mp4") for a in argv]
    assert main(fresh + ["--offload"]) == 2  # no CUDA device here: a clear error, exit 2
    assert main(fresh + ["--history", str(tmp_path / "missing.mp4")]) == 2
