"""Streaming encode and decode: a video in pieces gives exactly the latents (frames) of one whole call.

Generation appends one segment at a time, and the history grows by the frames just made; re-encoding or re-decoding
the whole video each time would cost the whole history per segment. A causal video VAE makes streaming exact if the
per-layer causal cache is carried from one call to the next:

* **Wan** (``AutoencoderKLWan``): ``_encode`` runs the encoder on frame 0, then on 4-frame chunks, each call reading
  and updating a feature cache (the last two frames of every causal conv's input); ``_decode`` does the same with one
  latent frame at a time (``first_chunk`` for the first). :class:`WanStreamEncoder` / :class:`WanStreamDecoder` run
  the stock ``encoder`` / ``decoder`` modules with that cache kept between calls, so any split of the input into
  pieces gives the output of one whole call (the 1×1×1 ``quant_conv`` / ``post_quant_conv`` have no temporal reach).
  Pixels that do not yet fill a chunk wait for the next call.
* **Framewise codecs** (the tiny preset's pixel codec): each frame on its own, nothing to carry.
* **HunyuanVideo** (``AutoencoderKLHunyuanVideo``): *not exact, by construction of the VAE*. Its GroupNorms
  normalise over time as well as space (``nn.GroupNorm`` on ``(B, C, T, H, W)``), so every latent depends on every
  frame of the call, later ones included: no split of a video into pieces gives the latents of one whole call, and
  diffusers itself never encodes or decodes a long video whole (``_temporal_tiled_encode`` / ``_decode``: 17-frame
  tiles every 12 frames, blended). :class:`WindowedStreamEncoder` / :class:`WindowedStreamDecoder` do the analogous
  thing causally: each new piece is encoded (decoded) together with a left context of the last few latents' worth
  of input, the context's part of the output is dropped, and what is emitted is final (no later correction, so a
  growing video file and a resumed session stay consistent). The first piece is one whole call. The deviation from a
  whole-video call is measured in ``tests/test_codec_hunyuan.py``.

:class:`LowResStream` feeds the history encoder's LR branch: pixels downsampled by the rate, grouped in time so
that LR latent ``b`` covers exactly the pixels of the HR branch's temporal block ``b`` (see
:func:`tinyhistory.history.base.downsample_pixels`), then a stream encoder.

Every stream's state is a dict of tensors (``state_dict`` / ``load_state_dict``), so a paused session resumes bit
for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinyhistory.codecs.base import crop_to_factor
from tinyhistory.geometry import Rate

_REPEAT = "Rep"  # diffusers' marker in a Wan feature cache: "the first chunk was seen; pad by repetition"


def _cache_state(prefix: str, cache: list) -> dict[str, torch.Tensor]:
    """A Wan feature cache (entries: None, the "Rep" marker or a tensor) as tensors; markers as empty tensors."""
    state = {}
    for i, entry in enumerate(cache):
        if isinstance(entry, torch.Tensor):
            state[f"{prefix}.{i}"] = entry.detach().cpu().contiguous()
        elif entry == _REPEAT:
            state[f"{prefix}.{i}.rep"] = torch.zeros(0)
    return state


def _cache_from_state(prefix: str, size: int, state: dict[str, torch.Tensor], device) -> list:
    cache: list = [None] * size
    for i in range(size):
        if f"{prefix}.{i}" in state:
            cache[i] = state[f"{prefix}.{i}"].to(device)
        elif f"{prefix}.{i}.rep" in state:
            cache[i] = _REPEAT
    return cache


class WanStreamEncoder:
    """Pixels ``(B, 3, n, H, W)`` in [-1, 1], any n per call → normalised latents, as one ``WanVAECodec.encode`` of
    everything pushed so far would give them (frame 0 alone, then every 4 frames one latent frame)."""

    def __init__(self, codec):
        self.codec = codec
        self.vae = codec.vae
        self._size = self.vae._cached_conv_counts["encoder"]
        self.reset()

    def reset(self) -> None:
        self._cache: list = [None] * self._size
        self._pending: torch.Tensor | None = None  # (B, 3·p², k, h, w) patchified frames waiting for a full chunk
        self.frames_in = 0  # pixel frames pushed so far

    @torch.no_grad()
    def push(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encode what ``pixels`` completes; returns ``(B, C, m, H/s, W/s)`` (m may be 0)."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import patchify

        vae = self.vae
        weight = next(vae.parameters())
        x = pixels.to(weight.device, weight.dtype)
        if vae.config.patch_size is not None:
            x = patchify(x, patch_size=vae.config.patch_size)
        x = x if self._pending is None else torch.cat([self._pending, x], dim=2)
        outputs = []
        start = 0
        while True:
            size = 1 if self.frames_in + start == 0 else 4
            if x.shape[2] - start < size:
                break
            outputs.append(vae.encoder(x[:, :, start : start + size], feat_cache=self._cache, feat_idx=[0]))
            start += size
        self.frames_in += pixels.shape[2]
        self._pending = x[:, :, start:] if start < x.shape[2] else None
        if not outputs:
            b, _, _, h, w = pixels.shape
            s = self.codec.spatial_factor
            return pixels.new_zeros(b, self.codec.latent_channels, 0, h // s, w // s)
        moments = vae.quant_conv(torch.cat(outputs, dim=2))
        mean = moments[:, : self.codec.latent_channels]  # the posterior's mode
        return self.codec.normalize(mean.float().to(pixels.device))

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = _cache_state("cache", self._cache) | {"frames_in": torch.tensor(self.frames_in)}
        if self._pending is not None:
            state["pending"] = self._pending.detach().cpu().contiguous()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = next(self.vae.parameters()).device
        self._cache = _cache_from_state("cache", self._size, state, device)
        self._pending = state["pending"].to(device) if "pending" in state else None
        self.frames_in = int(state["frames_in"])


class WanStreamDecoder:
    """Normalised latents ``(B, C, m, h, w)``, any m per call → pixels in [-1, 1], as one ``WanVAECodec.decode`` of
    everything pushed so far would give them (the first latent → 1 frame, every later one → 4)."""

    def __init__(self, codec):
        self.codec = codec
        self.vae = codec.vae
        self._size = self.vae._cached_conv_counts["decoder"]
        self.reset()

    def reset(self) -> None:
        self._cache: list = [None] * self._size
        self.latents_in = 0

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor:
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

        vae = self.vae
        weight = next(vae.parameters())
        z = self.codec.denormalize(latents.float()).to(weight.device, weight.dtype)
        x = vae.post_quant_conv(z)
        frames = []
        for i in range(x.shape[2]):
            first = self.latents_in == 0
            frames.append(vae.decoder(x[:, :, i : i + 1], feat_cache=self._cache, feat_idx=[0], first_chunk=first))
            self.latents_in += 1
        if not frames:
            b, _, _, h, w = latents.shape
            s = self.codec.spatial_factor
            return latents.new_zeros(b, 3, 0, h * s, w * s)
        out = torch.cat(frames, dim=2)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        return out.clamp(-1.0, 1.0).float().to(latents.device)

    def prime(self, latents: torch.Tensor) -> None:
        """Latents whose pixels the caller has already (a starting video): the causal cache must see them all."""
        self.push(latents)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _cache_state("cache", self._cache) | {"latents_in": torch.tensor(self.latents_in)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._cache = _cache_from_state("cache", self._size, state, next(self.vae.parameters()).device)
        self.latents_in = int(state["latents_in"])


class FramewiseStream:
    """A framewise codec's encode or decode as a stream: each frame on its own, no state but a count."""

    def __init__(self, call):
        self.call = call
        self.count = 0

    def reset(self) -> None:
        self.count = 0

    def push(self, x: torch.Tensor) -> torch.Tensor:
        self.count += x.shape[2]
        return self.call(x)

    def prime(self, x: torch.Tensor) -> None:
        """Input whose output the caller has already: nothing to carry, only counted."""
        self.count += x.shape[2]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"count": torch.tensor(self.count)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.count = int(state["count"])


