"""Streaming generation: a storyboard becomes a video one segment at a time, every segment seeing the whole history.

    session = GenerationSession(model, cfg, codec, encode_text)
    session.start_from_video(frames)            # or start_from_image(image), or nothing
    clip = session.extend("A rabbit wakes up.", seconds=2.0)   # (T, H, W, 3) uint8
    session.save("story.session")               # pause ... GenerationSession.load(...) resumes exactly

The history is kept as the frames themselves (uint8, what a viewer sees), their latents, and one
:class:`~tinyhistory.history.streaming.IncrementalHistory` cache per encoder that grows by encoding only the new
latent frames (plus the HR branch's causal look-back). A generated segment is decoded to uint8 frames and those
frames, re-encoded, join the history, exactly as a real video would; so a session's state is fully described by its
frames, its caches and its random generator, and ``save``/``load`` continue bit for bit.

Sampling uses the diffusers flow-matching schedulers (Euler or UniPC) with classifier-free guidance: the
unconditional branch sees the empty prompt (``text.empty``), the same history, and the stage-II text dropout taught the
model what that means.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tinyhistory.backbones import ContextTokens
from tinyhistory.data.clip import to_pixels, to_uint8
from tinyhistory.geometry import temporal_block
from tinyhistory.history import lowres_latents
from tinyhistory.history.streaming import IncrementalHistory
from tinyhistory.text.condition import TextCondition

SAMPLERS = ("euler", "unipc")


@dataclass
class SamplingSettings:
    sampler: str = "euler"
    steps: int = 20
    guidance: float = 3.0
    seed: int = 0
    segment_frames: int = 8  # latent frames per segment (about one second at the tiny preset's 8 fps)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.steps < 1 or self.segment_frames < 1:
            raise ValueError(f"steps and segment_frames must be positive, got {self.steps} and {self.segment_frames}")


@dataclass
class SegmentRecord:
    """What the CLI logs per segment (JSONL)."""

    index: int
    start_frame: int
    frames: int
    prompt: str
    history_frames: int
    context_tokens: int
    latency_s: float


def make_scheduler(name: str):
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if name == "unipc":
        return UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0, num_train_timesteps=1000
        )
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


class GenerationSession:
    """One long generation. Not thread-safe; one segment at a time."""

    def __init__(
        self,
        model,
        cfg,
        codec,
        encode_text: Callable[[list[str]], TextCondition],
        settings: SamplingSettings | None = None,
        device: torch.device | str | None = None,
    ):
        if codec.temporal_factor != 1:
            raise ValueError(
                "streaming generation needs a codec without temporal compression (the tiny preset's); incremental "
                f"encoding through a causal video VAE (temporal factor {codec.temporal_factor}) is not implemented"
            )
        self.model = model.eval()
        self.cfg = cfg
        self.codec = codec
        self.encode_text = encode_text
        self.settings = settings or SamplingSettings(segment_frames=cfg.train.segment_frames)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        with_features = len(model.enhancers) > 0
        self.caches = [IncrementalHistory(p, model.backbone.patch_embed, with_features) for p in model.producers]
        self.block = temporal_block([p.rate for p in model.producers])
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self.frames = np.zeros((0, cfg.data.size, cfg.data.size, 3), np.uint8)  # (T, H, W, 3) the history
        self.latents: torch.Tensor | None = None  # (1, C, T, h, w) latents of ``frames``
        self.records: list[SegmentRecord] = []
        self._text: dict[str, TextCondition] = {}

    # -- history --------------------------------------------------------------------------------------------
    @property
    def history_frames(self) -> int:
        return self.frames.shape[0]

    @torch.no_grad()
    def append_history(self, frames: np.ndarray) -> None:
        """Add real (or generated) uint8 frames ``(n, H, W, 3)`` to the history and grow the caches."""
        if frames.ndim != 4 or frames.shape[1:] != self.frames.shape[1:]:
            raise ValueError(
                f"history frames must be (n, {self.cfg.data.size}, {self.cfg.data.size}, 3) uint8, got {frames.shape}"
            )
        new_latents = self.codec.encode(to_pixels(frames)[None])  # (1, C, n, h, w)
        self.latents = new_latents if self.latents is None else torch.cat([self.latents, new_latents], dim=2)
        self.frames = np.concatenate([self.frames, frames])
        if not self.caches:
            return
        # Encoders take whole temporal blocks; a remainder waits for the next append.
        encoded = self.caches[0].frames_encoded
        whole = (self.history_frames - encoded) // self.block * self.block
        if whole == 0:
            return
        hr = self.latents[:, :, encoded : encoded + whole].to(self.device)
        pixels = to_pixels(self.frames[encoded : encoded + whole])[None]
        for cache in self.caches:
            lr = (
                lowres_latents(pixels, cache.producer.rate, self.codec).to(self.device)
                if cache.producer.uses_lr
                else None
            )
            cache.append(hr, lr)

    def start_from_video(self, frames: np.ndarray) -> None:
        self.append_history(frames)

    def start_from_image(self, image: np.ndarray) -> None:
        """An image as history: one temporal block of the still frame."""
        self.append_history(np.repeat(image[None], max(self.block, 1), axis=0))

    def context(self) -> ContextTokens | None:
        """What the DiT sees of the history now: cached encoder tokens, then the uncompressed sliding window."""
        parts = [c.context for c in self.caches if c.frames_encoded > 0]
        if self.latents is not None and self.model.sliding_window > 0:
            # Only the window's frames visit the device, not the whole history.
            recent = self.latents[:, :, -self.model.sliding_window :].to(self.device)
            parts.append(self.model.window_tokens(recent, frame_offset=self.history_frames - recent.shape[2]))
        return ContextTokens.concat(parts) if parts else None

    # -- generation -----------------------------------------------------------------------------------------
    def _prompt_embedding(self, prompt: str) -> TextCondition:
        if prompt not in self._text:
            self._text[prompt] = self.encode_text([prompt]).to(self.device)
        return self._text[prompt]

    def _empty_prompt(self) -> TextCondition | None:
        """CFG's unconditional prompt: the encoder's ``""`` (``text.empty = "encoded"``), else None (all zeros)."""
        return self._prompt_embedding("") if self.cfg.text.empty == "encoded" else None

    @torch.no_grad()
    def generate_segment(self, prompt: str, frames: int | None = None) -> np.ndarray:
        """Sample the next segment after the current history; it joins the history. Returns ``(n, H, W, 3)``."""
        s = self.settings
        n = frames or s.segment_frames
        started = time.perf_counter()
        context = self.context()
        text = self._prompt_embedding(prompt)
        size = self.cfg.data.size // self.codec.spatial_factor
        shape = (1, self.codec.latent_channels, n, size, size)
        noise = torch.randn(shape, generator=self.generator).to(self.device)
        positions = torch.arange(self.history_frames, self.history_frames + n, device=self.device)[None]
        x = sample_segment(self.model, noise, text, context, positions, s, self._empty_prompt())
        segment = to_uint8(self.codec.decode(x.float().cpu())[0])
        record = SegmentRecord(
            index=len(self.records),
            start_frame=self.history_frames,
            frames=n,
            prompt=prompt,
            history_frames=self.history_frames,
            context_tokens=context.num_tokens if context is not None else 0,
            latency_s=0.0,
        )
        self.append_history(segment)
        record.latency_s = round(time.perf_counter() - started, 4)
        self.records.append(record)
        return segment

    def storyboard_segments(self, story, origin: int) -> int:
        """Segments still to generate for ``story``, whose shot times count from history frame ``origin``."""
        seg = self.settings.segment_frames
        total = math.ceil(story.duration * self.cfg.data.fps / seg)
        return total - (self.history_frames - origin) // seg

    def follow_storyboard(self, story, origin: int):
        """Generate the storyboard's remaining segments, each with the prompt nearest to it; yields each record."""
        fps, seg = self.cfg.data.fps, self.settings.segment_frames
        for _ in range(self.storyboard_segments(story, origin)):
            start = (self.history_frames - origin) / fps
            self.generate_segment(story.prompt_for(start, start + seg / fps))
            yield self.records[-1]

    def extend(self, prompt: str, seconds: float) -> np.ndarray:
        """Generate ``seconds`` of video (whole segments) with one prompt; returns the new frames."""
        segments = max(1, math.ceil(seconds * self.cfg.data.fps / self.settings.segment_frames))
        return np.concatenate([self.generate_segment(prompt) for _ in range(segments)])

    # -- pause and resume -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Everything needed to continue bit for bit: frames, caches, generator, settings, log (not the model)."""
        # The latents are not stored: the codec re-encodes the frames exactly (a per-frame codec, checked at start).
        tensors = {"frames": torch.from_numpy(self.frames), "generator": self.generator.get_state()}
        for i, cache in enumerate(self.caches):
            tensors.update({f"cache{i}.{k}": v.cpu().contiguous() for k, v in cache.state_dict().items()})
        meta = {"settings": asdict(self.settings), "records": [asdict(r) for r in self.records]}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"session": json.dumps(meta)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, model, cfg, codec, encode_text, device=None) -> GenerationSession:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"session file not found: {path}")
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("session", "null") or "null")
        if meta is None:
            raise ValueError(f"{path}: not a tinyhistory session file")
        tensors = load_file(str(path))
        session = cls(model, cfg, codec, encode_text, SamplingSettings(**meta["settings"]), device)
        frames = tensors["frames"].numpy()
        session.frames = frames
        session.latents = codec.encode(to_pixels(frames)[None]) if len(frames) else None
        session.generator.set_state(tensors["generator"])
        dev = session.device
        for i, cache in enumerate(session.caches):
            prefix = f"cache{i}."
            cache.load_state_dict({k[len(prefix) :]: v.to(dev) for k, v in tensors.items() if k.startswith(prefix)})
        session.records = [SegmentRecord(**r) for r in meta["records"]]
        return session


