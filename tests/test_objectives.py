"""Stage-I frame-query objective pieces (SPEC §4, §9)."""

import pytest
import torch

from tinyhistory.geometry import Rate
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.objectives import make_frame_query_batch, sample_omega


def _batch(seed=0, window=3, num_queries=None):
    g = torch.Generator().manual_seed(seed)
    hr = torch.randn(4, 48, 8, 16, 16, generator=g)
    lr = torch.randn(4, 48, 4, 4, 4, generator=g)
    batch = make_frame_query_batch(hr, [lr], [Rate(4, 4, 2)], window, 0.2, 1.0, g, num_queries=num_queries)
    return hr, lr, batch


def test_omega_sizes_are_uniform_over_the_window_and_indices_distinct():
    g = torch.Generator().manual_seed(0)
    sizes = [sample_omega(2, 32, 3, g).shape[1] for _ in range(600)]
    assert set(sizes) == {1, 2, 3}
    assert all(abs(sizes.count(k) / 600 - 1 / 3) < 0.07 for k in (1, 2, 3))
    omega = sample_omega(64, 32, 3, g, k=3)
    assert torch.all(omega[:, 1:] > omega[:, :-1])  # sorted and without repeats
    assert omega.min() >= 0 and omega.max() <= 31
    assert len(set(omega[:, 0].tolist())) > 10  # drawn from anywhere in the history, not a fixed position
    with pytest.raises(ValueError, match="cannot query 9 frames"):
        sample_omega(1, 8, 3, g, k=9)


def test_omega_frames_stay_clean_and_the_rest_is_noised():
    hr, _, b = _batch(num_queries=2)
    for i in range(hr.shape[0]):
        for f in range(hr.shape[2]):
            if f in b.omega[i].tolist():
                assert torch.equal(b.history[i, :, f], hr[i, :, f])
                assert b.mask_levels[i, f] == 0
            else:
                assert 0.2 <= b.mask_levels[i, f] <= 1.0
                assert not torch.allclose(b.history[i, :, f], hr[i, :, f])


def test_targets_are_clean_copies_at_their_original_positions():
    hr, _, b = _batch(num_queries=3)
    assert b.targets.shape == (4, 48, 3, 16, 16)
    for i in range(4):
        for j, f in enumerate(b.omega[i].tolist()):
            assert torch.equal(b.targets[i, :, j], hr[i, :, f])
    assert 0 < b.t.min() and b.t.max() < 1
    expected = (1 - b.t.view(-1, 1, 1, 1, 1)) * b.targets + b.t.view(-1, 1, 1, 1, 1) * b.noise
    torch.testing.assert_close(b.noisy_targets, expected)


def test_lr_frames_holding_a_query_stay_clean():
    _, lr, b = _batch(num_queries=1)
    masked = b.history_lr[0]
    for i in range(4):
        lr_frame = b.omega[i, 0].item() // 2
        assert torch.equal(masked[i, :, lr_frame], lr[i, :, lr_frame])
        others = [f for f in range(4) if f != lr_frame]
        assert not torch.allclose(masked[i, :, others], lr[i, :, others])


def test_frame_query_loss_trains_the_encoder(small_config):
    from tinyhistory.assemble import HistoryDiT
    from tinyhistory.train.objectives import frame_query_loss

    cfg = small_config()
    model = HistoryDiT.from_config(cfg)
    g = torch.Generator().manual_seed(0)
    hr = torch.randn(2, 48, 8, 16, 16, generator=g)
    lr = torch.randn(2, 48, 4, 4, 4, generator=g)
    batch = make_frame_query_batch(hr, [lr], model.rates, 3, 0.2, 1.0, g)
    loss = frame_query_loss(model, batch, TextCondition(torch.randn(2, 7, 384, generator=g)))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.producers[0].hr.proj.weight.grad.abs().sum() > 0


def test_text_dropout_swaps_whole_prompts_for_the_empty_one():
    from tinyhistory.train.objectives import drop_text

    g = torch.Generator().manual_seed(0)
    text = TextCondition(torch.randn(64, 5, 8, generator=g), pooled=torch.randn(64, 3, generator=g))
    empty = TextCondition(torch.full((1, 5, 8), 7.0), pooled=torch.full((1, 3), -1.0))
    dropped = drop_text(text, empty, 0.5, torch.Generator().manual_seed(1))
    swapped = (dropped.states == 7.0).all(dim=(1, 2))
    kept = (dropped.states == text.states).all(dim=(1, 2))
    assert torch.equal(swapped | kept, torch.ones(64, dtype=torch.bool)) and 16 < swapped.sum() < 48
    assert torch.equal((dropped.pooled == -1.0).all(dim=1), swapped)  # the pooled vector goes with its prompt
    assert torch.equal(drop_text(text, empty, 0.0, g).states, text.states)
