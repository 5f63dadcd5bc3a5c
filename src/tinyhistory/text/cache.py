"""Prompt conditions through an optional on-disk cache (``text.cache``), so a run need not load the text encoder.

The cache is a safetensors file of ``(L, D)`` token states keyed by a hash of (encoder kind, max tokens, model
folder, prompt), with ``KEY.mask`` ``(L,)`` and ``KEY.pooled`` ``(P,)`` beside them for encoders that give them
(HunyuanVideo): a change of encoder, length or weights folder never returns a stale entry. Prompts missing from the
cache are encoded with the configured encoder and written back (atomically). With ``text.cache`` empty, prompts are
simply encoded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tinyhistory.config import TextConfig
from tinyhistory.registry import TEXT_ENCODERS
from tinyhistory.text.condition import PARTS, TextCondition


def prompt_key(kind: str, max_tokens: int, prompt: str, path: str = "") -> str:
    """The cache key of one prompt's embedding.

    ``path`` (the model folder, ``text.path``) enters the key as an absolute path, so two different UMT5 folders
    never share entries; with no path the key is the one earlier versions wrote, so existing MiniLM caches stay valid.
    """
    folder = f"{Path(path).resolve()}|" if path else ""
    return hashlib.sha256(f"{kind}|{max_tokens}|{folder}{prompt}".encode()).hexdigest()[:32]


def build_text_encoder(cfg: TextConfig, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """The encoder ``text.kind`` names, loaded from ``text.path`` (MiniLM: the packaged model when empty).

    The large encoders run on ``device``, by default in bfloat16 on a GPU (UMT5-XXL is 5.7B parameters, Llama-3-8B
    8B; the pipelines run them in bfloat16 too) and float32 on the CPU. MiniLM stays on the CPU.
    """
    if dtype is None:
        dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return TEXT_ENCODERS.get(cfg.kind).from_config(cfg, dtype, device)


class PromptEncoder:
    """Prompts → :class:`TextCondition` for a long run (generation): ``text.cache`` first, then one text encoder,
    built at the first prompt that needs it and kept, not rebuilt per prompt.

    ``offload``: the encoder waits on the CPU (bfloat16) and visits ``device`` only while it encodes, so a small GPU
    holds the DiT, not UMT5-XXL's 11 GB, between prompts.
    """

    def __init__(self, cfg: TextConfig, device: str | torch.device = "cpu", offload: bool = False):
        self.cfg = cfg
        self.device = torch.device(device)
        self.offload = offload and self.device.type != "cpu"
        self._encoder = None

    def encode_condition(self, prompts: list[str]) -> TextCondition:
        if self._encoder is None:
            home = "cpu" if self.offload else self.device
            self._encoder = build_text_encoder(self.cfg, home, torch.bfloat16 if self.offload else None)
        if not self.offload:
            return encode_condition(self._encoder, prompts)
        self._encoder.to(self.device)
        try:
            return encode_condition(self._encoder, prompts)
        finally:
            self._encoder.to("cpu")

    def __call__(self, prompts: list[str]) -> TextCondition:
        return encode_prompts(self.cfg, prompts, encoder=lambda: self)


def encode_condition(encoder, prompts: list[str]) -> TextCondition:
    """What ``encoder`` gives for ``prompts`` (``TextEncoder.encode_condition``: HunyuanVideo's states, mask and
    CLIP's pooled vector; UMT5's and MiniLM's token states alone)."""
    return encoder.encode_condition(prompts)


def empty_prompt(cfg: TextConfig, like: TextCondition | None = None) -> TextCondition:
    """The unconditional prompt: the encoder's encoding of ``""`` (``text.empty = "encoded"``), or all-zero states
    shaped like ``like`` (``"zeros"``, what the tiny preset's committed checkpoints were trained with)."""
    if cfg.empty == "zeros":
        return (like if like is not None else encode_prompts(cfg, [""])).zeros_like()
    return encode_prompts(cfg, [""])


def encode_prompts(cfg: TextConfig, prompts: list[str], encoder=None) -> TextCondition:
    """``prompts`` → a condition of ``(B, max_tokens, D)`` float32 states (with the encoder's mask and pooled
    vector, if it gives them), from ``cfg.cache`` where possible. ``encoder``: a callable giving the object that
    encodes the misses (default: build the configured encoder)."""
    encoder = encoder or (lambda: build_text_encoder(cfg))
    if not cfg.cache:
        return encode_condition(encoder(), prompts).to("cpu").map(_float_but_mask)
    path = Path(cfg.cache)
    cached: dict[str, torch.Tensor] = {}
    if path.is_file():
        try:
            cached = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"text.cache {path}: not a readable safetensors file ({exc})") from exc
    key = {p: prompt_key(cfg.kind, cfg.max_tokens, p, cfg.path) for p in prompts}
    missing = sorted(p for p in key if key[p] not in cached)
    if missing:
        fresh = encode_condition(encoder(), missing)
        cached.update(fresh.to_tensors(lambda i, part, _: _cached_name(key[missing[i]], part)))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(cached, str(tmp))
        tmp.replace(path)
    return TextCondition.cat([_cached_condition(cached, key[p]) for p in prompts])


def _cached_name(key: str, part: str) -> str:
    """The prompt cache's layout: the states under the prompt's key, the mask and pooled vector at ``KEY.mask``,
    ``KEY.pooled``."""
    return key if part == "states" else f"{key}.{part}"


def _cached_condition(cached: dict[str, torch.Tensor], key: str) -> TextCondition:
    """One cached prompt's condition ``(1, ...)``."""
    names = {part: _cached_name(key, part) for part in PARTS}
    return TextCondition.from_tensors(cached.__getitem__, {part: n for part, n in names.items() if n in cached})


def _float_but_mask(x: torch.Tensor) -> torch.Tensor:
    """States and pooled vectors in float32; a mask keeps its integer or bool dtype."""
    return x.float() if x.is_floating_point() else x
