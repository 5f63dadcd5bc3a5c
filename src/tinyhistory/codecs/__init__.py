"""Latent codecs behind one protocol (see :class:`tinyhistory.codecs.base.Codec`)."""

from tinyhistory.codecs.base import Codec
from tinyhistory.codecs.hunyuan import HunyuanVAECodec
from tinyhistory.codecs.pixel import PixelUnshuffleCodec
from tinyhistory.codecs.wan import WanVAECodec

__all__ = ["Codec", "HunyuanVAECodec", "PixelUnshuffleCodec", "WanVAECodec"]
