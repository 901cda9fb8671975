"""A narrower Modular U-Net's weights placed inside a wider one, so training the wider one starts where the narrow one is.

Two widenings, alone or together: more input channels (a 2D model starting a 2.5D one: its
kernels go to the centre slice) and more filters (a larger `f0`: every channel of the narrow
network keeps its place and its weights, the concatenations of the decoder included). Every
weight from a new channel into an old one is zero, so the wider network computes exactly what
the narrow one did (in eval mode) until training teaches it to use what it gained; the weights
into the new channels keep the wider network's own initialisation, so they get gradients from
the first step.
"""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["widened"]

_DECODER_CONCAT = re.compile(r"decoder\.(\d+)\.(conv1|residual\.0)\.weight$")
_INPUT_READERS = ("encoder.0.conv1.weight", "encoder.0.residual.0.weight")


def _old_input_positions(key: str, n_old: int, n_new: int, f0_old: int, f0_new: int) -> torch.Tensor:
    """Where the narrow network's input channels of weight `key` sit among the wide one's."""
    if n_old == n_new:
        return torch.arange(n_old)
    if key in _INPUT_READERS:
        if n_old != 1 or n_new % 2 == 0:
            raise ValueError(f"{key}: {n_old} input channels cannot be placed among {n_new}; only one slice goes to the centre of an odd count.")
        return torch.tensor([n_new // 2])
    concat = _DECODER_CONCAT.match(key)
    if concat:
        here_old, here_new = f0_old * 2 ** (int(concat[1]) + 1), f0_new * 2 ** (int(concat[1]) + 1)
        return torch.cat([torch.arange(here_old), here_new + torch.arange(n_old - here_old)])
    return torch.arange(n_old)


def widened(state: dict, network: nn.Module) -> dict:
    """`state`, the weights of a ModularUNet with fewer input channels and/or a smaller `f0` (all else equal), made to
    fit `network`, computing what `state` computed. Tensors that already fit are kept as they are."""
    hparams = getattr(network, "hparams", None)
    if hparams is None or "head.weight" not in state:
        raise ValueError("widening places one ModularUNet's weights inside another; this checkpoint or network is not one.")
    if hparams["conv"] != "standard" or hparams["norm"] not in ("batch", "none"):
        raise ValueError(
            f"widening keeps the function of standard convolutions with batch or no norm, not conv={hparams['conv']!r}, norm={hparams['norm']!r}."
        )
    own = network.state_dict()
    f0_old, f0_new = state["head.weight"].shape[1] // 2, hparams["f0"]
    wide = dict(state)
    for key, old in state.items():
        target = own.get(key)
        if target is None or old.shape == target.shape:
            continue
        if old.ndim != target.ndim or any(o > t for o, t in zip(old.shape, target.shape)):
            raise ValueError(f"{key}: {tuple(old.shape)} does not fit inside {tuple(target.shape)}.")
        fresh = target.detach().clone()
        if old.ndim == 1:
            fresh[: old.shape[0]] = old
        else:
            transposed = isinstance(network.get_submodule(key.rsplit(".", 1)[0]), (nn.ConvTranspose2d, nn.ConvTranspose3d))
            view, old_view = (fresh.transpose(0, 1), old.transpose(0, 1)) if transposed else (fresh, old)
            outputs = torch.arange(old_view.shape[0])
            inputs = _old_input_positions(key, old_view.shape[1], view.shape[1], f0_old, f0_new)
            view[outputs] = 0
            view[outputs[:, None], inputs[None, :]] = old_view
        wide[key] = fresh
    return wide
