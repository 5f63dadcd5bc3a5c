"""The Wan LoRA in the original Wan / ComfyUI layout is the same LoRA, checked against its real consumers.

diffusers: a tiny Wan repo folder (``tiny_model_folders``) gets the trainer's peft LoRA with random non-zero
``lora_B`` (a zero ``lora_B`` would make every comparison pass); the converted file is loaded into a *fresh*
``WanPipeline.from_pretrained(folder)`` with ``load_lora_weights`` and the transformer output must equal the peft
model's, for alpha = rank and alpha ≠ rank, on the Wan 2.1 and the Wan 2.2 TI2V shapes.

ComfyUI: no registry package ships ComfyUI's ``comfy`` modules, so ComfyUI is not run. What was read is encoded:
the Linear module names of ``WanAttentionBlock`` (comfy/ldm/wan/model.py), the generic key rule of
``model_lora_keys_unet`` (comfy/lora.py) and the suffixes and ``alpha / rank`` merge of ``LoRAAdapter``
(comfy/weight_adapter/lora.py). The merge test applies those rules to the converted file on the original-layout
weight names, maps the merged weights to diffusers names with diffusers' own single-file Wan converter
(``convert_wan_transformer_to_diffusers``: independent of our mapping) and compares outputs with the peft model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import WanPipeline, WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from tiny_model_folders import wan21_t2v_folder, wan22_ti2v_folder

from tinyhistory.backbones.wan_lora_format import from_original_layout, to_original_layout

# The trainer's target modules (a str target_modules is a full-match regex to peft).
LORA_TARGETS = (
    r"blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.0\.proj|ffn\.net\.2)"
)

# ComfyUI, read at Comfy-Org/ComfyUI@56bf4365f7322c069b077d9a191299036da05c01 comfy/ldm/wan/model.py (same names at
# comfyanonymous/ComfyUI@075e17041b2f2b7cdb8f6145800c42ee6a386ffd): the Linear layers of ``WanAttentionBlock``,
# ``WanModel.blocks = nn.ModuleList([WanAttentionBlock(...)])``; ``WanSelfAttention`` / ``WanT2VCrossAttention``
# have ``q, k, v, o`` (+ RMSNorm ``norm_q, norm_k``), ``WanI2VCrossAttention`` adds ``k_img, v_img``, and ``ffn`` is
# ``Sequential(Linear, GELU, Linear)`` (``WanFeedForward`` in the newer file), i.e. ``ffn.0`` and ``ffn.2``.
COMFY_WAN_BLOCK_LINEARS = (
    "self_attn.q",
    "self_attn.k",
    "self_attn.v",
    "self_attn.o",
    "cross_attn.q",
    "cross_attn.k",
    "cross_attn.v",
    "cross_attn.o",
    "cross_attn.k_img",
    "cross_attn.v_img",
    "ffn.0",
    "ffn.2",
)
# ComfyUI's model state dict puts the DiT under ``diffusion_model.`` (model_base.BaseModel.diffusion_model).
COMFY_PREFIX = "diffusion_model."
# comfy/weight_adapter/lora.py ``LoRAAdapter.load`` (Comfy-Org/ComfyUI@6f98b150e065f1ffc788558574a887835068bd40):
# ``diffusers2_lora = "{x}.lora_B.weight"`` is the up matrix (mat1), ``"{x}.lora_A.weight"`` the down (mat2);
# comfy/lora.py ``load_lora`` (Comfy-Org/ComfyUI@ec93dcacb96b922f7cb1417b3ba22bccb082df32) reads ``"{x}.alpha"``.
COMFY_UP, COMFY_DOWN, COMFY_ALPHA = ".lora_B.weight", ".lora_A.weight", ".alpha"

FOLDERS = {"wan21_t2v": wan21_t2v_folder, "wan22_ti2v": wan22_ti2v_folder}


def peft_lora_transformer(folder: Path, rank: int, alpha: float) -> WanTransformer3DModel:
    """The folder's transformer with the trainer's LoRA attached and every LoRA matrix random and non-zero.

    peft initialises ``lora_B`` to zero, which would make the LoRA a no-op and every comparison vacuous.
    """
    transformer = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer").eval()
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS, init_lora_weights=True))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=gen))
    return transformer


def trainer_state(transformer: WanTransformer3DModel) -> dict[str, torch.Tensor]:
    """Exactly what the trainer saves: peft's adapter state with a ``transformer.`` prefix."""
    return {"transformer." + k: v.detach().clone() for k, v in get_peft_model_state_dict(transformer).items()}


