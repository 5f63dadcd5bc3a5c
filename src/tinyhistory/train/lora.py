"""LoRA on the DiT for stage II (SPEC §5), through peft, saved in diffusers' LoRA file layout.

The adapter covers every attention projection (self and cross) and both FFN layers of every block; the rest of the
DiT (patch embedding, condition embedder, norms, output head) stays frozen, so the LR branch and the sliding window
read the base model's own patch embedding, as in the paper. Files hold ``transformer.<module>.lora_A/B.weight`` keys,
the layout ``diffusers``' ``load_lora_adapter(..., prefix="transformer")`` and Wan pipelines read.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2"]
PREFIX = "transformer."


def add_lora(transformer: WanTransformer3DModel, rank: int) -> None:
    """Attach a fresh LoRA (B = 0, so the model is unchanged) and freeze everything else in the transformer."""
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGET_MODULES, init_lora_weights=True))


def lora_state_dict(transformer: WanTransformer3DModel) -> dict[str, torch.Tensor]:
    """The adapter's weights under diffusers' LoRA keys (``transformer.<module>.lora_A/B.weight``)."""
    return {PREFIX + k: v for k, v in get_peft_model_state_dict(transformer).items()}


def load_lora(transformer: WanTransformer3DModel, path: str | Path, rank: int) -> None:
    """Attach a LoRA of ``rank`` and load its weights from a file of :func:`lora_state_dict` tensors."""
    path = Path(path)
    state = load_file(str(path))
    if not state or not all(k.startswith(PREFIX) for k in state):
        raise ValueError(f"{path}: not a transformer LoRA file (keys must start with {PREFIX!r})")
    add_lora(transformer, rank)
    dtype = next(transformer.parameters()).dtype
    result = set_peft_model_state_dict(transformer, {k[len(PREFIX) :]: v.to(dtype) for k, v in state.items()})
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{path}: unexpected LoRA keys {result.unexpected_keys[:3]}")


def merge_lora(transformer: WanTransformer3DModel) -> None:
    """Fold every LoRA into its base weight (inference: the adapter then costs nothing per step)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer) and not module.merged:
            module.merge()
