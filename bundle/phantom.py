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
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from .data.description import paper_split, write_dataset_description
from .io.atomic import atomic_path
from .io.sidecar import RawInfo, format_sidecar, sidecar_path

__all__ = ["PhantomConfig", "PhantomFamily", "PhantomGeometry", "make_family", "make_phantom", "render_slab"]

MATRIX, FIBRE, PORE = 0, 1, 2
FULL_SCALE = {"uint8": 255.0, "uint16": 65535.0, "float32": 1.0}


@dataclass
class PhantomConfig:
    """Knobs of the phantom; defaults are calibrated against the paper's PA66 data (see docs/phantom.md)."""

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

    def __post_init__(self) -> None:
        if self.noise_kind not in ("white", "fbp"):
            raise ValueError(f"noise_kind must be 'white' or 'fbp', got {self.noise_kind!r}.")
        if self.bit_depth not in FULL_SCALE:
            raise ValueError(f"bit_depth must be one of {sorted(FULL_SCALE)}, got {self.bit_depth!r}.")


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], edge: bool) -> float:
    """A value of `bounds`, or with `edge` one of its outer tenths (the held-out draws at the edges of the ranges)."""
    u = rng.uniform(0.0, 0.1) if edge else rng.uniform()
    if edge and rng.random() < 0.5:
        u = 1.0 - u
    return float(bounds[0] + u * (bounds[1] - bounds[0]))


