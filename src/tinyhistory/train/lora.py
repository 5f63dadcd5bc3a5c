"""LoRA on the DiT's blocks (SPEC §4–5), through peft, saved in diffusers' LoRA layout and the family's portable one.

The backbone adapter names what the LoRA covers (``backbone.lora_targets``, a regex anchored to ``blocks.N``): for
Wan every attention projection (self and cross) and both FFN layers of every block. The patch embedding, condition
embedder, norms and output head stay frozen, so the LR branch and the sliding window read the base model's own
patch embedding, as in the paper. Files:

* ``lora.safetensors``: ``transformer.<module>.lora_A/B.weight`` keys, the layout diffusers' ``load_lora_adapter(...,
  prefix="transformer")`` reads and this project loads back;
* ``backbone.portable_lora_file``: the same LoRA in the family's original layout with ``.alpha`` per module (for Wan,
  ``diffusion_model.blocks.N.self_attn.q.lora_A.weight``), which ComfyUI and ``WanPipeline.load_lora_weights`` read.

The LoRA weights are float32 whatever the frozen base's dtype (peft keeps adapters in float32 over a bfloat16 base);
forward passes run under autocast.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import save_file

from tinyhistory.files import read_tensors

PREFIX = "transformer."
LORA_FILE = "lora.safetensors"


def add_lora(backbone, rank: int) -> None:
    """Attach a fresh LoRA (B = 0, so the model is unchanged) and freeze everything else in the DiT."""
    transformer = backbone.transformer
    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=backbone.lora_targets, init_lora_weights=True)
    )
    for name, parameter in transformer.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.float()


def has_lora(backbone) -> bool:
    return any(isinstance(m, BaseTunerLayer) for m in backbone.transformer.modules())


def lora_state_dict(backbone, transformer_state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter's weights under diffusers' LoRA keys (``transformer.<module>.lora_A/B.weight``).

    ``transformer_state``: the transformer's state dict to read them from instead of its own (full tensors gathered
    from a sharded model, whose own parameters are per-rank shards)."""
    state = get_peft_model_state_dict(backbone.transformer, state_dict=transformer_state)
    return {PREFIX + k: v for k, v in state.items()}


def save_lora(
    backbone,
    folder: Path,
    rank: int,
    dtype: torch.dtype | None = None,
    transformer_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write ``lora.safetensors`` (diffusers keys) and the family's portable file (original keys + alpha)."""
    state = {k: _cpu(v, dtype) for k, v in lora_state_dict(backbone, transformer_state).items()}
    metadata = {"format": "pt", "lora_rank": str(rank), "lora_alpha": str(rank)}
    save_file(state, str(folder / LORA_FILE), metadata=metadata)
    save_file(backbone.portable_lora(state, float(rank)), str(folder / backbone.portable_lora_file), metadata=metadata)


def _cpu(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return (tensor.to(dtype) if dtype is not None else tensor).detach().cpu().contiguous()


def load_lora(backbone, path: str | Path, rank: int) -> None:
    """Attach a LoRA of ``rank`` and load its weights from a file of :func:`lora_state_dict` tensors."""
    path = Path(path)
    state = read_tensors(path, "LoRA file")
    if not state or not all(k.startswith(PREFIX) for k in state):
        raise ValueError(f"{path}: not a transformer LoRA file (keys must start with {PREFIX!r})")
    ranks = {v.shape[0] for k, v in state.items() if ".lora_A." in k}
    if ranks != {rank}:
        raise ValueError(f"{path}: a LoRA of rank {sorted(ranks)}, but its config.json says train.lora_rank={rank}")
    add_lora(backbone, rank)
    try:
        result = set_peft_model_state_dict(
            backbone.transformer, {k[len(PREFIX) :]: v.float() for k, v in state.items()}
        )
    except RuntimeError as exc:
        raise ValueError(f"{path}: does not fit this base model ({str(exc).splitlines()[0]})") from None
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{path}: unexpected LoRA keys {result.unexpected_keys[:3]}")


def merge_lora(backbone) -> None:
    """Fold every LoRA into its base weight (inference: the adapter then costs nothing per step)."""
    for module in backbone.transformer.modules():
        if isinstance(module, BaseTunerLayer) and not module.merged:
            module.merge()
