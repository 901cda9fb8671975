"""Inferers: the z-slab inferer shared by validation, evaluation and streamed inference."""

from .autocast import AutocastInferer
from .zstack import ZStackInferer

__all__ = ["AutocastInferer", "ZStackInferer"]
