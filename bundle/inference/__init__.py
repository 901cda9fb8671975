"""Inferers and streamed segmentation: the z-slab inferer shared by validation, evaluation and inference."""

from .autocast import AutocastInferer
from .streamed import StreamedSegmentation, StreamedSlabDataset, StreamedWriter, normalise_grey
from .zstack import ZStackInferer

__all__ = ["AutocastInferer", "StreamedSegmentation", "StreamedSlabDataset", "StreamedWriter", "ZStackInferer", "normalise_grey"]
