"""The training loop (Accelerate). Readable top to bottom; the objective lives in ``objectives.py``.

    tinyhistory train --stage frame-query --preset tiny --out runs/proposed

Writes ``OUT/config.json``, ``OUT/train_log.jsonl`` (loss every ``log_every`` steps, held-out loss at every
checkpoint), ``OUT/last/`` (weights + training state, every ``checkpoint_every`` steps, atomic) and ``OUT/final/``
(the weights and the log); with ``train.snapshot_every``, ``OUT/snapshots/step_NNNNNN/`` too, each like final/.
Running the same command again resumes from ``OUT/last`` exactly (weights, optimizer, scheduler, RNG, step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import signal
import threading
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, gather_object
from torch import nn
from tqdm.auto import tqdm

from tinyhistory.assemble import HistoryDiT, build_codec, torch_dtype
from tinyhistory.config import RunConfig, TextConfig, TrainConfig
from tinyhistory.data.cache import CacheSampler, read_empty_prompt
from tinyhistory.data.windows import WindowSampler, clip_from_config, load_extra_training
from tinyhistory.files import append_line, repair_jsonl, replace_file, writing
from tinyhistory.geometry import Rate, get_base, temporal_block
from tinyhistory.locks import folder_lock, is_main_rank
from tinyhistory.text.cache import empty_prompt, encode_prompts
from tinyhistory.text.condition import TextCondition
from tinyhistory.train import parallel
from tinyhistory.train.checkpoint import (
    base_transformer_reference,
    load_model,
    load_training_state,
    read_config,
    restore_trained,
    save_training_state,
    save_weights,
    weights_sha256,
)
from tinyhistory.train.ema import EMA
from tinyhistory.train.long_range import FILE, long_range_picks_for_run
from tinyhistory.train.lora import LORA_FILE, add_lora, has_lora
from tinyhistory.train.objectives import (
    Objective,
    drop_recent_history,
    drop_text,
    noise_history,
    objective_for,
    splice_cutaway,
)

SNAPSHOTS = "snapshots"  # OUT/snapshots/step_NNNNNN/ (train.snapshot_every)


def lr_lambda(tc: TrainConfig):
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak at the last step."""

    def factor(step: int) -> float:
        if step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        progress = min(1.0, (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps))
        return tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


Sampler = WindowSampler | CacheSampler


def longest_training_history(base: str, train: TrainConfig) -> tuple[int, str]:
    """(latent frames of the longest history a training sample holds, the keys that set it): the whole window in
    stage I, the window less the target segment in stage II. ``base``: the geometry whose VAE turns the ``[train]``
    table's pixel frames into latent frames."""
    geometry = get_base(base)
    window = geometry.latent_frames(train.history_frames)
    if train.stage == "ar":  # segment_frames counts latent frames
        return window - train.segment_frames, (
            f"train.history_frames = {train.history_frames} less train.segment_frames = {train.segment_frames}"
        )
    return window, f"train.history_frames = {train.history_frames}"


def make_samplers(cfg: RunConfig, model: HistoryDiT) -> tuple[Sampler, Sampler]:
    """Training and held-out windows: from a ``data prepare`` cache (``data.cache``), else from the decoded clip."""
    rates = [Rate.parse(r) for r in cfg.history.rates] if len(model.producers) else []
    uses_lr = [p.uses_lr for p in model.producers]
    frames = cfg.train.history_frames
    if cfg.data.cache:
        training = CacheSampler.for_run(cfg.data, cfg.codec, cfg.text, frames, "train", rates, uses_lr)
        heldout = CacheSampler.for_run(cfg.data, cfg.codec, cfg.text, frames, "heldout", rates, uses_lr)
        return training, heldout
    clip = clip_from_config(cfg.data)
    codec = build_codec(cfg.codec)
    extra = load_extra_training(cfg.data.extra_train_videos, cfg.data.fps, cfg.data.size)
    return (
        WindowSampler([clip.train, *extra], frames, codec, rates, uses_lr),
        WindowSampler(clip.heldout, frames, codec, rates, uses_lr),
    )


def sample_text(sampler: Sampler, picks: torch.Tensor, span: tuple[int, int], caption) -> TextCondition:
    """Each sample's prompt: the storyboard shot nearest to latent frames ``span`` of its window (the objective says
    which span) when the data has storyboards; else the run's caption."""
    cached = sampler.text_for(picks, *span)
    return caption().expand(len(picks)) if cached is None else cached


