"""An exponential moving average (EMA) of the trained weights, kept beside them for sampling.

Diffusion trainers commonly sample from an EMA of the weights, which averages out the last steps' noise; issue 13
asks whether it helps here, measured. With ``train.ema_decay = d > 0`` the trainer keeps a float32 shadow of every
trained parameter (the LoRA or the whole DiT, the history encoder, the enhancers; the frozen base is never copied)
and after each optimizer step moves it towards the weights:

    shadow ← r·shadow + (1 − r)·weight,   r = min(d, (1 + n) / (10 + n)),  n = updates so far

(the warm-up ``r`` keeps the first steps' random start from dominating a long horizon; diffusers' ``EMAModel`` and
most trainers use it). ``OUT/last/ema.safetensors`` holds the shadow and ``n`` so a resumed run continues it exactly;
``OUT/final_ema/`` is a complete checkpoint folder with the shadow in place of the weights, which every loader
(eval, demo, generate) reads like ``final/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

EMA_FILE = "ema.safetensors"


class EMA:
    """The shadow of ``model``'s trainable parameters (``requires_grad`` when built), by parameter name."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1) to keep an EMA, got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    def rate(self) -> float:
        """The decay of the next update (warm-up: short memory while few updates have been averaged)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        r = self.rate()
        for name, param in self._params(model):
            self.shadow[name].lerp_(param.detach().float(), 1.0 - r)
        self.updates += 1

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Inside the block ``model`` holds the shadow weights; its own are put back after, bit for bit."""
        saved = {}
        with torch.no_grad():
            for name, param in self._params(model):
                saved[name] = param.detach().clone()
                param.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in self._params(model):
                    param.copy_(saved[name])

    def save(self, folder: str | Path) -> None:
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.shadow.items()}
        metadata = {"decay": repr(self.decay), "updates": str(self.updates)}
        save_file(state, str(Path(folder) / EMA_FILE), metadata=metadata)

    def load(self, folder: str | Path) -> None:
        """Take back what :meth:`save` wrote in ``folder``; the names must be this model's trainable parameters."""
        path = Path(folder) / EMA_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the run trains with train.ema_decay but its checkpoint has no EMA to resume"
            )
        with safe_open(str(path), "pt") as f:
            names = set(f.keys())
            if names != set(self.shadow):
                missing, extra = sorted(set(self.shadow) - names), sorted(names - set(self.shadow))
                raise ValueError(
                    f"{path} does not match the model's trained weights (missing {missing[:4]}, extra {extra[:4]})"
                )
            for name in names:
                self.shadow[name].copy_(f.get_tensor(name))
            self.updates = int(f.metadata()["updates"])

    def _params(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in model.named_parameters():
            if name in self.shadow:
                yield name, param
