"""Reading a compressed history (issue 22): the block phase and value RoPE.

Both give a target token what a RoPE-only DiT lacks: where it sits inside the history block that a context token
stands for. The block phase adds a learned vector by position modulo the block; value RoPE rotates the context's
values by their position and the output back by the query's.
"""

from __future__ import annotations

import pytest
import torch
from history_inputs import randomise_zero_layers, tiny_history_inputs
from safetensors.torch import load_file

from tinyhistory.assemble import HistoryDiT
from tinyhistory.backbones import ContextTokens
from tinyhistory.config import load_config
from tinyhistory.geometry import Rate
from tinyhistory.history.phase import BlockPhase
from tinyhistory.train.checkpoint import load_model
from tinyhistory.train.trainer import train

# -- block phase ---------------------------------------------------------------------------------------------------


def test_the_block_phase_picks_each_targets_cell_of_its_block():
    phase = BlockPhase(Rate.parse("4x4x2"), dim=3)
    with torch.no_grad():
        phase.table.copy_(torch.arange(2 * 4 * 4 * 3, dtype=torch.float32).reshape(2, 4, 4, 3))
    offsets = phase(torch.tensor([[5, 6]]), grid_h=8, grid_w=8)  # (1, 2·8·8, 3)
    assert offsets.shape == (1, 128, 3)
    grid = offsets.reshape(1, 2, 8, 8, 3)
    # frame 5 is the second frame of its 2-frame block, row 6 the third row of its 4-row block, column 3 the fourth
    torch.testing.assert_close(grid[0, 0, 6, 3], phase.table[1, 2, 3])
    torch.testing.assert_close(grid[0, 1, 6, 3], phase.table[0, 2, 3])  # frame 6 starts the next block
    torch.testing.assert_close(grid[0, 0, 2, 7], grid[0, 0, 6, 3])  # the same cell in another block: the same vector
    # a history that starts at frame 1 shifts the blocks by one frame
    shifted = phase(torch.tensor([[5, 6]]), 8, 8, frame_offset=1).reshape(1, 2, 8, 8, 3)
    torch.testing.assert_close(shifted[0, 0, 6, 3], phase.table[0, 2, 3])


def test_a_zero_table_leaves_the_model_as_it_was_and_a_trained_one_offsets_only_the_targets(small_config):
    torch.manual_seed(0)
    plain = HistoryDiT.from_config(small_config()).eval()
    phased = HistoryDiT.from_config(small_config("history.block_phase=true")).eval()
    missing, unexpected = phased.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["producers.0.block_phase.table"] and not unexpected
    randomise_zero_layers(plain)
    phased.load_state_dict(plain.state_dict(), strict=False)
    hr, lr, x, t, text, positions = tiny_history_inputs()
    with torch.no_grad():
        context = plain.encode_history(hr, lr)
        torch.testing.assert_close(phased(x, t, text, context, positions), plain(x, t, text, context, positions))
        phased.producers[0].block_phase.table.normal_(0, 0.5)
        with_phase = phased(x, t, text, context, positions)
        table = phased.producers[0].block_phase.table
        assert table.shape == (2, 4, 4, phased.backbone.hidden_dim)
        manual = phased.producers[0].block_phase(positions, 8, 8)
        by_hand = phased.backbone(x, t, text, context, positions, target_offsets=manual)
    torch.testing.assert_close(with_phase, by_hand)
    assert (with_phase - plain(x, t, text, context, positions)).abs().max() > 1e-3
    # the context's own tokens are untouched: the history encodes the same with or without the table
    torch.testing.assert_close(phased.encode_history(hr, lr).tokens, context.tokens)


