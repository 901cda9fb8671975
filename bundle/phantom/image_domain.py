"""Image-domain acquisition: the grey levels painted with blur, noise (white or with the spectrum of filtered
back-projection), rings centred on the rotation axis, cupping and a drift along z."""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

from .config import FIBRE, FULL_SCALE, MATRIX, PORE, PhantomConfig
from .geometry import PhantomGeometry, occupancy

__all__ = ["render_slab"]


def _slice_noise(rng: np.random.Generator, shape: tuple[int, int], std: float, kind: str) -> np.ndarray:
    """White noise, or noise with the ramp (|k|) spectrum, Hann-windowed, that filtered back-projection gives a slice."""
    white = rng.normal(0.0, 1.0, shape)
    if kind == "white":
        return std * white
    ky, kx = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.rfftfreq(shape[1]), indexing="ij")
    k = np.hypot(ky, kx) / 0.5
    gain = np.where(k < 1.0, k * (0.5 + 0.5 * np.cos(np.pi * np.minimum(k, 1.0))), 0.0)
    coloured = np.fft.irfft2(np.fft.rfft2(white) * gain, s=shape)
    return std * coloured / max(float(coloured.std()), 1e-12)


def render_slab(geometry: PhantomGeometry, config: PhantomConfig, seed: int, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels (of `config.bit_depth`) and uint8 labels of slices z0..z1, identical whatever slab sizes are used."""
    depth = geometry.shape[0]
    halo = int(math.ceil(4 * config.blur_sigma))
    h0, h1 = max(0, z0 - halo), min(depth, z1 + halo)
    fibre, pore = occupancy(geometry, h0, h1)
    labels = np.full(fibre.shape, MATRIX, np.uint8)
    labels[fibre >= 0.5] = FIBRE
    labels[pore >= 0.5] = PORE
    grey = config.grey_matrix + (config.grey_fibre - config.grey_matrix) * fibre + (config.grey_pore - config.grey_matrix) * pore
    grey = gaussian_filter(grey, config.blur_sigma, mode="nearest")[z0 - h0 : z1 - h0]
    labels = labels[z0 - h0 : z1 - h0]

    ny, nx = geometry.shape[1:]
    yy, xx = np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij")
    radius = np.hypot(yy, xx)
    r_max = math.hypot(ny, nx) / 2
    base = config.cupping * (radius / r_max) ** 2
    for z in range(z0, z1):
        zf = z / max(depth - 1, 1)
        rings = np.zeros_like(radius)
        for r, w, a, phase in zip(geometry.ring_radius, geometry.ring_width, geometry.ring_amplitude, geometry.ring_phase):
            rings += a * (0.75 + 0.25 * math.sin(2 * math.pi * zf + phase)) * np.exp(-0.5 * ((radius - r) / w) ** 2)
        noise = _slice_noise(np.random.default_rng([seed, z]), radius.shape, config.noise_std, config.noise_kind)
        grey[z - z0] += base + rings + config.z_drift * zf + noise
    stored = config.grey_offset + config.grey_gain * grey
    if config.bit_depth == "float32":
        return stored.astype(np.float32), labels
    return np.clip(np.rint(stored), 0, FULL_SCALE[config.bit_depth]).astype(config.bit_depth), labels
