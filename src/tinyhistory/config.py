"""Run configuration: dataclasses loaded from TOML, validated at load time.

A preset (``presets/<name>.toml``) gives every value; a user TOML or CLI overrides replace single keys. Errors name
the section, the key and what was expected. Every run writes its resolved config next to its outputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from tinyhistory.geometry import GEOMETRY, Rate, bases, get_base
from tinyhistory.registry import BACKBONES, CODECS, HISTORY_METHODS, TEXT_ENCODERS

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ModelConfig:
    """The user's base model: a local folder in the Hub's diffusers layout (``--model DIR``).

    ``path`` holds ``model_index.json``, ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` and
    ``scheduler/``. The DiT's architecture comes from its ``transformer/config.json``; ``codec.path`` and
    ``text.path`` default to this folder (set them to take ``vae/`` or ``text_encoder/`` from another folder).
    Empty: the backbone is built from the ``[backbone]`` table (the tiny preset, trained from scratch).
    """

    path: str = ""
    # The DiT subfolder: "transformer" (Wan 2.2 A14B: the high-noise expert; "transformer_2" is the low-noise one).
    transformer: str = "transformer"
    # The frozen base weights' dtype; what trains (LoRA, encoder) stays float32 under autocast.
    dtype: str = "float32"

    def validate(self) -> None:
        _choice("model.dtype", self.dtype, DTYPES)
        if not self.transformer:
            raise ValueError('model.transformer must name the DiT subfolder of model.path, e.g. "transformer"')


@dataclass
class CodecConfig:
    kind: str = "pixel"
    factor: int = 4  # pixel codec only
    path: str = ""  # wan, hunyuan: a local diffusers folder (a model repo with vae/, or the VAE folder)
    tiling: bool = False
    slicing: bool = False

    def validate(self) -> None:
        CODECS.check(self.kind)
        _positive("codec", self, ("factor",))


@dataclass
class TextConfig:
    kind: str = "minilm"
    caption: str = ""
    max_tokens: int = 64
    # A safetensors file of prompt embeddings (read first, missing prompts written back); "" = always encode.
    cache: str = ""
    # umt5: a Wan diffusers repo (text_encoder/ + tokenizer/) or one folder with both; hunyuan: a HunyuanVideo
    # diffusers repo (text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/). minilm: "" = the packaged model.
    path: str = ""
    # The unconditional prompt (CFG, text dropout): "encoded" = the encoder's encoding of "" (the pipelines'
    # negative prompt; the real presets); "zeros" = all-zero states, what every checkpoint written before this key
    # existed (the tiny preset's committed ones) was trained with, hence the default.
    empty: str = "zeros"

    def validate(self) -> None:
        TEXT_ENCODERS.check(self.kind)
        _positive("text", self, ("max_tokens",))
        _choice("text.empty", self.empty, ("encoded", "zeros"))


@dataclass
class BackboneConfig:
    family: str = "wan"
    num_attention_heads: int = 4
    attention_head_dim: int = 64
    ffn_dim: int = 768
    num_layers: int = 4
    text_dim: int = 384
    in_channels: int = 48
    patch_size: list[int] = field(default_factory=lambda: [1, 2, 2])
    # A LoRA checkpoint's base DiT: a diffusers transformer folder (relative paths: from the project root), and the
    # sha256 of its weights, checked on load (a folder of the same name elsewhere is never taken for it).
    base_transformer: str = ""
    base_transformer_sha256: str = ""

    def validate(self) -> None:
        BACKBONES.check(self.family)
        _positive("backbone", self, ("num_attention_heads", "attention_head_dim", "ffn_dim", "num_layers", "text_dim"))
        _positive("backbone", self, ("in_channels",))
        if len(self.patch_size) != 3 or not all(
            isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in self.patch_size
        ):
            raise ValueError(f"backbone.patch_size must be 3 positive integers [t, h, w], got {self.patch_size}")
        width = self.num_attention_heads * self.attention_head_dim
        patch_values = self.in_channels * self.patch_size[0] * self.patch_size[1] * self.patch_size[2]
        if width < patch_values:
            # Measured: a DiT narrower than one patch's values cannot carry the noise and stalls (DESIGN.md).
            raise ValueError(
                f"backbone width num_attention_heads*attention_head_dim = {width} is narrower than one patch "
                f"({patch_values} values); use a width of at least {patch_values}"
            )

    @property
    def hidden_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


CONTEXT_ATTENTION = ("full", "block_causal")
TIER_LAYOUTS = ("recompute", "stacked")


@dataclass
class HistoryConfig:
    method: str = "proposed"
    rates: list[str] = field(default_factory=lambda: ["4x4x2"])
    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    attention_blocks: int = 1
    attention_heads: int = 8
    # Stage-II extensions (SPEC §3.4). The last N latent frames of history also enter uncompressed (0 = off).
    sliding_window: int = 0
    # Encoder features reach every DiT block through an added, zero-initialised cross-attention.
    cross_attention: bool = False
    # History KV cache: context tokens attend only to context tokens (and text), in training and generation, so
    # generation computes their keys and values once per segment instead of at every denoising step.
    kv_cache: bool = False
    # Block phase (issue 22): a learned, zero-initialised vector per cell of a history block, added to each target
    # token by its position inside the block (history/phase.py), so a target token knows which part of a history
    # token is its own. One table per rate, saved with the encoder.
    block_phase: bool = False
    # Value RoPE (issue 22): the context's values are rotated by their position and each output's context part rotated
    # back by the query's, so what a target reads from a history token depends on its offset from the block centre
    # (backbones/wan.py, HistoryAttnProcessor). Wan only.
    value_rope: bool = False
    # Phase readout (issue 22): the rank of a per-cell linear map of what each target token reads from the context,
    # per DiT block (history/phase.py, PhaseReadout): the "unpatchify" of a history token that the block phase only
    # points at. 0: off. One map set per rate, summed; saved with the encoder. Wan only.
    phase_readout: int = 0
    # Who the context attends to (issue 24). "full": every context token. "block_causal" (needs kv_cache): each
    # temporal history block attends to itself and earlier blocks only, and the context skips the text
    # cross-attention, so its keys/values depend on nothing later: generation appends only the newest blocks' keys
    # and values to the cache per segment, once for both CFG branches and every prompt. The sliding window's frames
    # count as the newest block (rebuilt every segment, never cached). Wan only; training uses the same mask.
    context_attention: str = "full"
    # Tiered rates for long histories (issue 24, history/tiers.py): seconds of history that every rate of
    # ``history.rates`` but the last covers, newest (finest) first; the last rate holds everything older. E.g.
    # rates = ["4x4x2", "8x8x4"], tiers = [20.0]: the newest 20 s at 4×4×2, the rest at 8×8×4. Empty: no tiers (every
    # rate encodes the whole history, tokens concatenated). Training (stage I and II) and generation see the same
    # layout; seconds are rounded up to whole temporal blocks.
    tiers: list[float] = field(default_factory=list)
    # Seconds of history that leave a tier at once (whole chunks): a move recomputes the block-causal cache from the
    # moved chunk on, so larger moves amortise that over more segments, at the price of up to this many more seconds
    # in the finer tier. Rounded up to whole temporal blocks. Only read with tiers. (With tier_layout = "stacked" a
    # move recomputes nothing: the smallest move, one block, keeps the finer tier at its length.)
    tier_move: float = 10.0
    # How tiers meet the block-causal cache (issue 24, history/stacked.py). "recompute": the context is each tier's
    # span and attends block-causally to all of it, so a move recomputes the cache from the moved chunk on. "stacked":
    # every rate's tokens of every block are in the context, each block attends to the blocks of the last
    # ``context_window`` seconds (all rates, never to a later block), and the targets see each block at its tier's
    # rate only: a move changes only what the targets see (nothing is recomputed) and an append attends to a bounded
    # window (its cost does not grow with the history). Needs tiers and context_attention = "block_causal".
    tier_layout: str = "recompute"
    # The stacked layout's window: seconds of history (its own block included) that a context block attends to,
    # rounded up to whole temporal blocks. Only read with tier_layout = "stacked".
    context_window: float = 20.0

    def validate(self) -> None:
        HISTORY_METHODS.check(self.method)
        _positive("history", self, ("attention_heads",))
        if self.attention_blocks < 0:
            raise ValueError(f"history.attention_blocks must be >= 0, got {self.attention_blocks}")
        if not self.channels or any(not isinstance(c, int) or isinstance(c, bool) or c <= 0 for c in self.channels):
            raise ValueError(f"history.channels must be positive integers (e.g. [64, 128, 256, 512]): {self.channels}")
        if self.sliding_window < 0:
            raise ValueError(f"history.sliding_window must be >= 0 latent frames, got {self.sliding_window}")
        if self.cross_attention and self.method in ("no_history", "large_patchifier", "only_lr"):
            raise ValueError(f"history.cross_attention needs the HR branch's features; method {self.method!r} has none")
        if not isinstance(self.phase_readout, int) or isinstance(self.phase_readout, bool) or self.phase_readout < 0:
            raise ValueError(f"history.phase_readout is a rank >= 0 (0: off), got {self.phase_readout!r}")
        if (self.block_phase or self.value_rope or self.phase_readout) and self.method == "no_history":
            name = "block_phase" if self.block_phase else "value_rope" if self.value_rope else "phase_readout"
            raise ValueError(f"history.{name} is about reading history blocks; method 'no_history' has none")
        _choice("history.context_attention", self.context_attention, CONTEXT_ATTENTION)
        if self.context_attention == "block_causal" and not self.kv_cache:
            raise ValueError(
                'history.context_attention = "block_causal" needs history.kv_cache = true (the context must never '
                'attend to the targets for its keys/values to be cached); set both, or context_attention = "full"'
            )
        if not self.rates:
            raise ValueError('history.rates must list at least one rate, e.g. ["4x4x2"]')
        for r in self.rates:
            if not isinstance(r, str):
                raise ValueError(f'history.rates must be strings like "4x4x2", got {r!r}')
            try:
                Rate.parse(r)
            except ValueError as exc:
                raise ValueError(f"history.rates: {exc}") from None
        self._validate_tiers()
        self._validate_stacked()

    def _validate_tiers(self) -> None:
        """``history.tiers``: one length (seconds) per rate but the last, rates growing coarser, a positive move."""
        if not self.tiers:
            return
        if not all(isinstance(s, int | float) and not isinstance(s, bool) and 0 < s < math.inf for s in self.tiers):
            raise ValueError(f"history.tiers must be positive numbers of seconds (e.g. [20.0]), got {self.tiers}")
        self.tiers = [float(s) for s in self.tiers]
        if self.method == "no_history":
            raise ValueError("history.tiers lays out history tokens; method 'no_history' has none")
        if len(self.tiers) != len(self.rates) - 1:
            raise ValueError(
                f"history.tiers = {self.tiers} must give the seconds of every rate in history.rates but the last "
                f"({len(self.rates) - 1} value(s) for rates {self.rates}; the last rate holds the rest), e.g. "
                'rates = ["4x4x2", "8x8x4"], tiers = [20.0]'
            )
        volumes = [Rate.parse(r).volume for r in self.rates]
        if any(newer >= older for newer, older in zip(volumes, volumes[1:], strict=False)):
            raise ValueError(
                f"history.rates = {self.rates} with history.tiers: each older tier must be coarser than the one "
                "before it (more latent cells per token), newest (finest) first, e.g. ['4x4x2', '8x8x4']"
            )
        if not (isinstance(self.tier_move, int | float) and 0 < self.tier_move < math.inf):
            raise ValueError(f"history.tier_move must be a positive number of seconds, got {self.tier_move}")

    def _validate_stacked(self) -> None:
        """``history.tier_layout = "stacked"``: tiers under the block-causal cache, a positive window, and none of
        the context parts the layout does not place (the sliding window, the enhancers' features)."""
        _choice("history.tier_layout", self.tier_layout, TIER_LAYOUTS)
        if self.tier_layout != "stacked":
            return
        name = 'history.tier_layout = "stacked"'
        if not self.tiers:
            raise ValueError(f"{name} lays out tiers: it needs history.tiers (and two or more rates)")
        if self.context_attention != "block_causal":
            raise ValueError(
                f'{name} needs history.context_attention = "block_causal" (a cache whose blocks never depend on a '
                "later block is what makes a move free)"
            )
        if not (isinstance(self.context_window, int | float) and 0 < self.context_window < math.inf):
            raise ValueError(f"history.context_window must be a positive number of seconds, got {self.context_window}")
        if self.sliding_window:
            raise ValueError(
                f"{name} takes no history.sliding_window: the window's frames are rebuilt every segment beside a "
                "cache whose blocks attend to a bounded window of blocks, which this layout does not place yet"
            )
        if self.cross_attention:
            raise ValueError(
                f"{name} takes no history.cross_attention: the enhancers would read the features of every rate of "
                "every block, hidden ones included"
            )


@dataclass
class DataConfig:
    video: str = "assets/bbb_64px_8fps.mp4"
    fps: float = 8.0
    size: int = 64
    # Frame height × width (multiples of 16) when not square; 0 × 0 = ``size`` × ``size``. The real presets: 480 × 832.
    height: int = 0
    width: int = 0
    heldout_fraction: float = 0.2
    # "tail": the last heldout_fraction of every video; "videos": that fraction of whole videos (a data.cache only).
    heldout_split: str = "tail"
    # A `tinyhistory data prepare` output folder: training reads its latents and prompts instead of decoding
    # ``video`` ("" = decode ``video`` and encode on the fly). The last heldout_fraction of every video is held out.
    cache: str = ""
    # Frames per cached window (`data prepare`); 0 = train.history_frames. The stage-II window (history + target).
    window_frames: int = 0
    # Frames between cached window starts; 0 = window_frames (back to back). A smaller stride overlaps the windows:
    # more distinct samples where each window is one sample (a causal VAE; musubi-tuner's "slide" extraction).
    window_stride: int = 0
    # Whole videos added to the training part only (never evaluated on).
    extra_train_videos: list[str] = field(default_factory=list)
    # How a frame meets its target shape: "crop" (cover, then centre-crop) or "pad" (fit inside, black bars).
    resize: str = "crop"
    # Aspect-ratio buckets as [height, width] (multiples of 16); each video goes to the nearest in aspect ratio.
    # Empty means every video is fitted to a square ``size``.
    buckets: list[list[int]] = field(default_factory=list)

    def validate(self) -> None:
        _positive("data", self, ("fps", "size"))
        if self.fps > 1000:
            raise ValueError(f"data.fps = {self.fps} is not a video frame rate (expected at most 1000)")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"data.heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        _choice("data.resize", self.resize, ("crop", "pad"))
        _choice("data.heldout_split", self.heldout_split, ("tail", "videos"))
        if self.heldout_split == "videos" and not self.cache:
            raise ValueError("data.heldout_split = 'videos' needs a data.cache of several videos (one clip has a tail)")
        for i, bucket in enumerate(self.buckets):
            if (
                not isinstance(bucket, list)
                or len(bucket) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 and n % 16 == 0 for n in bucket)
            ):
                raise ValueError(
                    f"data.buckets[{i}] = {bucket!r} must be [height, width], positive multiples of 16, e.g. [64, 112]"
                )
        if (self.height > 0) != (self.width > 0) or self.height < 0 or self.width < 0:
            raise ValueError(
                f"data.height = {self.height} and data.width = {self.width}: set both (positive multiples of 16) "
                "or neither (then data.size gives a square frame)"
            )
        if self.height % 16 or self.width % 16:
            raise ValueError(f"data.height × data.width = {self.height} × {self.width} must be multiples of 16")
        if not all(isinstance(v, str) for v in self.extra_train_videos):
            raise ValueError(f"data.extra_train_videos must be a list of video paths, got {self.extra_train_videos}")
        if self.window_frames < 0:
            raise ValueError(f"data.window_frames must be >= 0 (0 = train.history_frames), got {self.window_frames}")
        if self.window_stride < 0:
            raise ValueError(f"data.window_stride must be >= 0 (0 = data.window_frames), got {self.window_stride}")


@dataclass
class TrainConfig:
    stage: str = "frame-query"
    steps: int = 1000
    batch_size: int = 8
    history_frames: int = 32
    query_window: int = 3
    learning_rate: float = 3e-4
    encoder_learning_rate: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    timestep_shift: float = 1.0
    mask_low: float = 0.2
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    # Also checkpoint when this many minutes passed since the last one (a run killed early still resumes).
    checkpoint_minutes: float = 10.0
    # Also keep the weights every this many steps (0: never) in OUT/snapshots/step_NNNNNN/, each a folder like final/
    # (every command that takes a checkpoint loads it) with the training log up to its step: one run's models at
    # matched steps, to compare runs step for step or to pick the best. OUT/last holds only the newest state.
    snapshot_every: int = 0
    # > 0: keep only the newest this many snapshots (older ones are deleted as new ones land); 0: keep them all.
    snapshots_kept: int = 0
    # Stage II (autoregressive finetuning): the window of ``history_frames`` frames is split at a random block
    # boundary into history (possibly empty) and the next ``segment_frames`` latent frames, the target.
    segment_frames: int = 8
    # Classifier-free guidance: this fraction of samples sees the empty prompt (the text encoder's encoding of "").
    text_dropout: float = 0.1
    # Stage II with history.sliding_window (issue 22): this fraction of training steps leaves the window's frames out
    # of the context (the whole batch), so the model must predict from the encoder's tokens alone there. A window
    # hands the next second's content over directly, and a model trained with it always at hand learns to ignore the
    # encoder (its tokens get under their share of the attention); evaluation and generation keep the window. 0: off.
    window_dropout: float = 0.0
    # Stage II (issue 22): noise the clean history of each training sample at its own level σ ~ U(0, history_noise),
    # (1 − σ)·x + σ·ε on its latents and LR latents, as Diffusion Forcing and GameNGen corrupt their context: in a
    # streamed continuation the history is the model's own imperfect output, never the clean footage it trained on,
    # and a model that trusts every detail of its history copies and compounds its own errors. The held-out loss,
    # evaluation and generation keep the history as it is. 0: off.
    history_noise: float = 0.0
    # Stage II (issue 22): this fraction of training steps leaves the last ``history_gap_frames`` latent frames of the
    # history out (the encoder's and the window's alike; rounded up to whole temporal blocks), the targets at their
    # true positions: the next segment is predicted across a gap from the older history alone. With the last frames
    # always at hand the next second is read from them and nothing older is ever needed, so a shot that returns after
    # a cut finds a model that never learned to reach back for it. Evaluation and generation keep the whole history.
    history_gap: float = 0.0
    history_gap_frames: int = 4
    # Stage II (issue 22): this fraction of training steps draws its whole batch from the training windows whose
    # target is a shot that returns after a cut (found once per run by image features and kept in
    # OUT/long_range_windows.json, train/long_range.py), split with the window's whole history before the target and
    # the history ending in the returning shot's first frame(s). Drawn uniformly, such windows are rare and the next
    # second is read off the last frames; these are the ones where only the older history can tell what comes back.
    long_range_share: float = 0.0
    # Stage II (issue 22): this fraction of training steps cuts away from each window's shot and back before its
    # target: the ``cutaway_frames`` frames (whole temporal blocks) that end one block before the target are replaced
    # by the same frames of another window, so the history ends in one block of the returning shot (the cue) after
    # frames of another, and the older history holds the rest of the shot (train/objectives.splice_cutaway). Real
    # returns are rare in a training clip; these make one of every such step.
    cutaway_share: float = 0.0
    cutaway_frames: int = 6
    freeze_encoder: bool = False  # ablation switch: keep the stage-I encoder fixed
    # A rate curriculum (issue 22): start from ``--init-from`` at *this* run's history.rates instead of the
    # checkpoint's. The DiT and its LoRA carry over, an encoder whose rate both share is kept, the others start fresh.
    switch_rates: bool = False
    # Stage II from a stage-I checkpoint: go on training that checkpoint's LoRA instead of the paper's newly initialised
    # one (issue 22). Stage I is where the DiT learned to read the encoder's tokens; a fresh stage-II LoRA must learn
    # that again, which the paper's 100k steps afford and a short run does not.
    carry_lora: bool = False
    # The block-phase tables' own learning rate (history.block_phase): at the encoder's rate a zero table hardly moves.
    block_phase_learning_rate: float = 1e-2
    # What of the DiT trains. "lora": the base stays frozen (model.dtype) and a LoRA of ``lora_rank`` on its blocks
    # trains in both stages, as the paper does (stage II starts a fresh one); "full": the whole DiT trains (tiny
    # preset, stage I), and a stage-II ``lora_rank`` > 0 adds a LoRA on that trained DiT.
    dit: str = "full"
    lora_rank: int = 0
    # Recompute each DiT block in the backward pass instead of keeping its activations (real-size presets).
    gradient_checkpointing: bool = False
    # Training timesteps t ~ L(0, 1) are kept in [min_t, 1]: Wan 2.2 A14B's high-noise expert serves t >= 0.875 only.
    min_t: float = 0.0
    # > 0: also keep an exponential moving average of the trained weights with this decay (train/ema.py); the run
    # then writes OUT/final_ema/ beside OUT/final/ and logs the EMA's held-out loss at every checkpoint.
    ema_decay: float = 0.0
    # Several processes (accelerate launch / torchrun): "ddp" keeps a whole model on every rank; "fsdp" shards the
    # frozen base, the LoRA, the encoder and AdamW's moments over them with FSDP2, one unit per DiT block
    # (train/parallel.py; for DiTs that do not fit one card).
    parallel: str = "ddp"

    def validate(self) -> None:
        _choice("train.stage", self.stage, ("frame-query", "ar"))
        _choice("train.parallel", self.parallel, ("ddp", "fsdp"))
        _choice("train.dit", self.dit, ("lora", "full"))
        if self.dit == "lora" and self.lora_rank <= 0:
            raise ValueError(f"train.dit = 'lora' needs train.lora_rank > 0, got {self.lora_rank}")
        if not 0.0 <= self.min_t < 1.0:
            raise ValueError(f"train.min_t must be in [0, 1), got {self.min_t}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1) (0: no EMA), got {self.ema_decay}")
        if not 0.0 <= self.text_dropout < 1.0:
            raise ValueError(f"train.text_dropout must be in [0, 1), got {self.text_dropout}")
        if not 0.0 <= self.window_dropout < 1.0:
            raise ValueError(f"train.window_dropout must be in [0, 1) (0: off), got {self.window_dropout}")
        if not 0.0 <= self.history_noise < 1.0:
            raise ValueError(f"train.history_noise must be in [0, 1) (0: off), got {self.history_noise}")
        if self.history_noise and self.stage != "ar":
            raise ValueError(
                f"train.history_noise = {self.history_noise} noises stage II's clean history; this run has "
                f'train.stage = {self.stage!r} (stage I masks its history instead; it needs "ar")'
            )
        if not 0.0 <= self.history_gap < 1.0:
            raise ValueError(f"train.history_gap must be in [0, 1) (0: off), got {self.history_gap}")
        if self.history_gap and self.stage != "ar":
            raise ValueError(
                f"train.history_gap = {self.history_gap} cuts stage II's history short of its targets; this run has "
                f'train.stage = {self.stage!r} (it needs "ar")'
            )
        if not 0.0 <= self.long_range_share <= 1.0:
            raise ValueError(f"train.long_range_share must be in [0, 1] (0: off), got {self.long_range_share}")
        if self.long_range_share and self.stage != "ar":
            raise ValueError(
                f"train.long_range_share = {self.long_range_share} draws stage II's returning-shot windows; this run "
                f'has train.stage = {self.stage!r} (it needs "ar")'
            )
        if not 0.0 <= self.cutaway_share <= 1.0:
            raise ValueError(f"train.cutaway_share must be in [0, 1] (0: off), got {self.cutaway_share}")
        if self.cutaway_share and self.stage != "ar":
            raise ValueError(
                f"train.cutaway_share = {self.cutaway_share} cuts away inside stage II's history; this run has "
                f'train.stage = {self.stage!r} (it needs "ar")'
            )
        if self.cutaway_share and self.cutaway_frames <= 0:
            raise ValueError(f"train.cutaway_frames must be > 0 with train.cutaway_share, got {self.cutaway_frames}")
        if self.history_gap and self.history_gap_frames <= 0:
            raise ValueError(
                f"train.history_gap_frames must be > 0 with train.history_gap, got {self.history_gap_frames}"
            )
        if self.lora_rank < 0:
            raise ValueError(f"train.lora_rank must be >= 0, got {self.lora_rank}")
        if self.stage == "ar" and self.segment_frames >= self.history_frames:
            raise ValueError(
                f"train.segment_frames={self.segment_frames} must be shorter than train.history_frames="
                f"{self.history_frames} (the window holds history and target)"
            )
        positive = ("steps", "batch_size", "history_frames", "query_window", "log_every", "checkpoint_every")
        _positive("train", self, (*positive, "segment_frames", "learning_rate", "timestep_shift"))
        for name in ("encoder_learning_rate", "block_phase_learning_rate", "weight_decay", "warmup_steps", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.mask_low < 1.0:
            raise ValueError(f"train.mask_low must be in [0, 1), got {self.mask_low}")
        for name in ("snapshot_every", "snapshots_kept"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0 (0: off), got {getattr(self, name)}")
        if not self.checkpoint_minutes > 0:
            raise ValueError(f"train.checkpoint_minutes must be positive, got {self.checkpoint_minutes}")


@dataclass
class PrepareConfig:
    """`tinyhistory data prepare` inputs, so a TOML given with ``--config`` can hold them (CLI flags override)."""

    input: str = ""  # a folder of videos, a JSONL file or one video
    out: str = ""  # the cache folder


@dataclass
class RunConfig:
    preset: str = "tiny"  # the preset the run was made from (its file's name)
    # The model geometry it trains (VAE factors, patch, width; variant checks): the [geometry] of the preset whose
    # ``base`` it is (geometry.get_base), looked up by this name, which is what a saved config.json keeps.
    base: str = "tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    text: TextConfig = field(default_factory=TextConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)

    def validate(self) -> RunConfig:
        get_base(self.base)
        if self.model.path:
            # The VAE and the text encoder come from the user's folder unless the config names other folders (or
            # the codec or encoder is not a model folder's part: the pixel codec, MiniLM).
            if CODECS.get(self.codec.kind).reads_model_folder:
                self.codec.path = self.codec.path or self.model.path
            if TEXT_ENCODERS.get(self.text.kind).reads_model_folder:
                self.text.path = self.text.path or self.model.path
        for section in (self.model, self.codec, self.text, self.backbone, self.history, self.data, self.train):
            section.validate()
        if self.train.window_dropout and (self.train.stage != "ar" or not self.history.sliding_window):
            raise ValueError(
                f"train.window_dropout = {self.train.window_dropout} leaves stage II's sliding window out of some "
                f"steps; this run has train.stage = {self.train.stage!r} and history.sliding_window = "
                f'{self.history.sliding_window} (it needs "ar" and a window > 0)'
            )
        for r in self.history.rates:
            # Pixel frames are latent frames only for a framewise codec; a causal VAE's 1 + 4k frames are checked by
            # the trainer, which knows the VAE's temporal factor. (The codec class is asked only when the frames do
            # not divide: importing it imports torch, which validating a config otherwise never does.)
            if self.train.history_frames % Rate.parse(r).t and CODECS.get(self.codec.kind).framewise:
                raise ValueError(
                    f"train.history_frames={self.train.history_frames} is not a multiple of the temporal rate of {r}"
                )
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _positive(section: str, table, names: tuple[str, ...]) -> None:
    for name in names:
        if not getattr(table, name) > 0:
            raise ValueError(f"{section}.{name} must be positive, got {getattr(table, name)}")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key} = {value!r} is not allowed; expected one of {', '.join(allowed)}")


def _build(cls, data: dict, where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise ValueError(f"unknown key '{where}{key}'; allowed keys: {', '.join(known)}")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ValueError(f"{where}{key} must be a table, got {type(value).__name__}")
            kwargs[key] = _build(type(default), value, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, default, f"{where}{key}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, key: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ValueError(f"{key} must be a list, got {value!r}")
        return list(value)
    return value


def _merge(base: dict, override: dict, where: str = "") -> dict:
    """``override`` on top of ``base``; a table never silently replaces a value or a value a table."""
    out = dict(base)
    for key, value in override.items():
        if key in out and isinstance(value, dict) != isinstance(out[key], dict):
            table, what = (where + key, "a table") if isinstance(out[key], dict) else (where + key, "a value")
            raise ValueError(f"{table} must be {what}, got {value!r}")
        out[key] = _merge(out[key], value, f"{where}{key}.") if isinstance(value, dict) and key in out else value
    return out


def parse_override(text: str) -> dict:
    """``"train.steps=200"`` → ``{"train": {"steps": 200}}`` (the value is parsed as TOML, else a string)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"override {text!r}: {key!r} is not a key such as train.steps")
    sections = {f.name for f in dataclasses.fields(RunConfig) if f.default_factory is not dataclasses.MISSING}
    if len(parts) == 1 and parts[0] in sections:
        example = f"{parts[0]}.KEY=VALUE"
        raise ValueError(f"override {text!r}: [{parts[0]}] is a section; set one of its keys, e.g. {example}")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def preset_names(folder: Traversable | None = None) -> list[str]:
    folder = folder if folder is not None else resources.files("tinyhistory.presets")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


# The key by which a preset names the preset it is written over. Not "base": ``RunConfig.base`` already names the
# model geometry (geometry.get_base, variants.py) that a preset trains, a different thing.
INHERITS = "inherits"


def read_preset(name: str, folder: Traversable | None = None) -> dict:
    """The tables of preset ``name`` (``presets/<name>.toml``), with what it inherits merged in.

    A preset may start with ``inherits = "<other preset>"`` and then list only what differs from that preset: the
    other preset's tables are read first (itself inheriting, if it says so) and this file's merged on top, table by
    table, recursively (``[stage2.train]`` too): a key set here replaces the other's value, a key not set keeps it,
    and a list is replaced whole, never appended to. ``inherits`` names a file, not a config value: it is not part of
    the resolved config. Every preset still sets its own ``preset`` (its file's name) and ``base`` (its model
    geometry), so a run's saved config reads the same however its preset was written. An unknown preset, a cycle,
    or a table where the other preset has a value (or the reverse) is an error that names the file. The
    ``[geometry]`` table (what the base model does to a video's shape, :func:`tinyhistory.geometry.preset_geometry`)
    inherits like the others but is not a config value either: :func:`load_config` drops it, and
    :func:`tinyhistory.geometry.get_base` finds it by the preset's ``base``.

    ``folder``: where the presets are (default: the packaged ``tinyhistory/presets``; tests use their own).
    """
    folder = folder if folder is not None else resources.files("tinyhistory.presets")
    data = _read_preset(name, folder, [])
    if data.get("preset") != name:
        raise ValueError(
            f"{folder.joinpath(name + '.toml')}: preset = {data.get('preset')!r} must be the file's own name "
            f'{name!r} (a preset that inherits sets its own preset = "{name}")'
        )
    return data


def _read_preset(name: str, folder: Traversable, chain: list[str]) -> dict:
    """:func:`read_preset` below ``chain``, the presets that inherit from this one (to name a cycle)."""
    path = folder.joinpath(f"{name}.toml")
    if name in chain:
        cycle = " -> ".join([*chain[chain.index(name) :], name])
        raise ValueError(f"{folder.joinpath(chain[-1] + '.toml')}: inherits form a cycle: {cycle}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML ({exc})") from None
    parent = data.pop(INHERITS, None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not folder.joinpath(f"{parent}.toml").is_file():
        names = ", ".join(preset_names(folder))
        raise ValueError(f"{path}: {INHERITS} = {parent!r} is not a preset; available presets: {names}")
    base = _read_preset(parent, folder, [*chain, name])
    try:
        return _merge(base, data)
    except ValueError as exc:
        raise ValueError(f"{path} (over preset {parent!r}): {exc}") from None


def load_config(preset: str = "tiny", config_file: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Preset (with what it inherits: :func:`read_preset`), then (stage II only) the preset's ``[stage2]`` tables,
    then a user TOML file, then ``section.key=value`` overrides; validated.

    ``[stage2]`` holds the preset's stage-II defaults (window length, LoRA rank, schedule) in the same sections as
    the rest, e.g. ``[stage2.train]``; they apply when the resolved ``train.stage`` is ``"ar"``.
    """
    names = preset_names()
    if preset not in names:
        raise ValueError(f"unknown preset {preset!r}; available presets: {', '.join(names)}")
    data = read_preset(preset)
    data.pop(GEOMETRY, None)  # the base's, read by name (geometry.get_base), never a run's
    stage2 = data.pop("stage2", {})
    user: dict = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            user = _merge(user, tomllib.loads(path.read_text()))
        except FileNotFoundError:
            raise ValueError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML ({exc})") from None
    for item in overrides:
        user = _merge(user, parse_override(item))
    if GEOMETRY in user:
        # A run's geometry is its base's, looked up by name wherever its config.json goes: a run cannot redeclare it.
        raise ValueError(
            f"[{GEOMETRY}] belongs in a preset, not in a run's config: set base to a preset's base (known: "
            f"{', '.join(bases())}), or add a preset with its own base name and [{GEOMETRY}] table"
        )
    stage = user.get("train", {}).get("stage", data.get("train", {}).get("stage"))
    if stage == "ar":
        data = _merge(data, stage2)
    return _build(RunConfig, _merge(data, user), "").validate()


def config_from_dict(data: dict) -> RunConfig:
    return _build(RunConfig, data, "").validate()


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """A loaded config (e.g. a checkpoint's) with ``section.key=value`` overrides on top, validated again."""
    data = cfg.to_dict()
    for item in overrides:
        data = _merge(data, parse_override(item))
    return config_from_dict(data)


# What a checkpoint's history producers were built and trained with: generation cannot change these (the weights are
# loaded before overrides apply, so a new value would be written into the config and silently not used), and the
# attention pattern of the context (KV cache, block-causal) is part of what the model learned.
TRAINED_HISTORY_KEYS = (
    "method", "rates", "channels", "attention_blocks", "attention_heads", "sliding_window", "cross_attention",
    "block_phase", "value_rope", "phase_readout", "kv_cache", "context_attention",
)  # fmt: skip


def check_generation_overrides(cfg: RunConfig, overrides: list[str], checkpoint: str | Path) -> None:
    """Refuse a ``--set history.KEY=VALUE`` for generation that differs from what the checkpoint was trained with
    (one line naming the key, both values and the checkpoint); the same value is accepted."""
    for item in overrides:
        section = parse_override(item)
        history = section.get("history")
        if not isinstance(history, dict):
            continue
        for key, value in history.items():
            if key in TRAINED_HISTORY_KEYS and value != getattr(cfg.history, key):
                raise ValueError(
                    f"--set history.{key}={value!r}: {checkpoint} was trained with history.{key}="
                    f"{getattr(cfg.history, key)!r}, which generation keeps (the model's weights and attention "
                    "pattern depend on it); train a model with the other value"
                )