@dataclass
class PhantomFamily:
    """Ranges of material and acquisition that `draw` samples a `PhantomConfig` from, uniformly (see docs/phantom.md).

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
        return PhantomConfig(
            **value,
            fibre_length=(0.5 * length, 1.5 * length),
            grey_fibre=fibre,
            grey_pore=pore,
            noise_kind=str(rng.choice(self.noise_kinds)),
            bit_depth=bit_depth,
            grey_gain=_uniform(rng, self.gain_share, edge) * scale,
            grey_offset=_uniform(rng, self.offset_share, edge) * scale,
        )


@dataclass
class PhantomGeometry:
    """Fibres (start, unit direction, length, radius) and pores (centre, axes, semi-axes), global (z, y, x) coordinates."""

    shape: tuple[int, int, int]
    fibre_start: np.ndarray
    fibre_dir: np.ndarray
    fibre_length: np.ndarray
    fibre_radius: np.ndarray
    pore_centre: np.ndarray
    pore_axes: np.ndarray
    pore_semi: np.ndarray
    ring_radius: np.ndarray
    ring_width: np.ndarray
    ring_amplitude: np.ndarray
    ring_phase: np.ndarray

    @classmethod
    def draw(cls, shape: tuple[int, int, int], seed: int, config: PhantomConfig) -> PhantomGeometry:
        rng = np.random.default_rng(seed)
        shape = tuple(int(s) for s in shape)
        volume = float(np.prod(shape))
        extent = np.array(shape, float)
        # Boolean model: union fraction f = 1 - exp(-rho), rho = total cylinder volume / V.
        target = -math.log(1.0 - config.fibre_fraction) * volume
        starts, dirs, lengths = [], [], []
        total = 0.0
        while total < target:
            main = np.array([1.0, 0.0, 0.0]) if rng.random() < 0.5 else np.array([0.0, 1.0, 0.0])
            d = main + rng.normal(0.0, config.fibre_spread, 3) * (1 - main)
            d /= np.linalg.norm(d)
            length = rng.uniform(*config.fibre_length)
            centre = rng.uniform(0, 1, 3) * extent
            start = centre - d * length / 2
            inside = _clipped_length(start, d, length, extent)
            if inside <= 0:
                continue
            starts.append(start), dirs.append(d), lengths.append(length)
            total += math.pi * config.fibre_radius**2 * inside
        fibre_start, fibre_dir = np.array(starts).reshape(-1, 3), np.array(dirs).reshape(-1, 3)
        fibre_length = np.array(lengths)
        fibre_radius = np.full(len(lengths), config.fibre_radius)

        pore_target = config.pore_fraction / (1.0 - config.fibre_fraction) * volume
        centres, axes, semis = [], [], []
        total = 0.0
        while total < pore_target and len(fibre_length):
            if rng.random() < config.large_pore_share * 0.1:
                semi = rng.uniform(4.0, 9.0, 3)
                frame = _random_frame(rng)
                centre = rng.uniform(0, 1, 3) * extent
            else:
                i = rng.integers(len(fibre_length))
                frame = _frame_along(fibre_dir[i], rng)
                semi = np.array([rng.uniform(3.0, 8.0) * config.pore_elongation, rng.uniform(1.2, 2.5), rng.uniform(1.2, 2.5)])
                t = rng.uniform(0, fibre_length[i])
                centre = fibre_start[i] + fibre_dir[i] * t + frame[1] * (fibre_radius[i] + semi[1] * 0.6)
            centres.append(centre), axes.append(frame), semis.append(semi)
            total += 4.0 / 3.0 * math.pi * float(np.prod(semi)) * 0.8
        n_rings = max(2, int(config.rings_per_100_voxels * max(shape[1:]) / 100))
        n_dark = max(1, round(config.dark_ring_share * n_rings))
        r_max = min(shape[1], shape[2]) / 2
        # Dark rings stratified in radius, so their area (and the baseline's difficulty) does not hinge on luck.
        ring_radius = np.concatenate(
            [(np.arange(n_dark) + rng.uniform(0, 1, n_dark)) / n_dark * r_max, rng.uniform(2.0, r_max * 1.4, n_rings - n_dark)]
        )
        amplitude = np.concatenate([np.full(n_dark, -config.dark_ring_amplitude), rng.normal(0.0, config.ring_amplitude, n_rings - n_dark)])
        ring_width, ring_phase = rng.uniform(0.6, 1.8, n_rings), rng.uniform(0, 2 * math.pi, n_rings)
        # Cracks: thin flat ellipsoids, drawn last so that a config without them keeps its geometry.
        crack_target = config.crack_fraction / (1.0 - config.fibre_fraction) * volume
        total = 0.0
        while total < crack_target:
            semi = np.array([rng.uniform(8.0, 20.0), rng.uniform(4.0, 10.0), rng.uniform(0.6, 1.0)])
            centres.append(rng.uniform(0, 1, 3) * extent), axes.append(_random_frame(rng)), semis.append(semi)
            total += 4.0 / 3.0 * math.pi * float(np.prod(semi)) * 0.8
        return cls(
            shape=shape,
            fibre_start=fibre_start,
            fibre_dir=fibre_dir,
            fibre_length=fibre_length,
            fibre_radius=fibre_radius,
            pore_centre=np.array(centres).reshape(-1, 3),
            pore_axes=np.array(axes).reshape(-1, 3, 3),
            pore_semi=np.array(semis).reshape(-1, 3),
            ring_radius=ring_radius,
            ring_width=ring_width,
            ring_amplitude=amplitude,
            ring_phase=ring_phase,
        )


def _clipped_length(start: np.ndarray, d: np.ndarray, length: float, extent: np.ndarray) -> float:
    t0, t1 = 0.0, length
    for a in range(3):
        if abs(d[a]) < 1e-12:
            if not 0 <= start[a] <= extent[a]:
                return 0.0
            continue
        ta, tb = sorted(((0 - start[a]) / d[a], (extent[a] - start[a]) / d[a]))
        t0, t1 = max(t0, ta), min(t1, tb)
    return max(0.0, t1 - t0)


def _random_frame(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q.T


def _frame_along(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows: d, then two unit vectors perpendicular to it, the first at a random angle."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(d, helper)
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    angle = rng.uniform(0, 2 * math.pi)
    u, v = math.cos(angle) * u + math.sin(angle) * v, -math.sin(angle) * u + math.cos(angle) * v
    return np.stack([d, u, v])


def _box(lo: np.ndarray, hi: np.ndarray, z0: int, z1: int, shape) -> tuple[slice, slice, slice] | None:
    bounds = [(z0, z1), (0, shape[1]), (0, shape[2])]
    out = []
    for a in range(3):
        a0, a1 = max(bounds[a][0], int(math.floor(lo[a]))), min(bounds[a][1], int(math.ceil(hi[a])) + 1)
        if a0 >= a1:
            return None
        out.append(slice(a0, a1))
    return tuple(out)


def _occupancy(geometry: PhantomGeometry, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray]:
    """Soft (partial-volume) fibre and pore occupancies in [0, 1] of slices z0..z1."""
    shape = (z1 - z0,) + geometry.shape[1:]
    fibre = np.zeros(shape, np.float32)
    pore = np.zeros(shape, np.float32)
    for start, d, length, radius in zip(geometry.fibre_start, geometry.fibre_dir, geometry.fibre_length, geometry.fibre_radius):
        end = start + d * length
        box = _box(np.minimum(start, end) - radius - 1, np.maximum(start, end) + radius + 1, z0, z1, geometry.shape)
        if box is None:
            continue
        grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float32) for s in box], indexing="ij"), -1)
        rel = grid - start.astype(np.float32)
        t = np.clip(rel @ d.astype(np.float32), 0, length)
        dist = np.linalg.norm(rel - t[..., None] * d.astype(np.float32), axis=-1)
        local = (box[0].start - z0, box[0].stop - z0), box[1], box[2]
        target = fibre[slice(*local[0]), local[1], local[2]]
        np.maximum(target, np.clip(radius + 0.5 - dist, 0, 1), out=target)
    for centre, frame, semi in zip(geometry.pore_centre, geometry.pore_axes, geometry.pore_semi):
        reach = float(semi.max()) + 1
        box = _box(centre - reach, centre + reach, z0, z1, geometry.shape)
        if box is None:
            continue
        grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float32) for s in box], indexing="ij"), -1)
        local_coords = (grid - centre.astype(np.float32)) @ frame.T.astype(np.float32)
        level = np.sqrt(((local_coords / semi.astype(np.float32)) ** 2).sum(-1))
        soft = np.clip((1.0 - level) * float(semi.min()) + 0.5, 0, 1)
        target = pore[box[0].start - z0 : box[0].stop - z0, box[1], box[2]]
        np.maximum(target, soft, out=target)
    pore = np.minimum(pore, 1.0 - fibre)
    return fibre, pore


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
    fibre, pore = _occupancy(geometry, h0, h1)
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


def _write_volume(out: Path, shape: tuple[int, int, int], seed: int, name: str, slab: int, config: PhantomConfig) -> tuple[dict, dict]:
    """Render one phantom to `<name>.raw` + `<name>.ground_truth.raw` (temporary names, renamed when complete).

    Returns its dataset.json entry (the paper's split) and a summary with the class fractions.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes (z, y, x), got {shape}.")
    splits = paper_split(shape[0])
    out.mkdir(parents=True, exist_ok=True)
    geometry = PhantomGeometry.draw(shape, seed, config)
    image_path, label_path = out / f"{name}.raw", out / f"{name}.ground_truth.raw"
    extra = {"VOXEL_SIZE": config.voxel_size_um, "VOXEL_UNIT": "um", "PHANTOM_SEED": seed}
    counts = np.zeros(3, np.int64)
    with open(atomic_path(image_path), "wb") as image_file, open(atomic_path(label_path), "wb") as label_file:
        for z0 in range(0, shape[0], slab):
            grey, labels = render_slab(geometry, config, seed, z0, min(z0 + slab, shape[0]))
            image_file.write(grey.astype(grey.dtype.newbyteorder("<"), copy=False).tobytes())
            label_file.write(labels.tobytes())
            counts += np.bincount(labels.ravel(), minlength=3)[:3]
    for path in (image_path, label_path):
        dtype = np.dtype(config.bit_depth if path == image_path else np.uint8)
        sidecar_path(path).write_text(format_sidecar(RawInfo(shape, dtype, "<", extra)))
        os.replace(atomic_path(path), path)
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
) -> dict:
    """Write one phantom per seed, its config drawn from `family` (`edge`: at the edges of the ranges), as
    `draw<seed>.raw` (+ labels) and one `dataset.json` listing them all, each with the paper's split."""
    family = family or PhantomFamily()
    out = Path(output_dir)
    entries, summaries = [], []
    for seed in seeds:
        entry, summary = _write_volume(out, shape, int(seed), f"draw{int(seed)}", slab, family.draw(int(seed), edge))
        entries.append(entry)
        summaries.append({**summary, "bit_depth": entry["phantom"]["bit_depth"], "noise_kind": entry["phantom"]["noise_kind"]})
    write_dataset_description(out, entries)
    return {"dataset": str(out / "dataset.json"), "volumes": summaries}
