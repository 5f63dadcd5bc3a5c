"""Training from a ``tinyhistory data prepare`` cache: latent windows and per-sample prompts, no decoding.

A cache holds, per video, windows of HR latents, the LR latents of every encoding rate, and one text embedding per
storyboard shot (see :mod:`tinyhistory.data.prepare`). :class:`CacheSampler` serves the trainer the same things the
pixel-clip :class:`~tinyhistory.data.windows.WindowSampler` does — ``(B, C, T, h, w)`` HR latents and per-rate LR
latents of ``frames``-long windows — plus the text embedding of the storyboard shot nearest to any span of a
sample (stage I: the whole window; stage II: the target segment, the paper's nearest-timestamp rule).

Where samples come from:

* **Runs.** With a framewise codec (each latent frame from its own pixel frame: the tiny preset's pixel codec) the
  cached windows of one video are contiguous in time and are concatenated into one run, so a sample may start at
  any block boundary of the video, across window borders, exactly as if the clip had been encoded whole. With a
  temporally causal VAE (Wan, HunyuanVideo) each cached window is its own run: a shorter sample is a slice of it.
* **Held-out split.** The last ``heldout_fraction`` of every video is held out (as in the pixel-clip path):
  training samples lie entirely before the cut, held-out samples entirely after it. ``heldout_split = "videos"``
  holds out whole videos instead (``round(heldout_fraction · N)`` of them, chosen by content hash): better for many
  short clips.
* **Alignment.** Starts are multiples of ``lcm(rate.t)`` latent frames from the run's start, so LR slices are
  exactly the LR latents of the sampled window.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tinyhistory.codecs.base import check_causal_frames
from tinyhistory.config import CodecConfig, DataConfig, RunConfig, TextConfig
from tinyhistory.files import read_jsonl
from tinyhistory.geometry import Rate, temporal_block
from tinyhistory.paths import resolve_path
from tinyhistory.text.cache import encode_condition
from tinyhistory.text.condition import PARTS, TextCondition
from tinyhistory.text.storyboard import Storyboard

MAX_OPEN_SHARDS = 64


def output_config(cfg: RunConfig, window_frames: int) -> dict:
    """Every config value that changes a shard's content: part of its key, stored in its metadata."""
    return {
        "base": cfg.base,
        "codec": vars(cfg.codec),
        "text": _text_config(cfg.text),
        "fps": cfg.data.fps,
        "size": cfg.data.size,
        "height": cfg.data.height,
        "width": cfg.data.width,
        "buckets": cfg.data.buckets,
        "resize": cfg.data.resize,
        "rates": list(cfg.history.rates),
        "window_frames": window_frames,
        "window_stride": cfg.data.window_stride or window_frames,
        "dtype": "float16",
        # 4: a causal VAE's LR latents group the first 1 + f(rT - 1) frames (history.base.downsample_pixels)
        "version": 4,
    }


def _text_config(text: TextConfig) -> dict:
    """What of the ``[text]`` table changes a shard's prompt embeddings (an output config's ``"text"``)."""
    return {"kind": text.kind, "max_tokens": text.max_tokens, "path": text.path}


def tensor_shape(key: str) -> tuple[int, ...]:
    """The shape written into a shard's tensor name: ``"w0.hr_latents.48x32x16x16.float16"`` → ``(48, 32, 16, 16)``."""
    return tuple(int(n) for n in key.split(".")[-2].split("x"))


def shards_on_disk(cache: Path) -> set[str]:
    """Every finished shard in ``cache`` as a manifest entry (``"shards/<key>.safetensors"``)."""
    return {f"shards/{p.name}" for p in (cache / "shards").glob("*.safetensors")}


