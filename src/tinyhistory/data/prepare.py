"""``tinyhistory data prepare``: videos → training-ready latent caches (safetensors shards + manifest).

For each video: decode with PyAV at the preset's fps and size (or the nearest aspect-ratio bucket of
``data.buckets``, cropped or padded by ``data.resize``), cut into windows of ``window_frames`` (with a framewise
codec the remainder becomes one shorter last window), encode the HR latents and, for every configured rate, the LR
latents the encoder's LR branch needs (pixels downsampled by the rate, then the codec), and embed every storyboard
prompt. One shard per video:

    OUT/shards/<key>.safetensors   tensors "w{i}.hr_latents.{C}x{T}x{H}x{W}.{dtype}",
                                   "w{i}.lr_latents.{rate}.{shape}.{dtype}", "text.{j}.{L}x{D}.{dtype}"
                                   (HunyuanVideo: also "text_mask.{j}.{L}.bool", "text_pooled.{j}.{P}.{dtype}")
                                   metadata: source path and hash, fps, window starts, prompts (JSON)
    OUT/manifest.jsonl             one line per cached video, rebuilt from the shards' metadata at the end
    OUT/report.json                done / reused / skipped (with reasons) / set aside / pruned / throughput / stale

``<key>`` hashes the source bytes together with every config value that affects the output and the video's prompts
(storyboard or caption), so a rerun skips what is finished and recomputes what changed. Shards are written to a
temporary name and renamed, so a killed run never leaves a half shard that reads as valid; a shard that cannot be
read is set aside (renamed ``*.damaged``, listed in the report) and its video encoded again. The manifest holds this
run's shards and every video an earlier run cached with the same settings (one entry per video: this run's shard of a
video replaces an older one); ``--prune`` keeps this run's videos only and lists what it dropped. Shards of other
settings stay on disk, listed as stale in the report, outside the manifest. Bad inputs are reported with the file and
the reason and the batch goes on.

Exit status: 0 everything cached; 3 one or more items skipped (some or all of them: the summary line says when nothing
was cached); 2 the run could not start, another run holds the cache, or an output could not be written (disk full,
read-only). One run per cache at a time (``OUT/.tinyhistory.lock``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from tinyhistory.assemble import build_codec, check_model_parts
from tinyhistory.codecs.base import check_causal_frames
from tinyhistory.config import DataConfig, RunConfig, TrainConfig
from tinyhistory.data.cache import CachedVideo, output_config, shard_text_name, shards_on_disk, write_empty_prompt
from tinyhistory.data.video import choose_bucket, decode_video, probe_video
from tinyhistory.data.windows import to_pixels
from tinyhistory.files import WriteError, read_jsonl, replace_file, writing
from tinyhistory.geometry import Rate, temporal_block
from tinyhistory.hashing import file_sha256
from tinyhistory.history import lowres_latents
from tinyhistory.locks import folder_lock
from tinyhistory.text.cache import encode_condition
from tinyhistory.text.storyboard import Storyboard

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".gif"}
EXIT_OK, EXIT_SKIPPED = 0, 3  # 2 (could not start) is what `tinyhistory` returns for any ValueError
RERUN_HINT = "free some space and run the same command again: the finished shards are kept"


@dataclass
class Item:
    video: Path
    storyboard: Storyboard | None = None
    caption: str = ""
    problem: str = ""  # what is wrong with this item's line (a bad storyboard): it is skipped and reported


@dataclass
class Report:
    done: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)  # this run's shards (done and reused), for the manifest
    set_aside: list[dict] = field(default_factory=list)  # damaged shards renamed *.damaged, their videos re-encoded
    decoded_frames: int = 0
    decode_seconds: float = 0.0
    encoded_frames: int = 0
    encode_seconds: float = 0.0
    latent_frames: int = 0

    def as_dict(self) -> dict:
        return {
            "done": self.done,
            "reused": self.reused,
            "skipped": self.skipped,
            "shards": self.shards,
            "set_aside": self.set_aside,
            "decode_frames_per_s": self.decoded_frames / self.decode_seconds if self.decode_seconds else None,
            "encode_frames_per_s": self.encoded_frames / self.encode_seconds if self.encode_seconds else None,
            "total_latent_frames": self.latent_frames,
        }


def collect_items(source: str | Path) -> list[Item]:
    """A folder (searched recursively for video files), a JSONL file of ``{"video", "storyboard", "caption"}``, or
    one video file; a video found on disk takes its storyboard from ``<stem>.json`` and its caption from ``<stem>.txt``
    beside it. A JSONL line that is not an object with a ``video`` stops the run (the list itself is broken);
    a bad storyboard or caption only marks its item, which is skipped and reported."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        return [_item_with_sidecars(source)]
    if source.is_dir():
        videos = [p for p in sorted(source.rglob("*")) if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
        return [_item_with_sidecars(p) for p in videos]
    if source.is_file() and source.suffix == ".jsonl":
        items = []
        for n, line in enumerate(source.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{source}:{n}: invalid JSON ({exc})") from None
            if not isinstance(row, dict) or not isinstance(row.get("video"), str):
                raise ValueError(f"{source}:{n}: expected an object with a string field 'video'")
            video = (source.parent / row["video"]) if not Path(row["video"]).is_absolute() else Path(row["video"])
            items.append(_item_from_row(row, video, f"{source}:{n}", source.parent))
        return items
    raise ValueError(f"--input {source}: expected a folder of videos, a .jsonl file or a video file")


def _item_with_sidecars(video: Path) -> Item:
    """A video found on disk, with its storyboard ``<stem>.json`` and caption ``<stem>.txt`` when they sit beside it
    (the sidecar convention of musubi-tuner and diffusers' training scripts)."""
    row: dict = {}
    if video.with_suffix(".txt").is_file():
        row["caption"] = video.with_suffix(".txt").read_text().strip()
    if video.with_suffix(".json").is_file():
        row["storyboard"] = video.with_suffix(".json").name
    return _item_from_row(row, video, str(video), video.parent)


def _item_from_row(row: dict, video: Path, where: str, folder: Path) -> Item:
    """One JSONL line's item; a bad storyboard or caption makes an item to skip and report, not a failed run."""
    caption = row.get("caption", "")
    if not isinstance(caption, str):
        return Item(video, problem=f"{where}: 'caption' must be a string, got {caption!r}")
    board = row.get("storyboard")
    try:
        if isinstance(board, str):
            board = Storyboard.load(folder / board)
        elif isinstance(board, dict):
            board = Storyboard.from_dict(board, f"{where} storyboard")
        elif board is not None:
            raise ValueError(f"{where}: 'storyboard' must be a file path or an object, got {board!r}")
    except (ValueError, FileNotFoundError) as exc:
        return Item(video, caption=caption, problem=str(exc))
    return Item(video, board, caption)


def resolve_window(data: DataConfig, train: TrainConfig, window_frames: int | None) -> int:
    """Frames per cached window: ``--window-frames``, else ``data.window_frames``, else ``train.history_frames``."""
    return window_frames or data.window_frames or train.history_frames


def window_spans(
    frames: int, window: int, framewise: bool, rates: list[Rate], stride: int = 0
) -> list[tuple[int, int]]:
    """``(start, length)`` of each cached window: full length, every ``stride`` frames from frame 0 (0: back to back).

    Back to back with a framewise codec, the frames after the last full window become one shorter window (cut to a
    multiple of the rates' temporal factors), so no footage is lost: the windows join into one run when training.
    """
    stride = stride or window
    spans = [(start, window) for start in range(0, frames - window + 1, stride)]
    block = temporal_block(rates)
    tail_start = len(spans) * window
    tail = (frames - tail_start) // block * block
    if framewise and stride == window and spans and tail > 0:
        spans.append((tail_start, tail))
    return spans


def _key(source_hash: str, config: dict, prompts: dict) -> str:
    """The shard's name: the source's bytes, every output-affecting setting, and the prompts it was given."""
    text = source_hash + json.dumps(config, sort_keys=True) + json.dumps(prompts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape)


def check_window(codec, window: int, rates: list[Rate]) -> None:
    """A window must hold whole LR blocks (pixel codec) or ``1 + f·k`` frames (a causal VAE); name the fix."""
    for rate in rates:
        if codec.temporal_factor == 1 and window % rate.t:
            raise ValueError(f"data.window_frames = {window} is not a multiple of the temporal rate of {rate}")
    check_causal_frames(window, codec.temporal_factor, "data.window_frames")


def encode_windows(
    pixels: torch.Tensor, codec, rates: list[Rate], spans: list[tuple[int, int]], device
) -> dict[str, torch.Tensor]:
    """HR latents and the LR latents of every rate for each window of ``pixels`` ``(3, T, H, W)``, float16 on CPU."""
    tensors = {}
    for i, (start, length) in enumerate(spans):
        px = pixels[None, :, start : start + length].to(device)
        hr = codec.encode(px)[0].to("cpu", torch.float16).contiguous()
        tensors[f"w{i}.hr_latents.{_shape(hr)}.float16"] = hr
        for rate in rates:
            lr = lowres_latents(px, rate, codec)[0].to("cpu", torch.float16).contiguous()
            tensors[f"w{i}.lr_latents.{rate}.{_shape(lr)}.float16"] = lr
    return tensors


def encode_prompts_of(board: Storyboard, text_encoder) -> dict[str, torch.Tensor]:
    """One condition per shot, on CPU: token states (float16), and where the encoder gives them (HunyuanVideo) the
    attention mask (bool) and the pooled CLIP vector (float16), named as shards name them (:func:`shard_text_name`)."""
    condition = encode_condition(text_encoder, [shot.prompt for shot in board.shots])
    return condition.to_tensors(shard_text_name, float_dtype=torch.float16, mask_dtype=torch.bool)


def prepare(
    cfg: RunConfig,
    items: list[Item],
    out: str | Path,
    window_frames: int | None = None,
    text_encoder: Callable[[], Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> Report:
    """Cache every item (this rank's share: items ``rank::world_size``); returns the report.

    ``text_encoder`` builds the text encoder; it is called at the first video that needs its prompts embedded, so a
    rerun that reuses every shard never loads UMT5 or Llama (``None``: no text in the shards).

    The codec runs on ``device`` (each rank's GPU under ``accelerate launch``); decoding and the shards stay on the CPU.
    """
    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    window = resolve_window(cfg.data, cfg.train, window_frames)
    config = output_config(cfg, window)
    codec = build_codec(cfg.codec).to(device)
    rates = [Rate.parse(r) for r in cfg.history.rates]
    framewise = codec.framewise
    check_window(codec, window, rates)
    report = Report()
    bar = tqdm(items[rank::world_size], desc="data prepare", unit="video", disable=not progress)
    for item in bar:
        try:
            if item.problem:
                raise ValueError(item.problem)
            if not item.video.is_file():
                raise ValueError("file not found")
            source_hash = file_sha256(item.video)
            caption = item.caption or cfg.text.caption
            if item.storyboard is None and not caption:
                raise ValueError(
                    "no prompt: give a storyboard (<stem>.json) or caption (<stem>.txt) beside the video, a JSONL "
                    'line with one, or a default caption with --set text.caption="..."'
                )
            # The prompts are part of the key: a changed storyboard or caption is encoded again.
            prompts = item.storyboard.to_dict() if item.storyboard else {"caption": caption}
            shard = out / "shards" / f"{_key(source_hash, config, prompts)}.safetensors"
            if shard.is_file():
                try:
                    CachedVideo.open(shard)
                    report.reused.append(str(item.video))
                    report.shards.append(f"shards/{shard.name}")
                    continue
                except ValueError as exc:  # damaged: set it aside (never deleted) and encode the video again
                    aside = shard.with_name(shard.name + ".damaged")
                    os.replace(shard, aside)
                    reason = {"shard": f"shards/{aside.name}", "video": str(item.video), "why": str(exc)}
                    report.set_aside.append(reason)

            t0 = time.time()
            bucket = None
            if cfg.data.buckets:  # aspect-ratio buckets: the one nearest the video's displayed shape
                info = probe_video(item.video)
                bucket = choose_bucket(info.width, info.height, cfg.data.buckets)
            elif cfg.data.height:  # one frame shape for every video (the real presets: 480 × 832)
                bucket = (cfg.data.height, cfg.data.width)
            frames = decode_video(
                item.video, fps=cfg.data.fps, size=cfg.data.size, bucket=bucket, resize_mode=cfg.data.resize
            )
            report.decode_seconds += time.time() - t0
            report.decoded_frames += len(frames)
            if len(frames) < window:
                raise ValueError(f"shorter than the minimum window ({len(frames)} frames < {window})")

            t0 = time.time()
            spans = window_spans(len(frames), window, framewise, rates, cfg.data.window_stride)
            tensors = encode_windows(to_pixels(frames), codec, rates, spans, device)
            board = item.storyboard or Storyboard.from_caption(caption, len(frames) / cfg.data.fps)
            if text_encoder is not None:
                tensors.update(encode_prompts_of(board, text_encoder()))
            report.encode_seconds += time.time() - t0
            report.encoded_frames += sum(length for _, length in spans)
            report.latent_frames += sum(t.shape[1] for k, t in tensors.items() if ".hr_latents." in k)
            bar.set_postfix(frames=report.decoded_frames, latent_frames=report.latent_frames)

            metadata = {
                "source": str(item.video),
                "source_sha256": source_hash,
                "fps": str(cfg.data.fps),
                "frames": str(len(frames)),
                "temporal_factor": str(codec.temporal_factor),
                "framewise": "true" if framewise else "false",
                "window_frames": str(window),
                "window_starts": json.dumps([start for start, _ in spans]),
                "storyboard": json.dumps(board.to_dict()),
                "config": json.dumps(config, sort_keys=True),
            }
            tmp = shard.with_name(f"{shard.stem}.{os.getpid()}.tmp")  # one per process: ranks may share a key
            with writing(shard, "cache shard", RERUN_HINT):
                try:
                    save_file(tensors, str(tmp), metadata=metadata)
                    os.replace(tmp, shard)
                except BaseException:
                    tmp.unlink(missing_ok=True)  # a failed write (full disk) must not keep the space it took
                    raise
            report.done.append(str(item.video))
            report.shards.append(f"shards/{shard.name}")
        except WriteError:  # a full disk or a read-only folder stops the run: every later item would fail alike
            raise
        except Exception as exc:  # a bad item is reported, never fatal to the batch
            report.skipped.append({"video": str(item.video), "reason": f"{type(exc).__name__}: {exc}"})
    if text_encoder is not None and rank == 0 and (report.done or report.reused):
        with writing(out / "empty_prompt.safetensors", "empty prompt", RERUN_HINT):
            write_empty_prompt(out, cfg.text, text_encoder)
    return report


def write_manifest(
    out: str | Path, shards: list[str], config: dict | None = None, prune: bool = False
) -> tuple[list[dict], list[str], list[str]]:
    """Rebuild ``OUT/manifest.jsonl`` (sorted by source, atomic): this run's ``shards``, plus — unless ``prune`` —
    the earlier manifest's videos whose shards are readable, of the same output ``config`` and of a video this run
    did not cache again. Returns the rows, the stale shards (on disk, outside the manifest) and the pruned ones.

    So a rerun that caches nothing, or caches one more video, keeps the cache whole; a changed storyboard or setting
    never sits beside the old one (one entry per video, one config per manifest).
    """
    out = Path(out)
    rows = []
    videos = {name: CachedVideo.open(out / name) for name in set(shards)}  # each shard's header read once
    sources = {video.source for video in videos.values()}
    earlier = [row["shard"] for row in _manifest_rows(out) if row.get("shard") not in videos]
    pruned = []
    for name in earlier:
        try:
            video = CachedVideo.open(out / name)
        except ValueError:
            continue  # gone or damaged: a rerun of its video re-encodes it
        same = config is not None and video.config == json.loads(json.dumps(config))
        if same and video.source not in sources:
            if prune:
                pruned.append(name)
            else:
                videos[name] = video
    stale = sorted(shards_on_disk(out) - set(videos))
    for name, video in sorted(videos.items()):
        rows.append(
            {
                "shard": name,
                "source": video.source,
                "source_sha256": video.source_sha256,
                "fps": video.fps,
                "window_frames": video.window_frames,
                "window_starts": video.window_starts,
                "windows": len(video.window_starts),
                "frames": video.frames,
                # latent frames per window, and the latent (channels, height, width)
                "window_latents": video.window_latents,
                "latent_shape": list(video.latent_shape),
            }
        )
    rows.sort(key=lambda r: (r["source"], r["shard"]))
    replace_file(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode(), "cache manifest")
    return rows, stale, sorted(pruned)


def _manifest_rows(out: Path) -> list[dict]:
    """The current manifest's rows (none when there is no readable one)."""
    path = out / "manifest.jsonl"
    if not path.is_file():
        return []
    return read_jsonl(path, "cache manifest", drop_damaged=True)  # rebuilt from the shards: a lost line costs nothing


def run_prepare(
    cfg: RunConfig, source: str | Path, out: str | Path, window_frames: int | None = None, prune: bool = False
) -> int:
    """The command: split items over Accelerate ranks, cache, then merge reports and rebuild the manifest."""
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # without cpu=True, CPU ranks all think they are alone
    check_model_parts(cfg)
    out = Path(out)
    items = collect_items(source)
    if not items:
        raise ValueError(f"--input {source}: no video files found")
    # One run per cache at a time. Shards are content-addressed and renamed into place, so two runs would not damage
    # one another's shards, but the per-rank reports, the empty prompt and the manifest (rebuilt from the previous one
    # at the end) are one file each: the later run would drop the earlier one's videos from the manifest.
    with folder_lock(out, "data prepare") if state.is_main_process else contextlib.nullcontext():
        if state.is_main_process:
            remove_unfinished(out)
        state.wait_for_everyone()  # no rank starts before its run holds the lock
        return _run_prepare(cfg, state, items, out, window_frames, prune)


def remove_unfinished(out: Path) -> list[Path]:
    """Remove the temporary files of runs killed while writing (``shards/<key>.<pid>.tmp``, ``*.tmp``) and say so.

    They are never read as shards (only ``*.safetensors`` are), but a killed run's half shard of a long video holds
    gigabytes that no later run would ever free: each process writes under its own PID's name. Called under the
    cache's lock before any rank starts, so no ``*.tmp`` here belongs to a live run."""
    leftovers = [p for folder in (out, out / "shards") if folder.is_dir() for p in folder.glob("*.tmp") if p.is_file()]
    if leftovers:
        size = sum(p.stat().st_size for p in leftovers)
        for path in leftovers:
            path.unlink(missing_ok=True)
        print(
            f"data prepare: removed {len(leftovers)} unfinished file(s) of an interrupted run "
            f"({size / 2**20:.1f} MiB, e.g. {leftovers[0]})"
        )
    return leftovers


def _run_prepare(cfg: RunConfig, state, items: list[Item], out: Path, window_frames: int | None, prune: bool) -> int:
    """:func:`run_prepare` once the cache is locked."""
    from tinyhistory.text.cache import build_text_encoder

    out.mkdir(parents=True, exist_ok=True)
    report = prepare(
        cfg,
        items,
        out,
        window_frames,
        functools.cache(lambda: build_text_encoder(cfg.text, state.device)),
        state.process_index,
        state.num_processes,
        progress=state.is_main_process,
        device=state.device,
    )
    mine = json.dumps(report.as_dict(), indent=2).encode()
    replace_file(out / f"report.rank{state.process_index}.json", mine, "report")
    state.wait_for_everyone()
    if not state.is_main_process:
        return EXIT_OK
    merged: dict = {"done": [], "reused": [], "skipped": [], "shards": [], "set_aside": [], "total_latent_frames": 0}
    merged["per_rank"] = []
    for rank in range(state.num_processes):
        part_path = out / f"report.rank{rank}.json"
        part = json.loads(part_path.read_text())
        for key in ("done", "reused", "skipped", "shards", "set_aside"):
            merged[key] += part[key]
        merged["total_latent_frames"] += part["total_latent_frames"]
        merged["per_rank"].append(
            {"decode_frames_per_s": part["decode_frames_per_s"], "encode_frames_per_s": part["encode_frames_per_s"]}
        )
        part_path.unlink()
    config = output_config(cfg, resolve_window(cfg.data, cfg.train, window_frames))
    rows, stale, pruned = write_manifest(out, merged["shards"], config, prune)
    merged["manifest_entries"] = len(rows)
    merged["pruned_from_manifest"] = pruned
    # Shards of another config stay on disk (nothing is deleted) but are not in the manifest.
    merged["stale_shards_not_in_manifest"] = stale
    replace_file(out / "report.json", (json.dumps(merged, indent=2) + "\n").encode(), "report")
    if merged["skipped"] and not (merged["done"] or merged["reused"]):
        print(f"data prepare: nothing cached: all {len(merged['skipped'])} item(s) were skipped (exit 3)")
    print(
        f"data prepare: {len(merged['done'])} cached, {len(merged['reused'])} already cached, "
        f"{len(merged['skipped'])} skipped, {len(merged['set_aside'])} damaged shards set aside and re-encoded, "
        f"{len(rows)} videos in the manifest{f', {len(pruned)} pruned' if prune else ''} (see {out / 'report.json'})"
    )
    return EXIT_SKIPPED if merged["skipped"] else EXIT_OK
