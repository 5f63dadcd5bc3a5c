import torch

from tinyhistory.flow import (
    add_noise,
    add_noise_per_frame,
    estimate_x0,
    euler_sample,
    sample_logit_normal,
    sample_mask_levels,
    shift_timesteps,
    velocity_target,
)


def test_logit_normal_range_and_median():
    g = torch.Generator().manual_seed(0)
    t = sample_logit_normal((200_000,), generator=g)
    assert 0 < t.min() and t.max() < 1
    assert abs(t.median().item() - 0.5) < 0.01  # sigmoid(N(0,1)) is symmetric around 1/2
    shifted = sample_logit_normal((200_000,), shift=3.0, generator=torch.Generator().manual_seed(0))
    assert abs(shifted.median().item() - 0.75) < 0.01  # shift·u/(1+(shift−1)u) at u = 1/2 is 3/4


def test_shift_is_monotone_and_fixes_endpoints():
    u = torch.linspace(0, 1, 11)
    t = shift_timesteps(u, 5.0)
    assert t[0] == 0 and t[-1] == 1 and torch.all(t[1:] > t[:-1])


def test_mask_levels_in_range():
    s = sample_mask_levels((100_000,), low=0.2, generator=torch.Generator().manual_seed(1))
    assert s.min() >= 0.2 and s.max() <= 1.0
    assert s.min() < 0.25 and s.max() > 0.95


def test_noising_and_velocity_are_consistent():
    x0, eps = torch.randn(2, 3, 4, 5, 5), torch.randn(2, 3, 4, 5, 5)
    t = torch.tensor([0.25, 0.9])
    xt = add_noise(x0, eps, t)
    torch.testing.assert_close(xt[1], 0.1 * x0[1] + 0.9 * eps[1])
    torch.testing.assert_close(estimate_x0(xt, velocity_target(x0, eps), t), x0)
    levels = torch.tensor([[0.0, 0.5, 1.0, 0.2]] * 2)
    per_frame = add_noise_per_frame(x0, eps, levels)
    torch.testing.assert_close(per_frame[:, :, 0], x0[:, :, 0])
    torch.testing.assert_close(per_frame[:, :, 2], eps[:, :, 2])


def test_euler_recovers_x0_for_the_exact_velocity():
    """Along a straight flow the true velocity is constant, so Euler is exact for any step count."""
    x0, eps = torch.randn(1, 2, 1, 4, 4), torch.randn(1, 2, 1, 4, 4)
    out = euler_sample(lambda x, t: eps - x0, eps, num_steps=3, shift=2.0)
    torch.testing.assert_close(out, x0, atol=1e-6, rtol=0)
