"""Writing phantoms to disk: one scan (`make_phantom`) or draws of the family (`make_family`), slab by slab,
with labels, sidecars and a dataset.json holding each draw's full config and the paper's split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data.description import paper_split, write_dataset_description
from ..io.atomic import atomic_path, durable_replace
from ..io.sidecar import RawInfo, format_sidecar, sidecar_path
from .config import FULL_SCALE, PhantomConfig
from .geometry import PhantomGeometry
from .image_domain import render_slab
from .projection import padded_shape, render_projection_slab

__all__ = ["PhantomFamily", "make_family", "make_phantom"]


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], edge: bool) -> float:
    """A value of `bounds`, or with `edge` one of its outer tenths (the held-out draws at the edges of the ranges)."""
    u = rng.uniform(0.0, 0.1) if edge else rng.uniform()
    if edge and rng.random() < 0.5:
        u = 1.0 - u
    return float(bounds[0] + u * (bounds[1] - bounds[0]))




@dataclass
class PhantomFamily:
    """Ranges of material and acquisition that `draw` samples a `PhantomConfig` from, uniformly (see docs/phantom.md).

    `domain` "image" (today's family), "projection" or "mixed" (a `projection_share` of the draws in
    the projection domain). The projection-domain fields and the material extras are drawn from a
    stream of their own, so a seed keeps the material it has in the image-domain family.

    Grey levels are drawn as the matrix level and the fibre and pore contrasts to it; the bit
    depth with a gain and an offset as shares of the type's full scale (1.0 for float32, grey
    values then read like attenuation coefficients).
    """

    fibre_fraction: tuple[float, float] = (0.08, 0.30)
    fibre_radius: tuple[float, float] = (2.5, 6.0)
    fibre_length: tuple[float, float] = (40.0, 300.0)
    fibre_spread: tuple[float, float] = (0.05, 0.6)
    pore_fraction: tuple[float, float] = (0.001, 0.03)
    large_pore_share: tuple[float, float] = (0.0, 0.8)
    pore_elongation: tuple[float, float] = (1.0, 3.0)
    crack_fraction: tuple[float, float] = (0.0, 0.004)
    grey_matrix: tuple[float, float] = (0.25, 0.55)
    fibre_contrast: tuple[float, float] = (0.10, 0.35)
    pore_contrast: tuple[float, float] = (0.20, 0.45)
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    noise_std: tuple[float, float] = (0.01, 0.06)
    noise_kinds: tuple[str, ...] = ("white", "fbp")
    rings_per_100_voxels: tuple[float, float] = (0.0, 12.0)
    ring_amplitude: tuple[float, float] = (0.0, 0.05)
    dark_ring_share: tuple[float, float] = (0.0, 0.4)
    dark_ring_amplitude: tuple[float, float] = (0.1, 0.35)
    cupping: tuple[float, float] = (0.0, 0.12)
    z_drift: tuple[float, float] = (0.0, 0.06)
    bit_depths: tuple[str, ...] = ("uint8", "uint16", "float32")
    gain_share: tuple[float, float] = (0.6, 0.85)
    offset_share: tuple[float, float] = (0.0, 0.1)
    domain: str = "image"
    projection_share: float = 0.5
    fibre_radius_spread: tuple[float, float] = (0.0, 0.25)
    random_fibre_share: tuple[float, float] = (0.0, 1.0)
    bundle_share: tuple[float, float] = (0.0, 0.5)
    inclusion_fraction: tuple[float, float] = (0.0, 0.002)
    log10_photons: tuple[float, float] = (2.7, 4.7)
    gain_std: tuple[float, float] = (0.0, 0.02)
    dead_pixel_share: tuple[float, float] = (0.0, 0.01)
    beam_hardening: tuple[float, float] = (0.0, 0.25)
    phase_contrast: tuple[float, float] = (0.0, 1.5)
    angles: tuple[float, float] = (90, 480)
    recon_filters: tuple[str, ...] = ("ramp", "shepp-logan", "hann")
    detector_blur: tuple[float, float] = (0.3, 1.5)
    attenuation_path: tuple[float, float] = (0.5, 3.0)
    fibre_attenuation: tuple[float, float] = (1.6, 3.0)
    inclusion_attenuation: tuple[float, float] = (4.0, 10.0)

    @classmethod
    def projection_family(cls, domain: str = "projection") -> PhantomFamily:
        """The projection-domain family (`domain` "mixed": half of the draws image-domain, as today's family)."""
        return cls(domain=domain, fibre_radius=(1.5, 8.0))

    def draw(self, seed: int, edge: bool = False) -> PhantomConfig:
        """The config of draw `seed`; with `edge`, every range sampled in its outer tenths only."""
        rng = np.random.default_rng([seed, 7919])
        value = {name: _uniform(rng, getattr(self, name), edge) for name in (
            "fibre_fraction", "fibre_radius", "fibre_spread", "pore_fraction", "large_pore_share", "pore_elongation",
            "crack_fraction", "grey_matrix", "blur_sigma", "noise_std", "rings_per_100_voxels", "ring_amplitude",
            "dark_ring_share", "dark_ring_amplitude", "cupping", "z_drift")}
        length = _uniform(rng, self.fibre_length, edge)
        matrix = value["grey_matrix"]
        fibre = matrix + _uniform(rng, self.fibre_contrast, edge)
        pore = max(0.0, matrix - _uniform(rng, self.pore_contrast, edge))
        bit_depth = str(rng.choice(self.bit_depths))
        scale = FULL_SCALE[bit_depth]
        config = dict(
            **value,
            fibre_length=(0.5 * length, 1.5 * length),
            grey_fibre=fibre,
            grey_pore=pore,
            noise_kind=str(rng.choice(self.noise_kinds)),
            bit_depth=bit_depth,
            grey_gain=_uniform(rng, self.gain_share, edge) * scale,
            grey_offset=_uniform(rng, self.offset_share, edge) * scale,
        )
        if self.domain == "image":
            return PhantomConfig(**config)
        extra = np.random.default_rng([seed, 104729])
        if self.domain == "mixed" and extra.random() >= self.projection_share:
            return PhantomConfig(**config)
        projection = {name: _uniform(extra, getattr(self, name), edge) for name in (
            "fibre_radius_spread", "random_fibre_share", "bundle_share", "inclusion_fraction", "gain_std", "dead_pixel_share",
            "beam_hardening", "phase_contrast", "detector_blur", "attenuation_path", "fibre_attenuation", "inclusion_attenuation")}
        return PhantomConfig(
            **config,
            **projection,
            domain="projection",
            photons=10 ** _uniform(extra, self.log10_photons, edge),
            angles=int(round(_uniform(extra, self.angles, edge))),
            recon_filter=str(extra.choice(self.recon_filters)),
        )


def _write_volume(out: Path, shape: tuple[int, int, int], seed: int, name: str, slab: int, config: PhantomConfig) -> tuple[dict, dict]:
    """Render one phantom to `<name>.raw` + `<name>.ground_truth.raw` (temporary names, renamed when complete).

    Returns its dataset.json entry (the paper's split) and a summary with the class fractions.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes (z, y, x), got {shape}.")
    splits = paper_split(shape[0])
    out.mkdir(parents=True, exist_ok=True)
    projection = config.domain == "projection"
    geometry = PhantomGeometry.draw(padded_shape(shape) if projection else shape, seed, config)
    image_path, label_path = out / f"{name}.raw", out / f"{name}.ground_truth.raw"
    extra = {"VOXEL_SIZE": config.voxel_size_um, "VOXEL_UNIT": "um", "PHANTOM_SEED": seed}
    counts = np.zeros(3, np.int64)
    with open(atomic_path(image_path), "wb") as image_file, open(atomic_path(label_path), "wb") as label_file:
        for z0 in range(0, shape[0], slab):
            z1 = min(z0 + slab, shape[0])
            if projection:
                grey, labels = render_projection_slab(geometry, config, seed, z0, z1, shape)
            else:
                grey, labels = render_slab(geometry, config, seed, z0, z1)
            image_file.write(grey.astype(grey.dtype.newbyteorder("<"), copy=False).tobytes())
            label_file.write(labels.tobytes())
            counts += np.bincount(labels.ravel(), minlength=3)[:3]
    for path in (image_path, label_path):
        dtype = np.dtype(config.bit_depth if path == image_path else np.uint8)
        sidecar_path(path).write_text(format_sidecar(RawInfo(shape, dtype, "<", extra)))
        durable_replace(atomic_path(path), path)
    entry = {
        "image": image_path.name,
        "label": label_path.name,
        "splits": splits,
        "class_names": ["matrix", "fibre", "porosity"],
        "voxel_size_um": config.voxel_size_um,
        "phantom": {"seed": seed, **asdict(config)},
    }
    fractions = counts / counts.sum()
    summary = {
        "image": str(image_path),
        "label": str(label_path),
        "shape_zyx": list(shape),
        "fractions": {"matrix": float(fractions[0]), "fibre": float(fractions[1]), "porosity": float(fractions[2])},
        "splits": splits,
    }
    return entry, summary


def make_phantom(
    output_dir: str | os.PathLike,
    shape: tuple[int, int, int] = (128, 256, 256),
    seed: int = 0,
    name: str = "phantom",
    slab: int = 32,
    config: PhantomConfig | None = None,
) -> dict:
    """Write `<name>.raw`, `<name>.ground_truth.raw` (+ sidecars) and `dataset.json` with the paper's split.

    Returns a summary with the paths and the class fractions.
    """
    out = Path(output_dir)
    entry, summary = _write_volume(out, shape, seed, name, slab, config or PhantomConfig())
    write_dataset_description(out, [entry])
    return {**summary, "dataset": str(out / "dataset.json")}


def make_family(
    output_dir: str | os.PathLike,
    seeds: Sequence[int],
    shape: tuple[int, int, int] = (64, 192, 192),
    edge: bool = False,
    slab: int = 32,
    family: PhantomFamily | None = None,
    paper_seeds: Sequence[int] = (),
) -> dict:
    """Write one phantom per seed, its config drawn from `family` (`edge`: at the edges of the ranges), as
    `draw<seed>.raw` (+ labels), then one paper-style phantom (the demo's config) per seed of `paper_seeds` as
    `paper<seed>.raw`, and one `dataset.json` listing them all, each with the paper's split."""
    family = family or PhantomFamily()
    out = Path(output_dir)
    entries, summaries = [], []
    volumes = [(f"draw{int(seed)}", int(seed), family.draw(int(seed), edge)) for seed in seeds]
    volumes += [(f"paper{int(seed)}", int(seed), PhantomConfig()) for seed in paper_seeds]
    for name, seed, config in volumes:
        entry, summary = _write_volume(out, shape, seed, name, slab, config)
        entries.append(entry)
        summaries.append({**summary, **{k: entry["phantom"][k] for k in ("domain", "bit_depth", "noise_kind")}})
    write_dataset_description(out, entries)
    return {"dataset": str(out / "dataset.json"), "volumes": summaries}
