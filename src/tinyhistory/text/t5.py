"""T5 (``google/t5-v1_1-xxl``) as LTX-Video's text encoder, exactly as diffusers' ``LTXPipeline`` encodes a prompt.

The LTX-Video DiT was trained on what ``LTXPipeline._get_t5_prompt_embeds`` produces, so this module repeats it step by
step: the tokenizer with ``padding="max_length"`` to ``max_sequence_length`` (128), truncation and special tokens;
the ``T5EncoderModel`` run on the token ids **without** the attention mask (the pipeline passes none, so a prompt's
states also read its padding, and so must ours); the tokenizer's attention mask returned beside the states. The DiT
masks the padding in its cross-attention (a -10000 bias), so :meth:`T5TextEncoder.encode_condition` zeroes the
states there (padding never carries information into a cache or a dropout branch; the DiT's output is unchanged).
Unlike Wan's UMT5 the prompt is not cleaned. A golden test checks equality with the pipeline.

Weights load with ``from_pretrained`` from a local folder only (safetensors, nothing downloaded): an LTX-Video
diffusers model repo (``text_encoder/`` and ``tokenizer/``) or one folder holding both.
"""

from __future__ import annotations

import torch

from tinyhistory.text.base import EncoderFolderTextEncoder
from tinyhistory.text.condition import TextCondition


class T5TextEncoder(EncoderFolderTextEncoder):
    """``encode_condition(prompts)`` → states ``(B, max_tokens, d_model)`` float32 (zero past each prompt) and the
    mask ``(B, max_tokens)`` int64.

    ``max_tokens`` is the pipeline's ``max_sequence_length`` (``LTXPipeline.__call__`` uses 128). ``dtype`` is the
    encoder's compute dtype (T5-XXL's encoder is ~4.8B parameters: bfloat16 on a GPU; the output is float32 either way).
    """

    default_max_tokens = 128

    @staticmethod
    def model_class() -> type:
        from transformers import T5EncoderModel

        return T5EncoderModel

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's ``(prompt_embeds (B, L, D) float32, prompt_attention_mask (B, L) int64)``; the states are
        *not* zeroed under the mask (the pipeline does not zero them either)."""
        inputs = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_tokens,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        states = self.model(inputs.input_ids.to(self.model.device))[0]  # no attention mask, as LTXPipeline
        return states.float().cpu(), inputs.attention_mask.long()

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """``prompts`` → ``(B, max_tokens, text_dim)`` float32, zero where the attention mask is 0."""
        return self.encode_condition(prompts).states

    @torch.no_grad()
    def encode_condition(self, prompts: list[str]) -> TextCondition:
        """What the DiT takes: the states (zero under the mask) and the mask ``(B, L)`` int64."""
        states, mask = self.encode_prompt(prompts)
        return TextCondition(states * mask.unsqueeze(-1).to(states.dtype), mask)

    # -- sizing facts (sizing/ reads these) ----------------------------------------------------------------------
    sizing_name = "T5"
    # text_encoder/config.json of Lightricks/LTX-Video: google/t5-v1_1-xxl's encoder (d_model 4096, d_ff 10240, 24
    # layers, 64 heads, vocab 32128, gated-gelu, untied; 4.76B parameters), as published with T5 v1.1.
    released = {
        "text_encoder": {
            "d_model": 4096,
            "d_ff": 10240,
            "d_kv": 64,
            "num_heads": 64,
            "num_layers": 24,
            "vocab_size": 32128,
            "feed_forward_proj": "gated-gelu",
            "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128,
            "tie_word_embeddings": False,
            "layer_norm_epsilon": 1e-6,
        }
    }
