"""The backbone seam: context tokens with explicit positions, and what a DiT adapter must offer."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ContextTokens:
    """Tokens that enter the DiT beside the target tokens, already at the DiT's hidden width.

    ``tokens``: ``(B, K, D)``; ``positions``: ``(B, K, 3)`` as (t, h, w) in DiT-token units (fractional allowed).
    Context tokens are clean history: they are modulated with timestep 0 and their outputs are dropped.
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    # Optional ``(B, K', F)`` encoder features for the cross-attention enhancement (SPEC §3.4); not DiT tokens.
    features: torch.Tensor | None = None
    # Optional ``(B, K)`` int64 temporal history block of each token, for ``history.context_attention =
    # "block_causal"`` (a context token attends to its own and earlier blocks only); :data:`NEWEST_BLOCK` for tokens
    # rebuilt every segment (the sliding window). Set by ``HistoryDiT``, which knows how long a block is.
    blocks: torch.Tensor | None = None
    # Optional ``(B, K)`` bool: which tokens the *targets* attend to (``history.tier_layout = "stacked"`` keeps every
    # rate's tokens of every block in the context and shows the targets each block at its tier's rate only); None:
    # all. Context tokens attend to each other by ``blocks`` alone, whatever the targets see.
    visible: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3 or self.positions.ndim != 3 or self.positions.shape[-1] != 3:
            raise ValueError(
                f"context tokens must be (B, K, D) with positions (B, K, 3); got {tuple(self.tokens.shape)} and "
                f"{tuple(self.positions.shape)}"
            )
        if self.tokens.shape[:2] != self.positions.shape[:2]:
            raise ValueError(
                f"context tokens {tuple(self.tokens.shape)} and positions {tuple(self.positions.shape)} "
                "disagree on (B, K)"
            )
        if self.blocks is not None and self.blocks.shape != self.tokens.shape[:2]:
            raise ValueError(
                f"context blocks {tuple(self.blocks.shape)} must be (B, K) = {tuple(self.tokens.shape[:2])}"
            )
        if self.visible is not None and self.visible.shape != self.tokens.shape[:2]:
            raise ValueError(
                f"context visibility {tuple(self.visible.shape)} must be (B, K) = {tuple(self.tokens.shape[:2])}"
            )

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[1]

    @property
    def visible_tokens(self) -> int:
        """How many tokens the targets attend to (of the first sample): all but the hidden ones."""
        return self.num_tokens if self.visible is None else int(self.visible[0].sum())

    @staticmethod
    def concat(parts: list[ContextTokens]) -> ContextTokens:
        """Concatenate along the token axis (several encoders, or a sliding window beside an encoder)."""
        features = [p.features for p in parts if p.features is not None]
        # Blocks only where every part has them: a part without would be silently unmasked otherwise.
        blocks = [p.blocks for p in parts] if all(p.blocks is not None for p in parts) else None
        # Visibility where any part has it (a part without is all visible).
        visible = None
        if any(p.visible is not None for p in parts):
            visible = [
                p.visible if p.visible is not None else p.tokens.new_ones(p.tokens.shape[:2], dtype=torch.bool)
                for p in parts
            ]
        return ContextTokens(
            torch.cat([p.tokens for p in parts], 1),
            torch.cat([p.positions for p in parts], 1),
            torch.cat(features, 1) if features else None,
            torch.cat(blocks, 1) if blocks else None,
            torch.cat(visible, 1) if visible else None,
        )

    def narrow(self, start: int, length: int | None = None) -> ContextTokens:
        """Tokens (and features, blocks and visibility, which come one per token) from index ``start`` on
        (``length`` of them; default: to the end)."""
        stop = self.num_tokens if length is None else start + length

        def cut(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[:, start:stop]

        return ContextTokens(
            self.tokens[:, start:stop],
            self.positions[:, start:stop],
            cut(self.features),
            cut(self.blocks),
            cut(self.visible),
        )

    def repeat(self, times: int) -> ContextTokens:
        """The same history ``times`` over along the batch (the two halves of a guided batch)."""

        def rep(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else torch.cat([x] * times)

        return ContextTokens(
            rep(self.tokens), rep(self.positions), rep(self.features), rep(self.blocks), rep(self.visible)
        )


# The block of context tokens that are rebuilt every segment (the sliding window's uncompressed frames): they attend to
# every history block and no history block attends to them, so the cached blocks never depend on them.
NEWEST_BLOCK = 2**62


def temporal_blocks(positions: torch.Tensor, block: float) -> torch.Tensor:
    """The temporal history block ``(B, K)`` int64 of tokens at ``(B, K, 3)`` positions, blocks of ``block`` DiT
    frames from frame 0: ``floor(t / block)``. A history token's t is its block's centre, so it lands in its block."""
    return torch.floor(positions[..., 0].to(torch.float64) / block).to(torch.int64)


def check_model_folder(folder: str | Path, adapter, parts: tuple[str, ...]) -> Path:
    """A user's model folder must exist, hold ``adapter``'s family and every part in ``parts``; else a ValueError
    that names the folder, what is missing and the layout expected (``adapter.layout``)."""
    folder = Path(folder)
    expected = f"expected {adapter.layout}"
    if not folder.is_dir():
        raise ValueError(f"model folder {folder} does not exist; {expected}")
    index = folder / "model_index.json"
    if not index.is_file():
        raise ValueError(f"model folder {folder} has no model_index.json; {expected}")
    try:
        pipeline = json.loads(index.read_text()).get("_class_name", "")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{index}: not valid JSON ({exc})") from None
    if pipeline not in adapter.pipelines:
        raise ValueError(
            f"model folder {folder} holds a {pipeline or 'unnamed'} model, not the {adapter.family!r} family "
            f"(model_index.json _class_name should be one of {', '.join(adapter.pipelines)}); {expected}"
        )
    for part in parts:
        if not (folder / part / "config.json").is_file() and not (folder / part).is_dir():
            raise ValueError(f"model folder {folder} lacks {part}/; {expected}")
    return folder


class Backbone(Protocol):
    """A DiT family adapter around a stock diffusers transformer (one per family, registered in ``registry.py``).

    Besides the forward it owns loading (``from_pretrained`` from a user's folder, ``from_config`` from the
    ``[backbone]`` table), saving, its LoRA target pattern and its portable LoRA layout.
    """

    family: str
    pipelines: tuple[str, ...]
    layout: str
    lora_targets: str
    portable_lora_file: str
    kv_cache: bool  # context attends only to context (history.kv_cache), so its keys/values can be cached
    # history.context_attention = "block_causal": context attends to its own and earlier blocks and skips the text,
    # so its keys/values depend on nothing later and the cache grows incrementally
    block_causal: bool
    hidden_dim: int
    in_channels: int
    patch_size: tuple[int, int, int]
    transformer: torch.nn.Module

    def patch_embed(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` latents → ``(B, D, T/pt, H/ph, W/pw)`` token grid: the DiT's own patchify (its first
        layer, as the DiT's forward runs it). The LR branch and the sliding window go through this, never through
        ``patch_embedding``, so a family whose first layer is not a Conv3d (LTX-Video's ``Linear``) still feeds them
        exactly what its DiT computes."""
        ...

    @property
    def patch_embedding(self) -> torch.nn.Module:
        """The first layer as a ``Conv3d`` with kernel = stride = ``patch_size`` (``kernel_size``, ``in_channels``,
        ``out_channels``, ``weight``, ``bias``): the module itself where it is one (Wan, HunyuanVideo), else a view
        sharing its parameters (:class:`PackedLinearEmbedding`). What the Large Patchifier is initialised from and
        what the dtype of the frozen base is read off."""
        ...

    @property
    def blocks(self) -> torch.nn.ModuleList: ...

    @property
    def num_heads(self) -> int: ...

    def enable_gradient_checkpointing(self) -> None: ...

    def use_kv_cache(self) -> None: ...

    def use_full_attention(self) -> None: ...

    def use_value_rope(self, enabled: bool = True) -> None: ...

    def use_block_causal(self, enabled: bool = True) -> None: ...

    def use_context_window(self, blocks: int) -> None:
        """A block-causal context token attends to its own and the ``blocks − 1`` earlier temporal blocks only (0:
        every earlier block): ``history.tier_layout = "stacked"``."""
        ...

    def save_pretrained(self, folder: str | Path) -> None: ...

    def portable_lora(self, state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]: ...

    def __call__(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text,
        context: ContextTokens | None = None,
        frame_positions: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def grid_positions(
    frame_positions: torch.Tensor, height: int, width: int, scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> torch.Tensor:
    """(t, h, w) positions of a token grid, flattened in (frame, row, column) order.

    ``frame_positions``: ``(B, T)`` temporal position of each grid frame. Rows and columns count from 0; with
    ``scale`` ≠ 1 each grid cell is a block of ``scale`` DiT tokens and gets its block's centre
    ``(i·s + (s − 1)/2)``. Returns ``(B, T·H·W, 3)`` float64.
    """
    b, t = frame_positions.shape
    _, sh, sw = scale
    rows = torch.arange(height, dtype=torch.float64, device=frame_positions.device) * sh + (sh - 1) / 2
    cols = torch.arange(width, dtype=torch.float64, device=frame_positions.device) * sw + (sw - 1) / 2
    pos = torch.empty(b, t, height, width, 3, dtype=torch.float64, device=frame_positions.device)
    pos[..., 0] = frame_positions.to(torch.float64)[:, :, None, None]
    pos[..., 1] = rows[None, None, :, None]
    pos[..., 2] = cols[None, None, None, :]
    return pos.reshape(b, t * height * width, 3)


class PackedLinearEmbedding(nn.Module):
    """A patch embedding that is a ``Linear`` over packed patches (LTX-Video's ``proj_in``), seen as the equivalent
    ``Conv3d`` with kernel = stride = ``patch``, sharing the Linear's parameters.

    Why a view and not a copy: the Large Patchifier initialises its larger Conv3d from the DiT's first layer, and the
    sizing tools call that layer on 5-D latents; a second copy of the weights would drift from the DiT's (and be
    saved, trained or sharded twice). The Linear's input features are ordered ``(C, pt, ph, pw)``, as diffusers'
    ``_pack_latents`` flattens a patch, which is exactly a Conv3d weight ``(D, C, pt, ph, pw)`` flattened: the view is
    ``linear.weight.view(D, C, pt, ph, pw)``, no transpose.
    """

    def __init__(self, linear: nn.Linear, patch: tuple[int, int, int]):
        super().__init__()
        volume = math.prod(patch)
        if linear.in_features % volume:
            raise ValueError(f"a Linear of {linear.in_features} inputs is not a patch embedding of patch {patch}")
        self.__dict__["linear"] = linear  # not a submodule: the DiT owns, saves and trains its parameters
        self.kernel_size: tuple[int, int, int] = tuple(patch)
        self.stride: tuple[int, int, int] = tuple(patch)
        self.in_channels: int = linear.in_features // volume
        self.out_channels: int = linear.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight.view(self.out_channels, self.in_channels, *self.kernel_size)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, D, T/pt, H/ph, W/pw)`` (floor on odd sizes, as a strided Conv3d)."""
        return F.conv3d(latents, self.weight, self.bias, stride=self.stride)


@contextmanager
def naming_dit_folder(folder: Path):
    """A DiT folder that diffusers cannot load (truncated weights, a broken config) as one line naming it."""
    try:
        yield
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{folder}: cannot load this DiT folder ({first})") from None
    except Exception as exc:  # safetensors' own error types for a damaged file
        raise ValueError(f"{folder}: cannot load this DiT folder ({type(exc).__name__}: {exc})") from None


class DiffusersBackbone(nn.Module):
    """What every adapter around a stock diffusers DiT does the same way: loading it from a user's folder or a saved
    one, saving it, and the pieces read straight off the transformer. A family sets ``model_class`` (the diffusers
    transformer class) and ``patch_embedding``, and writes its own forward, RoPE and ``from_config``."""

    model_class: ClassVar[type]
    transformer: nn.Module
    # Classifier-free guidance `generate` uses unless told (1 = off): the project's 3 for Wan; guidance-distilled
    # families (HunyuanVideo) set 1, as their pipelines do.
    default_guidance: ClassVar[float] = 3.0
    # The transformer's ModuleLists of blocks (what `generate --offload` moves to the GPU one block at a time).
    block_lists: ClassVar[tuple[str, ...]] = ("blocks",)

    @classmethod
    def from_pretrained(cls, folder: str | Path, subfolder: str = "transformer", dtype: torch.dtype = torch.float32):
        """The DiT of a user's model folder, its architecture from ``<subfolder>/config.json`` (never downloaded)."""
        check_model_folder(folder, cls, (subfolder,))
        with naming_dit_folder(Path(folder) / subfolder):
            transformer = cls.model_class.from_pretrained(
                folder, subfolder=subfolder, torch_dtype=dtype, local_files_only=True, use_safetensors=True
            )
        return cls(transformer)

    @classmethod
    def from_transformer_folder(cls, folder: str | Path, dtype: torch.dtype = torch.float32):
        """A DiT saved by :meth:`save_pretrained` (a fully trained tiny DiT, or a LoRA checkpoint's base)."""
        with naming_dit_folder(Path(folder)):
            transformer = cls.model_class.from_pretrained(
                folder, torch_dtype=dtype, use_safetensors=True, local_files_only=True
            )
        return cls(transformer)

    def save_pretrained(self, folder: str | Path) -> None:
        self.transformer.save_pretrained(folder, safe_serialization=True)

    def write_model_index(self, folder: str | Path) -> None:
        """``folder/model_index.json`` naming this family's pipeline and its ``transformer/``, so a checkpoint that
        holds a whole trained DiT is itself a base-model folder (``--model DIR``): how the tiny preset's pretrained
        base is used, frozen under a LoRA, exactly as a user's Wan folder is."""
        index = {"_class_name": self.pipelines[0], "transformer": ["diffusers", type(self.transformer).__name__]}
        (Path(folder) / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")

    @property
    def num_heads(self) -> int:
        return self.transformer.config.num_attention_heads

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()

    def patch_embed(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, D, T/pt, H/ph, W/pw)`` with the DiT's own first layer (floor on odd sizes)."""
        return self.patch_embedding(latents)
