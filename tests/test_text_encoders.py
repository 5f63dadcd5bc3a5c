"""The real text encoders (UMT5 for Wan, Llama + CLIP for HunyuanVideo) against the diffusers pipelines themselves.

Tiny real models and word-level tokenizers are built offline and saved like the model repos (see
``tiny_text_models.py``); each encoder must give exactly what ``WanPipeline`` / ``HunyuanVideoPipeline`` give for the
same components, since the DiTs were trained on those embeddings.
"""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from diffusers import HunyuanVideoPipeline, WanPipeline
from tiny_text_models import save_hunyuan_text, save_umt5
from transformers import AutoTokenizer, CLIPTextModel, LlamaModel, UMT5EncoderModel

from tinyhistory.config import load_config
from tinyhistory.text import HunyuanTextEncoder, MiniLMTextEncoder, UMT5TextEncoder
from tinyhistory.text import cache as text_cache

PROMPTS = [
    "a cat walks on the grass",
    "  a   dog runs in the park &amp; with a red ball, realistic  ",  # whitespace and HTML: the pipeline cleans
    "three rodents watch from a tree " * 4,  # longer than max_tokens: truncated
    "a zebra",  # an unknown word
]
MAX_TOKENS = 12


@pytest.fixture(scope="session")
def umt5_repo(tmp_path_factory):
    return save_umt5(tmp_path_factory.mktemp("wan") / "Wan-tiny-Diffusers")


@pytest.fixture(scope="session")
def hunyuan_repo(tmp_path_factory):
    return save_hunyuan_text(tmp_path_factory.mktemp("hunyuan") / "HunyuanVideo-tiny")


def test_umt5_equals_wan_pipeline(umt5_repo):
    encoder = UMT5TextEncoder(umt5_repo, max_tokens=MAX_TOKENS)
    assert encoder.text_dim == 16 and encoder.pooled_dim == 0
    pipe = WanPipeline(
        tokenizer=AutoTokenizer.from_pretrained(umt5_repo / "tokenizer"),
        text_encoder=UMT5EncoderModel.from_pretrained(umt5_repo / "text_encoder").eval(),
        vae=None,
        scheduler=None,
    )
    with torch.no_grad():  # as in WanPipeline.__call__ (with grad on, CPU attention takes another kernel: ~1e-6 off)
        expected, negative = pipe.encode_prompt(
            PROMPTS, do_classifier_free_guidance=False, max_sequence_length=MAX_TOKENS, device="cpu"
        )
    assert negative is None
    ours = encoder.encode(PROMPTS)
    assert ours.shape == (4, MAX_TOKENS, 16) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)
    # "a cat walks on the grass" is 6 words + </s>: the 7 states are the model's, the rest exactly zero
    assert ours[0, :7].abs().sum(-1).gt(0).all() and ours[0, 7:].eq(0).all()
    assert ours[2].abs().sum(-1).gt(0).all()  # truncated: no padding left


