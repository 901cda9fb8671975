"""The runtimes that load exports: each an `nn.Module` whose `forward` takes and returns torch tensors, so the
streamed reader, tiling, TTA, multi-axis fusion, writers and resume are the same whatever runs the
convolutions; only the forward call changes."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .export import BACKENDS

__all__ = ["OnnxRuntimeForward", "OpenVinoForward", "build_forward"]

_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": None}


class OnnxRuntimeForward(nn.Module):
    """The exported network run by ONNX Runtime's CPU provider (fp32)."""

    def __init__(self, onnx_path: str | os.PathLike, threads: int) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"image": x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


class OpenVinoForward(nn.Module):
    """The exported (or int8-quantised) network compiled by OpenVINO for the CPU.

    `precision` sets OpenVINO's `INFERENCE_PRECISION_HINT` (fp32 -> f32, bf16, fp16 -> f16); for
    an int8 model the layers NNCF left in floating point run in `float_precision`.
    """

    def __init__(self, model_path: str | os.PathLike, precision: str, threads: int, float_precision: str = "fp32") -> None:
        super().__init__()
        import openvino as ov

        hint = _OV_PRECISION[precision] or _OV_PRECISION[float_precision]
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads)}
        self.compiled = ov.Core().compile_model(str(model_path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.request.infer({0: x.detach().float().cpu().contiguous().numpy()})
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy()).to(x.device)


def build_forward(name: str, network: nn.Module, precision: str, threads: int, model_path: Path | None, float_precision: str = "fp32") -> nn.Module:
    """The forward module of backend `name`: `network` itself for torch, else the exported `model_path` run by it."""
    if name == "torch":
        return network
    if name == "onnxruntime":
        return OnnxRuntimeForward(model_path, threads)
    if name == "openvino":
        return OpenVinoForward(model_path, precision, threads, float_precision)
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}.")
