"""What the checkpoint tests share (test_tiers.py, test_stacked_tiers.py, test_block_causal.py): a two-tier training
config of the tiny preset, and ``generate`` / ``generate --resume`` on a trained checkpoint."""

from __future__ import annotations

import json

from tinyhistory.generate.session import session_meta

SMALL_AR = ['train.stage="ar"', "train.history_frames=8", "train.segment_frames=2", "train.lora_rank=0"]
KV = ("history.kv_cache=true", 'history.context_attention="block_causal"')


def two_tier_training(small_config, stage: str, fine_seconds: float, *extra: str):
    """Two training steps of ``stage`` (stage I: 8-frame windows; stage II: 16-frame windows) with the block-causal
    cache and two tiers: the newest ``fine_seconds`` at 4×4×2, older history at 4×4×4, moved 0.5 s at a time."""
    stage_args = SMALL_AR[1:] + ["train.history_frames=16"] if stage == "ar" else []
    return small_config(
        *stage_args,
        f'train.stage="{stage}"',
        *KV,
        'history.rates=["4x4x2", "4x4x4"]',
        f"history.tiers=[{fine_seconds}]",
        "history.tier_move=0.5",
        *extra,
        "train.steps=2",
    )


def generate_and_resume(tmp_path, steps: int = 1) -> dict:
    """``generate`` one second with the checkpoint ``tmp_path/run/final`` (``steps`` denoising steps, 2-frame
    segments), then ``generate --resume`` a longer storyboard; checks that the resume added segments and returns the
    session's metadata."""
    from tinyhistory.generate.run import generate

    story = tmp_path / "story.json"
    story.write_text(json.dumps({"shots": [{"start": 0, "end": 1.0, "prompt": "a rabbit"}]}))
    out = tmp_path / "story.mp4"
    settings = {"steps": steps, "segment_frames": 2}
    generate(tmp_path / "run" / "final", story, out, settings=settings, progress=False)
    story.write_text(json.dumps({"shots": [{"start": 0, "end": 2.0, "prompt": "a rabbit, then a bird"}]}))
    session = out.with_name(out.name + ".session")
    made = len(session_meta(session)["records"])
    generate(tmp_path / "run" / "final", story, out, resume=session, settings=settings, progress=False)
    meta = session_meta(session)
    assert len(meta["records"]) > made
    return meta
