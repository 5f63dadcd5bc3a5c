"""Latent codecs behind one protocol (see :class:`tinyhistory.codecs.base.Codec`)."""

from tinyhistory.codecs.base import Codec
from tinyhistory.codecs.pixel import PixelUnshuffleCodec

__all__ = ["Codec", "PixelUnshuffleCodec"]
