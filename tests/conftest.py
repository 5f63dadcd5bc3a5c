"""Shared fixtures: tiny diffusers models (diffusers' own test sizes) and a small run config."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two xdist workers on the CI machine's two cores: one thread each (and in every process a test
    # starts), since two-thread processes sharing two cores run several times slower than one-thread ones.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# A run config small enough for CPU tests; same code path as the preset.
SMALL_OVERRIDES = [
    "backbone.num_attention_heads=2",
    "backbone.attention_head_dim=96",
    "backbone.ffn_dim=64",
    "backbone.num_layers=1",
    "history.channels=[8, 16, 32, 32]",
    "history.attention_heads=2",
    "train.batch_size=2",
    "train.history_frames=8",
    "train.warmup_steps=2",
    "train.log_every=1",
]

# What a real preset's LoRA run needs to be small on a CPU (the architecture comes from the model folder), as CLI flags.
LORA_RUN_FLAGS = [
    "--set", "train.batch_size=1", "--set", 'data.heldout_split="videos"', "--set", "data.heldout_fraction=0.5",
    "--set", "train.warmup_steps=1", "--set", "history.channels=[8, 16, 32, 32]", "--set", "history.attention_heads=2",
    "--set", "train.lora_rank=4", "--no-progress",
]  # fmt: skip


@pytest.fixture
def record_trainer_calls(monkeypatch):
    """``record(name)`` wraps the trainer module's function ``name`` for the test: the list it returns gets each
    call's arguments by parameter name, defaults filled in (``calls[i]["split"]``), however the trainer passed them."""
    import inspect

    from tinyhistory.train import trainer as trainer_module

    def record(name: str) -> list[dict]:
        calls: list[dict] = []
        original = getattr(trainer_module, name)
        signature = inspect.signature(original)

        def recording(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            calls.append(dict(bound.arguments))
            return original(*args, **kwargs)

        monkeypatch.setattr(trainer_module, name, recording)
        return calls

    return record


@pytest.fixture
def tiny_wan():
    """diffusers' test-sized Wan transformer with Wan 2.2-5B-shaped 48 latent channels."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=48,
        out_channels=48,
        text_dim=16,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    ).eval()


@pytest.fixture
def small_config():
    from tinyhistory.config import load_config

    def make(*extra: str):
        return load_config("tiny", overrides=SMALL_OVERRIDES + list(extra))

    return make
