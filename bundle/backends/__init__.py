"""Forward passes outside PyTorch: the network exported once to ONNX, run by OpenVINO or ONNX Runtime.

Three rooms: `export` makes (and caches) the ONNX and int8 files, `forward` loads them as
`nn.Module`s, `select` decides which backend runs here (timed on this machine, cached) and
records why. `bundle.runtime` decides device, precision and threads; it knows nothing of exports.
"""

from .export import BACKENDS, EXPORTED, OPSET, backend_version, cache_dir, export_onnx, missing_package, quantize_int8
from .forward import OnnxRuntimeForward, OpenVinoForward, build_forward
from .select import Backend, resolve_backend

__all__ = [
    "BACKENDS",
    "EXPORTED",
    "OPSET",
    "Backend",
    "OnnxRuntimeForward",
    "OpenVinoForward",
    "backend_version",
    "build_forward",
    "cache_dir",
    "export_onnx",
    "missing_package",
    "quantize_int8",
    "resolve_backend",
]
