"""``tinyhistory plan`` and the memory model under it (``tinyhistory.sizing.memory``), on the meta device.

The exact numbers are pinned against BENCHMARKS.md ("Memory at real size"): a regression means the counting changed.
The fit decisions pinned here are the ones a user plans a purchase on; each holds with a wide margin except where a
comment says otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_model_folders import wan22_a14b_folder, wan22_ti2v_folder

from tinyhistory.cli import main
from tinyhistory.sizing.memory import GIB, LiveBytes, dit_step_trace, kv_cache_bytes, stored_bytes
from tinyhistory.sizing.plan import PlanSettings, make_plan, render_text


def gib(n: int) -> float:
    return round(n / GIB, 2)


@pytest.fixture(scope="module")
def ti2v_train() -> dict:
    return make_plan(PlanSettings(preset="wan2.2-ti2v-5b", gpu_memory_gib=24, ram_gib=64, generate=False))


@pytest.fixture(scope="module")
def t2v14_train() -> dict:
    return make_plan(PlanSettings(preset="wan2.1-t2v-14b", gpu_memory_gib=24, ram_gib=64, generate=False))


@pytest.fixture(scope="module")
def ti2v_generate_8gb() -> dict:
    return make_plan(PlanSettings(preset="wan2.2-ti2v-5b", gpu_memory_gib=8, ram_gib=64, train=False))


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"ti2v": wan22_ti2v_folder(root / "ti2v"), "a14b": wan22_a14b_folder(root / "a14b")}


def test_exact_numbers_of_the_5b_preset(ti2v_train):
    """The parameter-derived numbers are BENCHMARKS.md's: 9.33 GiB frozen bf16, 4.93 GiB trainable state."""
    ex = ti2v_train["exact"]
    assert ex["frozen_params"] == 4_999_787_712
    assert gib(ex["frozen_bytes"]) == 9.33
    assert ex["lora_params"] == 322_437_120
    assert ex["encoder_params"] == 8_671_168
    assert ex["text_encoder_params"] == 5_680_910_336  # UMT5-XXL
    assert ex["vae_params"] == 704_688_668  # the Wan 2.2 VAE
    items = {i["name"]: i for i in ti2v_train["train"]["items"]}
    state = sum(i["bytes"] for i in items.values() if i["where"] == "GPU" and i["phase"] == "always")
    assert gib(state) == 14.27  # frozen + LoRA/encoder weights, grads and AdamW moments
    assert items["frozen DiT weights (bf16; diffusers' fp32 norms/tables)"]["kind"] == "exact"
    # The activation formula moved from benchmarks/memory_estimate.py: its 1.28 GiB and the 15.55 GiB DDP total.
    assert gib(ti2v_train["train"]["activations_bytes"]) == 1.28
    assert gib(ti2v_train["train"]["gpu_peak_bytes"]) == 15.55
    assert ti2v_train["settings"]["context_tokens"] == 1080


def test_5b_stage_one_fits_24gb_with_checkpointing(ti2v_train):
    t = ti2v_train["train"]
    assert t["fits"] and t["scenario"]["checkpointing"]
    best = t["candidates"][0]  # the paper's defaults come first
    assert (best["height"], best["width"], best["rate"], best["checkpointing"]) == (480, 832, "4x4x2", True)
    assert best["max_batch"] >= 1
    # Without checkpointing every block keeps its activations: ≈ 20 GiB more, far over the card.
    assert not t["without_checkpointing"]["fits_gpu"]
    assert t["activations_without_checkpointing_bytes"] > 10 * t["activations_bytes"]
    assert not t["nothing_fits"] and t["fsdp"] == []


def test_14b_stage_one_does_not_fit_24gb_without_fsdp(t2v14_train):
    t = t2v14_train["train"]
    assert not t["fits"] and t["nothing_fits"] and t["candidates"] == []
    assert gib(t2v14_train["exact"]["frozen_bytes"]) == 26.67  # the frozen weights alone exceed the card
    fsdp = t["fsdp"][0]
    assert fsdp["gpus"] >= 2 and fsdp["fits_gpu"]
    text = render_text(t2v14_train)
    assert "NOTHING FITS one 24 GiB GPU" in text
    assert "configs/accelerate/fsdp.yaml" in text


