"""Projection-domain acquisition: the attenuation of each slice forward-projected (parallel beam), measured by a
photon-counting detector with flaws, and reconstructed by filtered back-projection (scikit-image's radon / iradon).

What a reconstruction shows then comes from the physics, not from a painted pattern: photon (Poisson)
noise correlated along the projection geometry, rings from detector pixels whose gain the flat
field does not correct (following detector columns, varying with the detector row, i.e. z), cupping
and dark streaks between dense objects from a polychromatic beam (`beam_hardening`: the measured
line integral p - b p^2 / p_max), edge fringes from propagation phase contrast (the Laplacian of
each projection along the detector), streaks from few angles, the reconstruction filter's noise
texture, detector blur. The slice is the centre of a cylindrical specimen of diameter sqrt(2) x
its width (so the square of interest sits inside the reconstruction circle); each z slice is its
own parallel-beam problem with its own random stream, so slabs of any size give the same bytes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from .config import FIBRE, FULL_SCALE, MATRIX, PORE, PhantomConfig
from .geometry import PhantomGeometry, inclusion_occupancy, occupancy

__all__ = ["padded_shape", "render_projection_slab"]

GREY_MATRIX = 0.4  # reconstructed matrix attenuation maps to this grey level before gain and offset
Z_SIGMA = 0.5  # detector rows blur along z as much as the fibres' partial volume does in-plane


def padded_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The specimen's extent: in-plane the circumscribed square of the slice, so the slice lies inside the circle."""
    side = int(math.ceil(max(shape[1:]) * math.sqrt(2))) + 2
    return (shape[0], side, side)


def _detector_gain(config: PhantomConfig, seed: int, z: int, width: int) -> np.ndarray:
    """The gain the flat field misses per detector pixel of row z: a column part shared by all rows and a
    per-pixel part; dead or hot pixels (`dead_pixel_share`) miss by 10-40 %."""
    columns = np.random.default_rng([seed, 211])
    gain = 1.0 + columns.normal(0.0, config.gain_std, width)
    dead = columns.random(width) < config.dead_pixel_share
    gain[dead] *= columns.uniform(0.6, 1.4, int(dead.sum()))
    row = np.random.default_rng([seed, z, 223])
    return gain * (1.0 + row.normal(0.0, config.gain_std / 2, width))


def _reconstruct(mu: np.ndarray, config: PhantomConfig, seed: int, z: int, scale: float) -> np.ndarray:
    """One slice's attenuation map (1/voxel) -> measured projections -> filtered back-projection (1/voxel)."""
    from skimage.transform import iradon, radon

    theta = np.linspace(0.0, 180.0, int(config.angles), endpoint=False)
    p = radon(mu * scale, theta, circle=True)  # (detector u, angle), dimensionless line integrals
    if config.beam_hardening:
        p = p - config.beam_hardening * p**2 / max(config.attenuation_path, 1e-6)
    if config.phase_contrast:
        p = p - config.phase_contrast * np.gradient(np.gradient(p, axis=0), axis=0)
    intensity = config.photons * _detector_gain(config, seed, z, p.shape[0])[:, None] * np.exp(-p)
    if config.detector_blur:
        intensity = gaussian_filter1d(intensity, config.detector_blur, axis=0, mode="nearest")
    counts = np.maximum(np.random.default_rng([seed, z, 227]).poisson(intensity), 1)
    measured = -np.log(counts / config.photons)
    return iradon(measured, theta, output_size=mu.shape[0], filter_name=config.recon_filter, circle=True) / scale


def render_projection_slab(geometry: PhantomGeometry, config: PhantomConfig, seed: int, z0: int, z1: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels (of `config.bit_depth`) and uint8 labels of slices z0..z1 of a volume of `shape`, reconstructed
    from the specimen `geometry` (drawn on `padded_shape(shape)`)."""
    depth, side = geometry.shape[0], geometry.shape[1]
    halo = int(math.ceil(4 * Z_SIGMA))
    h0, h1 = max(0, z0 - halo), min(depth, z1 + halo)
    fibre, pore = occupancy(geometry, h0, h1)
    inclusion = np.minimum(inclusion_occupancy(geometry, h0, h1), 1.0 - fibre - pore)
    relative = (1.0 - fibre - pore - inclusion) + config.fibre_attenuation * fibre + config.inclusion_attenuation * inclusion
    yy, xx = np.meshgrid(np.arange(side) - (side - 1) / 2, np.arange(side) - (side - 1) / 2, indexing="ij")
    relative *= (np.hypot(yy, xx) <= side / 2 - 1)[None]
    relative = gaussian_filter(relative, (Z_SIGMA, 0, 0), mode="nearest")[z0 - h0 : z1 - h0]
    scale = config.attenuation_path / side  # the matrix line integral across the specimen is attenuation_path
    y0, x0 = (side - shape[1]) // 2, (side - shape[2]) // 2
    crop = (slice(None), slice(y0, y0 + shape[1]), slice(x0, x0 + shape[2]))
    labels = np.full(fibre.shape, MATRIX, np.uint8)
    labels[fibre >= 0.5] = FIBRE
    labels[pore >= 0.5] = PORE
    labels = labels[z0 - h0 : z1 - h0][crop]
    grey = np.stack([_reconstruct(relative[i], config, seed, z, scale) for i, z in enumerate(range(z0, z1))])[crop] * GREY_MATRIX
    stored = config.grey_offset + config.grey_gain * grey
    if config.bit_depth == "float32":
        return stored.astype(np.float32), labels
    return np.clip(np.rint(stored), 0, FULL_SCALE[config.bit_depth]).astype(config.bit_depth), labels
