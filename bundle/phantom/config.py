"""One phantom's knobs: material, acquisition (image- or projection-domain) and storage."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FIBRE", "FULL_SCALE", "MATRIX", "PORE", "RECON_FILTERS", "PhantomConfig"]

MATRIX, FIBRE, PORE = 0, 1, 2
FULL_SCALE = {"uint8": 255.0, "uint16": 65535.0, "float32": 1.0}
RECON_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


@dataclass
class PhantomConfig:
    """Knobs of the phantom; defaults are calibrated against the paper's PA66 data (see docs/phantom.md).

    Material: the fibre, pore and crack fields, plus the opt-in `fibre_radius_spread` (log-normal per
    fibre), `random_fibre_share` (fibres with isotropic directions), `bundle_share` (fibres packed
    in parallel bundles) and `inclusion_fraction` (particles denser than glass, labelled matrix).
    Acquisition: `domain` "image" paints blur, noise, rings and cupping on the grey levels (the
    grey_*, blur, noise, ring, cupping and drift fields); "projection" forward-projects
    attenuation and reconstructs it (`photons` per detector pixel, `gain_std` and
    `dead_pixel_share` of the detector, `beam_hardening`, `phase_contrast`, `angles`,
    `recon_filter`, `detector_blur`; `attenuation_path` is the matrix line integral across the
    specimen, the fibres and inclusions attenuate `fibre_attenuation` / `inclusion_attenuation`
    times the matrix). Both store `grey_offset + grey_gain x grey` as `bit_depth`.
    """

    fibre_fraction: float = 0.172
    fibre_radius: float = 4.0
    fibre_length: tuple[float, float] = (60.0, 240.0)
    fibre_spread: float = 0.25
    pore_fraction: float = 0.005
    large_pore_share: float = 0.3
    pore_elongation: float = 1.0
    crack_fraction: float = 0.0
    grey_matrix: float = 0.42
    grey_fibre: float = 0.70
    grey_pore: float = 0.0
    blur_sigma: float = 0.55
    noise_std: float = 0.022
    noise_kind: str = "white"
    rings_per_100_voxels: float = 7.0
    ring_amplitude: float = 0.03
    dark_ring_share: float = 0.3
    dark_ring_amplitude: float = 0.34
    cupping: float = 0.04
    z_drift: float = 0.04
    voxel_size_um: float = 1.3
    bit_depth: str = "uint8"
    grey_gain: float = 255.0
    grey_offset: float = 0.0
    fibre_radius_spread: float = 0.0
    random_fibre_share: float = 0.0
    bundle_share: float = 0.0
    inclusion_fraction: float = 0.0
    domain: str = "image"
    photons: float = 20000.0
    gain_std: float = 0.003
    dead_pixel_share: float = 0.0
    beam_hardening: float = 0.0
    phase_contrast: float = 0.0
    angles: int = 360
    recon_filter: str = "ramp"
    detector_blur: float = 0.5
    attenuation_path: float = 2.0
    fibre_attenuation: float = 2.2
    inclusion_attenuation: float = 6.0

    def __post_init__(self) -> None:
        if self.domain not in ("image", "projection"):
            raise ValueError(f"domain must be 'image' or 'projection', got {self.domain!r}.")
        if self.recon_filter not in RECON_FILTERS:
            raise ValueError(f"recon_filter must be one of {RECON_FILTERS}, got {self.recon_filter!r}.")
        if self.noise_kind not in ("white", "fbp"):
            raise ValueError(f"noise_kind must be 'white' or 'fbp', got {self.noise_kind!r}.")
        if self.bit_depth not in FULL_SCALE:
            raise ValueError(f"bit_depth must be one of {sorted(FULL_SCALE)}, got {self.bit_depth!r}.")