def test_5b_generation_with_offload_fits_an_8gb_card(ti2v_generate_8gb):
    g = ti2v_generate_8gb["generate"]
    assert not g["fits"]  # the defaults (no offload, UMT5 on the GPU) need far more
    offloaded = [r for r in g["candidates"] if r["offload"]]
    assert offloaded, "some --offload setting must fit 8 GiB"
    # What makes it fit (see the plan's items): UMT5-XXL never visits the card (prompts from text.cache) and the
    # smaller frame size, whose streamed VAE decode is half the 480x832 one.
    assert all(r["prompts"] == "text.cache" for r in offloaded)
    kinds = {i["kind"] for i in g["items"]}
    assert {"exact", "trace", "formula", "assumption"} <= kinds


def test_generation_items_and_kv_cache_formula(ti2v_generate_8gb):
    g = ti2v_generate_8gb["generate"]
    # keys + values × 30 blocks × 1,080 tokens × 3,072 × bf16 × 2 CFG branches
    assert g["kv_cache_bytes"] == 2 * 30 * 1080 * 3072 * 2 * 2
    names = [i["name"] for i in g["items"]]
    assert "UMT5 text encoder (bf16), built once and kept" in names
    # 4x4x2 at 480x832 gives 120x208 LR frames; the LR stream crops them to 112x208 for the Wan 2.2 VAE (traced)
    assert any("LR" in i["name"] for i in g["items"])


def test_kv_cache_trace_equals_the_formula():
    config = {
        "patch_size": [1, 2, 2],
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 32,
        "freq_dim": 256,
        "ffn_dim": 64,
        "num_layers": 5,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 1024,
    }
    from tinyhistory.backbones.wan import WanBackbone

    trace = dit_step_trace(WanBackbone, config, 40, (16, 2, 8, 8), kv_cache=True, text_tokens=8)
    assert trace.kv_cache == kv_cache_bytes(5, 40, 32)
    plain = dit_step_trace(WanBackbone, config, 40, (16, 2, 8, 8), kv_cache=False, text_tokens=8)
    assert plain.kv_cache == 0 and plain.working > trace.working  # the cached step runs the targets alone


def test_live_bytes_counts_new_tensors_and_frees():
    with torch.device("meta"):
        a = torch.empty(1000, 1000)  # made before: not counted
        with LiveBytes() as live:
            b = a * 2  # 4 MB
            view = b.view(-1)  # a view: nothing new
            del b, view
            c = a + 1
            a.mul_(3)  # in place: nothing new
    assert live.peak == 4_000_000
    assert live.live == 4_000_000  # c is still alive
    del c


def test_model_folder_sizes_come_from_its_configs(tiny_folders):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    folder = tiny_folders["ti2v"]
    plan = make_plan(PlanSettings(preset="wan2.2-ti2v-5b", model_path=str(folder), gpu_memory_gib=8))
    dit = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer")
    dit.requires_grad_(False)
    assert plan["exact"]["frozen_params"] == sum(p.numel() for p in dit.parameters())
    assert plan["exact"]["frozen_bytes"] == stored_bytes(dit.named_parameters(), dit._keep_in_fp32_modules)[0]
    umt5 = UMT5EncoderModel.from_pretrained(folder / "text_encoder")
    assert plan["exact"]["text_encoder_params"] == sum(p.numel() for p in umt5.parameters())
    vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae")
    assert plan["exact"]["vae_params"] == sum(p.numel() for p in vae.parameters())
    assert plan["configs_from"] == str(folder) and str(folder) in plan["sizes_source"]
    assert plan["exact"]["num_layers"] == 2 and plan["exact"]["hidden_dim"] == 24
    # The folder's own files are read whole while loading: their real sizes, marked exact.
    shard = next(i for i in plan["train"]["items"] if i["name"].startswith("largest transformer"))
    assert shard["kind"] == "exact"
    assert shard["bytes"] == (folder / "transformer" / "diffusion_pytorch_model.safetensors").stat().st_size
    assert plan["train"]["fits"] and plan["generate"]["fits"]