@dataclass
class CachedVideo:
    """One shard's metadata and the names of its tensors."""

    shard: Path
    source: str
    source_sha256: str
    fps: float
    frames: int  # decoded frames of the whole video
    window_starts: list[int]  # first pixel frame of each cached window
    temporal_factor: int  # pixel frames per latent frame
    framewise: bool
    storyboard: Storyboard
    hr_keys: list[str]  # per window, "w{i}.hr_latents.{shape}.{dtype}"
    lr_keys: dict[str, list[str]]  # rate → per window
    # per shot: its condition's part ("states"; "mask", "pooled" where the encoder gives them) → tensor name;
    # empty when the cache holds no text
    prompt_names: list[dict[str, str]]
    window_latents: list[int]  # latent frames of each window (a framewise cache may end in a shorter one)
    window_frames: int  # pixel frames per (full) window
    latent_shape: tuple[int, int, int]  # (channels, height, width) of the HR latents
    config: dict  # the output config the shard was made with (see output_config)

    @classmethod
    def open(cls, shard: Path) -> CachedVideo:
        try:
            with safe_open(str(shard), framework="pt") as f:
                meta = f.metadata() or {}
                keys = list(f.keys())
        except Exception as exc:  # safetensors raises its own error types for a damaged or missing file
            raise ValueError(f"{shard}: not a readable cache shard ({exc}); run `data prepare` again") from exc
        missing = [
            k for k in ("source", "fps", "frames", "window_starts", "temporal_factor", "framewise") if k not in meta
        ]
        if missing:
            raise ValueError(
                f"{shard}: cache metadata lacks {', '.join(missing)} (made by an older `data prepare`; run it again)"
            )
        starts = json.loads(meta["window_starts"])
        by_prefix = {k.split(".", 2)[0] + "." + k.split(".", 2)[1]: k for k in keys if k.startswith("w")}
        hr_keys = [by_prefix[f"w{i}.hr_latents"] for i in range(len(starts))]
        lr_keys: dict[str, list[str]] = {}
        for key in keys:
            parts = key.split(".")
            if parts[1] == "lr_latents":
                lr_keys.setdefault(parts[2], []).append(key)
        for rate, names in lr_keys.items():
            lr_keys[rate] = sorted(names, key=lambda k: int(k.split(".")[0][1:]))
        per_part = {part: _per_shot(keys, SHARD_TEXT[part]) for part in PARTS}
        prompt_names = [
            {part: names[j] for part, names in per_part.items() if names} for j in range(len(per_part["states"]))
        ]
        shapes = [tensor_shape(key) for key in hr_keys]  # (C, T, H, W) per window
        return cls(
            shard=shard,
            source=meta["source"],
            source_sha256=meta.get("source_sha256", ""),
            fps=float(meta["fps"]),
            frames=int(meta["frames"]),
            window_starts=starts,
            temporal_factor=int(meta["temporal_factor"]),
            framewise=meta["framewise"] == "true",
            storyboard=Storyboard.from_dict(json.loads(meta["storyboard"]), f"{shard} storyboard"),
            hr_keys=hr_keys,
            lr_keys=lr_keys,
            prompt_names=prompt_names,
            window_latents=[shape[1] for shape in shapes],
            window_frames=int(meta["window_frames"]),
            latent_shape=(shapes[0][0], shapes[0][2], shapes[0][3]),
            config=json.loads(meta["config"]),
        )


# A shard's prompt layout: shot j's condition part is stored as "{prefix}.{j}.{shape}.{dtype}", e.g.
# "text.0.512x4096.float16", "text_mask.0.256.bool", "text_pooled.0.768.float16" (written by data prepare).
SHARD_TEXT = {"states": "text", "mask": "text_mask", "pooled": "text_pooled"}


def shard_text_name(shot: int, part: str, tensor: torch.Tensor) -> str:
    """The name of ``part`` of shot ``shot``'s condition in a shard (shape and dtype in the name, as for latents)."""
    shape = "x".join(str(n) for n in tensor.shape)
    return f"{SHARD_TEXT[part]}.{shot}.{shape}.{str(tensor.dtype).removeprefix('torch.')}"


def _per_shot(keys: list[str], prefix: str) -> list[str]:
    """A shard's ``"{prefix}.{j}.<shape>.<dtype>"`` tensor names in shot order ``j``."""
    return sorted((k for k in keys if k.split(".")[0] == prefix), key=lambda k: int(k.split(".")[1]))


@dataclass(frozen=True)
class Run:
    """Consecutive windows of one video whose latents may be concatenated (one window for a causal VAE)."""

    video: int  # index into CacheSampler.videos
    windows: tuple[int, ...]

    def latents(self, video: CachedVideo) -> int:
        return sum(video.window_latents[i] for i in self.windows)


