"""Overlap-tile inference: tiles whose inner margins are context only, so that cutting changes nothing.

A voxel's logits depend on the input within the network's receptive field. When a tile keeps
only the voxels that lie at least `margin` (the receptive radius, rounded up) from every tile
border that is not the image's own edge, each kept voxel is computed from exactly the input a
single pass over the whole image would give it: a sub-box, another tile size or another rank
gives the same labels (up to summation order), which a blended sliding window does not.
Tile origins stay on multiples of the network's 2**u_depth, the shifts a strided U-Net is
equivariant to.

At the image's own edge a tile stops, so the network sees its usual zero padding there: what
it saw at every crop border in training. Extending the image instead cost accuracy: padding
with zeros (MONAI's sliding window does so when a slice is smaller than its window) mislabelled
a third of each slice's outer frame, mirroring made false pores along it, and repeating the edge
voxels scored like stopping but costs an extra margin of compute (`scripts/benchmark.py edges`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from monai.inferers import Inferer

__all__ = ["OverlapTileInferer", "context_margin", "receptive_radius", "tile_plan"]


def receptive_radius(u_depth: int) -> int:
    """Input voxels each side of an output voxel that can change it, for the Modular U-Net of `u_depth`.

    Along the deepest path: two 3-wide convolutions per ConvBlock (2 * 2**l voxels at level l),
    one voxel of level l per DownBlock and per UpBlock (stride-2 conv or max-pool; transposed conv
    or nearest upsampling); the 1x1 head adds nothing. Skip paths are shorter.
    """
    return sum(6 * 2**level for level in range(u_depth)) + 2 * 2**u_depth


def context_margin(u_depth: int) -> int:
    """The margin kept around every tile's core: the receptive radius rounded up to a multiple of 2**u_depth."""
    step = 2**u_depth
    return -(-receptive_radius(u_depth) // step) * step


def tile_plan(extent: int, tile: int, margin: int) -> list[tuple[int, int, int]]:
    """(origin, core start, core end) of the tiles along one axis of `extent` voxels (a multiple of the step).

    A tile is `tile` voxels long, or the whole extent when that is shorter. Its core ends `margin`
    before its end and starts `margin` after its origin, except where the tile touches the image's edge.
    """
    if extent <= tile:
        return [(0, 0, extent)]
    plan, start = [], 0
    while start < extent:
        origin = max(0, min(start - margin, extent - tile))
        end = extent if origin + tile >= extent else origin + tile - margin
        plan.append((origin, start, end))
        start = end
    return plan


class OverlapTileInferer(Inferer):
    """Segments [B, C, *spatial] into [B, classes, *spatial] with tiles of at most `roi_size` that keep only their core.

    The input is zero-padded at its far end to a multiple of `size_multiple` (the padding is cut
    from the output), then covered by `tile_plan` along every axis.

    Args:
        roi_size: the largest tile, per spatial axis; each a multiple of size_multiple of at least 2 * margin + size_multiple.
        margin: context voxels between a tile's core and its inner borders (see `context_margin`).
        sw_batch_size: tiles per forward pass.
        size_multiple: the network's 2**u_depth.
    """

    def __init__(self, roi_size: Sequence[int], margin: int, sw_batch_size: int = 4, size_multiple: int = 8) -> None:
        super().__init__()
        self.roi_size = tuple(int(r) for r in roi_size)
        self.margin = int(margin)
        self.size_multiple = int(size_multiple)
        self.sw_batch_size = int(sw_batch_size)
        smallest = 2 * self.margin + self.size_multiple
        if self.margin % self.size_multiple or any(r % self.size_multiple or r < smallest for r in self.roi_size):
            raise ValueError(
                f"roi_size {list(self.roi_size)} does not fit the network's context margin {self.margin}: each tile side "
                f"must be a multiple of {self.size_multiple} of at least {smallest} (e.g. {max(256, smallest)})."
            )

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        spatial = tuple(inputs.shape[2:])
        if len(spatial) != len(self.roi_size):
            raise ValueError(f"roi_size {list(self.roi_size)} does not match the input's spatial shape {list(spatial)}.")
        padded_extent = [-(-e // self.size_multiple) * self.size_multiple for e in spatial]
        pad = [v for extent, e in zip(reversed(padded_extent), reversed(spatial)) for v in (0, extent - e)]
        padded = torch.nn.functional.pad(inputs, pad) if any(pad) else inputs
        plans = [tile_plan(e, t, self.margin) for e, t in zip(padded_extent, self.roi_size)]
        sizes = [min(e, t) for e, t in zip(padded_extent, self.roi_size)]
        jobs = [(b, corner) for b in range(inputs.shape[0]) for corner in itertools.product(*plans)]
        out = None
        for first in range(0, len(jobs), self.sw_batch_size):
            batch = jobs[first : first + self.sw_batch_size]
            windows = torch.stack(
                [padded[(b, slice(None), *(slice(o, o + s) for (o, _, _), s in zip(corner, sizes)))] for b, corner in batch]
            )
            logits = network(windows, *args, **kwargs)
            if out is None:
                out = logits.new_empty((inputs.shape[0], logits.shape[1], *spatial))
            for (b, corner), tile_logits in zip(batch, logits):
                target = tuple(slice(c0, min(c1, e)) for (_, c0, c1), e in zip(corner, spatial))
                source = tuple(slice(t.start - o, t.stop - o) for t, (o, _, _) in zip(target, corner))
                if all(t.stop > t.start for t in target):
                    out[(b, slice(None), *target)] = tile_logits[(slice(None), *source)]
        return out
