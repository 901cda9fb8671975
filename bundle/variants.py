"""The named model variants and ablations, read from the config overlays so there is one source."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["VARIANT_NETWORK", "ablation_overlays", "network_kwargs"]

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
VARIANT_NETWORK = {"2d": {"spatial_dims": 2, "in_channels": 1}, "2.5d": {"spatial_dims": 2, "in_channels": 5}, "3d": {"spatial_dims": 3, "in_channels": 1}}


def ablation_overlays() -> dict[str, dict]:
    """{"default": {}} and each `configs/ablations/<name>.json` overlay, by name."""
    return {"default": {}} | {path.stem: json.loads(path.read_text()) for path in sorted((CONFIGS / "ablations").glob("*.json"))}


def network_kwargs(variant: str, overlay: dict | None = None) -> dict:
    """ModularUNet arguments of a variant with the `network_def#...` keys of an overlay applied."""
    extra = {key.split("#", 1)[1]: value for key, value in (overlay or {}).items() if key.startswith("network_def#")}
    return {**VARIANT_NETWORK[variant], **extra}
