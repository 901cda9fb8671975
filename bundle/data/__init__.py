"""Dataset descriptions, z-splits and the crop datasets that feed training."""

from .crops import RandomCropDataset, SlabDataset, grey_window, read_with_halo
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

__all__ = [
    "IGNORE_LABEL",
    "SPLITS",
    "DatasetError",
    "RandomCropDataset",
    "SlabDataset",
    "VolumeEntry",
    "check_label_values",
    "grey_window",
    "load_dataset_description",
    "paper_split",
    "read_with_halo",
    "write_dataset_description",
]