def test_the_block_phase_trains_at_its_own_rate_and_is_saved_with_the_encoder(small_config, tmp_path):
    cfg = small_config("history.block_phase=true", "train.steps=3", "train.block_phase_learning_rate=0.05")
    train(cfg, tmp_path / "run", progress=False)
    saved = load_file(tmp_path / "run" / "final" / "history_encoder.safetensors")
    table = saved["0.block_phase.table"]
    # Adam moves each entry by about the learning rate per step: at 0.05 (after a 2-step warm-up) the table is well
    # away from zero; at the encoder's 3e-4 it would still be below 1e-3.
    assert table.shape == (2, 4, 4, cfg.backbone.hidden_dim) and table.abs().max() > 0.02
    model, _ = load_model(tmp_path / "run" / "final")
    torch.testing.assert_close(model.producers[0].block_phase.table.detach(), table)


def test_block_phase_and_value_rope_need_a_history(small_config):
    for option in ("block_phase", "value_rope"):
        with pytest.raises(ValueError, match=f"history.{option}.*no_history"):
            small_config(f"history.{option}=true", 'history.method="no_history"')
    with pytest.raises(ValueError, match="block_phase_learning_rate"):
        small_config("train.block_phase_learning_rate=-1")


# -- value RoPE ----------------------------------------------------------------------------------------------------


@pytest.fixture
def rope_models(small_config):
    """The same weights without and with value RoPE (two blocks, so context-to-context reading reaches the targets)."""
    torch.manual_seed(0)
    plain = HistoryDiT.from_config(small_config("backbone.num_layers=2")).eval()
    randomise_zero_layers(plain)
    rope = HistoryDiT.from_config(small_config("backbone.num_layers=2", "history.value_rope=true")).eval()
    rope.load_state_dict(plain.state_dict())
    return plain, rope


def test_value_rope_without_context_is_the_stock_forward(rope_models):
    plain, rope = rope_models
    _, _, x, t, text, positions = tiny_history_inputs()
    with torch.no_grad():
        torch.testing.assert_close(rope(x, t, text, None, positions), plain(x, t, text, None, positions))


def test_value_rope_attention_equals_the_relative_rotation_formula(rope_models):
    """One block's self-attention against ``out_i = Σ_ctx a_ij R(p_j − p_i) v_j + Σ_tgt a_ij v_j`` computed pair by
    pair, with each relative rotation built from its own position difference."""
    _, rope = rope_models
    backbone = rope.backbone
    attn = backbone.blocks[0].attn1
    g = torch.Generator().manual_seed(3)
    k, n, dim = 5, 4, backbone.hidden_dim
    hidden = torch.randn(1, k + n, dim, generator=g)
    positions = torch.cat(
        [torch.tensor([[[0.5, 1.5, 1.5], [0.5, 1.5, 5.5], [2.5, 5.5, 1.5], [2.5, 5.5, 5.5], [4.5, 1.5, 1.5]]]),
         torch.tensor([[[1.0, 0.0, 0.0], [1.0, 3.0, 2.0], [3.0, 6.0, 7.0], [5.0, 2.0, 1.0]]])],
        dim=1,
    )  # fmt: skip
    backbone._plan.mode, backbone._plan.context_tokens = "masked", k
    with torch.no_grad():
        out = attn.processor(attn, hidden, rotary_emb=backbone.rotary(positions))

        heads = attn.heads
        q = attn.norm_q(attn.to_q(hidden)).unflatten(2, (heads, -1))
        key = attn.norm_k(attn.to_k(hidden)).unflatten(2, (heads, -1))
        v = attn.to_v(hidden).unflatten(2, (heads, -1))  # (1, S, H, Dh)
        cos, sin = backbone.rotary(positions)
        rotate = _rotate_pairs
        q, key = rotate(q, cos, sin), rotate(key, cos, sin)
        weights = torch.softmax(torch.einsum("bihd,bjhd->bhij", q, key) / q.shape[-1] ** 0.5, dim=-1)
        expected = torch.zeros_like(v)
        for i in range(k + n):
            for j in range(k + n):
                vj = v[:, j]
                if j < k:  # a context value, rotated by p_j − p_i
                    dcos, dsin = backbone.rotary((positions[:, j] - positions[:, i])[:, None])
                    vj = rotate(vj[:, None], dcos, dsin)[:, 0]
                expected[:, i] += weights[:, :, i, j, None] * vj
        expected = attn.to_out[0](expected.flatten(2, 3))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on interleaved pairs, written out independently of the adapter's helper."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 0::2]
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)


