"""Text encoders behind one protocol: ``encode(prompts) -> (B, L, text_dim)``, plus ``pooled_dim`` (0 if none).

Each model's module imports its transformers classes lazily, so importing this package stays cheap.
"""

from tinyhistory.text.hunyuan import HunyuanTextEncoder
from tinyhistory.text.minilm import MiniLMTextEncoder
from tinyhistory.text.umt5 import UMT5TextEncoder

__all__ = ["HunyuanTextEncoder", "MiniLMTextEncoder", "UMT5TextEncoder"]
