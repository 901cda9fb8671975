"""Command-line booleans: `--resume false` reaches a config as the text 'false', which Python finds true."""

from __future__ import annotations

__all__ = ["as_flag"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", "none", ""}


def as_flag(value) -> bool:
    """A bool from a bool, a number or the texts true/false/yes/no/on/off/1/0 (any case)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected a boolean (true/false), got {value!r}.")
    return bool(value)
