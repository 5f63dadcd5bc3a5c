"""The history KV cache in a run: training and a streaming session with ``history.kv_cache`` on the tiny preset.

That the cache equals the masked forward in every step, costs only the targets per step, samples as the
uncached pattern does, or is refused by the family's name, is the backbone contract's
(test_backbone_contract.py), for every family.
"""

from __future__ import annotations

import numpy as np
import torch

from tinyhistory.assemble import HistoryDiT, build_codec
from tinyhistory.backbones import ContextTokens
from tinyhistory.generate.run import session_setup
from tinyhistory.generate.session import GenerationSession, SamplingSettings
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.trainer import train

SMALL_AR = ['train.stage="ar"', "train.history_frames=8", "train.segment_frames=2", "train.lora_rank=0"]


def test_a_session_and_training_run_with_the_cache(small_config, tmp_path):
    cfg = small_config(*SMALL_AR, "history.kv_cache=true", "train.steps=2")
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["heldout_loss"] > 0
    model = HistoryDiT.from_config(cfg).eval()

    def text(prompts):
        return TextCondition(torch.stack([torch.full((64, 384), 0.01 * len(p)) for p in prompts]))

    session = GenerationSession(
        model, session_setup(cfg), build_codec(cfg.codec), text, SamplingSettings(steps=2, segment_frames=2)
    )
    session.start_from_video(np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    frames = session.extend("a", seconds=0.5)
    assert frames.shape == (4, 64, 64, 3) and session.records[-1].context_tokens > 0
    assert isinstance(session.context(), ContextTokens)
