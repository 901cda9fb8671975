"""`Predictor`: a checkpoint and the inference settings, resolved once and only when the first volume arrives.

A config names it with values; building it reads nothing, exports nothing and times nothing, so
a client pipeline's `ConfigWorkflow(...).check_properties()` passes with no scan on disk. On first
use it resolves, in order: the runtime (device, precision, threads), the model's sidecar
(`model.json`: variant, network, grey rule), the weights (checked, batch norm folded), the
volume's grey window (`bundle.data.grey.model_window`, the one grey rule) and the backend
(PyTorch, OpenVINO or ONNX Runtime, exported and timed per machine when `auto`). It is itself the
network an evaluator runs (its forward is the chosen backend's); `PredictorInferer` runs a slab
inferer in the backend's precision; it holds the `grey_window` the preprocessing applies
(`bundle.data.GreyWindowd`) and the `provenance` a segmentation records.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from functools import cached_property

import torch
from monai.inferers import Inferer

from ..adaptation import ADAPTATIONS, adapt_batch_norm
from ..backends import Backend, resolve_backend
from ..checkpoints import file_sha256, load_weights, read_model_sidecar
from ..data.grey import model_window
from ..errors import SettingError
from ..networks import inference_ready
from ..runtime import Runtime, resolve_runtime
from .autocast import AutocastInferer
from .calibration import calibration_batches
from .streamed import single_image

__all__ = ["Predictor", "PredictorInferer"]


class PredictorInferer(Inferer):
    """`inner` under autocast in the precision of the predictor's backend, known once it is resolved."""

    def __init__(self, predictor: Predictor, inner: Inferer) -> None:
        super().__init__()
        self.predictor, self.inner = predictor, inner

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        return AutocastInferer(self.predictor.backend.autocast_precision, self.inner)(inputs, network, *args, **kwargs)


class Predictor(torch.nn.Module):
    """A checkpoint with its inference settings; every property resolves on first use.

    Args:
        ckpt_path: the weights (`model.pt`, with `model.json` beside it).
        network_def: the config's network (its hyperparameters are checked against the sidecar).
        data: the MONAI data list of the one volume to segment (`[{"image": path}]`) or its path.
        variant: "2d", "2.5d" or "3d", checked against the sidecar (None: not checked).
        device: where the network runs.
        precision: "auto", "fp32", "bf16", "fp16" or "int8".
        backend: "auto", "torch", "openvino" or "onnxruntime".
        threads, num_workers: compute threads and loader workers, or "auto".
        fold_bn, channels_last: inference-ready network options.
        roi_size: the tile size the backends are timed on.
        calibration_path: the volume int8 is calibrated on (default: the input).
        adapt: "none", or "bn" to re-estimate the batch-norm statistics on slices of the input before folding
            (`bundle.adaptation`): label-free adaptation to a scan unlike the training data.
        ckpt_hint: how to get a checkpoint, said when it is missing.
    """

    def __init__(
        self,
        ckpt_path: str | os.PathLike,
        network_def: torch.nn.Module,
        data: Sequence[dict] | str | os.PathLike,
        variant: str | None = None,
        device: torch.device | str = "cpu",
        precision: str = "auto",
        backend: str = "auto",
        threads: int | str = "auto",
        num_workers: int | str = "auto",
        fold_bn: bool = True,
        channels_last: bool = True,
        roi_size: Sequence[int] = (512, 512),
        calibration_path: str | os.PathLike | None = None,
        ckpt_hint: str = "",
        adapt: str = "none",
    ) -> None:
        if adapt not in ADAPTATIONS:
            raise SettingError(f"--adapt must be one of {', '.join(ADAPTATIONS)}, got {adapt!r}.")
        super().__init__()
        self.ckpt_path, self.network_def, self.data, self.variant = str(ckpt_path), network_def, data, variant
        self.device, self.precision, self.requested_backend = device, precision, backend
        self.threads, self.num_workers, self.fold_bn, self.channels_last = threads, num_workers, fold_bn, channels_last
        self.roi_size, self.calibration_path, self.ckpt_hint = list(roi_size), calibration_path, ckpt_hint
        self.adapt = adapt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backend.network(x)

    @cached_property
    def runtime(self) -> Runtime:
        return resolve_runtime(self.device, self.precision, self.threads, self.num_workers)

    @cached_property
    def input_path(self) -> str:
        return single_image(self.data)

    @cached_property
    def sidecar(self) -> dict:
        return read_model_sidecar(self.ckpt_path, self.variant, self.network_def.hparams)

    @cached_property
    def model_sha256(self) -> str:
        return file_sha256(self.ckpt_path, self.ckpt_hint)

    @cached_property
    def grey_window(self) -> list[float]:
        return model_window(self.sidecar, self.input_path)

    @cached_property
    def torch_network(self) -> torch.nn.Module:
        self.sidecar  # noqa: B018 - a sidecar of another variant is refused before any weight is loaded
        network = load_weights(self.network_def, self.ckpt_path, self.ckpt_hint).to(self.runtime.device)
        if self.adapt == "bn":
            batches, facts = self._scan_batches(self.input_path)
            adapt_batch_norm(network, batches)
            self.adaptation = facts
        return inference_ready(network, self.fold_bn, self.channels_last)

    @property
    def model_key(self) -> str:
        """What identifies the weights that run: the checkpoint's sha256, or with adaptation that and the scan's
        samples, so exported models and backend timings are cached per adapted scan, never shared with the plain model."""
        if self.adapt == "none":
            return self.model_sha256
        self.torch_network  # noqa: B018 - builds and adapts the network, which records the scan's samples
        facts = json.dumps([self.model_sha256, self.adapt, self.adaptation], sort_keys=True, default=str)
        return hashlib.sha256(facts.encode()).hexdigest()

    @cached_property
    def backend(self) -> Backend:
        hparams = self.network_def.hparams
        return resolve_backend(
            self.requested_backend, self.torch_network, self.runtime, self.model_key, hparams["in_channels"],
            hparams["spatial_dims"], self.roi_size, self._calibration_batches,
        )

    def _calibration_batches(self):
        """int8 calibration samples of the calibration volume (the input by default), read only when int8 asks."""
        return self._scan_batches(self.calibration_path or self.input_path)

    def _scan_batches(self, path):
        """Network inputs from evenly spaced slices of `path`, grey-normalised as inference normalises them."""
        hparams = self.network_def.hparams
        return calibration_batches(
            path=path, grey_window=self.grey_window, in_channels=hparams["in_channels"], spatial_dims=hparams["spatial_dims"],
            roi_size=self.roi_size, size_multiple=2 ** hparams["u_depth"],
        )

    def provenance(self) -> dict:
        """The facts of the model and how it runs, for provenance.json (and the resume fingerprint)."""
        return {
            "model": self.ckpt_path,
            "model_sha256": self.model_sha256,
            "variant": self.variant,
            "network": self.network_def.hparams,
            "grey_window": self.grey_window,
            "grey_percentiles": self.sidecar.get("grey_percentiles"),
            "roi_size": self.roi_size,
            "precision": self.backend.precision,
            "backend": self.backend.name,
            "fold_bn": self.fold_bn,
            "channels_last": self.channels_last,
            "adapt": self.adapt,
        }
