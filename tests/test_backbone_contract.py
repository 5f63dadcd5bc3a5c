"""The backbone contract, run over every registered family shape (diffusers' "one suite, many models" style).

Each family is a tiny random-weight model folder in the Hub layout, written by the pipeline's own
``save_pretrained`` and loaded back through the adapter's real ``from_pretrained``. A new family adds one entry to
``FAMILIES`` (a folder maker, the stock forward, the stock RoPE table and, where the family needs more than token
states, its text condition) and must pass every test here: generation's block offloading, and the history KV cache
(exact in every step, cheaper per step) or its refusal by the family's name, included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny_model_folders import hunyuan_folder, ltx_folder, wan21_t2v_folder, wan22_a14b_folder, wan22_ti2v_folder
from torch.utils.flop_counter import FlopCounterMode

from tinyhistory.assemble import HistoryDiT
from tinyhistory.backbones import ContextTokens
from tinyhistory.backbones.base import Backbone, SamplingRecipe
from tinyhistory.codecs.base import Codec
from tinyhistory.config import CodecConfig, HistoryConfig, TextConfig
from tinyhistory.generate.run import offload_blocks
from tinyhistory.generate.session import SamplingSettings, sample_segment
from tinyhistory.registry import BACKBONES, CODECS, HISTORY_METHODS, TEXT_ENCODERS
from tinyhistory.text.base import TextEncoder
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.lora import add_lora, lora_state_dict


@dataclass
class Family:
    name: str
    registry_name: str
    make_folder: object  # Path -> Path
    stock_forward: object  # (transformer, x, t in [0, 1], TextCondition) -> velocity
    stock_rope: object  # (transformer, x) -> (cos, sin), shaped like backbone.rotary's
    lora_count: Callable = lambda backbone: len(backbone.blocks) * 10 * 2  # LoRA keys expected (A and B)
    lora_keys: str = r"transformer\.blocks\.\d+\."  # every LoRA key matches this
    # (transformer config, batch, generator) -> TextCondition; default: random token states only
    text: Callable | None = None
    codec: str = "wan"  # the family's codec.kind and text.kind (read from the same folder)
    text_encoder: str = "umt5"
    # What the family's pipeline does when it samples, as the adapter must declare it: the folder's sampler, the
    # classifier-free guidance default, a guidance embedding, an image start as a clean first frame, a time shift by
    # the token count, and whether the history KV cache (and what builds on it) is supported.
    sampler: str = "unipc"
    default_guidance: float = 3.0
    guidance_distilled: bool = False
    first_frame: bool = False
    dynamic_shift: bool = False
    history_attention: bool = True


def _wan_stock_forward(transformer, x, t, text):
    return transformer(x, t * 1000, text.states).sample


def _wan_stock_rope(transformer, x):
    return transformer.rope(x)


def _hunyuan_text(config, b, g):
    """Llama states with a left-aligned prompt mask (the second prompt shorter, padding zeroed) and CLIP pooled."""
    states = torch.randn(b, 5, config.text_embed_dim, generator=g)
    mask = torch.ones(b, 5, dtype=torch.long)
    mask[1:, 3:] = 0
    states = states * mask[..., None]
    return TextCondition(states, mask, torch.randn(b, config.pooled_projection_dim, generator=g))


def _hunyuan_stock_forward(transformer, x, t, text):
    b = x.shape[0]
    guidance = torch.full((b,), 6.0 * 1000.0)  # the pipeline's guidance_scale default, times 1000 as it does
    return transformer(x, t * 1000, text.states, text.mask, text.pooled, guidance).sample


def _hunyuan_stock_rope(transformer, x):
    cos, sin = transformer.rope(x)  # (S, head_dim), shared by the batch
    return cos[None], sin[None]


def _hunyuan_lora_count(backbone):
    tr = backbone.transformer
    # dual-stream: 8 attention projections (image and text streams) + 2 FFN layers per stream; single: q/k/v + 2
    return (len(tr.transformer_blocks) * 12 + len(tr.single_transformer_blocks) * 5) * 2


def _ltx_text(config, b, g):
    """T5 states with a left-aligned prompt mask (the second prompt shorter, padding zeroed)."""
    states = torch.randn(b, 5, config.caption_channels, generator=g)
    mask = torch.ones(b, 5, dtype=torch.long)
    mask[1:, 3:] = 0
    return TextCondition(states * mask[..., None], mask)


# LTXPipeline's RoPE scale for the tiny folder's VAE (32× space, 8× time, as released) at its default frame_rate 25.
_LTX_ROPE_SCALE = (8 / 25, 32, 32)


def _ltx_stock_forward(transformer, x, t, text):
    from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline

    _, _, frames, height, width = x.shape
    packed = transformer(
        LTXPipeline._pack_latents(x),
        text.states,
        t * 1000,
        text.mask,
        num_frames=frames,
        height=height,
        width=width,
        rope_interpolation_scale=_LTX_ROPE_SCALE,
    ).sample
    return LTXPipeline._unpack_latents(packed, frames, height, width)


def _ltx_stock_rope(transformer, x):
    from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline

    _, _, frames, height, width = x.shape
    return transformer.rope(LTXPipeline._pack_latents(x), frames, height, width, _LTX_ROPE_SCALE)


FAMILIES = [
    Family("wan2.1-t2v", "wan", wan21_t2v_folder, _wan_stock_forward, _wan_stock_rope),
    Family("wan2.2-ti2v", "wan", wan22_ti2v_folder, _wan_stock_forward, _wan_stock_rope, first_frame=True),
    Family(
        "hunyuanvideo",
        "hunyuan",
        hunyuan_folder,
        _hunyuan_stock_forward,
        _hunyuan_stock_rope,
        lora_count=_hunyuan_lora_count,
        lora_keys=r"transformer\.(single_)?transformer_blocks\.\d+\.",
        text=_hunyuan_text,
        codec="hunyuan",
        text_encoder="hunyuan",
        sampler="euler",
        default_guidance=1.0,
        guidance_distilled=True,
        history_attention=False,
    ),
    Family(
        "ltx-video",
        "ltx",
        ltx_folder,
        _ltx_stock_forward,
        _ltx_stock_rope,
        lora_keys=r"transformer\.transformer_blocks\.\d+\.",
        text=_ltx_text,
        codec="ltx",
        text_encoder="t5",
        sampler="euler",
        dynamic_shift=True,
        history_attention=False,
    ),
]


@pytest.fixture(params=FAMILIES, ids=lambda f: f.name)
def family(request, tmp_path_factory) -> tuple[Family, Path]:
    fam = request.param
    return fam, fam.make_folder(tmp_path_factory.mktemp(fam.name))


def _load(fam: Family, folder: Path):
    return BACKBONES.get(fam.registry_name).from_pretrained(folder).eval()


def _inputs(backbone, b: int = 2, frames: int = 3, fam: Family | None = None):
    g = torch.Generator().manual_seed(0)
    channels = backbone.in_channels
    config = backbone.transformer.config
    x = torch.randn(b, channels, frames, 8, 8, generator=g)
    if fam is not None and fam.text is not None:
        text = fam.text(config, b, g)
    else:
        text = TextCondition(torch.randn(b, 5, config.text_dim, generator=g))
    return x, torch.tensor([0.3, 0.8])[:b], text


def _encoder(backbone):
    history = HistoryConfig(channels=[8, 16, 32, 32], attention_heads=2)
    return HISTORY_METHODS.get("proposed")("proposed", "4x4x2", history, backbone)


def test_architecture_comes_from_the_folder(family):
    fam, folder = family
    backbone = _load(fam, folder)
    config = json.loads((folder / "transformer" / "config.json").read_text())
    assert backbone.hidden_dim == config["num_attention_heads"] * config["attention_head_dim"]
    assert backbone.in_channels == config["in_channels"]
    # every block after_block sees (HunyuanVideo: the dual-stream then the single-stream blocks)
    assert len(backbone.blocks) == config["num_layers"] + config.get("num_single_layers", 0)


def test_no_context_equals_the_stock_forward(family):
    fam, folder = family
    backbone = _load(fam, folder)
    x, t, text = _inputs(backbone, fam=fam)
    empty = ContextTokens(torch.zeros(2, 0, backbone.hidden_dim), torch.zeros(2, 0, 3))
    with torch.no_grad():
        stock = fam.stock_forward(backbone.transformer, x, t, text)
        torch.testing.assert_close(backbone(x, t, text), stock, atol=1e-6, rtol=1e-5)
        # the prepend/slice path with an empty context and explicit integer positions, too
        torch.testing.assert_close(
            backbone(x, t, text, empty, torch.arange(3).expand(2, 3)), stock, atol=1e-6, rtol=1e-5
        )


def test_integer_rope_equals_the_stock_table(family):
    fam, folder = family
    backbone = _load(fam, folder)
    x = torch.zeros(1, backbone.in_channels, 3, 8, 8)
    stock_cos, stock_sin = fam.stock_rope(backbone.transformer, x)
    pt, ph, pw = backbone.patch_size
    t, h, w = torch.meshgrid(torch.arange(3 // pt), torch.arange(8 // ph), torch.arange(8 // pw), indexing="ij")
    cos, sin = backbone.rotary(torch.stack([t, h, w], -1).reshape(1, -1, 3))
    torch.testing.assert_close(cos, stock_cos)
    torch.testing.assert_close(sin, stock_sin)


def test_context_changes_the_output_and_its_positions_matter(family):
    fam, folder = family
    backbone = _load(fam, folder)
    x, t, text = _inputs(backbone, fam=fam)
    tokens = torch.randn(2, 4, backbone.hidden_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = backbone(x, t, text)
        a = backbone(x, t, text, ContextTokens(tokens, torch.zeros(2, 4, 3)))
        b = backbone(x, t, text, ContextTokens(tokens, torch.full((2, 4, 3), 2.5)))
    assert a.shape == base.shape
    assert (a - base).abs().max() > 1e-3
    assert (a - b).abs().max() > 1e-4


def test_gradients_reach_the_history_encoder_through_a_frozen_base_with_lora(family):
    fam, folder = family
    backbone = _load(fam, folder).train()
    add_lora(backbone, rank=4)
    encoder = _encoder(backbone)
    c = backbone.in_channels
    context = encoder(torch.randn(2, c, 4, 16, 16), torch.randn(2, c, 2, 4, 4), backbone.patch_embed)
    x, t, text = _inputs(backbone, fam=fam)
    backbone.enable_gradient_checkpointing()
    backbone(x, t, text, context).square().mean().backward()
    assert encoder.hr.proj.weight.grad.abs().sum() > 0  # zero-initialised, so its weight gets gradient first
    lora_grads = [p.grad for n, p in backbone.named_parameters() if "lora_A" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert all(p.grad is None for n, p in backbone.named_parameters() if "lora_" not in n)  # the base is frozen


def test_save_and_load_round_trip(family, tmp_path):
    fam, folder = family
    backbone = _load(fam, folder)
    backbone.save_pretrained(tmp_path / "transformer")
    loaded = BACKBONES.get(fam.registry_name).from_transformer_folder(tmp_path / "transformer").eval()
    x, t, text = _inputs(backbone, fam=fam)
    ctx = ContextTokens(torch.randn(2, 4, backbone.hidden_dim), torch.rand(2, 4, 3) * 4)
    with torch.no_grad():
        assert torch.equal(backbone(x, t, text, ctx), loaded(x, t, text, ctx))


def test_lora_lands_only_in_the_blocks(family):
    fam, folder = family
    backbone = _load(fam, folder)
    encoder = _encoder(backbone)
    add_lora(backbone, rank=4)
    keys = list(lora_state_dict(backbone))
    assert keys
    block = re.compile(fam.lora_keys)
    assert all(block.match(k) for k in keys), [k for k in keys if not block.match(k)]
    # every block gets every target (Wan: attention (self, cross) q/k/v/out and both FFN layers), A and B
    assert len(keys) == fam.lora_count(backbone)
    assert not any("lora_" in n for n, _ in encoder.named_parameters())
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.dtype == torch.float32 for n, p in backbone.named_parameters() if "lora_" in n)


def test_bad_folders_name_the_folder_and_what_is_missing(family, tmp_path):
    fam, folder = family
    adapter = BACKBONES.get(fam.registry_name)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'nowhere'} does not exist.*model_index.json"):
        adapter.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no model_index.json"):
        adapter.from_pretrained(tmp_path / "empty")
    with pytest.raises(ValueError, match="lacks transformer_2/"):
        adapter.from_pretrained(folder, subfolder="transformer_2")
    index = json.loads((folder / "model_index.json").read_text())
    other = next(p for p in ("HunyuanVideoPipeline", "WanPipeline") if p not in adapter.pipelines)
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": other}))
    with pytest.raises(ValueError, match=f"holds a {other} model, not the {fam.registry_name!r} family"):
        adapter.from_pretrained(folder)


# -- the whole protocol, and the family's sampling quirks declared by its adapter ------------------------------------
def test_the_backbone_codec_and_text_encoder_satisfy_the_whole_protocol(family):
    """Every member a caller reads is declared (runtime-checkable protocols), so no call site needs ``hasattr``."""
    fam, folder = family
    backbone = _load(fam, folder)
    assert isinstance(backbone, Backbone)
    assert backbone.family == fam.registry_name and backbone.title
    assert all(hasattr(backbone.transformer, name) for name in backbone.block_lists)
    text = backbone.blank_text(2, 5, "meta")
    assert text.states.shape[:2] == (2, 5)
    codec = CODECS.get(fam.codec).from_config(CodecConfig(kind=fam.codec, path=str(folder)))
    assert isinstance(codec, Codec)
    assert codec.framewise is False and codec.reads_model_folder  # a causal video VAE, the folder's vae/
    encoder = TEXT_ENCODERS.get(fam.text_encoder).from_config(
        TextConfig(kind=fam.text_encoder, path=str(folder), max_tokens=8), torch.float32, "cpu"
    )
    assert isinstance(encoder, TextEncoder) and encoder.reads_model_folder
    condition = encoder.encode_condition(["a rabbit"])
    assert condition.states.shape == (1, 8, encoder.text_dim)
    assert (condition.pooled is not None) == (encoder.pooled_dim > 0)


def test_the_family_declares_its_sampling_quirks(family):
    fam, folder = family
    backbone = _load(fam, folder)
    recipe = backbone.sampling_recipe(folder)
    assert recipe.scheduler == json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert recipe.sampler == backbone.pipeline_sampler == fam.sampler
    assert recipe.first_frame is fam.first_frame
    assert recipe.second_expert is None and recipe.boundary is None  # one expert in these folders
    assert backbone.sampling_recipe(None) == SamplingRecipe()  # without a folder: Euler, nothing else
    assert backbone.default_guidance == fam.default_guidance
    assert backbone.guidance_distilled is fam.guidance_distilled
    backbone.use_guidance(4.5)  # a guidance-distilled DiT embeds it; any other has nothing to set
    if fam.guidance_distilled:
        assert backbone.guidance == 4.5
    mu = backbone.timestep_shift(4096, recipe.scheduler)
    assert (mu is not None) is fam.dynamic_shift
    assert backbone.timestep_shift(4096, {**recipe.scheduler, "use_dynamic_shifting": False}) is None


def test_history_attention_is_supported_or_refused_by_the_familys_name(family):
    fam, folder = family
    backbone = _load(fam, folder)
    assert (backbone.kv_cache, backbone.block_causal, backbone.context_window) == (False, False, 0)
    if fam.history_attention:
        backbone.use_block_causal()
        backbone.use_kv_cache()
        backbone.use_context_window(2)
        assert (backbone.kv_cache, backbone.block_causal, backbone.context_window) == (True, True, 2)
        return
    # each refused by the setting's name and the family's, with what to set instead
    title = re.escape(backbone.title)
    no_kv_cache = rf"^history\.kv_cache is not supported for {title} yet \(.+\)"
    for turn_on, refusal in (
        (backbone.use_kv_cache, rf"{no_kv_cache}; set history\.kv_cache = false$"),
        (
            backbone.use_value_rope,
            rf"^history\.value_rope is implemented for Wan's self-attention only \({title}'s .+; "
            r"set history\.value_rope = false$",
        ),
        (
            backbone.use_block_causal,
            rf'^history\.context_attention = "block_causal" is not supported for {title} yet: .+; '
            r'set history\.context_attention = "full"$',
        ),
        (
            lambda: backbone.use_context_window(2),
            rf'^history\.tier_layout = "stacked" is not supported for {title} yet: .+; '
            r'set history\.tier_layout = "recompute"$',
        ),
        (lambda: backbone.build_context_cache(None, None), f"{no_kv_cache}$"),
    ):
        with pytest.raises(ValueError, match=refusal):
            turn_on()
    x, t, text = _inputs(backbone, fam=fam)
    with pytest.raises(ValueError, match=f"{no_kv_cache}$"):
        backbone(x, t, text, context_cache=object())
    # turning them off is what the adapter always does
    backbone.use_value_rope(False)
    backbone.use_block_causal(False)
    backbone.use_context_window(0)
    backbone.use_full_attention()
    assert (backbone.kv_cache, backbone.block_causal, backbone.context_window) == (False, False, 0)


# -- generation's block offloading and the history KV cache --------------------------------------------------------
def test_block_offloading_hooks_every_block_list_and_keeps_the_output(family):
    """`generate --offload` group-offloads the DiT's blocks (every block list, one block per group: HunyuanVideo's
    dual- and single-stream blocks both); the adapter calls the blocks one by one (not the transformer's forward), so
    the hooks must fire and the output stay the same, with and without context (CPU ⇄ CPU here; CUDA in real use)."""
    fam, folder = family
    backbone = _load(fam, folder)
    # the lists that stay home are exactly the blocks (everything else visits the device for good)
    lists = [getattr(backbone.transformer, name) for name in backbone.block_lists]
    assert [b for blocks in lists for b in blocks] == list(backbone.blocks)
    x, t, text = _inputs(backbone, fam=fam)
    context = ContextTokens(torch.randn(2, 4, backbone.hidden_dim), torch.rand(2, 4, 3) * 4)
    with torch.no_grad():
        before = [backbone(x, t, text), backbone(x, t, text, context)]
        offload_blocks(backbone, torch.device("cpu"))
        assert all(hasattr(block, "_diffusers_hook") for block in backbone.blocks)  # one group per block
        after = [backbone(x, t, text), backbone(x, t, text, context)]
    for offloaded, home in zip(after, before, strict=True):
        torch.testing.assert_close(offloaded, home)


# Two DiT blocks (with one, what the context attends to cannot reach the targets), a sliding window of raw latent
# frames and the cross-attention enhancers next to the encoder's tokens.
_CACHED_RUN = (
    'train.stage="ar"', "train.history_frames=8", "train.segment_frames=2", "train.lora_rank=0",
    "history.sliding_window=2", "history.cross_attention=true",
)  # fmt: skip


def _cache_models(fam: Family, folder: Path, small_config) -> tuple[HistoryDiT, HistoryDiT] | None:
    """The same weights around the family's DiT with full attention and with the KV cache's attention pattern
    (context attends to context only); None where the family refuses ``history.kv_cache``, which this asserts."""
    if not fam.history_attention:
        backbone = _load(fam, folder)
        refusal = rf"^history\.kv_cache is not supported for {re.escape(backbone.title)} yet \(.+\); set"
        with pytest.raises(ValueError, match=refusal):
            HistoryDiT.from_config(small_config(*_CACHED_RUN, "history.kv_cache=true"), backbone=backbone)
        return None
    torch.manual_seed(0)
    full = HistoryDiT.from_config(small_config(*_CACHED_RUN), backbone=_load(fam, folder)).eval()
    cached = HistoryDiT.from_config(small_config(*_CACHED_RUN, "history.kv_cache=true"), backbone=_load(fam, folder))
    with torch.no_grad():  # zero-initialised layers would hide the encoder and the enhancers
        for p in [*full.producers.parameters(), *full.enhancers.parameters()]:
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape) * 0.05)
    cached.load_state_dict(full.state_dict())
    return full, cached.eval()


def _cache_inputs(model: HistoryDiT, fam: Family):
    """A history of 8 latent frames (its context: the encoder's tokens with their features, then the window) and two
    target frames right after it."""
    g = torch.Generator().manual_seed(0)
    c = model.backbone.in_channels
    hr, lr = torch.randn(1, c, 8, 16, 16, generator=g), [torch.randn(1, c, 4, 4, 4, generator=g)]
    with torch.no_grad():
        context = model.history_context(hr, lr)
    x = torch.randn(1, c, 2, 16, 16, generator=g)
    _, _, text = _inputs(model.backbone, b=1, fam=fam)
    return x, torch.tensor([0.6]), text, context, torch.tensor([[8, 9]])


def test_the_kv_cache_equals_the_masked_forward_in_every_step_or_is_refused_by_name(family, small_config):
    """``history.kv_cache``: the context attends only to the context (and the text), so its keys and values are
    computed once per segment and serve every denoising step exactly; without context the pattern is the stock
    forward, with context it changes what the model computes."""
    fam, folder = family
    models = _cache_models(fam, folder, small_config)
    if models is None:
        return
    full, cached = models
    x, t, text, context, positions = _cache_inputs(full, fam)
    assert context.features is not None and context.num_tokens > 0
    with torch.no_grad():
        torch.testing.assert_close(cached(x, t, text, None), full(x, t, text, None), atol=1e-6, rtol=1e-5)
        masked = cached(x, t, text, context, positions)
        cache = cached.build_context_cache(context, text)
        assert len(cache.keys) == len(cached.backbone.blocks) and cache.num_tokens == context.num_tokens
        for step_t in (0.9, 0.6, 0.2):  # the same cache serves every denoising step
            step = torch.tensor([step_t])
            torch.testing.assert_close(
                cached(x, step, text, None, positions, context_cache=cache),
                cached(x, step, text, context, positions),
                atol=1e-5,
                rtol=1e-5,
            )
        unmasked = full(x, t, text, context, positions)
    assert (masked - unmasked).abs().max() > 1e-4  # the pattern changes what the model computes

    # sampling (CFG: the cache is built per text branch) equals the uncached masked sampling
    settings = SamplingSettings(sampler="unipc", steps=3, guidance=2.0)
    with torch.no_grad():
        with_cache = sample_segment(cached, x, text, context, positions, settings)
        cached.backbone.kv_cache = False  # same attention pattern, context recomputed at every step
        try:
            without = sample_segment(cached, x, text, context, positions, settings)
        finally:
            cached.backbone.kv_cache = True
    torch.testing.assert_close(with_cache, without, atol=1e-4, rtol=1e-4)

    # a model without the cache built on the cached backbone attends fully again
    again = HistoryDiT.from_config(small_config(*_CACHED_RUN), backbone=cached.backbone)
    again.producers, again.enhancers = cached.producers, cached.enhancers
    assert not again.backbone.kv_cache
    with torch.no_grad():
        torch.testing.assert_close(again(x, t, text, context, positions), full(x, t, text, context, positions))


def test_a_kv_cached_step_costs_only_the_targets_or_is_refused_by_name(family, small_config):
    fam, folder = family
    models = _cache_models(fam, folder, small_config)
    if models is None:
        return
    _, cached = models
    x, t, text, context, positions = _cache_inputs(cached, fam)
    with torch.no_grad():
        cache = cached.build_context_cache(context, text)
        counts = []
        for kwargs in ({"context": context}, {"context": None, "context_cache": cache}):
            with FlopCounterMode(display=False) as counter:
                cached(x, t, text, frame_positions=positions, **kwargs)
            counts.append(counter.get_total_flops())
        with FlopCounterMode(display=False) as counter:
            cached(x, t, text, None, positions)
        no_history = counter.get_total_flops()
    uncached, per_step = counts
    # per step the history now costs only the targets' attention to its keys (+ enhancers), not its own tokens
    assert per_step < uncached and (per_step - no_history) < 0.5 * (uncached - no_history)


def test_wan22_a14b_declares_its_second_expert_and_boundary(tmp_path):
    folder = wan22_a14b_folder(tmp_path / "a14b")
    adapter = BACKBONES.get("wan")
    recipe = adapter.sampling_recipe(folder)
    assert (recipe.second_expert, recipe.boundary, recipe.sampler, recipe.first_frame) == (
        "transformer_2",
        0.875,
        "unipc",
        False,
    )
    # a run on the low-noise expert itself has no second one
    assert adapter.sampling_recipe(folder, "transformer_2").second_expert is None


def test_the_tiny_codecs_and_minilm_satisfy_the_protocols():
    """The presets without a model folder: framewise codecs and the packaged MiniLM, none of them a folder's part."""
    from tinyhistory.codecs.learned import AutoencoderConfig, FrameAutoencoder, LearnedCodec
    from tinyhistory.codecs.pixel import PixelUnshuffleCodec
    from tinyhistory.text.minilm import MiniLMTextEncoder

    learned = LearnedCodec(FrameAutoencoder(AutoencoderConfig(latent_mean=[0.0] * 16, latent_std=[1.0] * 16)))
    for codec in (PixelUnshuffleCodec(), learned):
        assert isinstance(codec, Codec)
        assert codec.framewise is True and codec.reads_model_folder is False and codec.temporal_factor == 1
    encoder = MiniLMTextEncoder(max_tokens=8)
    assert isinstance(encoder, TextEncoder) and encoder.reads_model_folder is False
    assert encoder.encode_condition(["a rabbit"]).states.shape == (1, 8, 384)
