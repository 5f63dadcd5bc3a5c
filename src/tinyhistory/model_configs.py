"""The real Wan transformers' ``config.json`` contents, embedded, so that real-size models can be built without weights.

Why this exists: the cost model (:mod:`tinyhistory.cost`) and the memory benchmark (``benchmarks/memory_estimate.py``)
both need the exact architecture of the DiTs the real presets train on, and neither may download anything. Built on
the ``meta`` device (:func:`meta_transformer`), a 14B DiT costs no memory and runs its forward in about a second, which
is all that exact parameter and FLOP counts need. One copy of the configs keeps the two tools from drifting apart.

Values: diffusers' scripts/convert_wan_to_diffusers.py (get_transformer_config: "Wan-T2V-1.3B", "Wan-T2V-14B",
"Wan2.2-TI2V-5B", "Wan2.2-T2V-A14B"), the script that wrote the Wan-AI/*-Diffusers repos, cross-checked against
the original Wan configs (Wan-Video wan/configs/wan_t2v_1_3B.py: dim 1536, ffn 8960, 12 heads, 30 layers;
wan_ti2v_5B.py: dim 3072, ffn 14336, 24 heads, 30 layers, vae_stride (4, 16, 16); wan_t2v_A14B.py: dim 5120,
ffn 13824, 40 heads, 40 layers). Key set: as diffusers writes it; the A14B file below is the Hub's
Wan-AI/Wan2.2-T2V-A14B-Diffusers transformer_2/config.json (refs/pr/2) verbatim, and both A14B experts share one
config in the convert script ("transformer" = high-noise expert). The Wan 2.1 and TI2V-5B files could not be read
verbatim from here: keys the convert script omits (image_dim, rope_max_seq_len, pos_embed_seq_len) are given
diffusers' defaults (None, 1024, None); none of them adds a parameter to a text-to-video model.
Note: a third-party mirror (inference-sh/Wan2.2-TI2V-5B-Diffusers, an image-to-video repackaging) lists
added_kv_proj_dim 5120 / image_dim 1280 for TI2V-5B; the official conversion has None/None (no image branch, as
the original TI2V-5B, whose image conditioning is per-token timesteps, not CLIP), which is what is used here.
"""

from __future__ import annotations

import torch
from diffusers import HunyuanVideoTransformer3DModel, WanTransformer3DModel

_WAN21_KEYS: dict = {
    "_class_name": "WanTransformer3DModel",
    "_diffusers_version": "0.33.0.dev0",  # Wan-AI/Wan2.1-T2V-*-Diffusers model_index.json
    "added_kv_proj_dim": None,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "freq_dim": 256,
    "image_dim": None,
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
    "text_dim": 4096,
}
# The Wan 2.2 files (diffusers 0.35) add pos_embed_seq_len; the other keys are Wan 2.1's.
_WAN22_KEYS: dict = {**_WAN21_KEYS, "_diffusers_version": "0.35.0.dev0", "pos_embed_seq_len": None}

CONFIGS: dict[str, dict] = {
    # Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer/config.json
    "Wan2.1-T2V-1.3B": {**_WAN21_KEYS, "ffn_dim": 8960, "num_attention_heads": 12, "num_layers": 30},
    # Wan-AI/Wan2.1-T2V-14B-Diffusers transformer/config.json
    "Wan2.1-T2V-14B": {**_WAN21_KEYS, "ffn_dim": 13824, "num_attention_heads": 40, "num_layers": 40},
    # Wan-AI/Wan2.2-TI2V-5B-Diffusers transformer/config.json
    "Wan2.2-TI2V-5B": {
        **_WAN22_KEYS,
        "ffn_dim": 14336,
        "num_attention_heads": 24,
        "num_layers": 30,
        "in_channels": 48,
        "out_channels": 48,
    },
    # Wan-AI/Wan2.2-T2V-A14B-Diffusers transformer/config.json (high-noise expert; transformer_2 is identical)
    "Wan2.2-T2V-A14B (high-noise)": {**_WAN22_KEYS, "ffn_dim": 13824, "num_attention_heads": 40, "num_layers": 40},
}

