"""The exporter: the network exported once to ONNX (and quantised to int8 with NNCF), cached on disk.

Exports are derived artefacts named by the checkpoint's sha256 and the export settings, so they
are made once per model and machine and never mistaken for another model's. int8 is post-training
quantisation on the OpenVINO graph, calibrated on network inputs the caller gives
(`bundle.inference.calibration_batches`); the calibration's provenance is stored beside it.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io import atomic_output, write_atomically

__all__ = ["BACKENDS", "EXPORTED", "OPSET", "backend_version", "cache_dir", "export_onnx", "missing_package", "quantize_int8"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino", "onnxruntime")
EXPORTED = ("openvino", "onnxruntime")
_PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime", "int8": "nncf", "export": "onnx"}
OPSET = 17


def cache_dir() -> Path:
    """Where exported and quantised models live: `$XCT_CACHE_DIR`, else `$XDG_CACHE_HOME/xct-modular-unet`."""
    if os.environ.get("XCT_CACHE_DIR"):
        return Path(os.environ["XCT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xct-modular-unet"


def missing_package(need: str) -> str | None:
    """None when the package behind `need` (a backend, 'int8' or 'export') imports here, else its pip name."""
    package = _PACKAGES.get(need)
    if package is None:
        return None
    return None if importlib.util.find_spec(package) is not None else package


def backend_version(name: str) -> str:
    """The installed version of the package behind a backend ('torch' for the eager path)."""
    package = "torch" if name == "torch" else _PACKAGES[name]
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _digest(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def export_onnx(network: nn.Module, model_sha256: str, in_channels: int, spatial_dims: int, directory: Path | None = None) -> Path:
    """The network as ONNX with batch and spatial axes dynamic, through MONAI's `convert_to_onnx`; cached.

    The cache name holds the model's sha256 and a digest of what changes the graph (channels,
    dimensions, opset, torch version, the network's inference rewrites), so a new checkpoint or
    a new PyTorch gives a new export rather than a stale one.
    """
    from monai.networks import convert_to_onnx

    directory = Path(directory or cache_dir())
    rewrites = sorted({type(m).__name__ for m in network.modules()})
    settings = {"in_channels": in_channels, "spatial_dims": spatial_dims, "opset": OPSET, "torch": torch.__version__, "modules": rewrites}
    path = directory / f"{model_sha256[:16]}-{_digest(settings)}.onnx"
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    exported = copy.deepcopy(network).float().cpu().eval().to(memory_format=torch.contiguous_format)
    sample = torch.rand(1, in_channels, *(32,) * spatial_dims)
    axes = {0: "batch", **{2 + i: "zyx"[3 - spatial_dims + i] for i in range(spatial_dims)}}
    start = time.perf_counter()
    with atomic_output(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        convert_to_onnx(
            exported, [sample], input_names=["image"], output_names=["logits"], dynamic_axes={"image": axes, "logits": axes},
            filename=str(tmp), use_trace=True, dynamo=False, opset_version=OPSET,
        )
    logger.info("exported the network to %s in %.1f s", path, time.perf_counter() - start)
    return path


def quantize_int8(onnx_path: Path, samples: list[np.ndarray], calibration: dict, directory: Path | None = None) -> Path:
    """An int8 OpenVINO model (NNCF post-training quantisation) of `onnx_path`, calibrated on `samples`; cached.

    `calibration` (the source volume, its identity and the sampling) is part of the cache key and is
    written beside the model as `<name>.calibration.json`.
    """
    import nncf
    import openvino as ov

    directory = Path(directory or cache_dir())
    facts = {"onnx": onnx_path.name, "nncf": backend_version("int8"), "openvino": backend_version("openvino"), **calibration}
    xml = directory / f"{onnx_path.stem}-int8-{_digest(facts)}.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = ov.Core().read_model(str(onnx_path))
    quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
    tmp = directory / f".{xml.stem}.{os.getpid()}.partial.xml"
    ov.save_model(quantized, str(tmp), compress_to_fp16=False)
    seconds = round(time.perf_counter() - start, 1)
    record = {**facts, "samples": [list(s.shape) for s in samples], "seconds": seconds, "made": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    sidecar = write_atomically(xml.with_suffix(".calibration.json"), json.dumps(record, indent=1) + "\n")
    os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
    os.replace(tmp, xml)
    logger.info("quantised the network to int8 in %.1f s (%s), calibration in %s", seconds, xml, sidecar)
    return xml
