"""Tiny, real text encoders and tokenizers, built offline and saved like the diffusers model repos.

transformers ships no vocabulary files and nothing may be downloaded, so each tokenizer is a word-level
``tokenizers`` model over a small fixed vocabulary, wrapped in ``PreTrainedTokenizerFast`` with the special tokens
of the real one (UMT5: ``</s>`` appended; Llama-3: ``<|begin_of_text|>`` prepended and the chat-header tokens of
HunyuanVideo's prompt template kept whole; CLIP: lower-cased, ``<|startoftext|> … <|endoftext|>``). The models are
the real transformers classes with tiny configs (HunyuanVideo: text 16, pooled 8, as in DESIGN.md). Everything is
written with ``save_pretrained`` (safetensors) into the folder layout the encoders load from.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

# Words of the test prompts (a few prompt words are left out on purpose: they become the unknown token).
PROMPT_WORDS = (
    "a cat walks on the grass realistic dog runs in park with red ball three rodents watch from tree "
    "rabbit wakes up meadow and"
)

LLAMA_SPECIALS = ["<pad>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<unk>"]


def _words(text: str) -> list[str]:
    """The distinct pre-tokens of ``text`` (whitespace/punctuation split, as the tokenizers split it), in order."""
    seen: dict[str, None] = {}
    for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text):
        seen.setdefault(word, None)
    return list(seen)


def word_level_tokenizer(
    specials: list[str],
    text: str,
    unk: str,
    single: str,
    pad: str,
    lowercase: bool = False,
    **special_tokens: str,
) -> PreTrainedTokenizerFast:
    """A fast tokenizer whose vocabulary is ``specials`` followed by the words of ``text``.

    ``single`` is the post-processing template for one sequence (e.g. ``"$A </s>"``), which is where the real
    tokenizers add their special tokens; padding is on the right, as the pipelines assume.
    """
    words = [w for w in _words(text.lower() if lowercase else text) if w not in specials]
    vocab = {token: i for i, token in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    used = [t for t in single.split() if t in vocab]
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[(t, vocab[t]) for t in used])
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=unk, pad_token=pad, padding_side="right", **special_tokens
    )


def save_umt5(folder: Path, seed: int = 0, layout: str = "repo") -> Path:
    """A tiny UMT5 encoder (d_model 16, Wan's tiny ``text_dim``) and its tokenizer under ``folder``.

    ``layout="repo"``: a Wan diffusers repo's ``text_encoder/`` and ``tokenizer/``; ``"flat"``: both in ``folder``.
    """
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = word_level_tokenizer(
        ["<pad>", "</s>", "<unk>"], PROMPT_WORDS, unk="<unk>", single="$A </s>", pad="<pad>", eos_token="</s>"
    )
    config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = UMT5EncoderModel(config).eval()
    model_dir, tokenizer_dir = (folder / "text_encoder", folder / "tokenizer") if layout == "repo" else (folder,) * 2
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(tokenizer_dir)
    return folder


def save_t5(folder: Path, seed: int = 0) -> Path:
    """A tiny T5 encoder (d_model 16) and its tokenizer in LTX-Video's repo layout (``text_encoder/``, ``tokenizer/``):
    ``T5EncoderModel`` as ``LTXPipeline`` loads it, the tokenizer appending ``</s>`` as T5's does."""
    from transformers import T5Config, T5EncoderModel

    tokenizer = word_level_tokenizer(
        ["<pad>", "</s>", "<unk>"], PROMPT_WORDS, unk="<unk>", single="$A </s>", pad="<pad>", eos_token="</s>"
    )
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    T5EncoderModel(config).eval().save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    return folder


def save_hunyuan_text(folder: Path, seed: int = 0) -> Path:
    """A tiny LlamaModel (hidden 16) + CLIPTextModel (hidden 8) and tokenizers, in HunyuanVideo's repo layout."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    template = DEFAULT_PROMPT_TEMPLATE["template"]
    llama_tokenizer = word_level_tokenizer(
        LLAMA_SPECIALS,
        template.replace("{}", " ") + " " + PROMPT_WORDS,
        unk="<unk>",
        single="<|begin_of_text|> $A",
        pad="<pad>",
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
    )
    clip_tokenizer = word_level_tokenizer(
        ["<unk>", "<|startoftext|>", "<|endoftext|>"],
        PROMPT_WORDS,
        unk="<unk>",
        single="<|startoftext|> $A <|endoftext|>",
        pad="<|endoftext|>",
        lowercase=True,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
    )
    torch.manual_seed(seed)
    llama = LlamaModel(
        LlamaConfig(
            vocab_size=len(llama_tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            pad_token_id=llama_tokenizer.pad_token_id,
            bos_token_id=llama_tokenizer.bos_token_id,
            eos_token_id=llama_tokenizer.eos_token_id,
        )
    ).eval()
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tokenizer),
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=8,
            pad_token_id=clip_tokenizer.pad_token_id,
            bos_token_id=clip_tokenizer.bos_token_id,
            eos_token_id=clip_tokenizer.eos_token_id,
        )
    ).eval()
    llama.save_pretrained(folder / "text_encoder")
    llama_tokenizer.save_pretrained(folder / "tokenizer")
    clip.save_pretrained(folder / "text_encoder_2")
    clip_tokenizer.save_pretrained(folder / "tokenizer_2")
    return folder