# tinyhistory.geometry base of each model, and the fps its history is sampled at: Wan 2.1 and Wan 2.2 A14B generate
# at 16 fps (Wan 2.2 shared config sample_fps), TI2V-5B at 24 fps (wan_ti2v_5B.py sample_fps = 24).
GEOMETRY: dict[str, tuple[str, float]] = {
    "Wan2.1-T2V-1.3B": ("wan2.1-1.3b", 16.0),
    "Wan2.1-T2V-14B": ("wan2.1-14b", 16.0),
    "Wan2.2-TI2V-5B": ("wan2.2-ti2v-5b", 24.0),
    "Wan2.2-T2V-A14B (high-noise)": ("wan2.2-a14b-high", 16.0),
}

# The DiT each real preset (src/tinyhistory/presets/<name>.toml) trains on; the tiny preset builds its own from the
# [backbone] table and has no entry here.
PRESET_MODELS: dict[str, str] = {
    "wan2.1-t2v-1.3b": "Wan2.1-T2V-1.3B",
    "wan2.1-t2v-14b": "Wan2.1-T2V-14B",
    "wan2.2-ti2v-5b": "Wan2.2-TI2V-5B",
    "wan2.2-t2v-a14b": "Wan2.2-T2V-A14B (high-noise)",
}


# HunyuanVideo's DiT: hunyuanvideo-community/HunyuanVideo transformer/config.json (diffusers' convert script writes
# the HunyuanVideoTransformer3DModel defaults, which are this model: 24 heads × 128, 20 dual- + 40 single-stream
# blocks, 2 refiner layers, Llama text 4096, CLIP pooled 768, RoPE 16/56/56 at θ 256, guidance embedding). Counted by
# `tinyhistory cost`; the memory model and the planner model the Wan DiTs above (with their VAEs and UMT5) only.
HUNYUAN_CONFIGS: dict[str, dict] = {
    "HunyuanVideo": {
        "_class_name": "HunyuanVideoTransformer3DModel",
        "attention_head_dim": 128,
        "guidance_embeds": True,
        "in_channels": 16,
        "mlp_ratio": 4.0,
        "num_attention_heads": 24,
        "num_layers": 20,
        "num_refiner_layers": 2,
        "num_single_layers": 40,
        "out_channels": 16,
        "patch_size": 2,
        "patch_size_t": 1,
        "pooled_projection_dim": 768,
        "qk_norm": "rms_norm",
        "rope_axes_dim": [16, 56, 56],
        "rope_theta": 256.0,
        "text_embed_dim": 4096,
    }
}
# Presets whose DiT the cost model counts beyond PRESET_MODELS (which the planner also covers).
COST_PRESET_MODELS: dict[str, str] = {**PRESET_MODELS, "hunyuanvideo": "HunyuanVideo"}
_CLASSES = {
    "WanTransformer3DModel": WanTransformer3DModel,
    "HunyuanVideoTransformer3DModel": HunyuanVideoTransformer3DModel,
}


def hf_kwargs(config: dict) -> dict:
    """A config.json dict → constructor kwargs (drops diffusers' ``_class_name`` / ``_diffusers_version``)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def get_config(name: str) -> dict:
    """The embedded ``config.json`` of model ``name`` (a key of :data:`CONFIGS`); a ValueError names the known ones."""
    configs = {**CONFIGS, **HUNYUAN_CONFIGS}
    try:
        return configs[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; embedded configs: {', '.join(configs)}") from None


def meta_transformer(name: str) -> WanTransformer3DModel | HunyuanVideoTransformer3DModel:
    """The real-size DiT ``name`` on the ``meta`` device: exact shapes, no weights, no memory."""
    config = get_config(name)
    with torch.device("meta"):
        return _CLASSES[config["_class_name"]](**hf_kwargs(config))
