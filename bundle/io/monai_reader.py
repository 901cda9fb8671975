"""MONAI `ImageReader` over the bundle's volume accessors, so `LoadImage(reader=...)` reads XCT formats.

For whole small volumes and other MONAI pipelines; big volumes go through `open_volume`
slab by slab instead, since `LoadImage` materialises the whole array.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from .volumes import NIFTI_SUFFIXES, TIFF_SUFFIXES, Volume, open_volume

__all__ = ["XCTVolumeReader"]


class XCTVolumeReader(ImageReader):
    """Reads `.raw` (+ `.raw.info`), TIFF stacks (file or folder) and NIfTI as [Z, Y, X] arrays.

    The affine maps (z, y, x) indices to (x, y, z) world coordinates scaled by the voxel size
    (sidecar `VOXEL_SIZE`/`voxel_size` or NIfTI zooms, else 1).
    """

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        for name in ensure_tuple(filename):
            lower = str(name).lower()
            if not (lower.endswith((".raw",) + TIFF_SUFFIXES + NIFTI_SUFFIXES) or Path(name).is_dir()):
                return False
        return True

    def read(self, data: Sequence[str] | str, **kwargs) -> Volume | list[Volume]:
        volumes = [open_volume(name) for name in ensure_tuple(data)]
        return volumes if len(volumes) > 1 else volumes[0]

    def get_data(self, img: Volume | list[Volume]) -> tuple[np.ndarray, dict]:
        volumes = ensure_tuple(img)
        arrays = [v.read() for v in volumes]
        first = volumes[0]
        voxel = first.meta.get("voxel_size", first.meta.get("VOXEL_SIZE", 1.0))
        voxel_xyz = [float(v) for v in (voxel if isinstance(voxel, list) else [voxel] * 3)]
        affine = np.zeros((4, 4))
        for world_axis, array_axis in enumerate((2, 1, 0)):
            affine[world_axis, array_axis] = voxel_xyz[world_axis]
        affine[3, 3] = 1.0
        meta = {
            **first.meta,
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(first.shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: 0 if len(arrays) > 1 else float("nan"),
            "axis_order": "zyx",
        }
        data = np.stack(arrays) if len(arrays) > 1 else arrays[0]
        return data, meta
