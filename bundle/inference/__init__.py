"""Inferers: the z-slab inferer shared by validation, evaluation and streamed inference."""

from .zstack import ZStackInferer

__all__ = ["ZStackInferer"]