def forward(transformer: WanTransformer3DModel) -> torch.Tensor:
    """Transformer output ``(1, C, 2, 8, 8)`` on fixed random inputs (latents, one timestep, 6 text tokens)."""
    gen = torch.Generator().manual_seed(2)
    c = transformer.config.in_channels
    hidden = torch.randn(1, c, 2, 8, 8, generator=gen)  # (B, C, T, H, W)
    text = torch.randn(1, 6, transformer.config.text_dim, generator=gen)  # (B, L, text_dim)
    with torch.no_grad():
        return transformer(hidden, torch.tensor([700.0]), text, return_dict=False)[0]


@pytest.fixture(params=list(FOLDERS))
def folder(request, tmp_path: Path) -> Path:
    """A freshly written repo folder per test, Wan 2.1 T2V (16 ch) and Wan 2.2 TI2V-5B (48 ch) shaped."""
    return FOLDERS[request.param](tmp_path / request.param)


@pytest.mark.parametrize(("rank", "alpha"), [(4, 4.0), (4, 2.0)])
def test_diffusers_load_lora_weights_gives_the_peft_output(folder: Path, tmp_path: Path, rank: int, alpha: float):
    transformer = peft_lora_transformer(folder, rank, alpha)
    expected = forward(transformer)
    transformer.disable_adapters()
    base = forward(transformer)
    transformer.enable_adapters()
    assert not torch.allclose(expected, base, atol=1e-3), "the LoRA must change the output, or the test cannot fail"

    file = tmp_path / "lora_original.safetensors"
    save_file(to_original_layout(trainer_state(transformer), alpha), file)
    pipe = WanPipeline.from_pretrained(folder)
    pipe.load_lora_weights(str(file))
    got = forward(pipe.transformer)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_round_trip_through_the_original_layout(tmp_path: Path):
    transformer = peft_lora_transformer(wan21_t2v_folder(tmp_path / "wan"), rank=4, alpha=2.0)
    state = trainer_state(transformer)
    file = tmp_path / "lora.safetensors"
    save_file(to_original_layout(state, 2.0), file)
    back, alpha = from_original_layout(load_file(file))
    assert alpha == 2.0
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(back[key], value), key


def test_original_keys_and_alpha_scalars():
    a, b = torch.randn(4, 24), torch.randn(32, 4)
    out = to_original_layout(
        {"transformer.blocks.1.ffn.net.0.proj.lora_A.weight": a, "blocks.1.ffn.net.0.proj.lora_B.weight": b}, 3.0
    )
    assert out.keys() == {
        "diffusion_model.blocks.1.ffn.0.lora_A.weight",
        "diffusion_model.blocks.1.ffn.0.lora_B.weight",
        "diffusion_model.blocks.1.ffn.0.alpha",
    }
    assert out["diffusion_model.blocks.1.ffn.0.alpha"].shape == () and out["diffusion_model.blocks.1.ffn.0.alpha"] == 3
    # No .alpha at all: ComfyUI and diffusers use scale 1, i.e. alpha = rank.
    no_alpha = {k: v for k, v in out.items() if not k.endswith(".alpha")}
    assert from_original_layout(no_alpha)[1] == 4.0


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"transformer.blocks.0.norm2.lora_A.weight": torch.zeros(1)}, "blocks.0.norm2"),
        ({"transformer.proj_out.lora_A.weight": torch.zeros(1)}, "proj_out"),
        ({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 24)}, "both lora_A and lora_B"),
    ],
)
def test_to_original_rejects_unknown_keys(state: dict[str, torch.Tensor], message: str):
    with pytest.raises(ValueError, match=message):
        to_original_layout(state, 4.0)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({}, "empty"),
        # kohya/SD-style file: not a Wan LoRA.
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(1)}, "lora_unet_down"),
        # diffusers-layout Wan file given to the wrong function.
        ({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(1)}, "transformer.blocks.0.attn1.to_q"),
        # Wan layout, but an I2V image projection our trainer never targets.
        ({"diffusion_model.blocks.0.cross_attn.k_img.lora_A.weight": torch.zeros(1)}, "k_img"),
        (
            {
                "diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 24),
                "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(24, 4),
                "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(4.0),
                "diffusion_model.blocks.0.self_attn.k.lora_A.weight": torch.zeros(4, 24),
                "diffusion_model.blocks.0.self_attn.k.lora_B.weight": torch.zeros(24, 4),
                "diffusion_model.blocks.0.self_attn.k.alpha": torch.tensor(2.0),
            },
            "different alphas",
        ),
        ({"diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(24, 4)}, "lacks"),
    ],
)
def test_from_original_rejects_non_wan_files(state: dict[str, torch.Tensor], message: str):
    with pytest.raises(ValueError, match=message):
        from_original_layout(state)


