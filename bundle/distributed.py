"""Where this process stands in a torch.distributed run (rank 0 of 1 when there is none)."""

from __future__ import annotations

import torch

__all__ = ["barrier", "rank_and_world"]


def rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank; nothing to wait for in a single process."""
    if rank_and_world()[1] > 1:
        torch.distributed.barrier()
