"""Sizing tools: what a run costs before it runs (``tinyhistory cost``: FLOPs; ``tinyhistory plan``: memory).

Everything here is counted on the ``meta`` device from real configs, so a 14B DiT costs seconds and no weights. The
facts of each base-model family (its released configs, VAE, text encoder, LoRA targets, what it refuses) belong to
the family's own classes and are read through :mod:`tinyhistory.registry` (:mod:`tinyhistory.sizing.models`): a new
family is sized by declaring them, with nothing to change here.

Modules: :mod:`.facts` (the shape of a family's facts, no torch), :mod:`.models` (reading them),
:mod:`.memory` (exact bytes, the activation model, live-tensor traces), :mod:`.cost` and :mod:`.plan`.
This package imports nothing on import, so the families can import :mod:`.facts` without a cycle.
"""
