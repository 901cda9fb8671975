"""A synthetic glass-fibre-reinforced PA66 tomography with exact labels (0 matrix, 1 fibre, 2 porosity).

The geometry (fibres as cylinders, pores as ellipsoids) is drawn once from the seed; grey
levels are then rendered slab by slab with a halo, so any size streams to disk in bounded
memory and the result does not depend on the slab size. The grey levels carry what makes
the real data hard to threshold: partial-volume blur at interfaces, noise (white, or with the
ramp spectrum that filtered back-projection gives it), ring artifacts centred on the rotation
(z) axis, some as dark as pores, and cupping (a radial intensity gradient) with a slow drift
along z.

`PhantomConfig` is one scan; `PhantomFamily` draws configs from ranges of material and
acquisition, so a model trained on many draws cannot learn one scanner's grey levels.

Modules: `config` (one scan's knobs), `geometry` (the material), `image_domain` and `projection`
(two acquisitions), `family` (the draws and the files).
"""

from .config import FIBRE, FULL_SCALE, MATRIX, PORE, PhantomConfig
from .family import PhantomFamily, make_family, make_phantom
from .geometry import PhantomGeometry
from .image_domain import render_slab
from .projection import render_projection_slab

__all__ = [
    "FIBRE",
    "FULL_SCALE",
    "MATRIX",
    "PORE",
    "PhantomConfig",
    "PhantomFamily",
    "PhantomGeometry",
    "make_family",
    "make_phantom",
    "render_projection_slab",
    "render_slab",
]
