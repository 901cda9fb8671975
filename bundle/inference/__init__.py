"""Inferers and streamed segmentation: the z-slab inferer shared by validation, evaluation and inference."""

from .autocast import AutocastInferer
from .calibration import calibration_batches
from .postprocessing import NormalisedEntropyd
from .predictor import Predictor, PredictorInferer
from .resume import ResumeMismatchError
from .streamed import StreamedSegmentation, StreamedSlabDataset, StreamedWriter, single_image
from .tiles import OverlapTileInferer, context_margin, receptive_radius, tile_plan
from .zstack import ZStackInferer

__all__ = [
    "AutocastInferer",
    "calibration_batches",
    "OverlapTileInferer",
    "NormalisedEntropyd",
    "Predictor",
    "PredictorInferer",
    "ResumeMismatchError",
    "context_margin",
    "receptive_radius",
    "StreamedSegmentation",
    "StreamedSlabDataset",
    "StreamedWriter",
    "ZStackInferer",
    "single_image",
    "tile_plan",
]
