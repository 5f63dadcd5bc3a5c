"""HunyuanVideo's two text encoders, exactly as diffusers' ``HunyuanVideoPipeline.encode_prompt`` computes them.

HunyuanVideo conditions on two things, and its DiT was trained on precisely what the pipeline produces, so this
module repeats the pipeline's steps instead of approximating them:

* per-token states from the LLaVA-Llama-3 text encoder (a ``LlamaModel`` in the diffusers repo): each prompt is
  wrapped in the pipeline's ``DEFAULT_PROMPT_TEMPLATE`` (a system message asking for a video description), tokenized
  to ``max_tokens + crop_start`` tokens, run with ``output_hidden_states=True``; the hidden state
  ``num_hidden_layers_to_skip = 2`` layers before the last is taken and the first ``crop_start`` (template) tokens are
  cropped off, with the attention mask cropped alike;
* the CLIP-L text encoder's ``pooler_output`` (``text_encoder_2`` / ``tokenizer_2``, 77 tokens), which the DiT adds
  to its timestep embedding.

:meth:`HunyuanTextEncoder.encode_prompt` returns the pipeline's three outputs unchanged; :meth:`encode_condition`
(what training and generation use) gives the typed condition, states zeroed where the mask is 0 so padding never
carries information, with the mask and the pooled vector. Loads from a local HunyuanVideo diffusers folder only
(safetensors, nothing downloaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tinyhistory.text.base import StatesTextEncoder
from tinyhistory.text.condition import TextCondition

SUBFOLDERS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


class HunyuanTextEncoder(StatesTextEncoder):
    """``encode(prompts)`` → ``(B, max_tokens, text_dim)``; ``encode_pooled(prompts)`` → ``(B, pooled_dim)``.

    ``max_tokens`` is the pipeline's ``max_sequence_length`` (256 by default), counted after the template crop.
    ``dtype`` is the compute dtype of both encoders (Llama-3-8B: bfloat16 on a GPU); outputs are float32.
    """

    def __init__(
        self,
        path: str | Path,
        max_tokens: int = 256,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        prompt_template: dict[str, Any] | None = None,
        num_hidden_layers_to_skip: int = 2,
        clip_max_tokens: int = 77,
    ) -> None:
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
        from transformers import AutoTokenizer, CLIPTextModel, LlamaModel

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"HunyuanVideo text encoder folder not found: {path}")
        missing = [name for name in SUBFOLDERS if not (path / name).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"HunyuanVideo text encoders: {path} lacks the subfolder(s) {', '.join(missing)} "
                f"(expected a HunyuanVideo diffusers repo with {', '.join(SUBFOLDERS)})"
            )
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        options = {"dtype": dtype, "local_files_only": True, "use_safetensors": True}
        self.tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
        self.model = LlamaModel.from_pretrained(path / "text_encoder", **options).eval().to(device)
        self.tokenizer_2 = AutoTokenizer.from_pretrained(path / "tokenizer_2", local_files_only=True)
        self.model_2 = CLIPTextModel.from_pretrained(path / "text_encoder_2", **options).eval().to(device)
        self.template: dict[str, Any] = dict(prompt_template or DEFAULT_PROMPT_TEMPLATE)
        if "{}" not in self.template.get("template", ""):
            raise ValueError("prompt_template['template'] must contain '{}' where the prompt goes")
        self.crop_start = self._crop_start()
        self.max_tokens = max_tokens
        self.num_hidden_layers_to_skip = num_hidden_layers_to_skip
        self.clip_max_tokens = clip_max_tokens
        self.text_dim: int = self.model.config.hidden_size
        self.pooled_dim: int = self.model_2.config.hidden_size

    def _crop_start(self) -> int:
        """The template's token count before the prompt, from the template's ``crop_start``.

        The pipeline can also measure it (tokenizing the template with ``padding="max_length"`` and no
        ``max_length``), but that pads to the tokenizer's ``model_max_length`` and gives a meaningless count with the
        real Llama-3 tokenizer, so a template without ``crop_start`` is refused instead.
        """
        crop_start = self.template.get("crop_start")
        if isinstance(crop_start, bool) or not isinstance(crop_start, int) or crop_start < 0:
            raise ValueError(
                "prompt_template['crop_start'] must be the template's token count (an integer >= 0), "
                f"got {crop_start!r}"
            )
        return crop_start

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pipeline's ``(prompt_embeds (B, L, D), pooled (B, P), attention_mask (B, L))``, float32 / int64.

        The states are *not* zeroed under the mask here (the pipeline does not zero them either).
        """
        states, mask = self._llama(prompts)
        return states, self.encode_pooled(prompts), mask

    def to(self, device: str | torch.device) -> HunyuanTextEncoder:
        self.model.to(device)
        self.model_2.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """``prompts`` → ``(B, max_tokens, text_dim)`` float32, zero where the attention mask is 0."""
        states, mask = self._llama(prompts)
        return states * mask.unsqueeze(-1).to(states.dtype)

    @torch.no_grad()
    def encode_condition(self, prompts: list[str]) -> TextCondition:
        """What the DiT takes: the states of :meth:`encode` (zero under the mask), the mask ``(B, L)`` int64 and
        CLIP's pooled vector ``(B, pooled_dim)``."""
        states, mask = self._llama(prompts)
        return TextCondition(states * mask.unsqueeze(-1).to(states.dtype), mask, self.encode_pooled(prompts))

    @torch.no_grad()
    def encode_pooled(self, prompts: list[str]) -> torch.Tensor:
        """``prompts`` → CLIP's ``pooler_output`` ``(B, pooled_dim)`` float32 (at most ``clip_max_tokens`` tokens)."""
        ids = self.tokenizer_2(
            prompts, padding="max_length", max_length=self.clip_max_tokens, truncation=True, return_tensors="pt"
        ).input_ids
        pooled = self.model_2(ids.to(self.model_2.device), output_hidden_states=False).pooler_output
        return pooled.float().cpu()

    def _llama(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``HunyuanVideoPipeline._get_llama_prompt_embeds`` for one video per prompt: (states, mask), cropped."""
        text = [self.template["template"].format(p) for p in prompts]
        inputs = self.tokenizer(
            text,
            max_length=self.max_tokens + self.crop_start,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
            return_length=False,
            return_overflowing_tokens=False,
            return_attention_mask=True,
        )
        device = self.model.device
        mask = inputs.attention_mask.to(device)
        hidden = self.model(input_ids=inputs.input_ids.to(device), attention_mask=mask, output_hidden_states=True)
        states = hidden.hidden_states[-(self.num_hidden_layers_to_skip + 1)].float().cpu()
        mask = mask.cpu()
        if self.crop_start > 0:
            states, mask = states[:, self.crop_start :], mask[:, self.crop_start :]
        return states, mask

    # -- sizing facts (sizing/ reads these) ----------------------------------------------------------------------
    sizing_name = "Llama + CLIP"
    # text_encoder/ and text_encoder_2/ config.json of hunyuanvideo-community/HunyuanVideo, as diffusers'
    # convert_hunyuan_video_to_diffusers.py writes them: the LLaVA-Llama-3-8B language model as a LlamaModel (4096
    # wide, 32 layers, 32 heads / 8 KV heads, MLP 14336, vocab 128320) and CLIP-L's text tower (768, 12 layers).
    released = {
        "text_encoder": {
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "vocab_size": 128320,
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-05,
            "rope_theta": 500000.0,
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": False,
        },
        "text_encoder_2": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "vocab_size": 49408,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-05,
        },
    }

    @staticmethod
    def meta_model(component: str, config: dict) -> torch.nn.Module:
        """``text_encoder`` (Llama) or ``text_encoder_2`` (CLIP) of ``config`` on the meta device: exact shapes, no
        weights."""
        from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

        with torch.device("meta"):
            if component == "text_encoder":
                return LlamaModel(LlamaConfig.from_dict(dict(config)))
            return CLIPTextModel(CLIPTextConfig.from_dict(dict(config)))
