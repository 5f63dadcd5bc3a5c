"""A whole DiT trained by tinyhistory (the tiny preset's text-to-video pretraining: no history, `train.dit = "full"`)
is itself a base-model folder: `--model RUN/final` trains a LoRA and an encoder on it, frozen, as on a user's Wan
folder."""

from __future__ import annotations

import json

import torch
from conftest import SMALL_OVERRIDES
from safetensors.torch import load_file

from tinyhistory.cli import main
from tinyhistory.train.checkpoint import load_model

SETS = [a for o in SMALL_OVERRIDES for a in ("--set", o)]


def test_a_pretrained_tiny_dit_is_the_frozen_base_of_a_lora_run(tmp_path, capsys):
    base_run, lora_run = tmp_path / "base", tmp_path / "lora"
    pretrain = ["train", "--stage", "ar", "--preset", "tiny", "--steps", "2", "--no-progress", *SETS]
    pretrain += ["--set", 'history.method="no_history"', "--set", "train.lora_rank=0", "--set", "train.batch_size=1"]
    assert (
        main([*pretrain, "--set", "train.history_frames=16", "--set", "train.segment_frames=8", "--out", str(base_run)])
        == 0
    )
    index = json.loads((base_run / "final" / "model_index.json").read_text())
    assert index == {"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"]}

    stage1 = ["train", "--stage", "frame-query", "--preset", "tiny", "--model", str(base_run / "final"), *SETS]
    stage1 += ["--set", 'train.dit="lora"', "--set", "train.lora_rank=4", "--set", 'model.dtype="float32"']
    assert main([*stage1, "--steps", "2", "--no-progress", "--out", str(lora_run)]) == 0
    names = {p.name for p in (lora_run / "final").iterdir()}
    assert "transformer" not in names and {"lora.safetensors", "history_encoder.safetensors"} <= names

    # the base stayed frozen: the LoRA run's model without its LoRA is the pretrained DiT, weight for weight
    ours, cfg = load_model(lora_run / "final", with_lora=False)
    assert cfg.model.path == str(base_run / "final") and cfg.train.dit == "lora"
    pretrained = load_file(str(next((base_run / "final" / "transformer").glob("*.safetensors"))))
    mine = ours.backbone.transformer.state_dict()
    assert pretrained.keys() == mine.keys() and all(torch.equal(pretrained[k], mine[k]) for k in pretrained)
    assert any(
        v.abs().sum() > 0 for k, v in load_file(str(lora_run / "final" / "lora.safetensors")).items() if "lora_B" in k
    )

    # --init-from a checkpoint of the same stage continues its LoRA (the demo's live fine-tune); a tiny learning rate
    # keeps it where it was, so a fresh LoRA (B = 0) would show as all-zero lora_B
    more = tmp_path / "more"
    tiny_lr = ["--set", "train.learning_rate=1e-12", "--set", "train.encoder_learning_rate=1e-12"]
    assert main([*stage1, *tiny_lr, "--init-from", str(lora_run / "final"), "--steps", "1", "--no-progress",
                 "--out", str(more)]) == 0  # fmt: skip
    before = load_file(str(lora_run / "final" / "lora.safetensors"))
    after = load_file(str(more / "final" / "lora.safetensors"))
    assert before.keys() == after.keys() and all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    # stage II from that stage-I checkpoint starts a fresh LoRA (the paper's newly initialised LoRA)
    stage2 = ["train", "--stage", "ar", "--preset", "tiny", "--init-from", str(lora_run / "final"), *SETS]
    stage2 += ["--set", 'train.dit="lora"', "--set", "train.lora_rank=4", *tiny_lr, "--set", "train.segment_frames=2"]
    assert main([*stage2, "--steps", "1", "--no-progress", "--out", str(tmp_path / "s2")]) == 0
    fresh = load_file(str(tmp_path / "s2" / "final" / "lora.safetensors"))
    assert all(v.abs().max() < 1e-6 for k, v in fresh.items() if "lora_B" in k)
    # ... unless train.carry_lora: then stage II goes on with the stage-I LoRA, which learned to read the encoder
    carry = [*stage2, "--set", "train.carry_lora=true", "--steps", "1", "--no-progress"]
    assert main([*carry, "--out", str(tmp_path / "s2carry")]) == 0
    carried = load_file(str(tmp_path / "s2carry" / "final" / "lora.safetensors"))
    assert carried.keys() == before.keys() and all(torch.allclose(before[k], carried[k], atol=1e-6) for k in before)
    capsys.readouterr()
    assert main([*carry, "--set", "train.lora_rank=8", "--out", str(tmp_path / "s2rank")]) != 0
    assert "rank 4; this run (train.carry_lora, so it continues that LoRA) asks for" in capsys.readouterr().err

    # an only-LR row on the frozen base has no encoder weights of its own (the LR branch is the base's patch
    # embedding): its checkpoint still loads (Table 1 under the miniature protocol)
    assert main([*stage1, "--method", "only_lr", "--steps", "1", "--no-progress", "--out", str(tmp_path / "lr")]) == 0
    only_lr, cfg = load_model(tmp_path / "lr" / "final")
    assert cfg.history.method == "only_lr" and len(only_lr.producers) and not list(only_lr.producers.parameters())