def test_umt5_loads_a_flat_folder_and_names_what_is_missing(umt5_repo, tmp_path):
    flat = save_umt5(tmp_path / "flat", layout="flat")
    torch.testing.assert_close(
        UMT5TextEncoder(flat, max_tokens=8).encode(PROMPTS[:2]),
        UMT5TextEncoder(umt5_repo, max_tokens=8).encode(PROMPTS[:2]),
    )
    with pytest.raises(FileNotFoundError, match="UMT5 text encoder folder not found: .*nowhere"):
        UMT5TextEncoder(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(umt5_repo / "text_encoder", broken / "text_encoder")
    with pytest.raises(FileNotFoundError, match="has no tokenizer/ subfolder"):
        UMT5TextEncoder(broken)


def test_hunyuan_equals_hunyuan_video_pipeline(hunyuan_repo):
    encoder = HunyuanTextEncoder(hunyuan_repo, max_tokens=MAX_TOKENS)
    assert (encoder.text_dim, encoder.pooled_dim, encoder.crop_start) == (16, 8, 95)
    pipe = HunyuanVideoPipeline(
        text_encoder=LlamaModel.from_pretrained(hunyuan_repo / "text_encoder").eval(),
        tokenizer=AutoTokenizer.from_pretrained(hunyuan_repo / "tokenizer"),
        transformer=None,
        vae=None,
        scheduler=None,
        text_encoder_2=CLIPTextModel.from_pretrained(hunyuan_repo / "text_encoder_2").eval(),
        tokenizer_2=AutoTokenizer.from_pretrained(hunyuan_repo / "tokenizer_2"),
    )
    with torch.no_grad():  # as in HunyuanVideoPipeline.__call__
        embeds, pooled, mask = pipe.encode_prompt(PROMPTS, max_sequence_length=MAX_TOKENS, device="cpu")
    ours_embeds, ours_pooled, ours_mask = encoder.encode_prompt(PROMPTS)
    assert ours_embeds.shape == (4, MAX_TOKENS, 16) and ours_pooled.shape == (4, 8)
    torch.testing.assert_close(ours_embeds, embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours_pooled, pooled, atol=1e-6, rtol=0)
    assert torch.equal(ours_mask, mask) and 0 < int(mask.sum()) < mask.numel()  # some padding, some tokens
    # the protocol's encode: the same states, zero under the mask
    torch.testing.assert_close(encoder.encode(PROMPTS), embeds * mask.unsqueeze(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(encoder.encode_pooled(PROMPTS), pooled, atol=1e-6, rtol=0)


def test_hunyuan_crop_drops_exactly_the_template(hunyuan_repo, tmp_path):
    # Our word-level tokenizer spells the template's system part in 92 tokens (Llama-3's in 95): with that crop, the
    # kept tokens are the prompt's words and the closing <|eot_id|>.
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    template = {"template": DEFAULT_PROMPT_TEMPLATE["template"], "crop_start": 92}
    encoder = HunyuanTextEncoder(hunyuan_repo, max_tokens=8, prompt_template=template)
    _, _, mask = encoder.encode_prompt(["a cat walks", "a dog runs in the park"])
    assert mask.sum(1).tolist() == [4, 7]
    with pytest.raises(ValueError, match="crop_start"):
        HunyuanTextEncoder(hunyuan_repo, prompt_template={"template": "{}"})
    with pytest.raises(FileNotFoundError, match="lacks the subfolder\\(s\\) text_encoder_2, tokenizer_2"):
        partial = tmp_path / "partial"
        for name in ("text_encoder", "tokenizer"):
            shutil.copytree(hunyuan_repo / name, partial / name)
        HunyuanTextEncoder(partial)


def test_config_builds_each_encoder_and_requires_text_path(umt5_repo, hunyuan_repo):
    wan = load_config("tiny", overrides=['text.kind="umt5"', f'text.path="{umt5_repo}"', "text.max_tokens=8"])
    encoder = text_cache.build_text_encoder(wan.text)
    assert isinstance(encoder, UMT5TextEncoder) and encoder.max_tokens == 8
    hunyuan = load_config("tiny", overrides=['text.kind="hunyuan"', f'text.path="{hunyuan_repo}"'])
    assert isinstance(text_cache.build_text_encoder(hunyuan.text), HunyuanTextEncoder)
    assert MiniLMTextEncoder.pooled_dim == 0
    for kind in ("umt5", "hunyuan", "t5"):
        with pytest.raises(ValueError, match=f"text.path must name a local model folder when text.kind = '{kind}'"):
            text_cache.build_text_encoder(load_config("tiny", overrides=[f'text.kind="{kind}"']).text)
    expected = "text.kind = 'clip' is not allowed; expected one of minilm, umt5, hunyuan, t5"
    with pytest.raises(ValueError, match=expected):
        load_config("tiny", overrides=['text.kind="clip"'])


def test_cache_keys_separate_model_folders_and_keep_minilm_keys(umt5_repo, tmp_path):
    legacy = hashlib.sha256(b"minilm|64|a rabbit").hexdigest()[:32]
    assert text_cache.prompt_key("minilm", 64, "a rabbit") == legacy  # existing caches stay valid
    assert text_cache.prompt_key("umt5", 64, "a rabbit", str(umt5_repo)) != text_cache.prompt_key(
        "umt5", 64, "a rabbit", str(tmp_path / "other")
    )
    other = save_umt5(tmp_path / "other", seed=1)
    cache = tmp_path / "text.safetensors"
    prompts = PROMPTS[:2]
    a, b = (
        load_config("tiny", overrides=['text.kind="umt5"', f'text.path="{p}"', f'text.cache="{cache}"']).text
        for p in (umt5_repo, other)
    )
    first, second = text_cache.encode_prompts(a, prompts).states, text_cache.encode_prompts(b, prompts).states
    assert not torch.allclose(first, second)  # another folder's weights: never served from the first's entries
    torch.testing.assert_close(first, UMT5TextEncoder(umt5_repo, max_tokens=64).encode(prompts))
    torch.testing.assert_close(text_cache.encode_prompts(a, prompts).states, first)
