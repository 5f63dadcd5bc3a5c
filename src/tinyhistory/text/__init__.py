"""Text encoders behind one protocol: ``encode(prompts) -> (B, L, text_dim)``."""

from tinyhistory.text.minilm import MiniLMTextEncoder

__all__ = ["MiniLMTextEncoder"]
