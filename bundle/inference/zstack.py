"""One inferer for a z-slab, whatever the variant: 2D slices, 2.5D neighbour stacks or 3D tiles.

Opt-in quality levers: test-time augmentation over the 8 in-plane symmetries (nnU-Net's
mirroring) and, for 2D/2.5D models, multi-axis fusion (volume-segmantics' predictions along
z, y and x), both averaged in probability space.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SlidingWindowInferer

from ..flags import as_flag
from .tiles import OverlapTileInferer, context_margin

__all__ = ["ZStackInferer", "dihedral", "undo_dihedral"]

AXES = ("z", "y", "x")


def dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    """Symmetry `index` (0..7) of the square on the last two axes: rotate k = index % 4 quarter turns, then flip."""
    x = torch.rot90(x, index % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if index >= 4 else x


def undo_dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    """The inverse of `dihedral(., index)`."""
    if index >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, -(index % 4), dims=(-2, -1))


class ZStackInferer(Inferer):
    """Segments a slab [B, 1, Z + 2*z_halo, Y, X] into [B, C, Z, Y, X] logits.

    With a 2-value `roi_size` the network is 2D: each output plane sees its `context`
    neighbours each side as channels (0 plain 2D, 2 the paper's 2.5D) and is tiled by the
    `OverlapTileInferer` (tiles keep only their core, `margin` of context toward
    neighbouring tiles; at the image's own edge a tile stops), `slice_batch` planes at a time, so the result does not depend on
    the tile size or on where the image was cut. With a 3-value `roi_size` the network is 3D,
    tiled by MONAI's `SlidingWindowInferer`, and the halo gives tiles at the slab borders real context.

    With `tta` or more than one of `axes`, the per-voxel probabilities of every prediction
    are averaged and their log is returned, so a softmax downstream gives the mean.

    Args:
        roi_size: tile size, (y, x) or (z, y, x); multiples of the network's 2**u_depth.
        margin: 2D only, context voxels around each tile's core (default: the network's `context_margin`).
        z_halo: context slices each side of the slab, cropped from the output.
        overlap: 3D only, tile overlap fraction.
        mode: 3D only, blending of overlapping tiles ("gaussian" or "constant").
        sw_batch_size: tiles per forward pass.
        slice_batch: 2D only, planes tiled together at most; fewer when planes are large, so that a
            batch's blended output stays under `batch_voxels`.
        batch_voxels: 2D only, voxels of planes tiled together (bounds the sliding window's buffers).
        context: 2D only, neighbour planes each side given as channels (default: z_halo).
        tta: average over the 8 in-plane flips/rotations.
        axes: 2D only, the plane normals to predict along ("z", "y", "x"), fused by the mean.
        size_multiple: the network's 2**u_depth; planes across the slab get tiles only as tall as the slab needs.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        z_halo: int = 0,
        overlap: float = 0.25,
        mode: str = "gaussian",
        sw_batch_size: int = 4,
        slice_batch: int = 8,
        batch_voxels: int = 4 * 2**20,
        context: int | None = None,
        tta: bool = False,
        axes: Sequence[str] = ("z",),
        size_multiple: int = 8,
        margin: int | None = None,
    ) -> None:
        super().__init__()
        self.roi_size = tuple(int(r) for r in roi_size)
        if len(self.roi_size) not in (2, 3):
            raise ValueError(f"roi_size must be (y, x) or (z, y, x), got {roi_size}.")
        self.z_halo = int(z_halo)
        self.context = self.z_halo if context is None else int(context)
        if len(self.roi_size) == 2 and self.context > self.z_halo:
            raise ValueError(f"context {self.context} needs a z_halo of at least as many slices, got {self.z_halo}.")
        self.slice_batch = int(slice_batch)
        self.batch_voxels = int(batch_voxels)
        self.tta = as_flag(tta)
        self.axes = tuple(axes)
        if not self.axes or any(a not in AXES for a in self.axes):
            raise ValueError(f"axes must be a non-empty subset of {AXES}, got {axes}.")
        if len(self.roi_size) == 3 and self.axes != ("z",):
            raise ValueError("multi-axis fusion is for 2D/2.5D models; a 3D model sees all axes already.")
        self.size_multiple = int(size_multiple)
        if len(self.roi_size) == 3:
            self.window = SlidingWindowInferer(self.roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode)
        else:
            self.margin = context_margin(self.size_multiple.bit_length() - 1) if margin is None else int(margin)
            self.window = OverlapTileInferer(self.roi_size, self.margin, sw_batch_size, self.size_multiple)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if inputs.ndim != 5 or inputs.shape[1] != 1:
            raise ValueError(f"ZStackInferer expects a [B, 1, Z, Y, X] slab, got shape {tuple(inputs.shape)}.")
        depth = inputs.shape[2] - 2 * self.z_halo
        if depth < 1:
            raise ValueError(f"slab of {inputs.shape[2]} slices is thinner than its halo of {self.z_halo} each side.")
        transforms = range(8) if self.tta else (0,)
        fused = len(transforms) * len(self.axes) > 1
        total = None
        for axis in self.axes:
            for index in transforms:
                logits = self._predict(inputs, network, axis, index, *args, **kwargs)
                if not fused:
                    return logits
                probabilities = torch.softmax(logits.float(), dim=1)
                total = probabilities if total is None else total + probabilities
        return torch.log((total / (len(transforms) * len(self.axes))).clamp_min(1e-12))

    def _predict(self, inputs: torch.Tensor, network, axis: str, index: int, *args, **kwargs) -> torch.Tensor:
        depth = inputs.shape[2] - 2 * self.z_halo
        if len(self.roi_size) == 3:
            out = undo_dihedral(self.window(dihedral(inputs, index), network, *args, **kwargs), index)
            return out[:, :, self.z_halo : self.z_halo + depth]
        if axis == "z":
            volume = inputs[:, 0, self.z_halo - self.context : self.z_halo + depth + self.context]
            return self._planes(volume, network, index, *args, **kwargs)
        order = (0, 2, 1, 3) if axis == "y" else (0, 3, 2, 1)
        volume = inputs[:, 0].permute(*order)
        if self.context:
            volume = F.pad(volume.unsqueeze(1), (0, 0, 0, 0, self.context, self.context), mode="reflect").squeeze(1)
        out = self._planes(volume, network, index, *args, **kwargs)
        out = out.permute(0, 1, *[o + 1 for o in order[1:]])
        return out[:, :, self.z_halo : self.z_halo + depth]

    def _planes(self, volume: torch.Tensor, network, index: int, *args, **kwargs) -> torch.Tensor:
        """[B, N + 2*context, H, W] -> [B, C, N, H, W]: each plane with its neighbours as channels."""
        window = self.window
        n = volume.shape[1] - 2 * self.context
        height, width = volume.shape[2:]
        step = max(1, min(self.slice_batch, self.batch_voxels // (height * width)))
        grow = [(-e) % self.size_multiple for e in (height, width)]
        out = None
        for b in range(volume.shape[0]):
            stacks = volume[b].unfold(0, 2 * self.context + 1, 1).permute(0, 3, 1, 2)
            if any(grow):
                stacks = F.pad(stacks, (0, grow[1], 0, grow[0]))
            for s in range(0, n, step):
                piece = undo_dihedral(window(dihedral(stacks[s : s + step], index), network, *args, **kwargs), index)
                piece = piece[..., :height, :width]
                if out is None:
                    out = piece.new_empty((volume.shape[0], piece.shape[1], n, *piece.shape[2:]))
                out[b, :, s : s + step] = piece.permute(1, 0, 2, 3)
                del piece
        return out