@torch.no_grad()
def sample_segment(
    model,
    noise: torch.Tensor,
    text: TextCondition,
    context: ContextTokens | None,
    positions: torch.Tensor,
    settings: SamplingSettings,
    empty: TextCondition | None = None,
) -> torch.Tensor:
    """Integrate the flow from ``noise`` ``(B, C, n, h, w)`` to clean latents with a diffusers scheduler.

    Classifier-free guidance: ``v = v(∅) + g·(v(text) − v(∅))`` with ∅ the empty prompt ``empty`` (default: all-zero
    states, what the tiny preset trained with) and the same history;
    ``guidance = 1`` runs the conditional branch only. ``positions`` ``(B, n)``: temporal positions of the frames.
    """
    scheduler = make_scheduler(settings.sampler)
    scheduler.set_timesteps(settings.steps, device=noise.device)
    b = noise.shape[0]
    empty = (empty if empty is not None else text.zeros_like()).expand(len(text)).to(noise.device)
    x = noise
    for i, timestep in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i].to(noise.device, torch.float32).expand(b)
        if settings.guidance == 1.0:
            velocity = model(x, sigma, text, context, positions)
        else:
            both = model(
                torch.cat([x, x]),
                sigma.repeat(2),
                TextCondition.cat([text, empty]),
                _repeat(context),
                positions.repeat(2, 1),
            )
            cond, uncond = both.chunk(2)
            velocity = uncond + settings.guidance * (cond - uncond)
        x = scheduler.step(velocity, timestep, x, return_dict=False)[0]
    return x


def _repeat(context: ContextTokens | None) -> ContextTokens | None:
    """The same history for the conditional and unconditional halves of a guided batch."""
    if context is None:
        return None
    features = torch.cat([context.features] * 2) if context.features is not None else None
    return ContextTokens(torch.cat([context.tokens] * 2), torch.cat([context.positions] * 2), features)
