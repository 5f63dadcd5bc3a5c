"""The text-encoder seam: prompts → the :class:`~tinyhistory.text.condition.TextCondition` a DiT reads.

One encoder per ``text.kind`` (registered in ``registry.py``): UMT5 for Wan, Llama + CLIP for HunyuanVideo, T5 for
LTX-Video, MiniLM for the tiny presets. Callers ask the declared members only (never ``getattr``), so an encoder
without a mask or a pooled vector inherits :class:`StatesTextEncoder`'s condition of token states alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import torch

from tinyhistory.codecs.base import require_folder
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

    @classmethod
    def from_config(cls, cfg, dtype: torch.dtype, device) -> StatesTextEncoder:
        """Registry constructor from the ``[text]`` table: ``cls(text.path, text.max_tokens, dtype=, device=)``, the
        path required (a model folder or the encoder's own folder)."""
        path = require_folder(cfg.path, "text.path", cfg.kind, "model")
        return cls(path, cfg.max_tokens, dtype=dtype, device=device)

    def encode_condition(self, prompts: list[str]) -> TextCondition:
        return TextCondition(self.encode(prompts))


def component_folders(path: Path, model: str, tokenizer: str, what: str) -> tuple[Path, Path]:
    """``(model folder, tokenizer folder)`` inside ``path``: its subfolders if present, else ``path`` itself."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    if (path / model).is_dir() or (path / tokenizer).is_dir():
        folders = (path / model, path / tokenizer)
        for folder in folders:
            if not folder.is_dir():
                raise FileNotFoundError(f"{what}: {path} has no {folder.name}/ subfolder")
        return folders
    return path, path


class EncoderFolderTextEncoder(StatesTextEncoder):
    """One ``transformers`` encoder and its tokenizer, loaded with ``from_pretrained`` from a local folder only
    (safetensors, nothing downloaded): a diffusers model repo (``text_encoder/`` and ``tokenizer/`` subfolders) or one
    folder holding both. UMT5 for Wan and T5 for LTX-Video; each names its model class (:meth:`model_class`), its
    pipeline's ``max_sequence_length`` (``default_max_tokens``) and how it encodes. ``dtype`` is the encoder's compute
    dtype (bfloat16 on a GPU for the XXL encoders; outputs are float32 either way)."""

    pooled_dim = 0  # neither Wan nor LTX-Video has a pooled text vector
    default_max_tokens: ClassVar[int]
    sizing_name: ClassVar[str]  # also names the encoder in a missing folder's error

    @staticmethod
    def model_class() -> type:
        """The ``transformers`` encoder class (imported when first needed: transformers is slow to import)."""
        raise NotImplementedError

    def __init__(
        self,
        path: str | Path,
        max_tokens: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        """``max_tokens``: None takes the pipeline's (``default_max_tokens``)."""
        from transformers import AutoTokenizer

        what = f"{self.sizing_name} text encoder"
        model_dir, tokenizer_dir = component_folders(Path(path), "text_encoder", "tokenizer", what)
        max_tokens = self.default_max_tokens if max_tokens is None else max_tokens
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        self.model = (
            self.model_class()
            .from_pretrained(model_dir, dtype=dtype, local_files_only=True, use_safetensors=True)
            .eval()
        )
        self.model.to(device)
        self.max_tokens = max_tokens
        self.text_dim: int = self.model.config.d_model

    def to(self, device: str | torch.device) -> EncoderFolderTextEncoder:
        self.model.to(device)
        return self

    @classmethod
    def meta_model(cls, component: str, config: dict) -> torch.nn.Module:
        """The ``component`` (``text_encoder``) of ``config`` on the meta device: exact shapes, no weights."""
        model = cls.model_class()
        with torch.device("meta"):
            return model(model.config_class.from_dict(dict(config)))
