"""Metrics whose weights cannot be had offline: they load weights the user provides, and say so when missing.

Nothing here downloads anything or substitutes another model: without the weights a metric reports
``{"missing": "<what to pass>"}``.

* ``raft``: VBench's dynamic degree on RAFT optical flow (torchvision's RAFT architecture; pass a state dict saved
  from ``torchvision.models.optical_flow.raft_large`` or ``raft_small`` weights, loaded with ``weights_only=True``);
  the thresholds are those of :mod:`tinyhistory.eval.dynamics`.
* ``aesthetic``: the LAION improved aesthetic predictor: CLIP ViT-L/14 image embeddings (a local transformers
  ``CLIPModel`` folder) through its MLP head (``sac+logos+ava1-l14-linearMSE.pth``), mean score over frames.
* ``musiq`` and ``viclip`` are not supported in this version (their architectures are not implemented here); asking
  for them is an error that says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinyhistory.eval.dynamics import degree_from_scores

OPTIONAL_METRICS = {
    "raft": "--raft-weights PATH (a torchvision RAFT state dict, e.g. raft_large_C_T_SKHT_V2-ff5fadd5.pth)",
    "aesthetic": "--aesthetic-clip DIR (a local CLIP ViT-L/14 transformers folder) and --aesthetic-head PATH "
    "(sac+logos+ava1-l14-linearMSE.pth)",
}
UNSUPPORTED = {"musiq": "MUSIQ", "viclip": "ViCLIP"}

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def _state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    state = torch.load(_existing(path, what), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: {what} must be a state dict of tensors")
    return state


def load_raft(weights: str | Path) -> nn.Module:
    """torchvision RAFT (large or small, recognised from the state dict) with the user's weights."""
    try:
        from torchvision.models.optical_flow import raft_large, raft_small
    except ImportError as exc:
        raise RuntimeError("the RAFT metric needs torchvision (pip install torchvision)") from exc
    state = _state_dict(weights, "RAFT weights")
    errors = []
    for build in (raft_large, raft_small):
        model = build(weights=None, progress=False)
        try:
            model.load_state_dict(state)
            return model.eval()
        except RuntimeError as exc:
            errors.append(f"{build.__name__}: {str(exc).splitlines()[0]}")
    raise ValueError(f"{weights}: not RAFT weights for torchvision's raft_large or raft_small ({'; '.join(errors)})")


@torch.no_grad()
def raft_dynamic_degree(frames: np.ndarray, weights: str | Path, iterations: int = 12) -> dict:
    """VBench's dynamic degree on RAFT flow for ``(T, H, W, 3)`` uint8 frames (H and W multiples of 8)."""
    if frames.shape[1] % 8 or frames.shape[2] % 8:
        raise ValueError(f"RAFT needs frame sizes divisible by 8, got {frames.shape[1]}x{frames.shape[2]}")
    if len(frames) < 2:
        raise ValueError(f"dynamic degree needs at least 2 frames, got {len(frames)}")
    model = load_raft(weights)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    scores = []
    for a, b in zip(x[:-1], x[1:], strict=True):
        flow = model(a[None], b[None], num_flow_updates=iterations)[-1][0]  # (2, H, W)
        magnitude = flow.norm(dim=0).flatten()
        scores.append(float(magnitude.topk(max(1, magnitude.numel() // 20)).values.mean()))
    return degree_from_scores(np.array(scores), frames.shape[1:3])


class AestheticHead(nn.Module):
    """The LAION improved-aesthetic-predictor MLP (its ``layers.*`` state-dict keys)."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


@torch.no_grad()
def laion_aesthetic(frames: np.ndarray, clip_folder: str | Path, head: str | Path) -> dict:
    """Mean LAION aesthetic score of ``(T, H, W, 3)`` uint8 frames (CLIP embeddings L2-normalised, as trained)."""
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(_existing(clip_folder, "CLIP folder"), local_files_only=True).eval()
    mlp = AestheticHead(clip.config.projection_dim)
    mlp.load_state_dict(_state_dict(head, "aesthetic head weights"))
    mlp.eval()
    size = clip.config.vision_config.image_size
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    short = min(x.shape[2:])
    x = F.interpolate(x, scale_factor=size / short, mode="bicubic", align_corners=False, antialias=True)
    top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    features = clip.get_image_features(pixel_values=x)
    if not isinstance(features, torch.Tensor):  # newer transformers return an output object
        features = features.pooler_output
    scores = mlp(F.normalize(features, dim=-1)).squeeze(-1)
    return {"mean": float(scores.mean()), "per_frame": [round(float(s), 4) for s in scores]}


def optional_report(
    frames: np.ndarray,
    raft_weights: str | Path | None = None,
    aesthetic_clip: str | Path | None = None,
    aesthetic_head: str | Path | None = None,
) -> dict:
    """Every optional metric: its value, or what to pass to have it."""
    report: dict = {}
    if raft_weights:
        report["raft_dynamic_degree"] = raft_dynamic_degree(frames, raft_weights)
    else:
        report["raft_dynamic_degree"] = {"missing": OPTIONAL_METRICS["raft"]}
    if aesthetic_clip and aesthetic_head:
        report["laion_aesthetic"] = laion_aesthetic(frames, aesthetic_clip, aesthetic_head)
    else:
        report["laion_aesthetic"] = {"missing": OPTIONAL_METRICS["aesthetic"]}
    for key, name in UNSUPPORTED.items():
        report[key] = {"missing": f"{name} is not supported in this version (no implementation of its network)"}
    return report
