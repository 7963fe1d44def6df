"""Model sizes as the user sees them on disk."""

from __future__ import annotations


def state_dict_bytes(module) -> int:  # noqa: ANN001 - nn.Module
    """Bytes of ``torch.save(module.state_dict())``: the thesis's "pt file size"."""
    from harness.compression.sizes import dense_bytes

    return dense_bytes(module)