def read_manifest(cache: str | Path) -> list[dict]:
    """The rows of ``cache/manifest.jsonl`` (one per cached video), with an error that says how to make one."""
    manifest = Path(cache) / "manifest.jsonl"
    if not manifest.is_file():
        raise ValueError(f"data.cache {cache}: no manifest.jsonl (run `tinyhistory data prepare --out {cache}` first)")
    rows = read_jsonl(manifest, "cache manifest")  # a last line cut short is dropped with a warning
    if not rows:
        raise ValueError(f"data.cache {cache}: manifest.jsonl lists no videos")
    return rows


EMPTY_PROMPT_FILE = "empty_prompt.safetensors"


def _text_identity(text: TextConfig) -> dict[str, str]:
    return {"kind": text.kind, "max_tokens": str(text.max_tokens), "path": text.path}


def write_empty_prompt(cache: Path, text: TextConfig, text_encoder) -> None:
    """Store the text encoder's encoding of ``""`` beside the shards (once per text encoder), so training from the
    cache has classifier-free guidance's unconditional prompt without loading the encoder."""
    path = cache / EMPTY_PROMPT_FILE
    identity = _text_identity(text)
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            if f.metadata() == identity:
                return
    empty = encode_condition(text_encoder(), [""])
    tensors = empty.to_tensors(lambda i, part, _: part, float_dtype=torch.float32)  # "states", "mask", "pooled"
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=identity)
    tmp.replace(path)


def read_empty_prompt(cache: str, text: TextConfig) -> TextCondition | None:
    """The empty prompt that ``data prepare`` stored in ``cache`` (``data.cache``; "" = none) for the text encoder
    ``text`` describes, or None (no cache, none stored, or stored for another encoder)."""
    if not cache:
        return None
    path = resolve_path(cache) / EMPTY_PROMPT_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        if f.metadata() != _text_identity(text):
            return None
        names = set(f.keys())
        return TextCondition.from_tensors(f.get_tensor, {part: part for part in PARTS if part in names})


def _identity(config: dict) -> dict:
    """What of an output config a run and its cache must share (the codec's memory savers do not count)."""
    return {
        "codec": {k: v for k, v in config["codec"].items() if k not in ("tiling", "slicing")},
        **{f"text.{k}": config["text"][k] for k in ("kind", "max_tokens", "path")},
        "fps": config["fps"],
    }


def run_identity(codec: CodecConfig, text: TextConfig, fps: float) -> dict:
    """What a run's cache must have been made with: its codec (the ``[codec]`` table less the memory savers), its
    text encoder (``[text]``) and its frame rate (``data.fps``). A :class:`CacheSampler` checks every shard against
    it."""
    return _identity({"codec": vars(codec), "text": _text_config(text), "fps": fps})


def check_compatible(expects: dict, rates: list[Rate], uses_lr: list[bool], shard_config: dict, shard: Path) -> None:
    """The run must read latents made with its own codec, text encoder (``expects``: :func:`run_identity`) and,
    for the producers that read LR latents (``uses_lr``), its rates; name the first mismatch."""
    found = _identity(shard_config)
    for key, value in expects.items():
        if found[key] != value:
            raise ValueError(f"{shard}: cached with {key} = {found[key]!r}, this run has {key} = {value!r}")
    missing = [str(r) for r, use in zip(rates, uses_lr, strict=True) if use and str(r) not in shard_config["rates"]]
    if missing:
        raise ValueError(
            f"{shard}: no LR latents for rate(s) {', '.join(missing)} (cached: {', '.join(shard_config['rates'])}); "
            "run `data prepare` with these history.rates"
        )


