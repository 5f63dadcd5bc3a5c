"""The backbone seam: context tokens with explicit positions, and what a DiT adapter must offer."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from tinyhistory.text.condition import TextCondition


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
    # Optional ``(B, K)`` int64: which producer made each token (its index in ``HistoryDiT.producers``), or
    # :data:`NO_PRODUCER` (the sliding window's uncompressed frames). ``history.phase_readout`` maps each producer's
    # part of what a target reads by that producer's cells, and nothing else (not the window's one-to-one tokens).
    sources: torch.Tensor | None = None

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
        if self.sources is not None and self.sources.shape != self.tokens.shape[:2]:
            raise ValueError(
                f"context sources {tuple(self.sources.shape)} must be (B, K) = {tuple(self.tokens.shape[:2])}"
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
        # Blocks only where every part has them: a part without would be silently unmasked otherwise. Sources the
        # same: a part without would be read as another producer's.
        blocks = [p.blocks for p in parts] if all(p.blocks is not None for p in parts) else None
        sources = [p.sources for p in parts] if all(p.sources is not None for p in parts) else None
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
            torch.cat(sources, 1) if sources else None,
        )

    def narrow(self, start: int, length: int | None = None) -> ContextTokens:
        """Tokens (and features, blocks, visibility and sources, which come one per token) from index ``start`` on
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
            cut(self.sources),
        )

    def repeat(self, times: int) -> ContextTokens:
        """The same history ``times`` over along the batch (the two halves of a guided batch)."""

        def rep(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else torch.cat([x] * times)

        return ContextTokens(
            rep(self.tokens),
            rep(self.positions),
            rep(self.features),
            rep(self.blocks),
            rep(self.visible),
            rep(self.sources),
        )

    def from_source(self, source: int) -> ContextTokens:
        """The same tokens, every one marked as made by producer ``source`` (:attr:`sources`)."""
        sources = torch.full(self.tokens.shape[:2], source, dtype=torch.int64, device=self.tokens.device)
        return replace(self, sources=sources)


# The block of context tokens that are rebuilt every segment (the sliding window's uncompressed frames): they attend to
# every history block and no history block attends to them, so the cached blocks never depend on them.
NEWEST_BLOCK = 2**62
# ``ContextTokens.sources`` of tokens that no history producer made (the sliding window's uncompressed frames).
NO_PRODUCER = -1


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


@dataclass(frozen=True)
class SamplingRecipe:
    """How a family's own diffusers pipeline samples from one model folder: what ``generate`` copies so that its
    first segment is the pipeline's. Read by the family's adapter (:meth:`DiffusersBackbone.sampling_recipe`), so
    ``generate`` never names a family or a scheduler class.

    The defaults are a run without a model folder (the tiny presets): the flow-matching Euler sampler, one expert,
    no image conditioning.
    """

    # The folder's ``scheduler/scheduler_config.json`` (None: no folder, or none in it).
    scheduler: dict[str, Any] | None = None
    # The sampler that config is ("euler" | "unipc"): a run that picks it gets the folder's scheduler itself.
    sampler: str = "euler"
    # Wan 2.2 A14B: the low-noise expert's subfolder ("transformer_2") and the flow time below which it takes the
    # steps (``boundary_ratio``), as ``WanPipeline`` switches experts; None for one-expert models.
    second_expert: str | None = None
    boundary: float | None = None
    # Wan 2.2 TI2V-5B (``expand_timesteps``): an image start is a clean first latent frame at time 0 in every step.
    first_frame: bool = False


@runtime_checkable
class Backbone(Protocol):
    """A DiT family adapter around a stock diffusers transformer (one per family, registered in ``registry.py``).

    Besides the forward it owns loading (``from_pretrained`` from a user's folder, ``from_config`` from the
    ``[backbone]`` table), saving, its LoRA target pattern and its portable LoRA layout, which history attention
    patterns its attention supports (the rest are refused by name: :class:`WithoutHistoryAttention`), and how its
    pipeline samples (:class:`SamplingRecipe`, the guidance defaults, a guidance embedding, a dynamic time shift).
    Everything a caller reads of an adapter is declared here; :class:`DiffusersBackbone` gives the neutral defaults.
    """

    family: str
    title: str  # the family as users know it, in messages ("HunyuanVideo")
    pipelines: tuple[str, ...]
    layout: str
    lora_targets: str
    portable_lora_file: str
    # The transformer's ModuleLists of blocks (group offload and FSDP units).
    block_lists: tuple[str, ...]
    # Classifier-free guidance ``generate`` uses unless told (1 = off).
    default_guidance: float
    # The sampler of the family's pipelines ("euler" | "unipc"): what the folder's scheduler config is.
    pipeline_sampler: str
    # A guidance-distilled DiT (HunyuanVideo): the guidance scale is an input of the DiT (:meth:`use_guidance`).
    guidance_distilled: bool
    kv_cache: bool  # context attends only to context (history.kv_cache), so its keys/values can be cached
    # history.context_attention = "block_causal": context attends to its own and earlier blocks and skips the text,
    # so its keys/values depend on nothing later and the cache grows incrementally
    block_causal: bool
    # history.tier_layout = "stacked": blocks a context token sees (its own included); 0: every earlier block
    context_window: int
    hidden_dim: int
    in_channels: int
    patch_size: tuple[int, int, int]
    transformer: torch.nn.Module

    @classmethod
    def from_pretrained(cls, folder: str | Path, subfolder: str = "transformer", dtype: torch.dtype = torch.float32):
        """The DiT of a user's model folder (``subfolder``: Wan 2.2 A14B's second expert is ``transformer_2``)."""
        ...

    @classmethod
    def from_transformer_folder(cls, folder: str | Path, dtype: torch.dtype = torch.float32): ...

    @classmethod
    def from_config(cls, b): ...

    @classmethod
    def sampling_recipe(cls, folder: Path | None, transformer: str = "transformer") -> SamplingRecipe:
        """How the family's pipeline samples from ``folder`` (None: no folder), whose DiT is ``transformer``."""
        ...

    @classmethod
    def timestep_shift(cls, tokens: int, scheduler_config) -> float | None:
        """The time shift ``mu`` for a segment of ``tokens`` DiT tokens where the family's pipeline shifts by the
        sequence length (LTX-Video), else None (the scheduler's fixed shift)."""
        ...

    def use_guidance(self, scale: float) -> None:
        """The embedded guidance of a guidance-distilled DiT (HunyuanVideo: the pipeline's ``guidance_scale``);
        nothing for a DiT without a guidance embedding."""
        ...

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

    def blank_text(self, batch: int, tokens: int, device: str | torch.device = "cpu") -> TextCondition:
        """An uninitialised condition of the shapes this DiT reads, for FLOP and memory counts."""
        ...

    def enable_gradient_checkpointing(self) -> None: ...

    def use_kv_cache(self) -> None: ...

    def use_full_attention(self) -> None: ...

    def use_value_rope(self, enabled: bool = True) -> None: ...

    def use_phase_readout(self, enabled: bool = True) -> None: ...

    def use_block_causal(self, enabled: bool = True) -> None: ...

    def use_context_window(self, blocks: int) -> None:
        """A block-causal context token attends to its own and the ``blocks − 1`` earlier temporal blocks only (0:
        every earlier block): ``history.tier_layout = "stacked"``."""
        ...

    def build_context_cache(
        self, context: ContextTokens, text: TextCondition | None, after_block=None, prior=None
    ) -> Any:
        """The history's keys/values in every block, computed once (``history.kv_cache``); ``prior``: a block-causal
        cache the new blocks extend."""
        ...

    def save_pretrained(self, folder: str | Path) -> None: ...

    def write_model_index(self, folder: str | Path) -> None: ...

    def portable_lora(self, state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]: ...

    def __call__(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text: TextCondition,
        context: ContextTokens | None = None,
        frame_positions: torch.Tensor | None = None,
        after_block: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
        context_cache=None,
        target_offsets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The velocity of the target latents. ``after_block(i, tokens) → tokens`` runs after block ``i`` of
        :attr:`blocks` on the ``(B, K + N, D)`` sequence (the cross-attention enhancement); ``context_cache``: the
        history's keys/values from :meth:`build_context_cache` instead of ``context``; ``target_offsets``
        ``(B, N, D)``: added to the target tokens after the patch embedding (the block phase)."""
        ...


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


def read_folder_json(folder: Path | None, relative: str) -> dict[str, Any] | None:
    """A JSON file of a model folder (``model_index.json``, ``scheduler/scheduler_config.json``), or None without a
    folder or that file."""
    if folder is None:
        return None
    path = Path(folder) / relative
    return json.loads(path.read_text()) if path.is_file() else None


class WithoutHistoryAttention:
    """The history attention patterns of a family whose attention has no processor for them yet, each refused by
    name: the history KV cache, value RoPE, the block-causal context and the stacked layout's window built on it.

    Why one place: every such family refuses the same four settings the same way (the setting, the family, the
    reason, what to set instead); the family gives only its ``title`` and ``attention_gap``. Turning a pattern off
    (``use_block_causal(False)``, ``use_context_window(0)``, ``use_full_attention``) is what the adapter always does,
    so it is accepted. Mixed in before :class:`DiffusersBackbone`.
    """

    title: ClassVar[str]
    # Why this family's attention cannot cache or mask the history yet (ends each refusal).
    attention_gap: ClassVar[str]
    kv_cache: bool = False
    block_causal: bool = False
    context_window: int = 0

    def _no_kv_cache(self) -> str:
        return f"history.kv_cache is not supported for {self.title} yet ({self.attention_gap})"

    def use_kv_cache(self) -> None:
        raise ValueError(f"{self._no_kv_cache()}; set history.kv_cache = false")

    def use_value_rope(self, enabled: bool = True) -> None:
        if enabled:
            raise ValueError(
                f"history.value_rope is implemented for Wan's self-attention only ({self.title}'s attention has no "
                "processor for it yet); set history.value_rope = false"
            )

    def use_phase_readout(self, enabled: bool = True) -> None:
        if enabled:
            raise ValueError(
                f"history.phase_readout is implemented for Wan's self-attention only ({self.title}'s attention has "
                "no processor for it yet); set history.phase_readout = 0"
            )

    def use_block_causal(self, enabled: bool = True) -> None:
        if enabled:
            raise ValueError(
                f'history.context_attention = "block_causal" is not supported for {self.title} yet: it needs the '
                f'history KV cache ({self.attention_gap}); set history.context_attention = "full"'
            )

    def use_context_window(self, blocks: int) -> None:
        """The stacked tier layout's bounded, block-causal context window: refused (0, no window, is what this
        adapter always does), as the block-causal context it builds on."""
        if blocks:
            raise ValueError(
                f'history.tier_layout = "stacked" is not supported for {self.title} yet: it builds on the '
                f"block-causal context and the history KV cache ({self.attention_gap}); set "
                'history.tier_layout = "recompute"'
            )

    def use_full_attention(self) -> None:
        """Every token attends to every token: the stock processors, which this adapter never replaces."""
        self.kv_cache = False

    def build_context_cache(self, context, text, after_block=None, prior=None):
        raise ValueError(self._no_kv_cache())

    def refuse_context_cache(self, context_cache) -> None:
        """The forward's ``context_cache``, which this family cannot have built: refused by name."""
        if context_cache is not None:
            raise ValueError(self._no_kv_cache())


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
    title: ClassVar[str]  # the family as users know it, in messages
    # The sampler of the family's pipelines, which is what a model folder's scheduler config is.
    pipeline_sampler: ClassVar[str] = "euler"
    # A guidance-distilled DiT takes the guidance scale as an input (:meth:`use_guidance`).
    guidance_distilled: ClassVar[bool] = False

    @classmethod
    def sampling_recipe(cls, folder: Path | None, transformer: str = "transformer") -> SamplingRecipe:
        """How the family's pipeline samples from ``folder``: its scheduler config, which is
        :attr:`pipeline_sampler`'s (the flow-matching Euler default without one). One expert and no image
        conditioning: a family that has either reads its folder for them (Wan)."""
        scheduler = read_folder_json(folder, "scheduler/scheduler_config.json")
        return SamplingRecipe(scheduler, cls.pipeline_sampler if scheduler else "euler")

    @classmethod
    def timestep_shift(cls, tokens: int, scheduler_config) -> float | None:
        """None: the scheduler's fixed shift (a family that shifts by the token count overrides this)."""
        return None

    def use_guidance(self, scale: float) -> None:
        """Nothing to set: this DiT has no guidance embedding (classifier-free guidance is the sampler's)."""

    def target_positions(
        self, latents: torch.Tensor, frame_positions: torch.Tensor | None
    ) -> tuple[tuple[int, int, int], torch.Tensor]:
        """The targets' token grid ``(T/pt, H/ph, W/pw)`` of ``(B, C, T, H, W)`` latents and their ``(B, N, 3)``
        positions: ``frame_positions`` ``(B, T/pt)`` for the frames (default ``0 … T/pt − 1``), rows and columns from
        0. How every family's forward starts."""
        b, _, frames, height, width = latents.shape
        pt, ph, pw = self.patch_size
        grid = (frames // pt, height // ph, width // pw)
        if frame_positions is None:
            frame_positions = torch.arange(grid[0], device=latents.device).expand(b, grid[0])
        return grid, grid_positions(frame_positions, grid[1], grid[2])

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

    # -- sizing facts (sizing/ reads these) ----------------------------------------------------------------------
    # Each family adds ``released`` (its released DiTs by preset ``base``: tinyhistory.sizing.facts.ReleasedDiT) and,
    # where its blocks are not counted in ``num_layers`` alone, ``depth_keys``: the config key counting each list of
    # ``block_lists`` (a memory trace runs a shallower copy of the DiT: every block's working set is alike).
    released: ClassVar[dict] = {}
    depth_keys: ClassVar[tuple[str, ...]] = ("num_layers",)

    @classmethod
    def meta_transformer(cls, config: dict, depth: int | None = None) -> nn.Module:
        """The family's diffusers DiT of ``config`` (a ``config.json`` dict) on the meta device: exact shapes, no
        weights, no memory; ``depth`` caps every block list at that many blocks."""
        kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
        if depth is not None:
            kwargs |= {key: min(depth, int(kwargs[key])) for key in cls.depth_keys}
        with torch.device("meta"):
            return cls.model_class.from_config(kwargs)

    @staticmethod
    def activation_formula(
        config: dict, sequence: int, lora_rank: int, text_tokens: int
    ) -> tuple[int, int, int] | None:
        """A hand-checked formula for one training step's activations, ``(kept block inputs, shared block inputs,
        one block recomputed)`` bytes for ``sequence`` DiT tokens, or None: the memory model then traces the
        family's own forward on the meta device (tinyhistory.sizing.memory.traced_activations)."""
        return None
