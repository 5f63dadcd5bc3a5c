"""``tinyhistory plan``: will it fit? Predicted GPU and system-RAM peaks of training and generation, itemised, and
the settings that fit a given card and RAM, best first.

    tinyhistory plan --preset wan2.2-ti2v-5b --gpu-memory 24 --ram 64 --train
    tinyhistory plan --preset wan2.2-ti2v-5b --model Wan2.2-TI2V-5B-Diffusers --gpu-memory 8 --generate --json

Why this exists: whether a run fits is the first question before renting (or buying) a GPU, and the answer depends
on more than the parameter count: gradient checkpointing, the history's rate and length, the frame size, the KV
cache, ``--offload``, whether the text encoder must be loaded at all. Running each combination on a GPU to find out
costs hours; every number here comes from the real architectures on the ``meta`` device in a few seconds
(:mod:`tinyhistory.sizing.memory`), which each family declares (:mod:`tinyhistory.sizing.models`): Wan, HunyuanVideo
and LTX-Video alike.

**Unmeasured.** These peaks have not yet been checked against a run on a GPU, so every one is a prediction: the
parameter bytes are exact, the activations are a formula, generation's working sets are traces of the project's own
code on meta tensors, and the overheads (CUDA context, allocator slack, process RAM, shard sizes) are assumptions,
each named in the output. ``benchmarks/gpu_history_cost.py`` measures the same quantities on a GPU.

How a peak is formed: an item lives either for the whole run (``always``) or in one phase (loading, denoising,
VAE decode, forward/backward, optimizer step, …); a peak is everything ``always`` plus the largest phase. A GPU fits
when ``peak × (1 + ALLOCATOR_SLACK) + CUDA_CONTEXT`` is at most ``--gpu-memory``; RAM fits when its peak is at most
``RAM_USABLE`` of ``--ram``.

What the plan assumes, as the project runs today: training reads latents and prompt embeddings from a ``data prepare``
cache (no VAE, no text encoder); generation keeps the VAE (fp32) on the GPU, merges the LoRA into the DiT, encodes
prompts with the family's text encoder (bf16) on the GPU — with ``--offload`` it waits on the CPU and visits the GPU
while it encodes a new prompt — unless every prompt is already in a ``text.cache`` file; ``--offload`` keeps the DiT's
blocks in ordinary (pageable) CPU RAM and moves one block at a time (``generate/run.py: offload_blocks``, diffusers
group offload without CUDA streams, which pins nothing). The trainer has no offload; several GPUs train with DDP, or
FSDP (``train.parallel = "fsdp"``, ``configs/accelerate/fsdp.yaml``) when the model does not fit one: its units are the
ones ``train/parallel.py`` shards (one per DiT block, the rest in the root unit), in the same dtypes.

Tiers (``--tiers``, ``history.tiers``; ``RATES@stacked[:SECONDS]`` for ``history.tier_layout = "stacked"``): the
targets read each tier's span; the session keeps every rate's tokens of every block (it encodes every rate); the
stacked layout trains on every rate's tokens of every block (old fine tokens kept beside the coarse ones, masked)
and generates with its block-causal cache of every rate's blocks that the targets see plus one window
(``StackedTierCache``), one cache for both CFG branches.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tinyhistory.config import HistoryConfig
from tinyhistory.geometry import BaseGeometry, Rate, context_report, get_base
from tinyhistory.sizing.cost import TierSet
from tinyhistory.sizing.memory import (
    GIB,
    ActivationEstimate,
    CodecTrace,
    ModelCounts,
    StepTrace,
    TierTokens,
    activations_without_checkpointing,
    block_bytes,
    build_backbone,
    decode_trace,
    dit_step_trace,
    kv_cache_bytes,
    lowres_trace,
    meta_encoder,
    model_counts,
    stage_activations,
    tier_tokens,
)
from tinyhistory.sizing.models import component_params, released, released_presets

# -- assumptions (shown in every plan) ---------------------------------------------------------------------------
CUDA_CONTEXT = GIB // 2  # the CUDA context and library workspaces take card memory outside max_memory_allocated
ALLOCATOR_SLACK = 0.10  # the caching allocator's rounding and fragmentation on top of the allocated peak
PROCESS_RAM = 3 * GIB  # a Python process with torch and the CUDA libraries loaded, before any model
RAM_USABLE = 0.90  # of the machine's RAM, what one job may take (the OS and page cache keep the rest)
# A fit is marked "tight" when it would not fit with every estimated item (formula, trace) this much larger: on the
# development CPU the process's peak memory grew 1.2-1.6x the traced working sets (benchmarks/memory_trace_check.py;
# glibc and oneDNN keep more than the code allocates, so it is an upper bound), and no GPU has checked them yet.
TIGHT_FACTOR = 1.6
HUB_SHARD = 10 * 10**9  # diffusers' and transformers' save_pretrained max_shard_size: one file read whole at a time
MAX_BATCH = 64
MAX_FSDP_GPUS = 16
SHOWN = 12  # rows of fitting generation settings printed as text (``--json`` has all)

# The alternatives searched, besides the given settings (the paper's defaults come first in each).
RATES = ("4x4x2", "2x2x2")
RESOLUTIONS = ((480, 832), (320, 576))
STAGES = ("frame-query", "ar")
TEXT_CACHE = "text.cache"  # every prompt already encoded (the other choice: the preset's text.kind)

UNMEASURED = (
    "UNMEASURED: predictions, not measurements (not yet checked against a run on a GPU; leave some margin). "
    "Parameter bytes are exact; activations (formula), traces (tinyhistory's code on the meta device) and overheads "
    "(assumptions) are estimates."
)


@dataclass(frozen=True)
class PlanSettings:
    """What to plan for. ``model_path``: a diffusers model folder whose configs replace the preset's embedded ones."""

    preset: str = "wan2.2-ti2v-5b"
    model_path: str | None = None
    gpu_memory_gib: float = 24.0
    ram_gib: float = 64.0
    train: bool = True
    generate: bool = True
    stage: str = "frame-query"
    history_seconds: float = 20.0
    height: int = 480
    width: int = 832
    tiers: TierSet | None = None  # --tiers: tiered encoders (history.tiers), stacked or not, instead of one rate

    def __post_init__(self) -> None:
        for name, value in (("--gpu-memory", self.gpu_memory_gib), ("--ram", self.ram_gib)):
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of GiB, got {value:g}")
        if not math.isfinite(self.history_seconds) or self.history_seconds <= 0:
            raise ValueError(f"--history-seconds must be positive, got {self.history_seconds:g}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"--height and --width must be positive, got {self.height}x{self.width}")
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if not (self.train or self.generate):
            raise ValueError("nothing to plan: ask for --train, --generate or both")


def parse_gib(text: str, flag: str) -> float:
    """A command-line amount of GiB (``"24"``, ``"7.5"``); a ValueError names the flag (the CLI prints one line)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{flag} must be a positive number of GiB, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{flag} must be a positive number of GiB, got {text}")
    return value


# -- items and budgets -------------------------------------------------------------------------------------------
@dataclass
class Item:
    """One line of a budget: ``bytes`` on the ``where`` ("GPU" / "RAM") during ``phase`` ("always" or one phase)."""

    where: str
    phase: str
    name: str
    bytes: int
    kind: str  # exact | formula | trace | assumption
    note: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"gib": round(self.bytes / GIB, 3)}


@dataclass
class Budget:
    """Items of one scenario; a peak is the ``always`` items plus the largest phase."""

    items: list[Item] = field(default_factory=list)

    def add(self, where: str, phase: str, name: str, size: int, kind: str, note: str = "") -> None:
        self.items.append(Item(where, phase, name, int(size), kind, note))

    def phases(self, where: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            if item.where == where and item.phase != "always":
                out[item.phase] = out.get(item.phase, 0) + item.bytes
        return out

    def peak(self, where: str, estimates: float = 1.0) -> int:
        """Peak bytes on ``where``; ``estimates`` scales the estimated items (formula, trace) to test a margin."""

        def size(item: Item) -> int:
            return int(item.bytes * estimates) if item.kind in ("formula", "trace") else item.bytes

        always = sum(size(i) for i in self.items if i.where == where and i.phase == "always")
        phases: dict[str, int] = {}
        for item in self.items:
            if item.where == where and item.phase != "always":
                phases[item.phase] = phases.get(item.phase, 0) + size(item)
        return always + max(phases.values(), default=0)

    def peak_phase(self, where: str) -> str:
        phases = self.phases(where)
        return max(phases, key=phases.get) if phases else "always"


def card_bytes(allocated: int) -> int:
    """What an allocated peak takes on the card: allocator slack and the CUDA context on top."""
    return int(allocated * (1 + ALLOCATOR_SLACK)) + CUDA_CONTEXT


# -- the model's facts, computed once ------------------------------------------------------------------------------
def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _largest_file(folder: Path) -> int | None:
    sizes = [p.stat().st_size for p in folder.glob("*.safetensors")] if folder.is_dir() else []
    return max(sizes) if sizes else None


@dataclass
class RateFacts:
    """What depends on the history's encoders (one rate, or the rates of ``--tiers``): their exact counts, the meta
    encoders and (lazily) the training activations."""

    rates: tuple[Rate, ...]
    counts: ModelCounts
    encoders: list

    @property
    def uses_lr(self) -> bool:
        return any(e.uses_lr for e in self.encoders)


def _check_stacked(adapter: type, config: dict) -> None:
    """The stacked tier layout needs the family's block-causal context window: a family without it refuses by name
    (a ValueError naming the family and ``history.tier_layout``), before anything is counted."""
    adapter(adapter.meta_transformer(config, 1)).use_context_window(1)


class ModelFacts:
    """Everything the budgets need about one model: configs (the released model the preset's ``base`` names, or
    ``--model DIR``'s), the family's classes, exact counts, geometry; traces and activation estimates memoised per
    setting."""

    def __init__(self, settings: PlanSettings):
        from tinyhistory.config import load_config

        self.settings = s = settings
        tiers = [] if s.tiers is None else s.tiers.overrides()  # what tinyhistory cost counts for the spec
        cfg = load_config(s.preset, overrides=[f'train.stage="{s.stage}"', *tiers])
        ar = load_config(s.preset, overrides=['train.stage="ar"', *tiers])
        model = released(cfg)
        if model is None:
            raise ValueError(
                f"plan covers the presets of released models ({', '.join(released_presets())}); {s.preset!r} is a "
                f"CPU preset built from its [backbone] table (its FLOPs: tinyhistory cost --preset {s.preset})"
            )
        if cfg.history.method not in ("proposed", "only_lr", "without_lr"):
            raise ValueError(
                f"plan covers the history encoder (proposed, only_lr, without_lr), not {cfg.history.method}"
            )
        self.cfg = cfg
        self.adapter, self.codec_class, self.text_class = model.adapter, model.codec, model.text
        self.text_name = self.text_class.sizing_name
        self.text_kind = cfg.text.kind
        self.fps = cfg.data.fps
        self.lora_rank = cfg.train.lora_rank
        self.target_frames = cfg.train.query_window if s.stage == "frame-query" else cfg.train.segment_frames
        self.segment_frames = ar.train.segment_frames
        self.text_tokens = cfg.text.max_tokens
        self.default_rate = str(s.tiers) if s.tiers is not None else cfg.history.rates[0]
        components = tuple(self.text_class.released)
        self.shards: dict[str, int | None] = {c: None for c in ("transformer", *components)}
        if s.model_path:
            folder = Path(s.model_path).expanduser()
            transformer = _read_json(folder / cfg.model.transformer / "config.json")
            if transformer is None:
                raise FileNotFoundError(
                    f"--model {s.model_path}: {cfg.model.transformer}/config.json not found (a diffusers model folder "
                    "has model_index.json, transformer/, vae/, text_encoder/, …)"
                )
            from tinyhistory.variants import check_model_variant

            check_model_variant(cfg, folder)  # a plan for the preset's variant, not for whatever folder was given
            self.name = f"{folder.name} ({folder})"
            self.source = f"the configs in {folder}"
            self.transformer = transformer
            self.vae = _read_json(folder / "vae" / "config.json") or {}
            found = {c: _read_json(folder / c / "config.json") for c in components}
            self.text = {c: config for c, config in found.items() if config is not None}
            index = _read_json(folder / "model_index.json") or {}
            second = _read_json(folder / "transformer_2" / "config.json")
            self.expert2 = second if index.get("boundary_ratio") is not None else None
            self.shards = {c: _largest_file(folder / c) for c in self.shards}
        else:
            self.name = model.name
            self.source = f"the preset's released model ({model.dit.source})"
            self.transformer = model.dit.config
            self.vae = model.vae
            self.text = model.text_components
            self.expert2 = self.transformer if model.dit.second_expert else None
        if s.tiers is not None and s.tiers.layout == "stacked":
            _check_stacked(self.adapter, self.transformer)
        self.dit = build_backbone(self.adapter, self.transformer, self.lora_rank)
        self.hidden = self.dit.hidden_dim
        self.layers = len(self.dit.blocks)
        codec = self.codec_class.meta(self.vae)
        if codec.latent_channels != self.dit.in_channels:
            raise ValueError(
                f"the VAE's {codec.latent_channels} latent channels do not match the DiT's {self.dit.in_channels} "
                "inputs"
            )
        self.base = BaseGeometry(
            name=self.name,
            vae_spatial=codec.spatial_factor,
            vae_temporal=codec.temporal_factor,
            patch=tuple(self.dit.patch_size),
            latent_channels=codec.latent_channels,
            hidden_dim=self.hidden,
        )
        if not s.model_path:
            preset = get_base(cfg.base)
            if dataclasses.replace(preset, name=self.name) != self.base:
                raise RuntimeError(f"tinyhistory.geometry {cfg.base!r} disagrees with {self.name}'s configs")
        self.lora_targets = self.adapter.lora_targets
        # Classifier-free guidance's batch: 2 branches, or 1 for a guidance-distilled family (default guidance 1 =
        # off: HunyuanVideo embeds its guidance instead)
        self.branches = 1 if self.adapter.default_guidance == 1 else 2
        self.kv = self._has_kv_cache()
        self.tier_plan = self._tier_plan(cfg.history, cfg.base)
        blocks = block_bytes(self.dit)
        self.block_bytes, self.all_blocks_bytes = max(blocks), sum(blocks)
        self._rates: dict[str, RateFacts] = {}
        self._acts: dict[tuple, ActivationEstimate] = {}
        self._steps: dict[tuple, StepTrace] = {}
        self._codecs: dict[tuple, CodecTrace] = {}
        self.text_params_by = {c: component_params(self.text_class, c, cfg_) for c, cfg_ in self.text.items()}
        self.text_params = sum(self.text_params_by.values())
        self.vae_params = sum(p.numel() for p in codec.vae.parameters())
        if self.expert2 is not None:
            expert = build_backbone(self.adapter, self.expert2, 0)
            self.expert2_bytes = model_counts("expert 2", expert, []).frozen_bytes
            expert_blocks = block_bytes(expert)
            self.expert2_block_bytes, self.expert2_all_blocks_bytes = max(expert_blocks), sum(expert_blocks)
        for rate in _rates(self):
            self.rate(rate)

    def _has_kv_cache(self) -> bool:
        """Whether the family has the history KV cache (``history.kv_cache``); one without refuses it by name."""
        try:
            self.adapter(self.adapter.meta_transformer(self.transformer, 1)).use_kv_cache()
        except ValueError:
            return False
        return True

    def _tier_plan(self, history: HistoryConfig, base: str):
        """The tier layout of ``--tiers`` at the preset's fps (``history/tiers.py``), or None: the ``[history]``
        table's tiers over the geometry ``base`` names (all the layout reads of the config)."""
        if self.settings.tiers is None:
            return None
        from tinyhistory.history.tiers import TierPlan

        return TierPlan.from_config(history, base, self.fps)

    @property
    def stacked(self) -> bool:
        return self.tier_plan is not None and self.tier_plan.stacked

    # -- memoised pieces ---------------------------------------------------------------------------------------
    def rate(self, rate: str) -> RateFacts:
        if rate not in self._rates:
            from tinyhistory.history import EncoderConfig

            h = self.cfg.history
            rates = tuple(self.settings.tiers.rates) if self.tier_plan is not None else (rate,)
            encoders = [
                meta_encoder(
                    EncoderConfig(
                        rate=r,
                        variant=h.method,
                        channels=tuple(h.channels),
                        attention_blocks=h.attention_blocks,
                        attention_heads=h.attention_heads,
                    ),
                    self.dit,
                )
                for r in rates
            ]
            counts = model_counts(self.name, self.dit, encoders)
            self._rates[rate] = RateFacts(tuple(Rate.parse(r) for r in rates), counts, encoders)
        return self._rates[rate]

    def check_size(self, height: int, width: int) -> None:
        unit = self.base.vae_spatial * self.base.patch[1]
        if height % unit or width % unit:
            raise ValueError(
                f"{height}x{width}: the frame size must be a multiple of {unit} for {self.name} (VAE ×"
                f"{self.base.vae_spatial}, DiT patch {self.base.patch[1]})"
            )

    def tiers(self, height: int, width: int) -> TierTokens:
        """The ``--tiers`` layout's token counts after ``history_seconds`` at ``height``×``width``."""
        frames = self.base.latent_frames(int(round(self.fps * self.settings.history_seconds)))
        return tier_tokens(self.tier_plan, frames, self.base.token_grid(height, width, 0)[1:])

    def context_tokens(self, rate: str, height: int, width: int) -> int:
        """History tokens the targets attend to (one rate's, or the tiers' spans)."""
        if self.tier_plan is not None:
            return self.tiers(height, width).view
        report = context_report(self.base, height, width, self.fps, self.settings.history_seconds, [Rate.parse(rate)])
        return report.history_tokens

    def training_tokens(self, rate: str, height: int, width: int) -> int:
        """History tokens in a training step's sequence: what the targets see, and with the stacked layout every
        rate's tokens of every block (the context attends to them, masked)."""
        if self.stacked:
            return self.tiers(height, width).every_rate
        return self.context_tokens(rate, height, width)

    def kept_tokens(self, rate: str, height: int, width: int) -> int:
        """History tokens a generation session keeps (the producers' outputs: every rate's tokens with tiers)."""
        if self.tier_plan is not None:
            return self.tiers(height, width).every_rate
        return self.context_tokens(rate, height, width)

    def cache_tokens(self, rate: str, height: int, width: int) -> int:
        """Tokens of the history KV cache: the stacked cache's kept blocks, else what the targets attend to."""
        if self.stacked:
            return self.tiers(height, width).cached
        return self.context_tokens(rate, height, width)

    def activations(self, rate: str, height: int, width: int) -> ActivationEstimate:
        key = (rate, height, width)
        if key not in self._acts:
            facts = self.rate(rate)
            self._acts[key] = stage_activations(
                self.dit,
                self.transformer,
                facts.encoders,
                self.base,
                height,
                width,
                self.fps,
                self.settings.history_seconds,
                self.training_tokens(rate, height, width),
                self.target_frames,
                self.lora_rank,
                self.text_tokens,
                self.name,
            )
        return self._acts[key]

    def latent_hw(self, height: int, width: int) -> tuple[int, int]:
        return height // self.base.vae_spatial, width // self.base.vae_spatial

    def step(self, rate: str, height: int, width: int, kv: bool) -> StepTrace:
        k = self.context_tokens(rate, height, width)
        shape = (self.base.latent_channels, self.segment_frames, *self.latent_hw(height, width))
        key = (k, shape, kv)
        if key not in self._steps:
            self._steps[key] = dit_step_trace(
                self.adapter, self.transformer, k, shape, kv, self.branches, self.text_tokens
            )
        return self._steps[key]

    def decode(self, height: int, width: int) -> CodecTrace:
        key = ("decode", height, width)
        if key not in self._codecs:
            self._codecs[key] = decode_trace(self.codec_class, self.vae, self.segment_frames, height, width)
        return self._codecs[key]

    def lowres(self, rate: str, height: int, width: int) -> CodecTrace | None:
        """The LR streams' trace (frames cropped to the VAE's factor, as the stream does; one per encoder with an LR
        branch, summed), or None without an LR branch."""
        facts = self.rate(rate)
        if not facts.uses_lr:
            return None
        key = ("lowres", rate, height, width)
        if key not in self._codecs:
            traces = [
                lowres_trace(self.codec_class, self.vae, e.rate, self.segment_frames, height, width)
                for e in facts.encoders
                if e.uses_lr
            ]
            self._codecs[key] = CodecTrace(sum(t.working for t in traces), sum(t.cache for t in traces))
        return self._codecs[key]

    def shard(self, component: str, stored_bytes: int) -> tuple[int, str]:
        """(bytes, kind) of the largest file of ``component`` read whole while loading: the folder's, else the
        Hub's rule (``HUB_SHARD`` at most)."""
        size = self.shards.get(component)
        if size is not None:
            return size, "exact"
        return min(stored_bytes, HUB_SHARD), "assumption"

    def text_shard(self) -> tuple[int, str]:
        """(bytes, kind) of the largest text-encoder file read whole (of every component)."""
        sizes = [self.shard(c, 2 * n) for c, n in self.text_params_by.items()]
        return max(sizes, default=(0, "exact"))


# -- training --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainScenario:
    checkpointing: bool = True
    rate: str = "4x4x2"
    height: int = 480
    width: int = 832
    batch: int = 1
    gpus: int = 1  # > 1: FSDP over that many GPUs (configs/accelerate/fsdp.yaml)


def train_budget(m: ModelFacts, sc: TrainScenario) -> Budget:
    """GPU and RAM items of one training process (one GPU; with ``gpus`` > 1 one FSDP rank, RAM for all ranks)."""
    facts = m.rate(sc.rate)
    c = facts.counts
    n = sc.gpus

    def shard(x: int) -> int:
        return math.ceil(x / n)

    b = Budget()
    lora, enc = c.lora_params, c.encoder_params
    split = f" (1/{n}: FSDP)" if n > 1 else ""
    b.add(
        "GPU",
        "always",
        f"frozen DiT weights (bf16; diffusers' fp32 norms/tables){split}",
        shard(c.frozen_bytes),
        "exact",
    )
    b.add("GPU", "always", f"LoRA r{m.lora_rank} weights (fp32){split}", shard(4 * lora), "exact")
    b.add("GPU", "always", f"history encoder {sc.rate} weights (fp32){split}", shard(4 * enc), "exact")
    b.add("GPU", "always", f"gradients of LoRA + encoder (fp32){split}", shard(4 * (lora + enc)), "exact")
    b.add("GPU", "always", f"AdamW moments of LoRA + encoder (2 × fp32){split}", shard(8 * (lora + enc)), "exact")
    if n > 1:
        b.add(
            "GPU",
            "always",
            "all-gathered blocks (bf16): the running block and the one FSDP2 prefetches",
            2 * c.gathered_block_bytes,
            "exact",
        )
        # The root unit (train/parallel.py: everything outside the blocks) stays gathered from its forward to the end
        # of its backward: the other N - 1 shards of the DiT's embedders and head and of the history encoder.
        root = (c.frozen_bytes - m.all_blocks_bytes) + 4 * enc
        b.add(
            "GPU",
            "forward/backward",
            "the root unit gathered for the step (DiT outside its blocks, bf16; history encoder, fp32)",
            root - shard(root),
            "exact",
        )
    b.add("GPU", "always", f"{m.text_name} text encoder: not loaded (prompt embeddings from the cache)", 0, "exact")
    b.add("GPU", "always", "VAE: not loaded (latents from the cache)", 0, "exact")
    a = m.activations(sc.rate, sc.height, sc.width)
    k = sc.batch
    per = f" × batch {k}" if k > 1 else ""
    phase = "forward/backward"
    if sc.checkpointing:
        b.add("GPU", phase, f"kept block inputs (bf16, one per block){per}", k * a.kept_block_inputs, a.kind)
        b.add("GPU", phase, f"shared block inputs (per-token timesteps, RoPE, text){per}", k * a.shared_inputs, a.kind)
        b.add("GPU", phase, f"one block recomputed in backward{per}", k * a.one_block, a.kind)
    else:
        b.add("GPU", phase, f"every block's saved tensors ({m.layers} blocks){per}", k * a.every_block, a.kind)
        b.add("GPU", phase, f"shared block inputs (per-token timesteps, RoPE, text){per}", k * a.shared_inputs, a.kind)
    b.add("GPU", phase, f"history encoders' HR branches (bf16, not checkpointed){per}", k * a.encoder, "formula")
    b.add(
        "GPU",
        "optimizer step",
        "AdamW temporaries (foreach: one fp32 tensor per trainable parameter)",
        shard(4 * (lora + enc)),
        "formula",
    )
    ranks = f" × {n} processes on one machine" if n > 1 else ""
    b.add("RAM", "always", f"Python + torch + CUDA libraries{ranks}", n * PROCESS_RAM, "assumption")
    b.add(
        "RAM",
        "loading",
        f"DiT weights read into RAM (bf16) before they move to the GPU{ranks}",
        n * c.frozen_bytes,
        "exact",
    )
    size, kind = m.shard("transformer", 2 * c.frozen_bytes)
    b.add("RAM", "loading", f"largest transformer safetensors file, read whole{ranks}", n * size, kind)
    b.add("RAM", "loading", f"LoRA + encoder created on the CPU (fp32){ranks}", n * 4 * (lora + enc), "exact")
    return b


# -- generation ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenerateScenario:
    offload: bool = False
    rate: str = "4x4x2"
    height: int = 480
    width: int = 832
    kv_cache: bool = False
    prompts: str = "umt5"  # the preset's text.kind: encoded by its text encoder; "text.cache": every prompt already
    # in a text.cache file


def generate_budget(m: ModelFacts, sc: GenerateScenario) -> Budget:
    """GPU and RAM items of ``tinyhistory generate`` (CFG, one video, segments of the preset's 1 s)."""
    facts = m.rate(sc.rate)
    c = facts.counts
    b = Budget()
    non_block = c.frozen_bytes - m.all_blocks_bytes
    if sc.offload:
        b.add("GPU", "always", "DiT outside its blocks (embedders, head; bf16)", non_block, "exact")
        b.add("GPU", "denoising", "one DiT block on the GPU at a time (bf16, group offload)", m.block_bytes, "exact")
    else:
        b.add("GPU", "always", "DiT weights (bf16, LoRA merged)", c.frozen_bytes, "exact")
    if m.expert2 is not None:
        e_non_block = m.expert2_bytes - m.expert2_all_blocks_bytes
        if sc.offload:
            b.add("GPU", "always", "low-noise expert outside its blocks (bf16)", e_non_block, "exact")
        else:
            b.add("GPU", "always", "low-noise expert (bf16; no LoRA, no history)", m.expert2_bytes, "exact")
    b.add("GPU", "always", f"history encoder {sc.rate} (fp32)", 4 * c.encoder_params, "exact")
    b.add("GPU", "always", "VAE (fp32)", 4 * m.vae_params, "exact")
    k = m.context_tokens(sc.rate, sc.height, sc.width)
    kept = m.kept_tokens(sc.rate, sc.height, sc.width)
    every = ", every rate's" if m.tier_plan is not None else ""
    b.add("GPU", "always", f"history tokens ({kept:,}{every} × bf16)", kept * m.hidden * 2, "formula")
    decode = m.decode(sc.height, sc.width)
    lowres = m.lowres(sc.rate, sc.height, sc.width)
    b.add("GPU", "always", "VAE decoder's causal cache (carried between segments)", decode.cache, "trace")
    if lowres is not None:
        b.add("GPU", "always", "LR branch's stream encoder cache", lowres.cache, "trace")
    text, name = 2 * m.text_params, m.text_name
    if sc.prompts == TEXT_CACHE:
        b.add("GPU", "always", f"{name} text encoder: never loaded (every prompt in text.cache)", 0, "exact")
    elif sc.offload:
        visiting = f"{name} text encoder visiting the GPU to encode a new prompt (bf16)"
        b.add("GPU", "text encoding", visiting, text, "exact")
    else:
        b.add("GPU", "always", f"{name} text encoder (bf16), built once and kept", text, "exact")
    step = m.step(sc.rate, sc.height, sc.width, sc.kv_cache)
    cfg = f"CFG batch {m.branches}" if m.branches > 1 else "one branch: guidance-distilled"
    b.add("GPU", "denoising", f"one guided DiT step's working set ({cfg})", step.working, "trace")
    if sc.kv_cache and k and m.stacked:
        cached = m.cache_tokens(sc.rate, sc.height, sc.width)
        b.add(
            "GPU",
            "always",
            f"stacked history KV cache (keys + values × {m.layers} blocks × {cached:,} tokens: every rate's blocks the "
            "targets see plus one window; × bf16, one cache for both CFG branches)",
            kv_cache_bytes(m.layers, cached, m.hidden, branches=1),
            "formula",
        )
        b.add(
            "GPU",
            "denoising",
            f"the targets' view of it ({k:,} tokens, concatenated per segment)",
            kv_cache_bytes(m.layers, k, m.hidden, branches=1),
            "formula",
        )
    elif sc.kv_cache and k:
        cache = kv_cache_bytes(m.layers, k, m.hidden)
        b.add(
            "GPU",
            "denoising",
            f"history KV cache (keys + values × {m.layers} blocks × {k:,} tokens × bf16 × 2 CFG branches)",
            cache,
            "formula",
        )
    b.add("GPU", "VAE decode", "streaming decode of one segment, beyond its cache", decode.working, "trace")
    if lowres is not None:
        b.add("GPU", "history append", "LR branch's stream encoder on one segment", lowres.working, "trace")

    b.add("RAM", "always", "Python + torch + CUDA libraries", PROCESS_RAM, "assumption")
    frames = int(round(m.fps * m.settings.history_seconds))
    h, w = m.latent_hw(sc.height, sc.width)
    latents = m.base.latent_channels * (m.base.latent_frames(frames) + m.segment_frames) * h * w * 4
    b.add("RAM", "always", "history latents on the CPU (fp32)", latents, "formula")
    size, kind = m.shard("transformer", 2 * c.frozen_bytes)
    if sc.offload:
        blocks = m.all_blocks_bytes
        b.add(
            "RAM",
            "always",
            "DiT blocks waiting in RAM (bf16, pageable: no CUDA streams, nothing pinned)",
            blocks,
            "exact",
        )
        b.add("RAM", "loading the DiT", "DiT outside its blocks, before it moves to the GPU", non_block, "exact")
    else:
        b.add(
            "RAM",
            "loading the DiT",
            "DiT weights read into RAM (bf16) before they move to the GPU",
            c.frozen_bytes,
            "exact",
        )
    b.add("RAM", "loading the DiT", "largest transformer safetensors file, read whole", size, kind)
    b.add("RAM", "loading the DiT", "LoRA read for merging (fp32)", 4 * c.lora_params, "exact")
    if m.expert2 is not None:
        if sc.offload:
            blocks = m.expert2_all_blocks_bytes
            b.add("RAM", "always", "low-noise expert's blocks waiting in RAM (bf16)", blocks, "exact")
            b.add("RAM", "loading the low-noise expert", "largest transformer_2 file, read whole", size, kind)
        else:
            b.add(
                "RAM",
                "loading the low-noise expert",
                "low-noise expert in RAM before the GPU",
                m.expert2_bytes,
                "exact",
            )
            b.add("RAM", "loading the low-noise expert", "largest transformer_2 file, read whole", size, kind)
    if sc.prompts != TEXT_CACHE:
        tsize, tkind = m.text_shard()
        if sc.offload:
            b.add("RAM", "always", f"{name} text encoder waiting on the CPU between prompts (bf16)", text, "exact")
        else:
            b.add(
                "RAM",
                f"loading {name}",
                f"{name} text encoder read into RAM (bf16) before it moves to the GPU",
                text,
                "exact",
            )
        b.add("RAM", f"loading {name}", "largest text_encoder safetensors file, read whole", tsize, tkind)
    b.add("RAM", "loading the VAE", "VAE read into RAM (fp32) before it moves to the GPU", 4 * m.vae_params, "exact")
    return b


# -- the search ------------------------------------------------------------------------------------------------
def _resolutions(s: PlanSettings) -> list[tuple[int, int]]:
    given = (s.height, s.width)
    return [given] + [r for r in RESOLUTIONS if r != given]


def _rates(m: ModelFacts) -> list[str]:
    """The history settings searched: the preset's rate and the alternatives, or the ``--tiers`` layout alone."""
    if m.tier_plan is not None:
        return [m.default_rate]
    return list(dict.fromkeys((m.default_rate, *RATES)))


def _kv_options(m: ModelFacts) -> tuple[bool, ...]:
    """History KV cache off and on where the family has it; always on for the stacked layout (it is a cache)."""
    if m.stacked:
        return (True,)
    return (False, True) if m.kv else (False,)


def _fits(m: ModelFacts, budget: Budget) -> tuple[bool, bool]:
    s = m.settings
    gpu = card_bytes(budget.peak("GPU")) <= s.gpu_memory_gib * GIB
    ram = budget.peak("RAM") <= s.ram_gib * RAM_USABLE * GIB
    return gpu, ram


def _summary(m: ModelFacts, budget: Budget) -> dict:
    gpu_fits, ram_fits = _fits(m, budget)
    return {
        "gpu_peak_bytes": budget.peak("GPU"),
        "gpu_peak_phase": budget.peak_phase("GPU"),
        "gpu_card_bytes": card_bytes(budget.peak("GPU")),
        "ram_peak_bytes": budget.peak("RAM"),
        "ram_peak_phase": budget.peak_phase("RAM"),
        "fits_gpu": gpu_fits,
        "fits_ram": ram_fits,
        "fits": gpu_fits and ram_fits,
        "tight": gpu_fits and card_bytes(budget.peak("GPU", TIGHT_FACTOR)) > m.settings.gpu_memory_gib * GIB,
    }


def train_candidates(m: ModelFacts) -> tuple[list[dict], list[dict], list[dict]]:
    """(the combinations that fit one GPU and the RAM, with their largest batch, best first; when none fits the GPU,
    the fewest FSDP GPUs for each combination at batch 1, best first; every combination at batch 1 on one GPU)."""
    s = m.settings
    given = (s.height, s.width)
    fitting, fsdp, every = [], [], []
    for ckpt, rate, (h, w) in itertools.product((True, False), _rates(m), _resolutions(s)):
        sc = TrainScenario(ckpt, rate, h, w)
        rank = ((h, w) != given, rate != m.default_rate, not ckpt)
        combination = {"checkpointing": ckpt, "rate": rate, "height": h, "width": w}
        row = {**combination, **_summary(m, train_budget(m, sc)), "_rank": rank}
        every.append(row)
        if row["fits"]:
            batch = 1
            while batch < MAX_BATCH and _summary(m, train_budget(m, dataclasses.replace(sc, batch=batch + 1)))["fits"]:
                batch += 1
            fitting.append(row | {"max_batch": batch})
        for gpus in range(2, MAX_FSDP_GPUS + 1):
            sharded = _summary(m, train_budget(m, dataclasses.replace(sc, gpus=gpus)))
            if sharded["fits_gpu"]:
                fsdp.append({**combination, "gpus": gpus, **sharded, "_rank": rank})
                break
    fitting.sort(key=lambda r: (r["_rank"], -r["max_batch"]))
    fsdp.sort(key=lambda r: (r["_rank"], r["gpus"]))
    every.sort(key=lambda r: r["_rank"])
    for row in (*fitting, *fsdp, *every):
        row.pop("_rank", None)
    # FSDP answers a card too small, not too little RAM (every rank loads the whole DiT: it needs more RAM).
    return fitting, [] if any(r["fits_gpu"] for r in every) else fsdp, every


def generate_candidates(m: ModelFacts) -> list[dict]:
    """Every generation combination with its peaks, those that fit first, each part best first."""
    s = m.settings
    given = (s.height, s.width)
    rows = []
    for rate, (h, w), kv, offload, prompts in itertools.product(
        _rates(m), _resolutions(s), _kv_options(m), (False, True), (m.text_kind, TEXT_CACHE)
    ):
        sc = GenerateScenario(offload, rate, h, w, kv, prompts)
        rank = ((h, w) != given, rate != m.default_rate, kv, offload, prompts != m.text_kind)
        summary = _summary(m, generate_budget(m, sc))
        rows.append({**dataclasses.asdict(sc), **summary, "_rank": rank})
    rows.sort(key=lambda r: (not r["fits"], r["_rank"]))
    for row in rows:
        row.pop("_rank")
    return rows


# -- the plan --------------------------------------------------------------------------------------------------
def make_plan(settings: PlanSettings) -> dict:
    """Everything ``tinyhistory plan`` shows, as one JSON-ready dict (see :func:`render_text` for the words)."""
    m = ModelFacts(settings)
    s = settings
    m.check_size(s.height, s.width)
    for h, w in RESOLUTIONS:
        m.check_size(h, w)
    rate = m.default_rate
    facts = m.rate(rate)
    c = facts.counts
    k = m.context_tokens(rate, s.height, s.width)
    plan: dict = {
        "measured": False,
        "unmeasured": UNMEASURED,
        "preset": s.preset,
        "model": m.name,
        "configs_from": s.model_path or "preset",
        "sizes_source": m.source,
        "gpu_memory_gib": s.gpu_memory_gib,
        "ram_gib": s.ram_gib,
        "settings": {
            "height": s.height,
            "width": s.width,
            "fps": m.fps,
            "history_seconds": s.history_seconds,
            "rate": rate,
            "context_tokens": k,
            "stage": s.stage,
            "target_latent_frames": m.target_frames,
            "segment_latent_frames": m.segment_frames,
            "lora_rank": m.lora_rank,
            "tiers": None if m.tier_plan is None else dataclasses.asdict(m.tiers(s.height, s.width)),
            "training_context_tokens": m.training_tokens(rate, s.height, s.width),
            "cached_context_tokens": m.cache_tokens(rate, s.height, s.width),
        },
        "exact": {
            "frozen_params": c.frozen_params,
            "frozen_bytes": c.frozen_bytes,
            "lora_params": c.lora_params,
            "encoder_params": c.encoder_params,
            "block_bytes": m.block_bytes,
            "num_layers": m.layers,
            "hidden_dim": m.hidden,
            "text_encoder": m.text_name,
            "text_encoder_params": m.text_params,
            "vae_params": m.vae_params,
            "second_expert_bytes": m.expert2_bytes if m.expert2 is not None else 0,
        },
        "assumptions": {
            "cuda_context_bytes": CUDA_CONTEXT,
            "allocator_slack": ALLOCATOR_SLACK,
            "process_ram_bytes": PROCESS_RAM,
            "ram_usable": RAM_USABLE,
            "hub_shard_bytes": HUB_SHARD,
            "tight_factor": TIGHT_FACTOR,
        },
    }
    if s.train:
        sc = TrainScenario(True, rate, s.height, s.width)
        budget = train_budget(m, sc)
        act = m.activations(rate, s.height, s.width)
        without = train_budget(m, dataclasses.replace(sc, checkpointing=False))
        fitting, fsdp, every = train_candidates(m)
        plan["train"] = {
            "scenario": dataclasses.asdict(sc),
            "items": [i.as_dict() for i in budget.items],
            **_summary(m, budget),
            "activations_bytes": act.total,
            "activations_without_checkpointing_bytes": activations_without_checkpointing(act),
            "activations_kind": act.kind,
            "without_checkpointing": _summary(m, without),
            "candidates": fitting,
            "nothing_fits": not fitting,
            "fsdp": fsdp,
            "all": every,
        }
    if s.generate:
        sc = GenerateScenario(False, rate, s.height, s.width, m.stacked, m.text_kind)
        budget = generate_budget(m, sc)
        rows = generate_candidates(m)
        plan["generate"] = {
            "scenario": dataclasses.asdict(sc),
            "items": [i.as_dict() for i in budget.items],
            **_summary(m, budget),
            "kv_cache_bytes": (
                kv_cache_bytes(m.layers, m.cache_tokens(rate, s.height, s.width), m.hidden, branches=1)
                if m.stacked
                else kv_cache_bytes(m.layers, k, m.hidden)
            ),
            "with_kv_cache": (
                _summary(m, generate_budget(m, dataclasses.replace(sc, kv_cache=True))) if m.kv or m.stacked else None
            ),
            "with_offload": _summary(m, generate_budget(m, dataclasses.replace(sc, offload=True))),
            "candidates": [r for r in rows if r["fits"]],
            "nothing_fits": not any(r["fits"] for r in rows),
            "all": rows,
        }
    return plan


# -- words -----------------------------------------------------------------------------------------------------
def _g(n: int) -> str:
    return f"{n / GIB:,.2f}"


def _items_table(items: list[dict]) -> list[str]:
    out = ["| where | when | item | GiB | kind |", "|---|---|---|---|---|"]
    for i in items:
        out.append(f"| {i['where']} | {i['phase']} | {i['name']} | {_g(i['bytes'])} | {i['kind']} |")
    return out


def _verdict(plan: dict, part: dict) -> list[str]:
    gpu, ram = plan["gpu_memory_gib"], plan["ram_gib"]
    return [
        f"GPU peak: {_g(part['gpu_peak_bytes'])} GiB allocated ({part['gpu_peak_phase']}) → "
        f"{_g(part['gpu_card_bytes'])} GiB on the card with the CUDA context and {ALLOCATOR_SLACK:.0%} allocator "
        f"slack: {'fits' if part['fits_gpu'] else 'does NOT fit'} {gpu:g} GiB.",
        f"RAM peak: {_g(part['ram_peak_bytes'])} GiB ({part['ram_peak_phase']}): "
        f"{'fits' if part['fits_ram'] else 'does NOT fit'} {ram:g} GiB ({RAM_USABLE:.0%} usable).",
    ]


def _resolution(row: dict) -> str:
    return f"{row['height']}x{row['width']}"


def _note(row: dict) -> str:
    notes = []
    if row.get("tight"):
        notes.append(f"tight: not with the estimates {TIGHT_FACTOR:g}x larger")
    return "; ".join(notes)


def render_text(plan: dict) -> str:
    """The plan in words and markdown tables (what ``tinyhistory plan`` prints without ``--json``)."""
    st, ex = plan["settings"], plan["exact"]
    out = [
        f"tinyhistory plan: {plan['preset']} = {plan['model']}, sizes from {plan['sizes_source']}; "
        f"a {plan['gpu_memory_gib']:g} GiB GPU and {plan['ram_gib']:g} GiB of RAM",
        plan["unmeasured"],
        f"Settings: {st['height']}x{st['width']} at {st['fps']:g} fps, {st['history_seconds']:g} s of history at "
        f"{st['rate']} = {st['context_tokens']:,} context tokens; DiT {ex['frozen_params']:,} frozen parameters "
        f"({ex['num_layers']} blocks of width {ex['hidden_dim']}), LoRA r{st['lora_rank']} {ex['lora_params']:,}, "
        f"encoder {ex['encoder_params']:,}, {ex['text_encoder']} {ex['text_encoder_params']:,}, "
        f"VAE {ex['vae_params']:,}.",
        f"Assumptions: CUDA context {_g(CUDA_CONTEXT)} GiB, allocator slack {ALLOCATOR_SLACK:.0%}, a process's own "
        f"RAM {_g(PROCESS_RAM)} GiB, {RAM_USABLE:.0%} of the RAM usable, model files read one shard (≤ 10 GB) at a "
        f"time; a fit is tight when it fails with every estimate {TIGHT_FACTOR:g}x larger.",
    ]
    if "train" in plan:
        t = plan["train"]
        stage = "I (frame query)" if st["stage"] == "frame-query" else "II (next segment)"
        out += [
            "",
            f"## Training, stage {stage}: {st['target_latent_frames']} target latent frames, batch 1, gradient "
            "checkpointing, from a `data prepare` cache",
            "",
            *_items_table(t["items"]),
            "",
            *_verdict(plan, t),
            f"Without gradient checkpointing: activations {_g(t['activations_without_checkpointing_bytes'])} GiB "
            f"instead of {_g(t['activations_bytes'])} → {_g(t['without_checkpointing']['gpu_card_bytes'])} GiB on "
            f"the card: {'fits' if t['without_checkpointing']['fits_gpu'] else 'does NOT fit'}.",
            "",
        ]
        if t["candidates"]:
            out += [
                f"Training settings that fit one {plan['gpu_memory_gib']:g} GiB GPU and {plan['ram_gib']:g} GiB of "
                "RAM, best first (closest to the paper's defaults, then the largest batch):",
                "",
                "| # | resolution | rate | gradient checkpointing | batch up to | GPU GiB at batch 1 | RAM GiB "
                "| note |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for n, r in enumerate(t["candidates"], 1):
                out.append(
                    f"| {n} | {_resolution(r)} | {r['rate']} | {'on' if r['checkpointing'] else 'off'} "
                    f"| {r['max_batch']} | {_g(r['gpu_card_bytes'])} | {_g(r['ram_peak_bytes'])} | {_note(r)} |"
                )
        else:
            gpu_only = [r for r in t["all"] if r["fits_gpu"]]
            out.append(
                f"NOTHING FITS one {plan['gpu_memory_gib']:g} GiB GPU and {plan['ram_gib']:g} GiB of RAM for training "
                f"(no combination of gradient checkpointing, rate {'/'.join(RATES)}, frame size and batch 1)."
            )
            if gpu_only:
                out.append(
                    f"{len(gpu_only)} of them fit the GPU but not the RAM: loading needs "
                    f"{_g(min(r['ram_peak_bytes'] for r in gpu_only))} GiB at least (more RAM, or swap while loading)."
                )
            elif ex["frozen_bytes"] > plan["gpu_memory_gib"] * GIB:
                out.append(f"The frozen weights alone are {_g(ex['frozen_bytes'])} GiB.")
            if t["fsdp"]:
                best = t["fsdp"][0]
                out += [
                    f"Shard it with FSDP over {best['gpus']} or more such GPUs (--set 'train.parallel=\"fsdp\"', "
                    "configs/accelerate/fsdp.yaml; every "
                    "process loads the whole DiT into RAM first):",
                    "",
                    "| # | resolution | rate | gradient checkpointing | GPUs | GPU GiB per GPU "
                    "| RAM GiB, all ranks on one machine | note |",
                    "|---|---|---|---|---|---|---|---|",
                ]
                for n, r in enumerate(t["fsdp"], 1):
                    ram = _g(r["ram_peak_bytes"]) + ("" if r["fits_ram"] else " (over --ram)")
                    out.append(
                        f"| {n} | {_resolution(r)} | {r['rate']} | {'on' if r['checkpointing'] else 'off'} "
                        f"| {r['gpus']} | {_g(r['gpu_card_bytes'])} | {ram} | {_note(r)} |"
                    )
                rest = len(t["all"]) - len(t["fsdp"])
                if rest:
                    out.append("")
                    out.append(
                        f"The other {rest} combination(s) fit no FSDP size up to {MAX_FSDP_GPUS} GPUs: their "
                        "activations alone, which FSDP does not shard, are too large for the card."
                    )
            elif not gpu_only:
                out.append(f"Not even FSDP over {MAX_FSDP_GPUS} GPUs fits: the activations alone are too large.")
    if "generate" in plan:
        g = plan["generate"]
        out += [
            "",
            f"## Generation: segments of {st['segment_latent_frames']} latent frames, CFG, no --offload, "
            f"{'the stacked KV cache' if g['scenario']['kv_cache'] else 'no KV cache'}, "
            f"prompts through {plan['exact']['text_encoder']}",
            "",
            *_items_table(g["items"]),
            "",
            *_verdict(plan, g),
        ]
        if g["with_kv_cache"] is None:
            out.append("history.kv_cache: not offered by this family (it refuses the option).")
        elif not g["scenario"]["kv_cache"]:
            out.append(
                f"With history.kv_cache: + {_g(g['kv_cache_bytes'])} GiB of keys and values → "
                f"{_g(g['with_kv_cache']['gpu_card_bytes'])} GiB on the card."
            )
        out += [
            f"With --offload: {_g(g['with_offload']['gpu_card_bytes'])} GiB on the card, "
            f"{_g(g['with_offload']['ram_peak_bytes'])} GiB of RAM (every denoising step then copies all blocks to "
            "the GPU and back over PCIe).",
            "",
        ]
        if g["candidates"]:
            out += [
                f"Generation settings that fit one {plan['gpu_memory_gib']:g} GiB GPU and {plan['ram_gib']:g} GiB "
                "of RAM, best first (closest to the defaults; KV cache needs a model trained with history.kv_cache; "
                f"text.cache = every prompt encoded beforehand, {plan['exact']['text_encoder']} never loaded):",
                "",
                "| # | resolution | rate | KV cache | --offload | prompts | GPU GiB | RAM GiB | note |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for n, r in enumerate(g["candidates"][:SHOWN], 1):
                out.append(
                    f"| {n} | {_resolution(r)} | {r['rate']} | {'on' if r['kv_cache'] else 'off'} "
                    f"| {'on' if r['offload'] else 'off'} | {r['prompts']} | {_g(r['gpu_card_bytes'])} "
                    f"| {_g(r['ram_peak_bytes'])} | {_note(r)} |"
                )
            if len(g["candidates"]) > SHOWN:
                out.append(f"… and {len(g['candidates']) - SHOWN} more that fit (--json lists every combination).")
        else:
            smallest = min(g["all"], key=lambda r: r["gpu_card_bytes"])
            out.append(
                f"NOTHING FITS for generation: the smallest setting ({_resolution(smallest)}, {smallest['rate']}, "
                f"--offload {'on' if smallest['offload'] else 'off'}, prompts {smallest['prompts']}) needs "
                f"{_g(smallest['gpu_card_bytes'])} GiB on the card and {_g(smallest['ram_peak_bytes'])} GiB of RAM."
            )
    return "\n".join(out)
