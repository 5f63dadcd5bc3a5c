"""history.phase_readout (issue 22): a per-cell low-rank map of what each target token reads from the context.

Checked: the cell index and the per-cell map against a per-token computation by hand; a fresh readout (zero ``up``)
leaves the model exactly as it was; a trained one changes only the targets, maps only what the targets read from its
own producer's tokens (not a sliding window's, checked against the attention computed by hand), agrees between the
masked forward and the KV cache (with and without value RoPE and a window), trains in the encoder's group, is saved in
the encoder's file and reloaded; families without Wan's processor refuse it by name.
"""

from __future__ import annotations

import pytest
import torch
from history_inputs import randomise_zero_layers, tiny_history_inputs
from safetensors.torch import load_file

from tinyhistory.assemble import HistoryDiT
from tinyhistory.backbones.base import NO_PRODUCER, ContextTokens
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
    ("rates", "window"),
    [(["4x4x2"], 2), (["4x4x2", "2x2x2"], 0)],
    ids=["encoder-and-window", "two-rates"],
)
def test_each_readout_maps_its_own_producers_part_of_the_read_only(small_config, rates, window):
    """Block 0's self-attention against softmax attention by hand: a target's output is everything it reads, plus
    each readout's map of what it reads from its own producer's tokens — not from a sliding window's, nor from the
    other rate's (mapping the whole context part, as the first readout did, gives another output)."""
    from diffusers.models.transformers.transformer_wan import _get_qkv_projections

    from tinyhistory.backbones.wan import _rotate

    torch.manual_seed(0)
    rates_set = "history.rates=[" + ", ".join(f'"{r}"' for r in rates) + "]"
    sets = ("backbone.num_layers=1", "history.phase_readout=4", f"history.sliding_window={window}", rates_set)
    model = HistoryDiT.from_config(small_config(*sets)).eval()
    randomise_zero_layers(model, scale=0.2)
    hr, lr, x, t, text, positions = tiny_history_inputs()
    lr = lr + [torch.randn(1, 48, 4, 8, 8, generator=torch.Generator().manual_seed(2))][: len(rates) - 1]  # 2x2x2
    attn = model.backbone.blocks[0].attn1
    seen = {}
    hook = attn.register_forward_hook(lambda _, args, out: seen.update(hidden=args[0], rotary=args[3], out=out))
    with torch.no_grad():
        context = model.history_context(hr, lr)
        assert int((context.sources == NO_PRODUCER).sum()) == window * 8 * 8
        model(x, t, text, context, positions)
        hook.remove()
        query, key, value = _get_qkv_projections(attn, seen["hidden"], None)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query, key, value = (v.unflatten(2, (attn.heads, -1)) for v in (query, key, value))  # (1, S, H, Dh)
        query, key = _rotate(query, *seen["rotary"]), _rotate(key, *seen["rotary"])
        weights = torch.einsum("bihd,bjhd->bhij", query, key).mul(query.shape[-1] ** -0.5).softmax(-1)
        k = context.num_tokens
        keys = torch.zeros(weights.shape[-1], dtype=torch.bool)

        def read(which: torch.Tensor) -> torch.Tensor:  # (1, N, H·Dh): what the targets read from keys ``which``
            return torch.einsum("bhij,bjhd->bihd", weights[:, :, k:] * which, value).flatten(2)

        everything, from_context = read(~keys), read(torch.cat([~keys[:k], keys[k:]]))
        readouts = model.target_readouts(x, positions)
        assert [source for _, _, source in readouts] == list(range(len(rates)))
        own = [read(torch.cat([context.sources[0] == source, keys[k:]])) for _, _, source in readouts]
        by_hand = everything + sum(r.delta(0, part, cells) for (r, cells, _), part in zip(readouts, own, strict=True))
        torch.testing.assert_close(seen["out"][:, k:], attn.to_out[0](by_hand), atol=1e-5, rtol=1e-5)
        whole = everything + sum(r.delta(0, from_context, cells) for r, cells, _ in readouts)
        assert (attn.to_out[0](whole) - attn.to_out[0](by_hand)).abs().max() > 1e-3


def test_a_readout_refuses_a_context_that_does_not_say_who_made_its_tokens(small_config):
    model = HistoryDiT.from_config(small_config("history.phase_readout=4")).eval()
    hr, lr, x, t, text, positions = tiny_history_inputs()
    with torch.no_grad():
        context = model.encode_history(hr, lr)
        anonymous = ContextTokens(context.tokens, context.positions, blocks=context.blocks)
        with pytest.raises(ValueError, match=r"ContextTokens\.sources"):
            model(x, t, text, anonymous, positions)


@pytest.mark.parametrize(
    ("value_rope", "readout", "window"),
    [(True, 0, 0), (False, 4, 0), (True, 4, 0), (False, 4, 2), (True, 4, 2)],
    ids=["value-rope", "readout", "both", "readout-window", "both-window"],
)
def test_the_kv_cache_equals_the_masked_forward_with_value_rope_and_a_readout(
    small_config, value_rope, readout, window
):
    torch.manual_seed(0)
    model = HistoryDiT.from_config(
        small_config(
            "backbone.num_layers=2", "history.kv_cache=true", f"history.phase_readout={readout}",
            f"history.value_rope={str(value_rope).lower()}", f"history.sliding_window={window}",
        )
    ).eval()  # fmt: skip
    randomise_zero_layers(model, scale=0.2)
    hr, lr, x, t, text, positions = tiny_history_inputs()
    with torch.no_grad():
        context = model.history_context(hr, lr)
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
