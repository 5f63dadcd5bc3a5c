"""The trained Wan LoRA in the original Wan / ComfyUI key layout, and back.

The trainer attaches a peft LoRA to the diffusers ``WanTransformer3DModel`` and saves diffusers-native keys
(``transformer.blocks.0.attn1.to_q.lora_A.weight``). ComfyUI and the tools of Wan's own code base name the same
Linear layers after the original ``WanModel`` (``blocks.0.self_attn.q``) under the ``diffusion_model.`` prefix of
their model state dict, and carry the LoRA scale as one ``alpha`` scalar per module. ``to_original_layout`` writes
that layout so one file loads in both worlds:

- ComfyUI: ``model_lora_keys_unet`` maps every model weight ``diffusion_model.X.weight`` to the LoRA key
  ``diffusion_model.X`` (its generic format); ``LoRAAdapter.load`` reads ``X.lora_B.weight`` (up) and
  ``X.lora_A.weight`` (down), ``load_lora`` reads ``X.alpha``; the merge is ``W += strength · alpha / rank · B @ A``
  (``rank = A.shape[0]``), which is peft's ``scaling = lora_alpha / r``.
- diffusers: ``WanLoraLoaderMixin.lora_state_dict`` sends any ``diffusion_model.``-prefixed file through
  ``_convert_non_diffusers_wan_lora_to_diffusers``, which renames the modules back and folds ``alpha / rank`` into
  ``lora_A``/``lora_B`` (then loads with scale 1), so ``pipe.load_lora_weights(file)`` gives the same layer outputs.

Only the modules our trainer targets are mapped (``LORA_TARGETS``: self-/cross-attention q, k, v, o and the two
FFN Linears of every block); anything else is an error rather than a silently dropped key.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

# diffusers WanTransformerBlock module (relative to ``blocks.N.``) → original Wan / ComfyUI WanAttentionBlock module.
DIFFUSERS_TO_ORIGINAL: dict[str, str] = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
ORIGINAL_TO_DIFFUSERS: dict[str, str] = {v: k for k, v in DIFFUSERS_TO_ORIGINAL.items()}

DIFFUSERS_PREFIX = "transformer."
ORIGINAL_PREFIX = "diffusion_model."


def _alternation(names: dict[str, str]) -> str:
    """A regex alternation of the literal module names (dots escaped), longest first so none shadows another."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


# ``[transformer.]blocks.N.<module>.lora_{A,B}.weight`` (the prefix is optional so a bare peft state also converts).
_DIFFUSERS_KEY = re.compile(
    rf"(?:{re.escape(DIFFUSERS_PREFIX)})?blocks\.(\d+)\.({_alternation(DIFFUSERS_TO_ORIGINAL)})\.(lora_[AB])\.weight"
)
# ``diffusion_model.blocks.N.<module>.lora_{A,B}.weight`` or ``diffusion_model.blocks.N.<module>.alpha``.
_ORIGINAL_KEY = re.compile(
    rf"{re.escape(ORIGINAL_PREFIX)}blocks\.(\d+)\.({_alternation(ORIGINAL_TO_DIFFUSERS)})\.(lora_A\.weight|lora_B\.weight|alpha)"
)

_EXPECTED_ORIGINAL = (
    "diffusion_model.blocks.N.{self_attn,cross_attn}.{q,k,v,o} or diffusion_model.blocks.N.ffn.{0,2}, "
    "each followed by .lora_A.weight, .lora_B.weight and .alpha"
)


def to_original_layout(state: dict[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """Diffusers/peft Wan LoRA keys → original Wan / ComfyUI keys, plus one ``.alpha`` scalar per module.

    state: ``{"transformer.blocks.N.attn1.to_q.lora_A.weight": (r, in), "...lora_B.weight": (out, r), ...}`` as
    the trainer saves it (the ``transformer.`` prefix may be left off). alpha: the ``lora_alpha`` of the
    ``LoraConfig``; it is written as a 0-dim float32 tensor beside every module, because both ComfyUI and diffusers
    scale each module by ``alpha / rank`` and read the rank from the module's own ``lora_A``. The tensors are not
    copied or rescaled. Raises ``ValueError`` naming the first key outside the mapped modules, and for a module
    that has only one of ``lora_A``/``lora_B``.
    """
    out: dict[str, Tensor] = {}
    halves: dict[str, set[str]] = {}
    for key, value in state.items():
        match = _DIFFUSERS_KEY.fullmatch(key)
        if match is None:
            raise ValueError(
                f"LoRA key {key!r} has no original Wan name: expected "
                f"[transformer.]blocks.N.<{'|'.join(DIFFUSERS_TO_ORIGINAL)}>.lora_A.weight / .lora_B.weight"
            )
        block, module, half = match.groups()
        base = f"{ORIGINAL_PREFIX}blocks.{block}.{DIFFUSERS_TO_ORIGINAL[module]}"
        out[f"{base}.{half}.weight"] = value
        halves.setdefault(base, set()).add(half)
    for base, present in halves.items():
        if present != {"lora_A", "lora_B"}:
            raise ValueError(f"LoRA module {base!r} has only {sorted(present)}; both lora_A and lora_B are needed")
        out[f"{base}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    return out


def from_original_layout(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], float]:
    """Original Wan / ComfyUI LoRA keys → ``(trainer state with transformer.* keys, alpha)``; inverse of the above.

    One alpha per file is what our ``LoraConfig`` holds, so every module must carry the same ``.alpha``. A file
    with no ``.alpha`` at all means scale 1 to ComfyUI and diffusers, i.e. ``alpha = rank``, which is returned
    (ranks must then agree). Raises ``ValueError`` on an empty file, on any key outside the mapped modules (so a
    non-Wan LoRA, or a Wan LoRA of other layers, is reported with the offending key), on a module with missing
    parts, and on differing alphas.
    """
    if not state:
        raise ValueError("empty LoRA state: not a Wan LoRA in the original layout")
    out: dict[str, Tensor] = {}
    alphas: dict[str, float] = {}
    parts: dict[str, set[str]] = {}
    ranks: dict[str, int] = {}
    for key, value in state.items():
        match = _ORIGINAL_KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"not a Wan LoRA in the original layout: key {key!r} (expected {_EXPECTED_ORIGINAL})")
        block, module, suffix = match.groups()
        base = f"{ORIGINAL_PREFIX}blocks.{block}.{module}"
        parts.setdefault(base, set()).add(suffix)
        if suffix == "alpha":
            alphas[base] = float(value.item())
            continue
        if suffix == "lora_A.weight":
            ranks[base] = int(value.shape[0])  # lora_A: (r, in)
        out[f"{DIFFUSERS_PREFIX}blocks.{block}.{ORIGINAL_TO_DIFFUSERS[module]}.{suffix}"] = value
    for base, present in parts.items():
        missing = {"lora_A.weight", "lora_B.weight"} - present
        if missing:
            raise ValueError(f"LoRA module {base!r} lacks {sorted(missing)}")
    if alphas and alphas.keys() != parts.keys():
        raise ValueError(f"LoRA modules without .alpha: {sorted(parts.keys() - alphas.keys())[:3]} …")
    values = set(alphas.values()) if alphas else set(map(float, ranks.values()))
    if len(values) != 1:
        what = "alphas" if alphas else "ranks (no .alpha keys, so alpha = rank)"
        raise ValueError(f"LoRA modules have different {what}: {sorted(values)}; one LoraConfig cannot hold them")
    return out, values.pop()
