"""Dataset descriptions, z-splits and the crop datasets that feed training."""

from .crops import PlanAtStart, RandomCropDataset, SlabDataset, read_with_halo
from .description import (
    IGNORE_LABEL,
    SPLITS,
    DatasetError,
    VolumeEntry,
    check_label_values,
    combine_dataset_descriptions,
    load_dataset_description,
    paper_split,
    write_dataset_description,
)
from .grey import DatasetGrey, GreyWindowd, WindowedVolume, grey_window, model_window, volume_window, windowed

__all__ = [
    "DatasetGrey",
    "GreyWindowd",
    "IGNORE_LABEL",
    "SPLITS",
    "DatasetError",
    "PlanAtStart",
    "RandomCropDataset",
    "SlabDataset",
    "VolumeEntry",
    "WindowedVolume",
    "check_label_values",
    "combine_dataset_descriptions",
    "grey_window",
    "model_window",
    "load_dataset_description",
    "paper_split",
    "read_with_halo",
    "volume_window",
    "windowed",
    "write_dataset_description",
]
