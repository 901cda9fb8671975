"""Overlap-tile inference: tiles whose outer margin is context only, so that cutting changes nothing.

A voxel's logits depend on the input within the network's receptive field. When every tile
carries a margin at least that wide and only its core is kept, each output voxel is computed
from exactly the input a whole-volume pass would give it: a sub-box, another tile size or
another rank gives the same labels (up to summation order), which a blended sliding window
(MONAI's, with zero-padded tiles at the image border) does not. Tile origins stay on multiples
of the network's 2**u_depth, the shifts a strided U-Net is equivariant to. Past the volume's
own edge the input repeats its edge voxels (numpy 'edge', torch 'replicate') instead of zeros:
on the demo's test slices mirroring ('reflect') made false pores along the frame and zeros
(MONAI's default) mislabelled a third of it, while 'edge' scored like the interior
(docs/inference.md, `scripts/benchmark.py edges`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import Inferer

__all__ = ["OverlapTileInferer", "context_margin", "edge_indices", "receptive_radius"]


def receptive_radius(u_depth: int) -> int:
    """Input voxels each side of an output voxel that can change it, for the Modular U-Net of `u_depth`.

    Along the deepest path: two 3-wide convolutions per ConvBlock (2 * 2**l voxels at level l),
    one voxel of level l per DownBlock and per UpBlock (stride-2 conv or max-pool; transposed conv
    or nearest upsampling); the 1x1 head adds nothing. Skip paths are shorter.
    """
    return sum(6 * 2**level for level in range(u_depth)) + 2 * 2**u_depth


def context_margin(u_depth: int) -> int:
    """The margin read around every tile: the receptive radius rounded up to a multiple of 2**u_depth."""
    step = 2**u_depth
    return -(-receptive_radius(u_depth) // step) * step


def edge_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices into an axis of `size` for positions start..stop-1, the edge voxel repeated past both ends."""
    return np.clip(np.arange(start, stop), 0, size - 1)


def _extend(x: torch.Tensor, pads: Sequence[int]) -> torch.Tensor:
    """`x` extended by pads[i] copies of its edge voxels at both ends of each of its last len(pads) axes."""
    for axis, pad in zip(range(x.ndim - len(pads), x.ndim), pads):
        if pad:
            index = torch.from_numpy(edge_indices(-pad, x.shape[axis] + pad, x.shape[axis])).to(x.device)
            x = x.index_select(axis, index)
    return x


class OverlapTileInferer(Inferer):
    """Segments [B, C, *spatial] into [B, classes, *spatial] with tiles of `roi_size` that keep only their core.

    The input is extended by `margin` copies of its edge voxels; tiles of size core + 2 * margin start
    every `core` voxels; a tile is shrunk (in steps of `size_multiple`) where the image is smaller
    than a full one.

    Args:
        roi_size: the largest tile, per spatial axis; each at least 2 * margin + size_multiple.
        margin: context voxels each side of a tile's core (see `context_margin`), per axis or one for all.
        sw_batch_size: tiles per forward pass.
        size_multiple: the network's 2**u_depth.
    """

    def __init__(self, roi_size: Sequence[int], margin: int | Sequence[int], sw_batch_size: int = 4, size_multiple: int = 8) -> None:
        super().__init__()
        self.roi_size = tuple(int(r) for r in roi_size)
        margins = [int(margin)] * len(self.roi_size) if isinstance(margin, (int, np.integer)) else [int(m) for m in margin]
        self.margin = tuple(margins)
        self.size_multiple = int(size_multiple)
        self.sw_batch_size = int(sw_batch_size)
        for roi, m in zip(self.roi_size, self.margin):
            if m % self.size_multiple or roi % self.size_multiple or roi < 2 * m + self.size_multiple:
                smallest = 2 * m + self.size_multiple
                raise ValueError(
                    f"roi_size {list(self.roi_size)} does not fit the network's context margin {m}: each tile side must be a "
                    f"multiple of {self.size_multiple} of at least {smallest} (e.g. {max(256, smallest)})."
                )

    def _tile(self, extent: int, axis: int) -> tuple[int, int]:
        """(tile size, core size) along `axis` for an image `extent` voxels long."""
        m, step = self.margin[axis], self.size_multiple
        fitting = -(-(extent + 2 * m) // step) * step
        tile = min(self.roi_size[axis], fitting)
        return tile, tile - 2 * m

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        spatial = tuple(inputs.shape[2:])
        if len(spatial) != len(self.roi_size):
            raise ValueError(f"roi_size {list(self.roi_size)} does not match the input's spatial shape {list(spatial)}.")
        tiles = [self._tile(extent, axis) for axis, extent in enumerate(spatial)]
        starts = [range(0, extent, core) for extent, (_, core) in zip(spatial, tiles)]
        reach = [s[-1] + tile for s, (tile, _) in zip(starts, tiles)]
        padded = _extend(inputs, self.margin)
        extra = [max(0, r - p) for r, p in zip(reach, padded.shape[2:])]
        if any(extra):
            pad = [v for e in reversed(extra) for v in (0, e)]
            padded = torch.nn.functional.pad(padded, pad)
        out = None
        origins = [(b, corner) for b in range(inputs.shape[0]) for corner in itertools.product(*starts)]
        for first in range(0, len(origins), self.sw_batch_size):
            batch = origins[first : first + self.sw_batch_size]
            windows = torch.stack(
                [padded[(b, slice(None), *(slice(o, o + t) for o, (t, _) in zip(corner, tiles)))] for b, corner in batch]
            )
            logits = network(windows, *args, **kwargs)
            if out is None:
                out = logits.new_empty((inputs.shape[0], logits.shape[1], *spatial))
            for (b, corner), tile_logits in zip(batch, logits):
                target = tuple(slice(o, min(o + core, extent)) for o, (_, core), extent in zip(corner, tiles, spatial))
                source = tuple(slice(m, m + (t.stop - t.start)) for m, t in zip(self.margin, target))
                out[(b, slice(None), *target)] = tile_logits[(slice(None), *source)]
        return out