def test_a14b_folder_counts_its_second_expert(tiny_folders):
    from diffusers import WanTransformer3DModel

    folder = tiny_folders["a14b"]
    plan = make_plan(PlanSettings(preset="wan2.2-t2v-a14b", model_path=str(folder), train=False))
    expert = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer_2")
    expert.requires_grad_(False)
    expected = stored_bytes(expert.named_parameters(), expert._keep_in_fp32_modules)[0]
    assert plan["exact"]["second_expert_bytes"] == expected
    items = {i["name"]: i["bytes"] for i in plan["generate"]["items"]}
    assert items["low-noise expert (bf16; no LoRA, no history)"] == expected


def test_json_fields(capsys):
    assert main(["plan", "--preset", "wan2.2-ti2v-5b", "--train", "--gpu-memory", "24", "--ram", "64", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["measured"] is False and plan["unmeasured"].startswith("UNMEASURED")
    assert {"preset", "model", "sizes_source", "gpu_memory_gib", "ram_gib", "settings", "exact", "assumptions"} <= set(
        plan
    )
    assert "generate" not in plan
    t = plan["train"]
    assert {"items", "gpu_peak_bytes", "gpu_card_bytes", "ram_peak_bytes", "fits", "candidates", "fsdp"} <= set(t)
    assert {"where", "phase", "name", "bytes", "gib", "kind", "note"} == set(t["items"][0])
    assert {"checkpointing", "rate", "height", "width", "max_batch", "fits", "tight"} <= set(t["candidates"][0])


def test_text_says_unmeasured(capsys):
    assert main(["plan", "--preset", "wan2.1-t2v-1.3b", "--train", "--gpu-memory", "12"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("UNMEASURED")
    assert "Training settings that fit one 12 GiB GPU" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gpu-memory", "0"], "--gpu-memory must be a positive number of GiB"),
        (["--gpu-memory", "-8"], "--gpu-memory must be a positive number of GiB"),
        (["--gpu-memory", "lots"], "--gpu-memory must be a positive number of GiB"),
        (["--ram", "0"], "--ram must be a positive number of GiB"),
        (["--preset", "tiny"], "plan covers the presets of released models"),
        (["--preset", "hunyuanvideo", "--tiers", "4x4x2:20+8x8x4@stacked:20"], 'history.tier_layout = "stacked"'),
        (["--height", "500"], "must be a multiple of 32"),
        (["--model", "/nonexistent/folder"], "transformer/config.json not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("preset", ["hunyuanvideo", "ltx-video"])
def test_other_families_are_planned_from_their_own_classes(preset):
    """HunyuanVideo and LTX-Video: the exact counts are those of the stock diffusers classes built from the family's
    released configs on the meta device (DiT, VAE, every text-encoder component), the LoRA lands on the family's own
    targets, the training activations are a trace of the family's forward (no formula is declared), and the
    history KV cache, which both families refuse, is never offered."""
    from tinyhistory.config import load_config
    from tinyhistory.sizing.models import released

    plan = make_plan(PlanSettings(preset=preset, gpu_memory_gib=80, ram_gib=256, history_seconds=5.0))
    model = released(load_config(preset))
    with torch.device("meta"):
        dit = model.adapter.model_class.from_config(model.dit.config)
        vae = model.codec.vae_class.from_config(model.vae)
    count = {"hunyuanvideo": 12_821_012_544, "ltx-video": 1_923_385_472}[preset]
    ex = plan["exact"]
    assert ex["frozen_params"] == sum(p.numel() for p in dit.parameters()) == count
    assert ex["vae_params"] == sum(p.numel() for p in vae.parameters())
    text = sum(sum(p.numel() for p in model.text.meta_model(c, x).parameters()) for c, x in model.text.released.items())
    assert ex["text_encoder_params"] == text
    published = {"hunyuanvideo": (7_505_186_816 + 123_060_480, 246_000_000), "ltx-video": (4_762_310_656, 419_000_000)}
    assert ex["text_encoder_params"] == published[preset][0]  # Llama-3-8B body + CLIP-L text / T5-XXL encoder
    assert abs(ex["vae_params"] - published[preset][1]) < 1_000_000  # 246M / 419M (the published sizes, rounded)
    assert ex["lora_params"] > 0 and ex["num_layers"] == {"hunyuanvideo": 60, "ltx-video": 28}[preset]
    t, g = plan["train"], plan["generate"]
    assert t["activations_kind"] == "trace"
    assert {i["kind"] for i in t["items"] if i["phase"] == "forward/backward" and "block" in i["name"]} == {"trace"}
    assert 0 < t["activations_bytes"] < t["activations_without_checkpointing_bytes"]
    assert g["with_kv_cache"] is None and not any(r["kv_cache"] for r in g["all"])
    assert {r["prompts"] for r in g["all"]} == {load_config(preset).text.kind, "text.cache"}
    assert g["gpu_peak_bytes"] > ex["frozen_bytes"]
    assert render_text(plan).count(ex["text_encoder"]) >= 2


def test_stacked_tiers_are_counted_by_the_plan():
    """``--tiers RATES@stacked``: the training sequence holds every rate's tokens of every block, the session keeps
    them all, the targets attend to each tier's span, and the block-causal KV cache holds what StackedTierCache
    keeps (every rate's blocks the targets see plus one window; one cache for both CFG branches). TI2V-5B, 480×832,
    24 fps, 60 s: 360 latent frames, 4×4×2 gives 3·6 = 18 tokens per latent frame, 8×8×4 gives 1·3 = 3 (floor grid
    15×26 → 3×6 and 1×3); the fine tier is the newest 20 s (120 frames), moves of 10 s."""
    from tinyhistory.sizing.cost import TierSet

    spec = TierSet.parse("4x4x2:20+8x8x4@stacked:20", 10.0)
    plan = make_plan(PlanSettings(preset="wan2.2-ti2v-5b", history_seconds=60.0, tiers=spec, gpu_memory_gib=80))
    st = plan["settings"]
    every = 360 // 2 * 18 + 360 // 4 * 3  # 3,240 + 270
    view = 120 // 2 * 18 + 240 // 4 * 3  # the fine tier's 120 frames + the coarse tier's 240
    assert st["tiers"]["every_rate"] == every and st["training_context_tokens"] == every
    assert st["context_tokens"] == st["tiers"]["view"] == view
    # the cache: the fine rate from the fine tier's start (120 frames = 30 blocks of 4 back; the window is as long),
    # the coarse rate from block 0
    assert st["cached_context_tokens"] == 30 * 2 * 18 + 90 * 3
    g = plan["generate"]
    assert all(r["kv_cache"] for r in g["all"])  # the stacked layout is a cache
    assert g["kv_cache_bytes"] == kv_cache_bytes(30, st["cached_context_tokens"], 3072, branches=1)
    items = {i["name"]: i for i in g["items"]}
    assert items[f"history tokens ({every:,}, every rate's × bf16)"]["bytes"] == every * 3072 * 2
    plain = make_plan(PlanSettings(preset="wan2.2-ti2v-5b", history_seconds=60.0, gpu_memory_gib=80, generate=False))
    assert plan["train"]["activations_bytes"] > plain["train"]["activations_bytes"]  # 3,510 tokens vs 3,240


def test_the_stacked_cache_count_is_what_stacked_tier_cache_keeps():
    """:func:`tier_tokens`'s ``cached`` equals the session's own StackedTierCache grown over the same history (the
    tiny preset's DiT on the meta device, every rate's tokens of every block)."""
    from tinyhistory.history.stacked import StackedTierCache
    from tinyhistory.sizing.cost import CostModel, CostSettings, TierSet
    from tinyhistory.sizing.memory import tier_tokens

    spec = TierSet.parse("4x4x2:2+8x8x4@stacked:1", 1.0)
    model = CostModel(
        CostSettings(preset="tiny", history_seconds=(6.0,), methods=("proposed",), tier_sets=(spec,), kv_cache=False)
    )
    dit = model.tiered[spec]
    for seconds in (3.0, 6.0):
        frames = model.latent_frames(seconds)
        cache = StackedTierCache(dit.tiers)
        cache.grow(dit, model._rate_tokens(dit, 0, frames // dit.tiers.block * dit.tiers.block), frames)
        assert tier_tokens(dit.tiers, frames, model.grid_hw).cached == cache.num_tokens
