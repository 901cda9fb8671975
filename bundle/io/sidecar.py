"""The `.raw.info` sidecar of a raw volume: parsing both published styles, writing one.

Grammar (case-insensitive keys, one entry a line, blank lines ignored):

* a line starting with ``!`` or ``#`` is a comment; so is a first line that is not an entry
  (the published PA66 sidecars begin with ``! PyHST_SLAVE VOLUME INFO FILE``, sometimes
  mangled);
* an entry is ``KEY = VALUE`` (ESRF PyHST2 style) or ``key: value`` (YAML style);
* sizes: ``NUM_X``, ``NUM_Y``, ``NUM_Z`` or ``shape: [X, Y, Z]`` (x varies fastest in the file);
* element type: ``DATATYPE`` or ``dtype``, a numpy dtype name (``uint8``, ``uint16``,
  ``float32``...); when absent it is inferred from the file size (1 byte -> uint8,
  2 -> uint16, 4 -> float32);
* byte order: ``BYTEORDER = LOWBYTEFIRST|HIGHBYTEFIRST`` or
  ``byte_encoding: littleendian|bigendian``; little-endian when absent;
* any other key (voxel size, ...) is kept as metadata, its value parsed as a number when it
  is one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["RawInfo", "SidecarError", "dtype_from_name", "format_sidecar", "parse_sidecar", "sidecar_path"]

_ENTRY = re.compile(r"^\s*([A-Za-z_][\w.\- ]*?)\s*[=:]\s*(.*?)\s*$")
_BYTEORDER = {"lowbytefirst": "<", "littleendian": "<", "little": "<", "highbytefirst": ">", "bigendian": ">", "big": ">"}
_INFERRED_DTYPES = {1: "uint8", 2: "uint16", 4: "float32"}


class SidecarError(ValueError):
    """A sidecar that is missing, unparsable or inconsistent with its raw file."""


@dataclass
class RawInfo:
    """What a sidecar says about a raw volume; `shape` is in (z, y, x) array order."""

    shape: tuple[int, int, int]
    dtype: np.dtype | None
    byteorder: str = "<"
    extra: dict = field(default_factory=dict)

    def resolved(self, raw_path: Path) -> RawInfo:
        """This info with the dtype set, inferring it from the file size when the sidecar had none."""
        n_voxels = int(np.prod(self.shape))
        size = os.path.getsize(raw_path)
        dtype = self.dtype
        if dtype is None:
            if n_voxels == 0 or size % n_voxels or size // n_voxels not in _INFERRED_DTYPES:
                raise SidecarError(
                    f"{raw_path}: sidecar gives no dtype and the file size {size} B is not 1, 2 or 4 bytes per voxel for "
                    f"shape (z, y, x) {self.shape}; add a 'DATATYPE = uint8|uint16|float32' line to {sidecar_path(raw_path)}."
                )
            dtype = np.dtype(_INFERRED_DTYPES[size // n_voxels])
        expected = n_voxels * dtype.itemsize
        if size != expected:
            raise SidecarError(
                f"{raw_path}: file has {size} B but its sidecar says shape (z, y, x) {self.shape} of {dtype.name}, "
                f"i.e. {expected} B; the file is truncated or the sidecar is wrong."
            )
        return RawInfo(self.shape, dtype.newbyteorder(self.byteorder), self.byteorder, dict(self.extra))


def sidecar_path(raw_path: str | os.PathLike) -> Path:
    """`a.b.raw` -> `a.b.raw.info`."""
    return Path(str(raw_path) + ".info")


def dtype_from_name(name: str, where: str = "") -> np.dtype:
    """A numpy dtype from its name, case-insensitive, with an error naming `where`."""
    try:
        dtype = np.dtype(name.strip().lower())
    except TypeError as err:
        raise SidecarError(f"{where}unknown DATATYPE {name!r}; use a numpy dtype name such as uint8, uint16, float32.") from err
    if dtype.kind not in "uif":
        raise SidecarError(f"{where}DATATYPE {name!r} is not a numeric type.")
    return dtype


def _value(text: str):
    text = text.strip().strip("'\"")
    if text.startswith("[") and text.endswith("]"):
        return [_value(v) for v in text[1:-1].split(",") if v.strip()]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_sidecar(path: str | os.PathLike) -> RawInfo:
    """Parse a `.raw.info` file of either style; see the module docstring for the grammar."""
    path = Path(path)
    if not path.is_file():
        raise SidecarError(f"{path}: sidecar not found; a raw volume needs its '<file>.raw.info' with NUM_X, NUM_Y, NUM_Z.")
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise SidecarError(f"{path}: cannot read sidecar ({err}).") from err
    entries: dict[str, object] = {}
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped[0] in "!#":
            continue
        match = _ENTRY.match(stripped)
        if match is None:
            if number == 0:
                continue
            raise SidecarError(f"{path}: line {number + 1} {line!r} is not 'KEY = VALUE' nor 'key: value'.")
        entries[match.group(1).strip()] = _value(match.group(2))
    lower = {k.lower(): k for k in entries}

    def take(*names):
        for name in names:
            if name in lower:
                return entries.pop(lower.pop(name))
        return None

    shape_xyz = take("shape")
    nums = [take(f"num_{a}") for a in "xyz"]
    if shape_xyz is None:
        if any(n is None for n in nums):
            raise SidecarError(f"{path}: sidecar lacks the sizes: give NUM_X, NUM_Y and NUM_Z (or 'shape: [X, Y, Z]').")
        shape_xyz = nums
    if not isinstance(shape_xyz, list) or len(shape_xyz) != 3 or not all(isinstance(v, int) and v > 0 for v in shape_xyz):
        raise SidecarError(f"{path}: volume sizes must be three positive integers (x, y, z), got {shape_xyz!r}.")
    dtype_name = take("datatype", "dtype")
    dtype = None if dtype_name is None else dtype_from_name(str(dtype_name), f"{path}: ")
    order_name = take("byteorder", "byte_encoding")
    byteorder = "<"
    if order_name is not None:
        key = str(order_name).lower()
        if key not in _BYTEORDER:
            raise SidecarError(f"{path}: unknown byte order {order_name!r}; use LOWBYTEFIRST or HIGHBYTEFIRST.")
        byteorder = _BYTEORDER[key]
    x, y, z = shape_xyz
    return RawInfo((z, y, x), dtype, byteorder, entries)


def format_sidecar(info: RawInfo) -> str:
    """The PyHST2-style text of a sidecar, with explicit DATATYPE and BYTEORDER."""
    z, y, x = info.shape
    dtype = np.dtype(info.dtype)
    order = dtype.byteorder if dtype.byteorder in "<>" else ("<" if np.little_endian else ">")
    if dtype.itemsize == 1:
        order = info.byteorder
    lines = [
        "! PyHST_SLAVE VOLUME INFO FILE",
        f"NUM_X = {x}",
        f"NUM_Y = {y}",
        f"NUM_Z = {z}",
        f"DATATYPE = {dtype.newbyteorder('=').name}",
        f"BYTEORDER = {'LOWBYTEFIRST' if order == '<' else 'HIGHBYTEFIRST'}",
    ]
    lines += [f"{k} = [{', '.join(map(str, v))}]" if isinstance(v, list) else f"{k} = {v}" for k, v in info.extra.items()]
    return "\n".join(lines) + "\n"
