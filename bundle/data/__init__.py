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
    "RandomCropDataset",
    "SlabDataset",
    "grey_window",
    "read_with_halo",
    "IGNORE_LABEL",
    "SPLITS",
    "DatasetError",
    "VolumeEntry",
    "check_label_values",
    "load_dataset_description",
    "paper_split",
    "write_dataset_description",
]