def test_keys_name_comfyui_wan_modules(tmp_path: Path):
    transformer = peft_lora_transformer(wan21_t2v_folder(tmp_path / "wan"), rank=4, alpha=4.0)
    original = to_original_layout(trainer_state(transformer), 4.0)
    layers = transformer.config.num_layers
    comfy_weights = {f"{COMFY_PREFIX}blocks.{i}.{m}.weight" for i in range(layers) for m in COMFY_WAN_BLOCK_LINEARS}
    modules = set()
    for key in original:
        suffix = next(s for s in (COMFY_UP, COMFY_DOWN, COMFY_ALPHA) if key.endswith(s))
        module = key[: -len(suffix)]
        # model_lora_keys_unet: key_map[k[:-len(".weight")]] = k for every diffusion_model.* weight k.
        assert module + ".weight" in comfy_weights, key
        modules.add(module)
    # Every module carries up, down and alpha: LoRAAdapter needs both matrices; without alpha the scale would be 1.
    assert {m + s for m in modules for s in (COMFY_UP, COMFY_DOWN, COMFY_ALPHA)} == original.keys()
    # All ten targets of every block: nothing the trainer learned is left out.
    assert len(modules) == 10 * layers


def comfy_merge(weights: dict[str, torch.Tensor], lora: dict[str, torch.Tensor]) -> set[str]:
    """ComfyUI's LoRA patching of ``weights`` (ComfyUI model-state names) in place; returns the LoRA keys used.

    model_lora_keys_unet (generic format): ``key_map["diffusion_model.X"] = "diffusion_model.X.weight"``;
    load_lora: ``alpha = lora["X.alpha"].item()``; LoRAAdapter.load: ``mat1 = lora["X.lora_B.weight"]`` (up),
    ``mat2 = lora["X.lora_A.weight"]`` (down); LoRAAdapter.calculate_weight:
    ``alpha = v[2] / mat2.shape[0]``; ``weight += (strength * alpha) * mm(mat1, mat2)`` with strength 1.
    """
    key_map = {k[: -len(".weight")]: k for k in weights if k.endswith(".weight")}
    loaded: set[str] = set()
    for x, target in key_map.items():
        if x + COMFY_UP not in lora:
            continue
        mat1, mat2 = lora[x + COMFY_UP], lora[x + COMFY_DOWN]
        alpha = lora[x + COMFY_ALPHA].item() if x + COMFY_ALPHA in lora else None
        scale = alpha / mat2.shape[0] if alpha is not None else 1.0
        weights[target] += scale * torch.mm(mat1.flatten(start_dim=1), mat2.flatten(start_dim=1))
        loaded |= {x + COMFY_UP, x + COMFY_DOWN} | ({x + COMFY_ALPHA} if alpha is not None else set())
    return loaded


@pytest.mark.parametrize(("rank", "alpha"), [(4, 4.0), (4, 2.0)])
def test_comfyui_merge_rules_give_the_peft_output(folder: Path, tmp_path: Path, rank: int, alpha: float):
    transformer = peft_lora_transformer(folder, rank, alpha)
    expected = forward(transformer)
    lora = load_file(_saved(to_original_layout(trainer_state(transformer), alpha), tmp_path / "lora.safetensors"))

    # The base model in ComfyUI's names: the Wan block Linears ComfyUI has, named as ComfyUI names them, with
    # diffusers' single-file converter telling which diffusers parameter each original Wan weight is.
    fresh = WanTransformer3DModel.from_pretrained(folder, subfolder="transformer").eval()
    params = dict(fresh.named_parameters())
    layers = fresh.config.num_layers
    originals = [f"blocks.{i}.{m}.weight" for i in range(layers) for m in COMFY_WAN_BLOCK_LINEARS]
    tags = {name: torch.tensor([float(n)]) for n, name in enumerate(originals)}
    converted = convert_wan_transformer_to_diffusers(dict(tags))
    to_diffusers = {originals[int(t.item())]: name for name, t in converted.items()}
    comfy_weights = {
        COMFY_PREFIX + orig: params[name].detach().clone() for orig, name in to_diffusers.items() if name in params
    }
    assert len(comfy_weights) == 10 * layers  # a T2V model has no k_img / v_img

    loaded = comfy_merge(comfy_weights, lora)
    assert loaded == lora.keys(), f"ComfyUI would warn 'lora key not loaded': {sorted(lora.keys() - loaded)[:3]}"
    with torch.no_grad():
        for comfy_key, value in comfy_weights.items():
            params[to_diffusers[comfy_key[len(COMFY_PREFIX) :]]].copy_(value)
    torch.testing.assert_close(forward(fresh), expected, atol=1e-5, rtol=1e-5)


def _saved(state: dict[str, torch.Tensor], file: Path) -> Path:
    """``state`` written with safetensors (what a user hands ComfyUI), so 0-dim alphas go through the file format."""
    save_file(state, file)
    return file
