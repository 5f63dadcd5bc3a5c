"""Streaming generation: incremental cache, pause/resume, seeds, samplers, and the ``generate`` command."""

import json
from dataclasses import replace

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


def _low_noise_checkpoint(small_config, folder, *extra: str):
    """A no-history checkpoint of other weights than the fixture's model (seed 1), saved as training saves one."""
    cfg = small_config(*SMALL_AR, 'history.method="no_history"', *extra)
    torch.manual_seed(1)
    save_weights(HistoryDiT.from_config(cfg), cfg, folder)
    return folder


def test_a_low_noise_checkpoint_takes_the_steps_below_the_boundary_without_history(
    model_and_cfg, small_config, tmp_path
):
    from tinyhistory.generate.run import load_low_noise_checkpoint

    model, cfg = model_and_cfg
    expert = load_low_noise_checkpoint(_low_noise_checkpoint(small_config, tmp_path / "low"), model, cfg)
    calls = []  # (which, t, with context)
    model.register_forward_pre_hook(lambda m, a: calls.append(("high", round(float(a[1][0]), 3), a[3] is not None)))
    expert.register_forward_pre_hook(lambda m, a: calls.append(("low", round(float(a[1][0]), 3), a[3] is not None)))
    settings = SamplingSettings(steps=4, guidance=1.0, segment_frames=2)
    one = GenerationSession(model, session_setup(cfg), build_codec(cfg.codec), _text, settings)
    two = GenerationSession(
        model, session_setup(cfg), build_codec(cfg.codec), _text, replace(settings, boundary=0.5), low_noise=expert
    )
    assert one.boundary is None and two.boundary == 0.5
    frames = []
    for session in (one, two):
        calls.clear()
        session.start_from_video(_frames(5))
        frames.append(session.generate_segment("a"))
    # four Euler steps at t = 1, 0.667 | 0.334, 0.001 (diffusers' flow-matching Euler schedule): the history model
    # above the boundary with its history (the sliding window), the expert below without
    assert calls == [("high", 1.0, True), ("high", 0.667, True), ("low", 0.334, False), ("low", 0.001, False)]
    assert not np.array_equal(frames[0], frames[1])
    # a paused two-expert session resumes bit for bit when given its expert again (the boundary is in its settings)
    two.save(tmp_path / "two.session")
    uninterrupted = two.generate_segment("a")
    resumed = GenerationSession.load(
        tmp_path / "two.session", model, session_setup(cfg), build_codec(cfg.codec), _text, low_noise=expert
    )
    assert resumed.settings.boundary == 0.5
    np.testing.assert_array_equal(resumed.generate_segment("a"), uninterrupted)


def test_a_boundary_needs_an_expert_and_an_expert_must_read_the_same_latents(model_and_cfg, small_config, tmp_path):
    from tinyhistory.generate.run import load_low_noise_checkpoint

    model, cfg = model_and_cfg
    codec = build_codec(cfg.codec)
    with pytest.raises(ValueError, match="no second expert.*--low-noise"):
        GenerationSession(model, session_setup(cfg), codec, _text, SamplingSettings(boundary=0.5))
    expert = load_low_noise_checkpoint(_low_noise_checkpoint(small_config, tmp_path / "low"), model, cfg)
    with pytest.raises(ValueError, match="set the boundary"):
        GenerationSession(model, session_setup(cfg), codec, _text, SamplingSettings(), low_noise=expert)
    with pytest.raises(ValueError, match=r"boundary must be a flow time in \[0, 1\)"):
        SamplingSettings(boundary=1.0)
    other = _low_noise_checkpoint(small_config, tmp_path / "other", "codec.factor=8")
    with pytest.raises(
        ValueError, match=r"--low-noise .*other cannot take .*codec: \('pixel', 4\) here, \('pixel', 8\)"
    ):
        load_low_noise_checkpoint(other, model, cfg)


def test_generate_command_with_a_low_noise_checkpoint(model_and_cfg, small_config, tmp_path, capsys):
    model, cfg = model_and_cfg
    save_weights(model, cfg, tmp_path / "ckpt")
    low = _low_noise_checkpoint(small_config, tmp_path / "low")
    story = tmp_path / "story.json"
    story.write_text(json.dumps({"shots": [{"start": 0, "end": 0.5, "prompt": "a"}]}))
    argv = ["generate", "--checkpoint", str(tmp_path / "ckpt"), "--storyboard", str(story), "--steps", "2"]
    argv += ["--segment-frames", "2", "--no-progress", "--low-noise", str(low)]
    assert main([*argv, "--out", str(tmp_path / "a.mp4"), "--boundary", "0.6"]) == 0
    assert f"steps below t = 0.6 are taken by {low}, without history" in capsys.readouterr().out
    with av.open(str(tmp_path / "a.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
    assert main([*argv, "--out", str(tmp_path / "b.mp4")]) == 2  # no boundary: the tiny preset's folder names none
    assert "set the boundary" in capsys.readouterr().err