@dataclasses.dataclass(frozen=True)
class Cutaway:
    """Frames ``[start, start + length)`` of each picked window come from the window of ``picks`` (another shot)."""

    picks: torch.Tensor
    start: int
    length: int


def cutaway_span(tc: TrainConfig, frames: int, rates: list[Rate]) -> tuple[int, int]:
    """``train.cutaway_frames`` as whole blocks, placed to end one block (the cue) before the target of a full-history
    split of a ``frames``-frame window: ``(start, length)``; at least one block of older history must stay."""
    block = temporal_block(rates)
    length = -(-tc.cutaway_frames // block) * block
    start = frames - tc.segment_frames - block - length
    if start < block:
        raise ValueError(
            f"train.cutaway_frames = {tc.cutaway_frames} ({length} frames in whole {block}-frame blocks) and a "
            f"{block}-frame cue leave no older history in a {frames - tc.segment_frames}-frame history "
            f"(train.history_frames = {tc.history_frames} less train.segment_frames = {tc.segment_frames})"
        )
    return start, length


def batch_for(
    objective: Objective,
    sampler: Sampler,
    picks: torch.Tensor,
    generator,
    caption,
    split: int | None = None,
    cutaway: Cutaway | None = None,
):
    """The ``objective``'s batch for the picked windows and each sample's prompt (a :class:`TextCondition`).

    Stage I: Ω, the masked history and the queried frames (``FrameQueryBatch``); stage II: a random history/future
    split (``NextSegmentBatch``; ``split``: this one; ``cutaway``: other windows' frames spliced in first) and the
    prompt nearest to the future segment. The one API both training and evaluation use, over a decoded clip or a
    ``data prepare`` cache alike.
    """
    _, hr, lr = sampler.window(picks)
    if cutaway is not None:
        _, other_hr, other_lr = sampler.window(cutaway.picks)
        hr, lr = splice_cutaway(hr, lr, other_hr, other_lr, sampler.rates, cutaway.start, cutaway.length)
    chosen = {} if split is None else {"split": split}  # stage II only (long-range and cut-away steps)
    batch = objective.batch(hr, lr, sampler.rates, generator, **chosen)
    return batch, sample_text(sampler, picks, objective.prompt_span(batch), caption)


@torch.no_grad()
def heldout_loss(
    model: HistoryDiT, loss_fn: StageLoss, sampler: Sampler, caption, batch_size: int, windows: int = 16
) -> float:
    """The stage's flow loss on fixed held-out windows with fixed Ω / splits, masks, noise and timesteps.

    ``loss_fn``: ``model``'s stage loss (a sharded run's root: its forward gathers the shards, so every rank must
    call this then), whose objective makes the batches."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(1234)
    losses = []
    for picks in sampler.fixed_starts(windows).split(batch_size):
        batch, text_batch = batch_for(loss_fn.objective, sampler, picks, generator, caption)
        losses.append(loss_fn(_to(batch, device), text_batch.to(device)).item() * len(picks))
    model.train()
    return sum(losses) / windows


def make_optimizer(model: HistoryDiT, tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW over what trains: the DiT (LoRA or whole) at ``learning_rate``, the history encoder and enhancers at
    ``encoder_learning_rate``, block-phase tables at their own rate. Built after any sharding (its parameters are
    then the shards)."""
    groups = [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": tc.learning_rate}]
    # history.block_phase: the zero-initialised tables need their own, larger rate (they live in the producers)
    phase_params = [p for table in model.block_phases for p in table.parameters() if p.requires_grad]
    phase_ids = {id(p) for p in phase_params}
    encoder_params = [
        p
        for p in [*model.producers.parameters(), *model.enhancers.parameters()]
        if p.requires_grad and id(p) not in phase_ids
    ]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": tc.encoder_learning_rate})
    if phase_params:
        groups.append({"params": phase_params, "lr": tc.block_phase_learning_rate})
    return torch.optim.AdamW(groups, weight_decay=tc.weight_decay, betas=(0.9, 0.99))


def _save_whole(model, cfg: RunConfig, folder: Path, save_dtype, gathered, last: Path, log: Path | None = None) -> None:
    """``folder`` written beside (``folder.tmp``), then renamed: a kill never leaves a final/, final_ema/ or snapshot
    that looks complete. ``log``: the run's training log, copied in as it stands (the folder says how far it trained,
    ``checkpoint.trained_steps``, wherever it is moved)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with writing(folder, "final weights", f"free some space; a rerun writes them again from {last}"):
        save_weights(model, cfg, tmp, dtype=save_dtype, gathered=gathered)
        if log is not None and log.is_file():
            shutil.copyfile(log, tmp / log.name)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _snapshot(out: Path, step: int, model, cfg: RunConfig, save_dtype, gathered, kept: int) -> Path:
    """``OUT/snapshots/step_NNNNNN/`` (``train.snapshot_every``): the weights as final/ has them and the log up to
    ``step``; with ``kept`` > 0 the older snapshots beyond the newest ``kept`` are deleted once this one is complete.
    A resumed run that passes a step again writes its snapshot again (the same weights: the resume is exact)."""
    folder = out / SNAPSHOTS / f"step_{step:06d}"
    _save_whole(model, cfg, folder, save_dtype, gathered, out / "last", out / "train_log.jsonl")
    if kept:
        done = sorted(p for p in folder.parent.glob("step_*") if p.is_dir() and p.name[5:].isdigit())
        for old in done[:-kept]:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def prepare_model(cfg: RunConfig, init_from: str | Path | None) -> tuple[HistoryDiT, RunConfig]:
    """A fresh model, or one started from a checkpoint, with what this run trains made trainable.

    ``train.dit = "lora"``: the base DiT (the user's folder) stays frozen and a fresh LoRA is attached — in stage I,
    and again in stage II, which keeps the stage-I history encoder but not its LoRA (the paper's "newly initialized
    LoRA"). From a checkpoint of the *same* stage (a longer or fine-tuned stage I, a stage-II model trained further)
    the checkpoint's own LoRA goes on training: a fresh one would throw away what that stage learned (and in stage II
    with ``train.carry_lora``: the stage-I LoRA, which learned to read the encoder, goes on). ``"full"``
    (tiny): the whole DiT trains, and a stage-II ``lora_rank`` > 0 puts a LoRA on the stage-I DiT.
    From a checkpoint the architecture (backbone, encoders) is the checkpoint's; this run adds a sliding window,
    cross-attention enhancers (zero-initialised) when it asks for them. ``history.method = "no_history"`` drops the
    checkpoint's encoders (baselines on the same DiT as the proposed model).
    """
    if init_from is None:
        model = HistoryDiT.from_config(cfg)
        if cfg.train.dit == "lora":
            add_lora(model.backbone, cfg.train.lora_rank)
        return model, cfg
    init_cfg = read_config(init_from, cfg.model.path or None)
    if init_cfg.train.dit != cfg.train.dit:
        raise ValueError(
            f"{init_from} was trained with train.dit = {init_cfg.train.dit!r}; this run has {cfg.train.dit!r} "
            "(use the same preset for both stages)"
        )
    # Decided before loading, so the base (a real model: many GB) is read once.
    new_lora_on_dit = False  # "full": a first LoRA on the stage-I DiT, named by its path and hash
    if cfg.train.dit == "lora":
        same_stage = init_cfg.train.stage == cfg.train.stage
        continues_lora = (same_stage or cfg.train.carry_lora) and (Path(init_from) / LORA_FILE).is_file()
        if cfg.train.carry_lora and not continues_lora:
            raise ValueError(f"train.carry_lora is set but {init_from} has no {LORA_FILE} to carry")
        if continues_lora and init_cfg.train.lora_rank != cfg.train.lora_rank:
            why = "the same stage" if same_stage else "train.carry_lora"
            raise ValueError(
                f"{init_from} carries a LoRA of rank {init_cfg.train.lora_rank}; this run ({why}, so it "
                f"continues that LoRA) asks for train.lora_rank={cfg.train.lora_rank}"
            )
    elif cfg.train.lora_rank > 0 and init_cfg.train.lora_rank == 0:
        continues_lora, new_lora_on_dit = False, True
    elif cfg.train.lora_rank != init_cfg.train.lora_rank:
        raise ValueError(
            f"{init_from} carries a LoRA of rank {init_cfg.train.lora_rank}; this run asks for train.lora_rank="
            f"{cfg.train.lora_rank} (start a new LoRA from a checkpoint without one)"
        )
    else:
        continues_lora = init_cfg.train.lora_rank > 0  # continue the checkpoint's own LoRA
    model, init_cfg = load_model(init_from, model_path=cfg.model.path or None, with_lora=continues_lora)
    history = dataclasses.replace(
        init_cfg.history,
        sliding_window=cfg.history.sliding_window,
        cross_attention=cfg.history.cross_attention,
        kv_cache=cfg.history.kv_cache,
        context_attention=cfg.history.context_attention,
    )
    if cfg.history.method == "no_history":
        history = dataclasses.replace(history, method="no_history", cross_attention=False)
    if cfg.train.switch_rates:  # a rate curriculum: this run's rates, not the checkpoint's
        history = dataclasses.replace(history, rates=list(cfg.history.rates))
    backbone = init_cfg.backbone
    if new_lora_on_dit:
        base = Path(init_from) / "transformer"
        backbone = dataclasses.replace(
            backbone, base_transformer=base_transformer_reference(base), base_transformer_sha256=weights_sha256(base)
        )
    if (cfg.train.dit == "lora" and not continues_lora) or new_lora_on_dit:
        add_lora(model.backbone, cfg.train.lora_rank)
    cfg = dataclasses.replace(
        cfg, base=init_cfg.base, model=init_cfg.model, codec=init_cfg.codec, backbone=backbone, history=history
    )
    cfg.validate()
    fresh = HistoryDiT.from_config(cfg, backbone=model.backbone)
    if len(fresh.enhancers) and len(model.enhancers):
        fresh.enhancers.load_state_dict(model.enhancers.state_dict())
    if len(fresh.producers):
        fresh.producers = carried_producers(fresh.producers, model.producers)
    return fresh, cfg


def carried_producers(fresh: nn.ModuleList, trained: nn.ModuleList) -> nn.ModuleList:
    """The checkpoint's trained producers in place of the fresh ones, rate for rate. Without ``train.switch_rates``
    the rates are the checkpoint's, so all carry over; with it, a rate the checkpoint lacks keeps its fresh
    (zero-initialised HR) encoder and a rate this run drops is left behind."""
    by_rate = {str(p.rate): p for p in trained}
    return nn.ModuleList([by_rate.get(str(p.rate), p) for p in fresh])


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    init_from: str | Path | None = None,
    progress: bool = True,
    save_dtype: torch.dtype | None = None,
    stop_after: int | None = None,
) -> dict:
    """:func:`_train` with the run folder locked: one run per folder. The main process holds
    ``OUT/.tinyhistory.lock`` while it trains, so a second run into the same folder refuses, naming the holder's PID,
    instead of resuming from the same ``OUT/last`` and writing over the first one's checkpoints and log."""
    with folder_lock(out_dir, "train") if is_main_rank() else contextlib.nullcontext():
        return _train(cfg, out_dir, init_from, progress, save_dtype, stop_after)


def _train(
    cfg: RunConfig,
    out_dir: str | Path,
    init_from: str | Path | None = None,
    progress: bool = True,
    save_dtype: torch.dtype | None = None,
    stop_after: int | None = None,
) -> dict:
    """Run (or resume) training of the config's stage; returns a summary dict (also in ``OUT/summary.json``).

    Stage I (``frame-query``) pretrains the encoder with the DiT; stage II (``ar``) finetunes for next-segment
    prediction, usually from a stage-I checkpoint (``init_from``) with a fresh LoRA on the DiT.

    ``stop_after``: leave after this many steps *in this invocation* (time-boxed jobs), with a checkpoint in
    ``OUT/last``; running again resumes exactly. The schedule always follows ``train.steps``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    # Unused parameters are allowed: not every stage and method touches every trainable weight in each step.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
    check_parallel(tc, accelerator.distributed_type)
    torch.manual_seed(tc.seed)

    # From a checkpoint the architecture is the checkpoint's; the rest of the config (data, schedule) is this run's.
    model, cfg = prepare_model(cfg, init_from)
    if model.tiers is not None:
        model.tiers.check_every_tier_trains(*longest_training_history(cfg.base, cfg.train))
    objective = objective_for(tc)
    train_sampler, heldout_sampler = make_samplers(cfg, model)
    long_range = None  # train.long_range_share: the windows whose target is a returning shot
    if tc.long_range_share > 0:
        with accelerator.main_process_first():  # the main process searches and writes them, the others read them
            long_range = long_range_picks_for_run(train_sampler, tc.segment_frames, out)
        accelerator.print(f"train.long_range_share: {len(long_range.picks)} returning-shot windows ({out / FILE})")
    # train.cutaway_share: where the cut-away sits in a window, checked before the first step
    cutaway_at = cutaway_span(tc, train_sampler.frames, train_sampler.rates) if tc.cutaway_share > 0 else None
    full_history = train_sampler.frames - tc.segment_frames  # the split of long-range and cut-away steps
    # encoded only if some sample has no storyboard prompt (no caption: the empty prompt, as the empty one below)
    caption = LazyPrompt(cfg.text, cfg.text.caption, cfg.data.cache)
    # the unconditional prompt of text dropout, loaded at the first dropped sample (from the data cache if it has it)
    empty = LazyPrompt(cfg.text, "", cfg.data.cache)
    if tc.gradient_checkpointing:
        model.backbone.enable_gradient_checkpointing()

    if tc.freeze_encoder:
        model.producers.requires_grad_(False)
    step = 0
    last = _resumable_checkpoint(out)
    if last is not None:  # the trained weights before any wrapping or sharding (the state after the optimizer)
        check_resume_config(cfg, last)
        restore_trained(model, cfg.history.method, last)
    fsdp = tc.parallel == "fsdp"
    loss_module = StageLoss(tc, cfg.model.dtype, model)
    sharded = fsdp and parallel.distributed()
    if sharded:  # before the optimizer: its parameters are the shards
        units = parallel.shard(loss_module, model, accelerator.device.type)
        loss_module.sharded = True
        accelerator.print(f"FSDP2: {units} sharded units over {accelerator.num_processes} processes")
    optimizer = make_optimizer(model, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc))
    # ``model`` stays the plain HistoryDiT (saved, evaluated); ``stage_loss`` is what trains (DDP-wrapped when several
    # under "ddp"; under "fsdp" the sharded root itself, which accelerate must not wrap again).
    # The scheduler is not prepared: accelerate's wrapper steps it once per process per step (it counts single-process
    # steps), and ``train.steps`` here are optimizer steps every rank takes, so N ranks ran the schedule N times fast.
    if fsdp:
        optimizer = accelerator.prepare(optimizer)
        stage_loss = loss_module
    else:
        stage_loss, optimizer = accelerator.prepare(loss_module, optimizer)
    # Held-out passes of a sharded model go through its root (which gathers the shards), on every rank; otherwise
    # through a loss module of its own, never the one accelerate wrapped for training.
    eval_loss = stage_loss if sharded else StageLoss(tc, cfg.model.dtype, model)
    device = accelerator.device
    ema = EMA(model, tc.ema_decay) if tc.ema_decay > 0 else None  # on the device the model now lives on

    # Each process draws its own windows (with one shared seed every rank would train on the same batch).
    generator = torch.Generator().manual_seed(tc.seed + accelerator.process_index)
    if last is not None:
        rank, processes = accelerator.process_index, accelerator.num_processes
        if fsdp:  # DCP reshards the optimizer's state to this run's processes
            parallel.load_optimizer(last, stage_loss, optimizer)
        step = load_training_state(
            last, None if fsdp else optimizer, scheduler, generator, rank, processes, reshard=fsdp
        )
        if ema is not None:
            ema.load(last)
        accelerator.print(f"resumed from {last} at step {step}")
    main = accelerator.is_main_process
    if main:
        cfg.save(out / "config.json")
    if fsdp or accelerator.num_processes > 1:  # what each rank holds of the frozen base and of what trains
        sizes = gather_object([parallel.local_bytes(model)])
        if main:
            report = {
                "parallel": tc.parallel if accelerator.num_processes > 1 else "none (one process)",
                "processes": accelerator.num_processes,
                "frozen_bytes_per_rank": [s["frozen"] for s in sizes],
                "trained_bytes_per_rank": [s["trained"] for s in sizes],
            }
            (out / "parallel.json").write_text(json.dumps(report, indent=2) + "\n")
    log = TrainLog(out / "train_log.jsonl" if main else None, resume_step=step)
    stage_loss.train()
    start_time, start_step = time.time(), step
    bar = tqdm(
        total=tc.steps,
        initial=step,
        disable=not progress or not accelerator.is_main_process,
        desc=f"{objective.name} ({'LoRA' if has_lora(model.backbone) else 'full DiT'})",
    )
    end = tc.steps if stop_after is None else min(tc.steps, step + stop_after)
    last_checkpoint = time.time()
    stop = StopRequest()  # SIGTERM / Ctrl-C: checkpoint after the current step, then leave
    try:
        while step < end and not stop.requested:
            split, cutaway = None, None  # a random block boundary, the windows as they are
            if long_range is not None and bool(torch.rand((), generator=generator) < tc.long_range_share):
                picks, split = long_range.pick(tc.batch_size, generator), full_history
            else:
                picks = train_sampler.pick(tc.batch_size, generator)
                if cutaway_at is not None and bool(torch.rand((), generator=generator) < tc.cutaway_share):
                    split = full_history
                    cutaway = Cutaway(train_sampler.pick_like(picks, generator), *cutaway_at)
            batch, text_batch = batch_for(objective, train_sampler, picks, generator, caption, split, cutaway)
            if objective.text_dropout > 0:  # classifier-free guidance: some samples see the empty prompt
                text_batch = drop_text(text_batch, empty.like(text_batch), objective.text_dropout, generator)
            if objective.window_dropout > 0:  # some steps predict from the encoder's tokens alone
                batch.window = bool(torch.rand((), generator=generator) >= objective.window_dropout)
            if objective.history_gap > 0 and bool(torch.rand((), generator=generator) < objective.history_gap):
                batch = drop_recent_history(batch, tc.history_gap_frames, train_sampler.rates)  # across a gap
            if objective.history_noise > 0:  # the history as a streamed continuation hands it: imperfect
                batch = noise_history(batch, objective.history_noise, generator)
            loss = stage_loss(_to(batch, device), text_batch.to(device))
            accelerator.backward(loss)
            if tc.grad_clip > 0:
                accelerator.clip_grad_norm_(stage_loss.parameters(), tc.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            step += 1
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.steps:
                record = {
                    "step": step,
                    "loss": round(accelerator.reduce(loss.detach(), "mean").item(), 6),  # over all processes
                    "lr": scheduler.get_last_lr()[0],
                    "steps_per_s": round((step - start_step) / (time.time() - start_time), 3),
                }
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                log.write(record)
            # Checkpoint on steps, on time (a run killed early still resumes), and when asked to stop; every process
            # takes the same decision (the main one's clock and signals).
            due = step % tc.checkpoint_every == 0 or step == end
            late = time.time() - last_checkpoint >= tc.checkpoint_minutes * 60 or stop.requested
            if not due and accelerator.reduce(torch.tensor(float(late), device=device), "max").item() > 0:
                due = True
            if due:
                last_checkpoint = time.time()
                held = heldout_loss(model, eval_loss, heldout_sampler, caption, tc.batch_size)
                record = {"step": step, "heldout_loss": round(held, 6)}
                if ema is not None:
                    with ema.applied(model):
                        held = heldout_loss(model, eval_loss, heldout_sampler, caption, tc.batch_size)
                        record["heldout_loss_ema"] = round(held, 6)
                log.write(record)
                data_rng = gather_object([generator.get_state()])  # every process's sampling RNG, for an exact resume
                if fsdp:  # every rank gathers and writes its shard of the state
                    _sharded_checkpoint(out, stage_loss, model, cfg, optimizer, scheduler, step, data_rng, main)
                elif main:
                    with writing(out / "last", "checkpoint", f"free some space; a rerun resumes from {out / 'last'}"):
                        _atomic_checkpoint(out, model, cfg, optimizer, scheduler, step, data_rng, ema)
                accelerator.wait_for_everyone()
            if tc.snapshot_every and step % tc.snapshot_every == 0:
                gathered = parallel.gather_trained(stage_loss, model) if sharded else None  # collective
                if main:
                    _snapshot(out, step, model, cfg, save_dtype, gathered, tc.snapshots_kept)
                accelerator.wait_for_everyone()
    finally:
        stop.restore()
    bar.close()
    log.close()
    if step < tc.steps:
        accelerator.print(f"stopped at step {step} of {tc.steps}; run the same command again to resume")
        return {"method": cfg.history.method, "rates": cfg.history.rates, "steps": step, "final": None}

    final = out / "final"
    gathered = parallel.gather_trained(stage_loss, model) if sharded else None
    if main:
        _save_whole(model, cfg, final, save_dtype, gathered, out / "last", out / "train_log.jsonl")
    summary = {
        "stage": cfg.train.stage,
        "method": cfg.history.method,
        "rates": cfg.history.rates,
        "sliding_window": cfg.history.sliding_window,
        "steps": step,
        "heldout_loss": heldout_loss(model, eval_loss, heldout_sampler, caption, tc.batch_size),
        "final": str(final),
    }
    if ema is not None:
        with ema.applied(model):
            if main:
                _save_whole(model, cfg, out / "final_ema", save_dtype, None, out / "last")
            summary["heldout_loss_ema"] = heldout_loss(model, eval_loss, heldout_sampler, caption, tc.batch_size)
        summary["final_ema"] = str(out / "final_ema")
    if main:
        replace_file(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode(), "the run summary")
    return summary


class StageLoss(nn.Module):
    """The stage's flow loss as one module call, under autocast when the frozen base is not float32.

    Under several processes DDP syncs the gradients of what runs inside its wrapped module's forward; the losses
    reach the encoder and the DiT through several HistoryDiT methods, so the whole loss is that forward. The base's
    weights stay in ``model.dtype`` (bfloat16 at real size) and what trains in float32: autocast runs each matmul in
    the low dtype and keeps the float32 master weights.
    """

    def __init__(self, train: TrainConfig, dtype: str, model: HistoryDiT):
        """``train``: the ``[train]`` table (its stage's objective); ``dtype``: ``model.dtype``, the frozen base's."""
        super().__init__()
        self.objective = objective_for(train)
        self.model = model
        self.autocast = torch_dtype(dtype)
        # Sharded (train.parallel = "fsdp"): all ranks must reduce the same gradients in the same order. So every
        # trainable weight of the root unit gets a gradient, zero where this rank's batch did not use it, and the
        # noise requires a gradient, so the first DiT block's input always does and its gradients are reduced as its
        # backward ends, not in the final callback (stage II with an empty history: the context tokens that
        # otherwise carry a gradient into that block are absent on some ranks, and the reduce-scatters crossed).
        self.sharded = False

    def forward(self, batch, text: TextCondition) -> torch.Tensor:
        device = next(self.model.parameters()).device
        if self.sharded and torch.is_grad_enabled():
            batch.noise = batch.noise.detach().requires_grad_()
        with torch.autocast(device.type, dtype=self.autocast, enabled=self.autocast != torch.float32):
            loss = self.objective.loss(self.model, batch, text)
        if self.sharded and torch.is_grad_enabled():
            loss = loss + sum(p.sum() for p in parallel.outside_blocks(self.model)) * 0.0
        return loss


class TrainLog:
    """``OUT/train_log.jsonl``, appended and flushed line by line by the main process only (``path=None``: others).

    On a resume from step S the lines written after the checkpoint (steps > S, lost work) are dropped first, so the
    log never holds a step twice."""

    def __init__(self, path: Path | None, resume_step: int = 0):
        # A last line cut short by a kill is dropped (and named); the next record starts on a line of its own.
        if path is not None:
            repair_jsonl(path, "training log", keep=lambda record: _log_step(record) <= resume_step)
        self.path = path

    def write(self, record: dict) -> None:
        if self.path is not None:
            append_line(self.path, json.dumps(record) + "\n", "training log")

    def close(self) -> None:
        pass  # every record is on disk when written


class LazyPrompt:
    """One prompt's condition ``(1, L, D)``, encoded on first use, so a run whose samples all carry cached storyboard
    prompts never loads the text encoder. The empty prompt ``""`` follows ``text.empty`` and comes from the data
    cache ``data_cache`` (``data.cache``) when ``data prepare`` stored it there."""

    def __init__(self, text: TextConfig, prompt: str, data_cache: str = ""):
        self.text = text
        self.prompt = prompt
        self.data_cache = data_cache
        self.condition: TextCondition | None = None

    def __call__(self) -> TextCondition:
        return self.like(None)

    def like(self, text: TextCondition | None) -> TextCondition:
        if self.condition is None:
            if self.prompt:
                self.condition = encode_prompts(self.text, [self.prompt])
            else:
                cached = read_empty_prompt(self.data_cache, self.text) if self.text.empty == "encoded" else None
                self.condition = cached if cached is not None else empty_prompt(self.text, text)
        return self.condition


def _log_step(record: dict) -> int:
    try:
        return int(record.get("step", 0))
    except (TypeError, ValueError):
        return 1 << 62  # a record without a readable step is dropped


class StopRequest:
    """SIGTERM and the first Ctrl-C ask the loop to checkpoint and leave after the current step (a second Ctrl-C
    interrupts at once). Only the main thread can install signal handlers; elsewhere this never fires."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._ask)

    def _ask(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"tinyhistory: {signal.Signals(signum).name}: checkpointing after this step", flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# Settings a resumed run may change: how long and how often, and where the base model and its parts now live.
RESUMABLE_CHANGES = {
    "train.steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.checkpoint_minutes",
    "train.snapshot_every",
    "train.snapshots_kept",
    "model.path",
    "codec.path",
    "text.path",
    "text.cache",
}


def check_resume_config(cfg: RunConfig, last: Path) -> None:
    """A resumed run must train what its checkpoint trained: any other changed setting is refused, by name.

    A setting the checkpoint's config does not name (one added to tinyhistory after it was written) counts as its
    default, so a newer version resumes an older run unless the run now asks for something else.
    """
    saved = _flatten(json.loads((last / "config.json").read_text()))
    now = _flatten(cfg.to_dict())
    defaults = _flatten(RunConfig().to_dict())
    changed = sorted(
        k
        for k in now.keys() | saved.keys()
        if now.get(k) != saved.get(k, defaults.get(k)) and k not in RESUMABLE_CHANGES
    )
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        raise ValueError(
            f"{last.parent} was trained with other settings ({details}); resume with the same settings, or start "
            "a new run folder (--out)"
        )


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_parallel(tc: TrainConfig, distributed_type: DistributedType) -> None:
    """``train.parallel = "fsdp"`` is the one way to shard: refuse an Accelerate FSDP config (it would wrap the model
    a second time, its own way) and what the sharded path does not carry (a whole trained DiT, an EMA)."""
    if distributed_type == DistributedType.FSDP:
        raise ValueError(
            "this trainer shards the model itself: launch with a plain multi-process Accelerate config "
            '(configs/accelerate/multi_gpu.yaml, or --multi_gpu) and set train.parallel = "fsdp" '
            "(configs/accelerate/README.md)"
        )
    if tc.parallel != "fsdp":
        return
    if tc.dit != "lora":
        raise ValueError(
            "train.parallel = 'fsdp' shards a frozen base under a LoRA (train.dit = 'lora'); a whole trained DiT "
            "(the tiny preset) fits one card: use train.parallel = 'ddp'"
        )
    if tc.ema_decay > 0:
        raise ValueError("train.ema_decay is not supported with train.parallel = 'fsdp' yet; set it to 0")


def _resumable_checkpoint(out: Path) -> Path | None:
    """``OUT/last``, or ``OUT/last.old`` when a run died between the two renames of :func:`_atomic_checkpoint`."""
    for candidate in (out / "last", out / "last.old"):
        if (candidate / "state" / "trainer.json").is_file():
            return candidate
    return None


def _atomic_checkpoint(
    out: Path, model, cfg, optimizer, scheduler, step, data_rng: list[torch.Tensor], ema: EMA | None = None
) -> None:
    """Write ``last.tmp`` completely, then swap it in, so an interrupted write never leaves a half checkpoint."""
    tmp = out / "last.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_weights(model, cfg, tmp)
        save_training_state(tmp, optimizer, scheduler, step, data_rng)
        if ema is not None:
            ema.save(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed write (full disk) must not keep the space it took
        raise
    _swap_in(out, tmp)


def _sharded_checkpoint(out: Path, root, model, cfg, optimizer, scheduler, step, data_rng, main: bool) -> None:
    """:func:`_atomic_checkpoint` of a sharded run (every rank calls it). Rank 0 writes the user's files from
    gathered tensors into ``last.tmp``; every rank writes its part of the optimizer's state there (DCP); rank 0 then
    writes ``state/trainer.json`` and swaps the folder in. A save killed at any point leaves ``last.tmp`` without
    ``trainer.json``, which is never resumed from."""
    tmp = out / "last.tmp"
    gathered = parallel.gather_trained(root, model)  # collective
    hint = f"free some space; a rerun resumes from {out / 'last'}"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        with writing(out / "last", "checkpoint", hint):
            save_weights(model, cfg, tmp, gathered=gathered)
    _barrier()
    parallel.save_optimizer(tmp, root, optimizer)  # collective: DCP writes .metadata after every rank's shard
    if main:
        with writing(out / "last", "checkpoint", hint):
            save_training_state(tmp, None, scheduler, step, data_rng)
        _swap_in(out, tmp)


def _barrier() -> None:
    if parallel.distributed():
        torch.distributed.barrier()


def _swap_in(out: Path, tmp: Path) -> None:
    """Make the complete ``tmp`` folder ``out/last`` (``last.old`` covers the moment between the two renames).

    ``last.old`` is removed only while a complete ``last`` exists: after a kill between the renames it is the only
    checkpoint, and clearing it before ``tmp`` is in place would leave a half-deleted folder to resume from.
    """
    last = out / "last"
    old = out / "last.old"
    if last.exists():
        shutil.rmtree(old, ignore_errors=True)
        last.rename(old)
    tmp.rename(last)
    shutil.rmtree(old, ignore_errors=True)


def _to(batch, device):
    if device.type == "cpu":
        return batch
    names = ("history", "targets", "noise", "t", "omega", "mask_levels", "positions")
    for name in names:
        if hasattr(batch, name):
            setattr(batch, name, getattr(batch, name).to(device))
    batch.history_lr = [x.to(device) if x is not None else None for x in batch.history_lr]
    return batch
