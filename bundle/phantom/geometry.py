"""The material of a phantom: fibres (cylinders), pores and cracks (ellipsoids), dense inclusions (spheres),
drawn once from the seed in global (z, y, x) coordinates, and their soft (partial-volume) occupancy of any slab."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import PhantomConfig

__all__ = ["PhantomGeometry", "inclusion_occupancy", "occupancy"]


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
    inclusion_centre: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    inclusion_radius: np.ndarray = field(default_factory=lambda: np.zeros(0))

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
        # The opt-in material extras draw from a stream of their own, so a config without them keeps its geometry.
        extra = np.random.default_rng([seed, 31])
        fibre_start, fibre_dir, fibre_length, fibre_radius = _material_extras(
            extra, config, extent, fibre_start, fibre_dir, fibre_length, fibre_radius
        )

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
        inclusions = _inclusions(extra, config, extent)
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
            inclusion_centre=inclusions[:, :3],
            inclusion_radius=inclusions[:, 3],
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


def _random_direction(rng: np.random.Generator) -> np.ndarray:
    d = rng.normal(size=3)
    return d / np.linalg.norm(d)


def _material_extras(rng, config, extent, start, direction, length, radius):
    """Per-fibre radii, isotropic fibres and parallel bundles, each only where its share is above zero.

    A bundle packs 3-6 neighbours around a seed fibre (centres 2.1 radii apart, same direction);
    as many other fibres are dropped, so the fibre fraction stays near its target.
    """
    n = len(length)
    if not n:
        return start, direction, length, radius
    if config.fibre_radius_spread > 0:
        radius = radius * np.exp(rng.normal(0.0, config.fibre_radius_spread, n))
    if config.random_fibre_share > 0:
        centre = start + direction * length[:, None] / 2
        for i in np.flatnonzero(rng.random(n) < config.random_fibre_share):
            direction[i] = _random_direction(rng)
        start = centre - direction * length[:, None] / 2
    if config.bundle_share > 0:
        seeds = np.flatnonzero(rng.random(n) < config.bundle_share / 5)
        new = []
        for i in seeds:
            frame = _frame_along(direction[i], rng)
            for k in range(int(rng.integers(3, 7))):
                angle = 2 * math.pi * k / 6
                offset = 2.1 * radius[i] * (math.cos(angle) * frame[1] + math.sin(angle) * frame[2])
                new.append((start[i] + offset, direction[i], length[i], radius[i]))
        if new:
            others = np.setdiff1d(np.arange(n), seeds)
            keep = np.ones(n, bool)
            keep[rng.permutation(others)[: min(len(new), len(others))]] = False
            start = np.concatenate([start[keep], np.array([s for s, _, _, _ in new])])
            direction = np.concatenate([direction[keep], np.array([d for _, d, _, _ in new])])
            length = np.concatenate([length[keep], np.array([le for _, _, le, _ in new])])
            radius = np.concatenate([radius[keep], np.array([r for _, _, _, r in new])])
    return start, direction, length, radius


def _inclusions(rng, config, extent) -> np.ndarray:
    """Dense spherical particles, rows (z, y, x, radius), up to `inclusion_fraction` of the volume."""
    found, total = [], 0.0
    target = config.inclusion_fraction * float(np.prod(extent))
    while total < target:
        r = rng.uniform(1.5, 4.5)
        found.append([*(rng.uniform(0, 1, 3) * extent), r])
        total += 4.0 / 3.0 * math.pi * r**3
    return np.array(found, float).reshape(-1, 4)


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


def occupancy(geometry: PhantomGeometry, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray]:
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




def inclusion_occupancy(geometry: PhantomGeometry, z0: int, z1: int) -> np.ndarray:
    """Soft occupancy in [0, 1] of the dense inclusions in slices z0..z1."""
    out = np.zeros((z1 - z0,) + geometry.shape[1:], np.float32)
    for centre, radius in zip(geometry.inclusion_centre, geometry.inclusion_radius):
        box = _box(centre - radius - 1, centre + radius + 1, z0, z1, geometry.shape)
        if box is None:
            continue
        grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop, dtype=np.float32) for s in box], indexing="ij"), -1)
        dist = np.linalg.norm(grid - centre.astype(np.float32), axis=-1)
        target = out[box[0].start - z0 : box[0].stop - z0, box[1], box[2]]
        np.maximum(target, np.clip(radius + 0.5 - dist, 0, 1), out=target)
    return out
