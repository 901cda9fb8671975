"""The `--roi` sub-box, checked before anything is read or written: one sentence per way it can be wrong."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

from ..errors import SettingError

__all__ = ["validated_roi"]

EXAMPLE = "e.g. --roi \"[[0,100],[0,512],[0,512]]\""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or (isinstance(value, float) and value.is_integer())


def validated_roi(roi, shape: Sequence[int], path: str | Path) -> list[slice] | None:
    """`roi` as three (z, y, x) slices inside `shape`, or None for the whole volume; a `SettingError` otherwise."""
    if roi is None or roi == "None":
        return None
    if isinstance(roi, str):
        try:
            roi = ast.literal_eval(roi)
        except (ValueError, SyntaxError):
            raise SettingError(f"--roi must be three [start, stop] pairs in (z, y, x) order, {EXAMPLE}; got {roi!r}.") from None
    if not isinstance(roi, (list, tuple)):
        raise SettingError(f"--roi must be three [start, stop] pairs in (z, y, x) order, {EXAMPLE}; got {roi!r}.")
    if len(roi) != 3:
        raise SettingError(f"--roi has {len(roi)} axes; it needs three [start, stop] pairs in (z, y, x) order, {EXAMPLE}.")
    box = []
    for axis, pair, size in zip("zyx", roi, shape):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_is_int(v) for v in pair):
            raise SettingError(f"--roi axis {axis} must be a [start, stop] pair of integers, got {pair!r}.")
        start, stop = int(pair[0]), int(pair[1])
        if start >= stop:
            raise SettingError(f"--roi axis {axis} is [{start}, {stop}]: its start must be below its stop.")
        if start < 0 or stop > size:
            raise SettingError(f"--roi axis {axis} [{start}, {stop}] is outside {path}, whose {axis} size is {size} (0 to {size}).")
        box.append(slice(start, stop))
    return box