class WindowedStreamEncoder:
    """Pixels ``(B, 3, n, H, W)``, any n per call → latents of a causal codec that cannot carry a cache (HunyuanVideo).

    The first call encodes its first ``1 + f·k`` frames as one video; after that, every ``f`` new frames make one
    latent, encoded as the last latents of a window ``[context ; new frames]`` whose context is the last
    ``1 + f·context`` frames already encoded (the window's first frame stands alone, as a causal VAE's first frame
    does, so the new frames fall on whole latents). Frames that do not yet fill ``f`` wait for the next call.
    """

    def __init__(self, encode, temporal_factor: int, context: int, latent_channels: int, spatial_factor: int):
        if context < 1:
            raise ValueError(f"a windowed stream needs a context of at least 1 latent frame, got {context}")
        self.encode = encode
        self.f = temporal_factor
        self.context = context
        self.latent_channels = latent_channels
        self.spatial_factor = spatial_factor
        self.reset()

    def reset(self) -> None:
        self._tail: torch.Tensor | None = None  # (B, 3, 1 + f·j, H, W), j ≤ context: the last frames encoded
        self._pending: torch.Tensor | None = None  # frames not yet making a whole latent

    @torch.no_grad()
    def push(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels if self._pending is None else torch.cat([self._pending, pixels], dim=2)
        if self._tail is None:
            take = 1 + (x.shape[2] - 1) // self.f * self.f if x.shape[2] else 0
            window, new_latents = x[:, :, :take], None
        else:
            take = x.shape[2] // self.f * self.f
            window, new_latents = torch.cat([self._tail.to(x.device), x[:, :, :take]], dim=2), take // self.f
        self._pending = x[:, :, take:] if take < x.shape[2] else None
        if take == 0:
            b, _, _, h, w = x.shape
            return x.new_zeros(b, self.latent_channels, 0, h // self.spatial_factor, w // self.spatial_factor)
        latents = self.encode(window)
        latents = latents if new_latents is None else latents[:, :, -new_latents:]
        kept = min(self.context, (window.shape[2] - 1) // self.f)
        self._tail = window[:, :, -(1 + self.f * kept) :].contiguous()
        return latents

    def state_dict(self) -> dict[str, torch.Tensor]:
        parts = {"tail": self._tail, "pending": self._pending}
        return {name: t.cpu().contiguous() for name, t in parts.items() if t is not None}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._tail, self._pending = state.get("tail"), state.get("pending")


class WindowedStreamDecoder:
    """Latents ``(B, C, m, h, w)``, any m per call → pixels of a causal codec that cannot carry a cache.

    The first call decodes its latents as one video (``1 + f·(m − 1)`` frames); every later call decodes the window
    ``[last ≤ context latents ; new latents]`` and keeps the new latents' ``f·m`` frames.
    """

    def __init__(self, decode, temporal_factor: int, context: int):
        if context < 1:
            raise ValueError(f"a windowed stream needs a context of at least 1 latent frame, got {context}")
        self.decode = decode
        self.f = temporal_factor
        self.context = context
        self.reset()

    def reset(self) -> None:
        self._tail: torch.Tensor | None = None  # (B, C, ≤ context, h, w): the last latents decoded

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor:
        m = latents.shape[2]
        if m == 0:
            b, _, _, h, w = latents.shape
            return latents.new_zeros(b, 3, 0, h, w)
        window = latents if self._tail is None else torch.cat([self._tail.to(latents.device), latents], dim=2)
        pixels = self.decode(window)
        if self._tail is not None:
            pixels = pixels[:, :, -self.f * m :]
        self.prime(window)
        return pixels

    def prime(self, latents: torch.Tensor) -> None:
        """Latents whose pixels the caller has already (a starting video): only the last ``context`` are kept as
        the next window's context, so a long starting history is never decoded."""
        if latents.shape[2]:
            self._tail = latents[:, :, -self.context :].contiguous()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self._tail is None else {"tail": self._tail.cpu().contiguous()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._tail = state.get("tail")


class LowResStream:
    """The LR branch's input as a stream: pixels → downsampled by ``rate`` (the first temporal group of
    ``1 + f·(rT − 1)`` frames, then groups of ``rT``) → the codec's stream encoder → LR latents, one per HR block."""

    def __init__(self, codec, rate: Rate):
        self.rate = rate
        self.first_group = 1 + codec.temporal_factor * (rate.t - 1)
        self.spatial_factor = codec.spatial_factor
        self.encoder = codec.stream_encoder()
        self.reset()

    def reset(self) -> None:
        self.encoder.reset()
        self._pending: torch.Tensor | None = None  # (B, 3, k, h, w) spatially downsampled frames not yet grouped
        self.groups = 0

    @torch.no_grad()
    def push(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, n, H, W)`` pixels in [-1, 1] → the LR latents they complete ``(B, C, m, h, w)``."""
        r = self.rate
        small = F.avg_pool3d(pixels, kernel_size=(1, r.h, r.w), stride=(1, r.h, r.w))
        x = small if self._pending is None else torch.cat([self._pending, small], dim=2)
        means, start = [], 0
        while True:
            size = self.first_group if self.groups == 0 else r.t
            if x.shape[2] - start < size:
                break
            means.append(x[:, :, start : start + size].mean(dim=2, keepdim=True))
            start += size
            self.groups += 1
        self._pending = x[:, :, start:] if start < x.shape[2] else None
        lowres = torch.cat(means, dim=2) if means else x[:, :, :0]
        # the codec encodes whole multiples of its factor (see history.base.crop_to_codec)
        return self.encoder.push(crop_to_factor(lowres, self.spatial_factor))

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        state["groups"] = torch.tensor(self.groups)
        if self._pending is not None:
            state["pending"] = self._pending.cpu().contiguous()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
        self.groups = int(state["groups"])
        self._pending = state.get("pending")
