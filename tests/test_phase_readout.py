"""history.phase_readout (issue 22): a per-cell low-rank map of what each target token reads from the context.

Checked: the cell index and the per-cell map against a per-token computation by hand; a fresh readout (zero ``up``)
leaves the model exactly as it was; a trained one changes only the targets, agrees between the masked forward and the
KV cache (with and without value RoPE), trains in the encoder's group, is saved in the encoder's file and reloaded;
families without Wan's processor refuse it by name.
"""

from __future__ import annotations

import pytest
import torch
from history_inputs import randomise_zero_layers, tiny_history_inputs
from safetensors.torch import load_file

from tinyhistory.assemble import HistoryDiT
from tinyhistory.geometry import Rate
from tinyhistory.history.phase import PhaseReadout
from tinyhistory.train.checkpoint import load_model
from tinyhistory.train.trainer import train


def test_each_target_gets_its_cells_map_and_no_other():
    readout = PhaseReadout(Rate.parse("4x4x2"), dim=6, layers=2, rank=3)
    torch.nn.init.normal_(readout.up)
    cells = readout.cells(torch.tensor([[5, 6]]), grid_h=8, grid_w=8)  # (1, 2·8·8)
    grid = cells.reshape(2, 8, 8)
    # frame 5 is the second frame of its 2-frame block, row 6 the third of its 4 rows, column 3 the fourth
    assert grid[0, 6, 3] == (1 * 4 + 2) * 4 + 3 and grid[1, 6, 3] == (0 * 4 + 2) * 4 + 3
    assert grid[0, 2, 7] == grid[0, 6, 3] and cells.max() < 32
    read = torch.randn(1, 128, 6)
    delta = readout.delta(1, read, cells)
    by_hand = torch.stack([read[0, n] @ readout.down[1, c] @ readout.up[1, c] for n, c in enumerate(cells[0])])
    torch.testing.assert_close(delta[0], by_hand)


def test_a_fresh_readout_leaves_the_model_as_it_was_and_a_trained_one_changes_only_the_targets(small_config):
    torch.manual_seed(0)
    plain = HistoryDiT.from_config(small_config("history.kv_cache=true")).eval()
    read = HistoryDiT.from_config(small_config("history.kv_cache=true", "history.phase_readout=4")).eval()
    missing, unexpected = read.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["producers.0.phase_readout.down", "producers.0.phase_readout.up"] and not unexpected
    layers = len(read.backbone.blocks)
    assert read.producers[0].phase_readout.up.shape == (layers, 2 * 4 * 4, 4, read.backbone.hidden_dim)
    randomise_zero_layers(plain)
    read.load_state_dict(plain.state_dict(), strict=False)
    hr, lr, x, t, text, positions = tiny_history_inputs()
    with torch.no_grad():
        context = plain.encode_history(hr, lr)
        torch.testing.assert_close(read(x, t, text, context, positions), plain(x, t, text, context, positions))
        randomise_zero_layers(read, scale=0.2)
        changed = read(x, t, text, context, positions)
        assert (changed - plain(x, t, text, context, positions)).abs().max() > 1e-3
        # the context's own tokens never read through the map: its keys and values are the plain model's
        plain_cache, read_cache = plain.build_context_cache(context, text), read.build_context_cache(context, text)
        for a, b in zip(plain_cache.values, read_cache.values, strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("value_rope", "readout"), [(True, 0), (False, 4), (True, 4)], ids=["value-rope", "readout", "both"]
)
def test_the_kv_cache_equals_the_masked_forward_with_value_rope_and_a_readout(small_config, value_rope, readout):
    torch.manual_seed(0)
    model = HistoryDiT.from_config(
        small_config(
            "backbone.num_layers=2", "history.kv_cache=true", f"history.phase_readout={readout}",
            f"history.value_rope={str(value_rope).lower()}",
        )
    ).eval()  # fmt: skip
    randomise_zero_layers(model, scale=0.2)
    hr, lr, x, t, text, positions = tiny_history_inputs()
    with torch.no_grad():
        context = model.encode_history(hr, lr)
        cache = model.build_context_cache(context, text)
        torch.testing.assert_close(
            model(x, t, text, None, positions, context_cache=cache),
            model(x, t, text, context, positions),
            atol=1e-5,
            rtol=1e-5,
        )


def test_the_readout_trains_with_the_encoder_and_is_saved_in_its_file(small_config, tmp_path):
    cfg = small_config("history.phase_readout=4", "train.steps=3")
    train(cfg, tmp_path / "run", progress=False)
    saved = load_file(tmp_path / "run" / "final" / "history_encoder.safetensors")
    up = saved["0.phase_readout.up"]
    assert up.abs().max() > 0  # zero-initialised: it moved, so the gradient reaches it through the processor
    model, loaded = load_model(tmp_path / "run" / "final")
    assert loaded.history.phase_readout == 4 and model.backbone._plan.phase_readout
    torch.testing.assert_close(model.producers[0].phase_readout.up.detach(), up)


def test_bad_ranks_and_other_families_are_refused_by_name(small_config):
    from tinyhistory.backbones.hunyuan import HunyuanBackbone

    with pytest.raises(ValueError, match="history.phase_readout is a rank"):
        small_config("history.phase_readout=-1")
    with pytest.raises(ValueError, match="history.phase_readout.*no_history"):
        small_config("history.phase_readout=4", 'history.method="no_history"')
    with pytest.raises(ValueError, match="history.phase_readout"):
        HunyuanBackbone.use_phase_readout(object.__new__(HunyuanBackbone), True)
    HunyuanBackbone.use_phase_readout(object.__new__(HunyuanBackbone), False)  # off is what it always does
