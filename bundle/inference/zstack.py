"""One inferer for a z-slab, whatever the variant: 2D slices, 2.5D neighbour stacks or 3D tiles."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.inferers import Inferer, SlidingWindowInferer

__all__ = ["ZStackInferer"]


class ZStackInferer(Inferer):
    """Segments a slab [B, 1, Z + 2*z_halo, Y, X] into [B, C, Z, Y, X] logits.

    With a 2-value `roi_size` the network is 2D: each output slice z sees input slices
    z-z_halo..z+z_halo as channels (z_halo 0 is plain 2D, 2 the paper's 2.5D) and is tiled in
    (y, x) by MONAI's `SlidingWindowInferer`, `slice_batch` slices at a time. With a 3-value
    `roi_size` the network is 3D and the halo only gives tiles at the slab borders real context.

    Args:
        roi_size: tile size, (y, x) or (z, y, x); multiples of the network's 2**u_depth.
        z_halo: context slices each side of the slab, cropped from the output.
        overlap: tile overlap fraction.
        mode: blending of overlapping tiles ("gaussian" or "constant").
        sw_batch_size: tiles per forward pass.
        slice_batch: 2D only, slices tiled together.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        z_halo: int = 0,
        overlap: float = 0.25,
        mode: str = "gaussian",
        sw_batch_size: int = 4,
        slice_batch: int = 8,
    ) -> None:
        super().__init__()
        self.roi_size = tuple(int(r) for r in roi_size)
        if len(self.roi_size) not in (2, 3):
            raise ValueError(f"roi_size must be (y, x) or (z, y, x), got {roi_size}.")
        self.z_halo = int(z_halo)
        self.slice_batch = int(slice_batch)
        self.window = SlidingWindowInferer(self.roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if inputs.ndim != 5 or inputs.shape[1] != 1:
            raise ValueError(f"ZStackInferer expects a [B, 1, Z, Y, X] slab, got shape {tuple(inputs.shape)}.")
        depth = inputs.shape[2] - 2 * self.z_halo
        if depth < 1:
            raise ValueError(f"slab of {inputs.shape[2]} slices is thinner than its halo of {self.z_halo} each side.")
        if len(self.roi_size) == 3:
            out = self.window(inputs, network, *args, **kwargs)
            return out[:, :, self.z_halo : self.z_halo + depth]
        outputs = []
        for b in range(inputs.shape[0]):
            stacks = inputs[b, 0].unfold(0, 2 * self.z_halo + 1, 1).permute(0, 3, 1, 2)
            slices = [self.window(stacks[s : s + self.slice_batch], network, *args, **kwargs) for s in range(0, depth, self.slice_batch)]
            outputs.append(torch.cat(slices).permute(1, 0, 2, 3))
        return torch.stack(outputs)
