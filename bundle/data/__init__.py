"""Dataset descriptions, z-splits and the crop datasets that feed training."""

from .crops import RandomCropDataset, SlabDataset, read_with_halo
from .description import (
    IGNORE_LABEL,
    SPLITS,
    DatasetError,
    VolumeEntry,
    check_label_values,
    load_dataset_description,
    paper_split,
    write_dataset_description,
)
from .grey import GreyWindowd, WindowedVolume, grey_window, model_window, volume_window, windowed

__all__ = [
    "GreyWindowd",
    "IGNORE_LABEL",
    "SPLITS",
    "DatasetError",
    "RandomCropDataset",
    "SlabDataset",
    "VolumeEntry",
    "WindowedVolume",
    "check_label_values",
    "grey_window",
    "model_window",
    "load_dataset_description",
    "paper_split",
    "read_with_halo",
    "volume_window",
    "windowed",
    "write_dataset_description",
]
