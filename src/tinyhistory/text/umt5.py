"""UMT5 (``google/umt5-xxl``) as the Wan 2.1 / 2.2 text encoder, exactly as diffusers' ``WanPipeline`` encodes.

The Wan DiTs were trained on what ``WanPipeline._get_t5_prompt_embeds`` produces, so this module repeats it step by
step rather than approximating it: the pipeline's own prompt cleaning (``prompt_clean``: ftfy when installed, HTML
unescape, whitespace collapse), the tokenizer with ``padding="max_length"``, truncation and special tokens, the
``UMT5EncoderModel``'s ``last_hidden_state`` under the attention mask, and then the states beyond each prompt's
length replaced by zeros (the pipeline trims each prompt to its length and pads back with zeros). A golden test checks
equality with the pipeline itself.

Weights load with ``from_pretrained`` from a local folder only (safetensors, nothing downloaded): either a Wan
diffusers model repo (``text_encoder/`` and ``tokenizer/`` subfolders) or one folder holding both the model and the
tokenizer files.
"""

from __future__ import annotations

import torch

from tinyhistory.text.base import EncoderFolderTextEncoder


class UMT5TextEncoder(EncoderFolderTextEncoder):
    """Wan's text encoder: ``encode(prompts)`` → ``(B, max_tokens, d_model)`` float32, zero beyond each prompt.

    ``max_tokens`` is the pipeline's ``max_sequence_length`` (``WanPipeline.__call__`` uses 512). ``dtype`` is the
    encoder's compute dtype (UMT5-XXL is ~5.7B parameters: bfloat16 on a GPU; the output is float32 either way).
    """

    default_max_tokens = 512

    @staticmethod
    def model_class() -> type:
        from transformers import UMT5EncoderModel

        return UMT5EncoderModel

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """``prompts`` → ``(B, max_tokens, text_dim)`` float32; rows past each prompt's tokens are exactly zero."""
        # The pipeline's own cleaning, imported rather than copied so a diffusers fix reaches us too.
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        cleaned = [prompt_clean(p) for p in prompts]
        inputs = self.tokenizer(
            cleaned,
            padding="max_length",
            max_length=self.max_tokens,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = inputs.input_ids, inputs.attention_mask
        seq_lens = mask.gt(0).sum(dim=1).long()
        device = self.model.device
        states = self.model(ids.to(device), mask.to(device)).last_hidden_state.float().cpu()
        # Trim to each prompt's length and pad back with zeros, as WanPipeline does (not `* mask`, so a
        # left-padding tokenizer would give what the pipeline gives too).
        rows = [u[:n] for u, n in zip(states, seq_lens, strict=True)]
        return torch.stack([torch.cat([u, u.new_zeros(self.max_tokens - u.size(0), u.size(1))]) for u in rows])

    # -- sizing facts (sizing/ reads these) ----------------------------------------------------------------------
    sizing_name = "UMT5"
    # text_encoder/config.json of the Wan *-Diffusers repos (UMT5-XXL encoder: d_model 4096, d_ff 10240, 24 layers,
    # 64 heads, vocab 256384, gated-gelu, untied); Wan ships it in bf16.
    released = {
        "text_encoder": {
            "d_model": 4096,
            "d_ff": 10240,
            "d_kv": 64,
            "num_heads": 64,
            "num_layers": 24,
            "num_decoder_layers": 24,
            "vocab_size": 256384,
            "feed_forward_proj": "gated-gelu",
            "dense_act_fn": "gelu_new",
            "is_gated_act": True,
            "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128,
            "scalable_attention": True,
            "tie_word_embeddings": False,
            "layer_norm_epsilon": 1e-6,
        }
    }