class CacheSampler:
    """Random or fixed windows of ``frames`` latent frames from a cache's training or held-out part.

    A *pick* is a ``(run, offset)`` pair; ``window(picks)`` reads the latents, ``text_for(picks, first, last)`` the
    embedding of the shot nearest to latent frames ``[first, last)`` of each picked window.

    ``expects``: what the run's latents and prompts must have been made with (:func:`run_identity`), checked against
    every shard (None: unchecked). :meth:`for_run` builds one from a run's config sections.
    """

    def __init__(
        self,
        cache: str | Path,
        frames: int,
        rates: list[Rate],
        uses_lr: list[bool],
        heldout_fraction: float,
        part: str,
        expects: dict | None = None,
        heldout_split: str = "tail",
    ):
        if part not in ("train", "heldout"):
            raise ValueError(f"part must be 'train' or 'heldout', got {part!r}")
        cache = Path(cache)
        self.videos = [CachedVideo.open(cache / row["shard"]) for row in read_manifest(cache)]
        heldout_videos = _heldout_videos(self.videos, heldout_fraction, cache) if heldout_split == "videos" else None
        if expects is not None:
            for video in self.videos:
                check_compatible(expects, rates, uses_lr, video.config, video.shard)
        self.frames = frames
        self.rates = rates
        self.uses_lr = uses_lr
        self.block = temporal_block(rates)
        self._handles: dict[Path, object] = {}

        runs, picks = [], []
        for v, video in enumerate(self.videos):
            if frames > max(video.window_latents) and not video.framewise:
                raise ValueError(
                    f"{video.shard}: windows of {max(video.window_latents)} latent frames cannot hold {frames} "
                    "(prepare the cache with longer data.window_frames)"
                )
            for run in _runs(v, video):
                if heldout_videos is None:
                    lo, hi = _part_bounds(video, run, heldout_fraction, part)
                else:  # whole videos: all of a video is in one part
                    inside = (v in heldout_videos) == (part == "heldout")
                    lo, hi = (0, run.latents(video)) if inside else (0, 0)
                first = lo + (-lo) % self.block  # aligned to the run's start
                offsets = range(first, hi - frames + 1, self.block)
                if len(offsets):
                    runs.append(run)
                    picks.append(torch.stack([torch.full((len(offsets),), len(runs) - 1), torch.tensor(offsets)], 1))
        if not picks:
            raise ValueError(
                f"data.cache {cache}: no {part} window of {frames} latent frames fits in any video "
                f"({len(self.videos)} cached; heldout_fraction={heldout_fraction}): cache longer videos, or give the "
                f"held-out part more of each video with data.heldout_fraction{_heldout_hint(self.videos, part)}"
            )
        self.runs = runs
        self.valid_picks = torch.cat(picks)  # (N, 2): run index, latent offset inside the run
        # Picks grouped by spatial shape (aspect-ratio buckets): a batch is drawn from one group.
        run_shapes = [self.videos[run.video].latent_shape for run in runs]
        shape_of_pick = [run_shapes[r] for r in self.valid_picks[:, 0].tolist()]
        self._pools = {
            shape: torch.tensor([i for i, s in enumerate(shape_of_pick) if s == shape]) for shape in set(run_shapes)
        }
        self._shape_of_pick = shape_of_pick

    @classmethod
    def for_run(
        cls,
        data: DataConfig,
        codec: CodecConfig,
        text: TextConfig,
        history_frames: int,
        part: str,
        rates: list[Rate],
        uses_lr: list[bool],
    ) -> CacheSampler:
        """A run's ``data.cache`` (the ``[data]`` table: the cache, its held-out part), windows of
        ``history_frames`` pixel frames (``train.history_frames``, as latent frames); every shard checked against
        the run's ``[codec]`` and ``[text]`` tables (:func:`run_identity`)."""
        cache = resolve_path(data.cache)
        first = CachedVideo.open(cache / read_manifest(cache)[0]["shard"])
        frames = latent_frames(history_frames, first.temporal_factor)
        expects = run_identity(codec, text, data.fps)
        return cls(cache, frames, rates, uses_lr, data.heldout_fraction, part, expects, data.heldout_split)

    def __len__(self) -> int:
        return len(self.valid_picks)

    def pick(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch`` picks drawn uniformly over all valid windows ``(B, 2)``; same-shape windows only.

        Windows of different spatial sizes (aspect-ratio buckets) cannot share a batch: the first pick's shape decides,
        the others are drawn among windows of that shape.
        """
        index = torch.randint(0, len(self.valid_picks), (batch,), generator=generator)
        if len(self._pools) > 1:
            pool = self._pools[self._shape_of_pick[int(index[0])]]
            rest = pool[torch.randint(0, len(pool), (batch - 1,), generator=generator)]
            index = torch.cat([index[:1], rest])
        return self.valid_picks[index]

    def pick_like(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """As many picks as ``like`` ``(B, 2)`` holds, drawn uniformly among the windows of its first pick's shape."""
        pool = self._pools[self.shape_of(like[0])]
        return self.valid_picks[pool[torch.randint(0, len(pool), (len(like),), generator=generator)]]

    def shape_of(self, pick: torch.Tensor) -> tuple[int, int, int]:
        """The latent shape ``(C, h, w)`` of a pick's window (its video's aspect-ratio bucket)."""
        return self.videos[self.runs[int(pick[0])].video].latent_shape

    def fixed_starts(self, count: int) -> torch.Tensor:
        """``count`` evenly spaced picks (deterministic evaluation), as ``(count, 2)``."""
        index = torch.linspace(0, len(self.valid_picks) - 1, count).round().long()
        return self.valid_picks[index]

    def sample(self, batch: int, generator: torch.Generator | None = None):
        return self.window(self.pick(batch, generator))

    def window(self, picks: torch.Tensor) -> tuple[None, torch.Tensor, list[torch.Tensor | None]]:
        """``(None, HR (B, C, T, h, w), per-rate LR latents or None)``, float32 (no pixels in a cache)."""
        hr, lr = [], [[] for _ in self.rates]
        for run_index, offset in picks.tolist():
            run = self.runs[run_index]
            video = self.videos[run.video]
            hr.append(self._slice(video, run, video.hr_keys, offset, self.frames, 1))
            for i, (rate, use) in enumerate(zip(self.rates, self.uses_lr, strict=True)):
                if use:
                    keys = video.lr_keys[str(rate)]
                    lr[i].append(self._slice(video, run, keys, offset // rate.t, self.frames // rate.t, rate.t))
        return None, torch.stack(hr).float(), [torch.stack(x).float() if x else None for x in lr]

    def text_for(self, picks: torch.Tensor, first: int, last: int) -> TextCondition | None:
        """The condition (states ``(B, L, D)``, and mask and pooled vector where cached) of the shot nearest to latent
        frames ``[first, last)`` of each window, or None when the cache holds no text (the run's caption applies)."""
        out = []
        for run_index, offset in picks.tolist():
            run = self.runs[run_index]
            video = self.videos[run.video]
            if not video.prompt_names:
                return None
            start_frame = video.window_starts[run.windows[0]] + (offset + first) * video.temporal_factor
            end_frame = video.window_starts[run.windows[0]] + (offset + last) * video.temporal_factor
            shot = video.storyboard.shot_index_for(start_frame / video.fps, end_frame / video.fps)
            out.append(TextCondition.from_tensors(self._handle(video.shard).get_tensor, video.prompt_names[shot]))
        return TextCondition.cat(out)

    def _slice(self, video: CachedVideo, run: Run, keys: list[str], start: int, length: int, per: int):
        """Latent frames ``[start, start + length)`` of the run (``per``: latent frames per entry), across windows."""
        pieces, first = [], 0  # ``first``: the run's latent entry where the current window begins
        for window in run.windows:
            size = video.window_latents[window] // per
            lo, hi = max(start, first), min(start + length, first + size)
            if lo < hi:
                pieces.append(self._handle(video.shard).get_slice(keys[window])[:, lo - first : hi - first])
            first += size
        return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]

    def _handle(self, shard: Path):
        if shard not in self._handles:
            if len(self._handles) >= MAX_OPEN_SHARDS:
                self._handles.pop(next(iter(self._handles)))
            self._handles[shard] = safe_open(str(shard), framework="pt")
        return self._handles[shard]


def latent_frames(frames: int, temporal_factor: int) -> int:
    """Latent frames of ``frames`` pixel frames: all of them, or ``1 + (frames - 1) / f`` for a causal VAE."""
    check_causal_frames(frames, temporal_factor, "train.history_frames")
    return frames if temporal_factor == 1 else 1 + (frames - 1) // temporal_factor


def _runs(video_index: int, video: CachedVideo) -> list[Run]:
    """Maximal groups of contiguous windows (framewise codecs), else one run per window."""
    if not video.framewise:
        return [Run(video_index, (i,)) for i in range(len(video.window_starts))]
    runs: list[list[int]] = []
    for i, start in enumerate(video.window_starts):
        previous = runs[-1][-1] if runs else None
        if (
            previous is not None
            and video.window_starts[previous] + video.window_latents[previous] * video.temporal_factor == start
        ):
            runs[-1].append(i)
        else:
            runs.append([i])
    return [Run(video_index, tuple(r)) for r in runs]


def _heldout_videos(videos: list[CachedVideo], fraction: float, cache: Path) -> set[int]:
    """Indices of the whole videos held out: ``round(fraction · N)`` of them (at least one), chosen by content hash, so
    the choice does not depend on file names or on the order videos were cached in."""
    if len(videos) < 2:
        raise ValueError(f"data.heldout_split = 'videos' needs at least 2 cached videos; {cache} holds {len(videos)}")
    count = min(len(videos) - 1, max(1, round(fraction * len(videos))))
    order = sorted(range(len(videos)), key=lambda i: videos[i].source_sha256)
    return set(order[:count])


def _heldout_hint(videos: list[CachedVideo], part: str) -> str:
    """For causal caches, whose windows are indivisible: the smallest held-out fraction that puts the last window
    of some video wholly in the held-out tail (or the hint to hold out whole videos)."""
    causal = [v for v in videos if not v.framewise and len(v.window_starts) > 1]
    if part != "heldout" or not videos or any(v.framewise for v in videos):
        return ""
    if not causal:
        return ' (each video holds one window: hold out whole videos with data.heldout_split="videos")'
    needed = min(1.0 - v.window_starts[-1] / v.frames for v in causal)
    return f" (a causal window is held out whole: heldout_fraction >= {math.ceil(needed * 100) / 100:.2f} here)"


def _part_bounds(video: CachedVideo, run: Run, heldout_fraction: float, part: str) -> tuple[int, int]:
    """The latent range ``[lo, hi)`` of the run that lies in the requested part of the video."""
    cut_frame = int(round(video.frames * (1.0 - heldout_fraction)))
    run_start = video.window_starts[run.windows[0]]
    length = run.latents(video)
    if video.framewise:
        cut = min(max((cut_frame - run_start) // video.temporal_factor, 0), length)
    else:  # a causal window (1 + f·k frames → 1 + k latents) is indivisible: it belongs to the part it lies in
        end_frame = run_start + 1 + (length - 1) * video.temporal_factor
        cut = length if end_frame <= cut_frame else (0 if run_start >= cut_frame else -1)
        if cut == -1:
            return (0, 0)
    return (0, cut) if part == "train" else (cut, length)


def inspect_cache(cache: str | Path) -> dict:
    """What a cache holds, checked shard by shard: videos, windows, latent frames and shapes, prompts, the config it
    was made with, damaged shards (named) and shards on disk outside the manifest (stale)."""
    cache = Path(cache)
    rows = read_manifest(cache)
    videos, damaged, config = [], [], {}
    for row in rows:
        try:
            video = CachedVideo.open(cache / row["shard"])
        except ValueError as exc:
            damaged.append({"shard": row["shard"], "source": row.get("source"), "reason": str(exc)})
            continue
        config = config or video.config
        videos.append(
            {
                "source": video.source,
                "seconds": round(video.frames / video.fps, 2),
                "windows": len(video.window_starts),
                "latent_frames": sum(video.window_latents),
                "latent_shape": "x".join(str(n) for n in video.latent_shape),
                "rates": sorted(video.lr_keys),
                "shots": len(video.storyboard.shots),
                "prompts_cached": len(video.prompt_names),
            }
        )
    stale = sorted(shards_on_disk(cache) - {row["shard"] for row in rows})
    return {
        "cache": str(cache),
        "videos": len(videos),
        "latent_frames": sum(v["latent_frames"] for v in videos),
        "windows": sum(v["windows"] for v in videos),
        "shots": sum(v["shots"] for v in videos),
        "config": config,
        "damaged": damaged,
        "stale_shards": stale,
        "per_video": videos,
    }
