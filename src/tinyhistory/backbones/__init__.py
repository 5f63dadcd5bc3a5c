"""Backbone adapters around stock diffusers DiTs."""

from tinyhistory.backbones.base import Backbone, ContextTokens, grid_positions
from tinyhistory.backbones.wan import WanBackbone

__all__ = ["Backbone", "ContextTokens", "WanBackbone", "grid_positions"]