def test_value_rope_depends_on_relative_positions_only_and_changes_the_readout(rope_models):
    plain, rope = rope_models
    hr, lr, x, t, text, positions = tiny_history_inputs()
    with torch.no_grad():
        context = rope.encode_history(hr, lr)
        out = rope(x, t, text, context, positions)
        moved = ContextTokens(context.tokens, context.positions + torch.tensor([6.0, 2.0, 3.0]))
        shifted_targets = rope.backbone(x, t, text, moved, positions + 6, target_offsets=None)
        # shifting the targets in h and w needs the grid shifted too: only time can be moved on the targets here
        moved_t = ContextTokens(context.tokens, context.positions + torch.tensor([6.0, 0.0, 0.0]))
        torch.testing.assert_close(rope(x, t, text, moved_t, positions + 6), out, atol=1e-5, rtol=1e-4)
        assert (shifted_targets - out).abs().max() > 1e-4  # a context moved against the targets reads differently
        assert (plain(x, t, text, context, positions) - out).abs().max() > 1e-4


# (value RoPE with the KV cache: tests/test_phase_readout.py, beside the readout)


def test_a_value_rope_checkpoint_loads_with_value_rope(small_config, tmp_path):
    cfg = small_config("history.value_rope=true", "train.steps=2")
    train(cfg, tmp_path / "run", progress=False)
    model, loaded_cfg = load_model(tmp_path / "run" / "final")
    assert loaded_cfg.history.value_rope and model.backbone._plan.value_rope


def test_hunyuan_refuses_value_rope_by_name():
    from tinyhistory.backbones.hunyuan import HunyuanBackbone

    with pytest.raises(ValueError, match="history.value_rope"):
        HunyuanBackbone.use_value_rope(object.__new__(HunyuanBackbone))


def test_the_miniature_preset_validates_with_both_options():
    cfg = load_config("miniature", overrides=["history.block_phase=true", "history.value_rope=true"])
    assert cfg.history.block_phase and cfg.history.value_rope


def test_a_rate_curriculum_keeps_the_dit_and_shared_encoders_and_starts_new_rates_fresh(small_config, tmp_path):
    from tinyhistory.train.trainer import prepare_model

    train(small_config('history.rates=["2x2x2"]', "train.steps=2"), tmp_path / "coarse2", progress=False)
    trained, _ = load_model(tmp_path / "coarse2" / "final")

    # Without train.switch_rates the checkpoint's rates win (a plain continuation).
    kept, kept_cfg = prepare_model(small_config('history.rates=["4x4x2"]'), tmp_path / "coarse2" / "final")
    assert kept_cfg.history.rates == ["2x2x2"] and [str(p.rate) for p in kept.producers] == ["2x2x2"]

    switched, cfg = prepare_model(
        small_config('history.rates=["4x4x2", "2x2x2"]', "train.switch_rates=true"), tmp_path / "coarse2" / "final"
    )
    assert cfg.history.rates == ["4x4x2", "2x2x2"]
    assert [str(p.rate) for p in switched.producers] == ["4x4x2", "2x2x2"]
    # the shared rate's encoder and the whole DiT are the checkpoint's, weight for weight
    for name, value in trained.producers[0].state_dict().items():
        torch.testing.assert_close(switched.producers[1].state_dict()[name], value, rtol=0, atol=0)
    for name, value in trained.backbone.state_dict().items():
        torch.testing.assert_close(switched.backbone.state_dict()[name], value, rtol=0, atol=0)
    # the new rate's encoder is a fresh one: its HR branch ends in a zero projection, so it adds nothing yet
    fresh_hr = [v for k, v in switched.producers[0].state_dict().items() if k.startswith("hr.") and "proj" in k]
    assert fresh_hr and all(v.abs().max() == 0 for v in fresh_hr)
