"""The named model variants and ablations, read from the config overlays so there is one source."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["BASE_VARIANT", "VARIANT_NETWORK", "ablation_overlays", "network_kwargs", "variant_config_names", "variant_overlays"]

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

BASE_VARIANT: str = json.loads((CONFIGS / "train.json").read_text())["variant"]


def variant_overlays(variant: str) -> list[Path]:
    """The config overlay that turns the base configs into `variant`: none for the base variant itself."""
    return [] if variant == BASE_VARIANT else [CONFIGS / "variants" / f"{variant}.json"]


def variant_config_names(variant: str) -> list[str]:
    """`variant_overlays` as names relative to configs/ ("variants/2d.json"), for commands shown to a user."""
    return [path.relative_to(CONFIGS).as_posix() for path in variant_overlays(variant)]


def _overlay_keys(overlay: dict) -> dict:
    return {key.split("#", 1)[1]: value for key, value in overlay.items() if key.startswith("network_def#")}


def _variant_networks() -> dict[str, dict]:
    """Dimensions and input channels of the base network (train.json, the 2.5D default) and of each variant overlay."""
    base = json.loads((CONFIGS / "train.json").read_text())["network_def"]
    base = {"spatial_dims": base["spatial_dims"], "in_channels": base["in_channels"]}
    files = [path for path in sorted((CONFIGS / "variants").glob("*.json")) if not path.name.endswith(".metadata.json")]
    overlays = {path.name[: -len(".json")]: json.loads(path.read_text()) for path in files}
    return {BASE_VARIANT: base} | {name: {**base, **_overlay_keys(overlay)} for name, overlay in overlays.items()}


VARIANT_NETWORK = _variant_networks()


def ablation_overlays() -> dict[str, dict]:
    """{"default": {}} and each `configs/ablations/<name>.json` overlay, by name."""
    return {"default": {}} | {path.stem: json.loads(path.read_text()) for path in sorted((CONFIGS / "ablations").glob("*.json"))}


def network_kwargs(variant: str, overlay: dict | None = None) -> dict:
    """ModularUNet arguments of a variant with the `network_def#...` keys of an overlay applied."""
    return {**VARIANT_NETWORK[variant], **_overlay_keys(overlay or {})}
