"""Rectified flow: timestep sampling, noising, velocity target, an Euler sampler, and the sampler seam generation
integrates with (:class:`NoiseSchedule`, implemented by :class:`FlowMatchingSchedule`).

Convention (SPEC §2): ``x_t = (1 - t) x0 + t ε`` with ``t ∈ (0, 1]``; the network predicts the velocity
``ε - x0``. Wan-style DiTs embed timesteps on a 0–1000 scale, so ``t`` is multiplied by ``TIMESTEP_SCALE`` at the
backbone boundary only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

TIMESTEP_SCALE = 1000.0


def shift_timesteps(u: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 / Wan time shift: ``t = shift·u / (1 + (shift − 1)·u)``; ``shift > 1`` moves mass to high noise."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def sample_logit_normal(
    shape: tuple[int, ...], shift: float = 1.0, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Shifted logit-normal timesteps in (0, 1): ``u = sigmoid(N(0, 1))``, then the time shift."""
    u = torch.sigmoid(torch.randn(shape, generator=generator, device=device))
    return shift_timesteps(u, shift)


def sample_mask_levels(
    shape: tuple[int, ...], low: float = 0.2, shift: float = 1.0, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Noise levels ``L(low, 1)``: ``s = low + (1 − low)·u`` with u logit-normal.

    Masked history frames use ``low = 0.2``; training timesteps use ``low = train.min_t`` (0, or Wan 2.2 A14B's
    high-noise boundary 0.875). Rescaling (rather than truncating) keeps the distribution's shape (SPEC §9); with
    ``low = 0`` it is exactly :func:`sample_logit_normal`.
    """
    return low + (1.0 - low) * sample_logit_normal(shape, shift, generator, device)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(1 − t)·x0 + t·ε`` with one level per sample: ``t`` is ``(B,)``."""
    t = t.reshape(-1, *([1] * (x0.ndim - 1)))
    return (1.0 - t) * x0 + t * noise


def add_noise_per_frame(x0: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Noise each frame of a ``(B, C, T, H, W)`` video at its own level; ``levels`` is ``(B, T)``."""
    s = levels[:, None, :, None, None]
    return (1.0 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def estimate_x0(x_t: torch.Tensor, velocity: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One-step clean estimate ``x0 = x_t − t·v``."""
    while t.ndim < x_t.ndim:
        t = t.unsqueeze(-1)
    return x_t - t * velocity


def sampling_schedule(num_steps: int, shift: float = 1.0) -> torch.Tensor:
    """Decreasing times ``1 → 0`` (``num_steps + 1`` values), shifted like the training distribution."""
    return shift_timesteps(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64), shift).float()


@torch.no_grad()
def euler_sample(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    num_steps: int,
    shift: float = 1.0,
) -> torch.Tensor:
    """Integrate ``dx/dt = v`` from ``t = 1`` (pure noise) to ``t = 0`` with Euler steps.

    ``velocity_fn(x_t, t)`` receives ``t`` as a ``(B,)`` tensor in (0, 1].
    """
    times = sampling_schedule(num_steps, shift).to(noise.device)
    x = noise
    for i in range(num_steps):
        t = times[i].expand(noise.shape[0])
        x = x + (times[i + 1] - times[i]) * velocity_fn(x, t)
    return x


# -- the sampler seam ----------------------------------------------------------------------------------------------
class NoiseSchedule(Protocol):
    """What generation integrates a segment with: the steps, the time the DiT is given at each, and one solver step.

    Why a seam: the session's loop (guidance, the history, a second expert, a clean first frame) is the same for any
    noise schedule; only these three differ. Rectified flow (:class:`FlowMatchingSchedule`) is the one today; a
    family with another schedule (EDM's sigmas and preconditioning) would bring its own.
    """

    timesteps: torch.Tensor  # (steps,) on the scheduler's own scale, noisiest first

    def model_time(self, timestep: torch.Tensor) -> torch.Tensor:
        """The time the DiT is given at ``timestep`` (a 0-d tensor)."""
        ...

    def step(self, prediction: torch.Tensor, timestep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x`` one step on from ``timestep`` with the DiT's ``prediction``."""
        ...


FLOW_SAMPLERS = ("euler", "unipc")


def flow_scheduler(sampler: str, shift: float, pipeline_config: dict | None = None, fixed_shift: bool = False):
    """A diffusers flow-matching scheduler: ``sampler`` "euler" (``FlowMatchEulerDiscreteScheduler``) or "unipc"
    (``UniPCMultistepScheduler`` with flow sigmas), time shift ``shift``.

    ``pipeline_config``: the model folder's own config of this sampler (what the family's pipeline builds): the
    scheduler is built from it (solver order, sigmas, ...) with ``shift`` in place of its own; ``fixed_shift`` (a
    shift the user gave) also turns off shifting by the token count. Without it, a default one for flow matching."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is not one of {', '.join(FLOW_SAMPLERS)}")
    if sampler == "unipc":
        if pipeline_config is not None:
            return UniPCMultistepScheduler.from_config(pipeline_config, flow_shift=shift)
        return UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift, num_train_timesteps=1000
        )
    if pipeline_config is not None:
        fixed = {"use_dynamic_shifting": False} if fixed_shift else {}
        return FlowMatchEulerDiscreteScheduler.from_config(pipeline_config, shift=shift, **fixed)
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


class FlowMatchingSchedule:
    """Rectified flow through a diffusers flow-matching scheduler, as the pipelines run it: ``steps`` timesteps
    (shifted by ``mu`` where the family shifts by the token count: sigmas ``1 … 1/steps``, as ``LTXPipeline`` and
    ``FluxPipeline`` set them), the DiT given ``t = timestep / 1000``, the scheduler's own step."""

    def __init__(self, scheduler, steps: int, device: torch.device | str, mu: float | None = None):
        if mu is None:
            scheduler.set_timesteps(steps, device=device)
        else:
            scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu, device=device)
        self.scheduler = scheduler
        self.timesteps = scheduler.timesteps

    def model_time(self, timestep: torch.Tensor) -> torch.Tensor:
        """``timestep / 1000`` in float64, so that ``t · 1000`` in the DiT gives back the scheduler's timestep."""
        return timestep.to(torch.float64) / TIMESTEP_SCALE

    def step(self, prediction: torch.Tensor, timestep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.scheduler.step(prediction, timestep, x, return_dict=False)[0]
