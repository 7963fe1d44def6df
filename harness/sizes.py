"""Model sizes as the user sees them on disk."""

from __future__ import annotations

import io

import torch


def state_dict_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``torch.save(module.state_dict())``: the thesis's "pt file size"."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def megabytes(n_bytes: int | None) -> float | None:
    """Bytes to MB of 10^6 bytes."""
    return None if n_bytes is None else n_bytes / 1e6
