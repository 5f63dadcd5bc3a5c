"""The text-encoder seam: prompts → the :class:`~tinyhistory.text.condition.TextCondition` a DiT reads.

One encoder per ``text.kind`` (registered in ``registry.py``): UMT5 for Wan, Llama + CLIP for HunyuanVideo, T5 for
LTX-Video, MiniLM for the tiny presets. Callers ask the declared members only (never ``getattr``), so an encoder
without a mask or a pooled vector inherits :class:`StatesTextEncoder`'s condition of token states alone.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import torch

from tinyhistory.text.condition import TextCondition


@runtime_checkable
class TextEncoder(Protocol):
    text_dim: int  # width of the token states
    pooled_dim: int  # width of the pooled vector (0: none)
    # ``text.path`` defaults to the run's model folder (``--model DIR``): the encoder is the folder's text_encoder/.
    reads_model_folder: bool

    @classmethod
    def from_config(cls, cfg, dtype: torch.dtype, device) -> TextEncoder:
        """The encoder of the ``[text]`` table, on ``device`` in ``dtype`` (a small one may stay on the CPU)."""
        ...

    def to(self, device: str | torch.device) -> TextEncoder: ...

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """``prompts`` → ``(B, max_tokens, text_dim)`` float32 token states, zero past each prompt."""
        ...

    def encode_condition(self, prompts: list[str]) -> TextCondition:
        """``prompts`` → everything the DiT reads of them: states, and the mask and pooled vector where it has them."""
        ...


class StatesTextEncoder:
    """The defaults of a text encoder: its condition is its token states alone (no mask, no pooled vector: UMT5,
    MiniLM), and it is the model folder's own. An encoder that gives more overrides :meth:`encode_condition`."""

    reads_model_folder: ClassVar[bool] = True

    def encode_condition(self, prompts: list[str]) -> TextCondition:
        return TextCondition(self.encode(prompts))
