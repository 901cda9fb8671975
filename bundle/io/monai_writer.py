"""MONAI `ImageWriter` for the bundle's formats, so `SaveImage(writer=XCTVolumeWriter)` writes .raw (+ sidecar), TIFF or NIfTI."""

from __future__ import annotations

import numpy as np
from monai.data import ImageWriter
from monai.utils import convert_data_type

from .volumes import write_volume

__all__ = ["XCTVolumeWriter"]


class XCTVolumeWriter(ImageWriter):
    """Writes a [Z, Y, X] (or single-channel [1, Z, Y, X]) array in the bundle's (z, y, x) convention.

    The format follows the file name (.raw, .tif/.tiff, .nii/.nii.gz); scalar and list
    metadata (voxel size...) go into the sidecar or the NIfTI header. No resampling.

    Args:
        output_dtype: dtype written (None keeps the array's).
    """

    def __init__(self, output_dtype=None, **kwargs) -> None:
        super().__init__(output_dtype=output_dtype, **kwargs)
        self.meta: dict = {}

    def set_data_array(self, data_array, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs) -> None:
        array = convert_data_type(data_array, np.ndarray)[0]
        if channel_dim is not None and array.ndim == 4:
            if array.shape[channel_dim] != 1:
                raise ValueError(f"XCTVolumeWriter writes one channel, got shape {array.shape} with channel_dim {channel_dim}.")
            array = np.take(array, 0, axis=channel_dim)
        if array.ndim != 3:
            raise ValueError(f"XCTVolumeWriter writes 3D (z, y, x) volumes, got shape {array.shape}.")
        self.data_obj = array.astype(self.output_dtype) if self.output_dtype is not None else array

    def set_metadata(self, meta_dict=None, **options) -> None:
        keep = {}
        for key, value in dict(meta_dict or {}).items():
            if isinstance(value, (int, float, str)) and not str(key).startswith(("filename", "affine", "original", "spatial", "space")):
                keep[key] = value
        self.meta = keep

    def write(self, filename, verbose: bool = True, **kwargs) -> None:
        super().write(filename, verbose=verbose)
        write_volume(filename, self.data_obj, self.meta)
