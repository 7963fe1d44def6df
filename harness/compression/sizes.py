"""Model size on disk: dense torch.save, an idealised CSR encoding, and gzip of the dense file.

Zero-fill pruning leaves the dense file size unchanged (the thesis recorded exactly that); the sparse
and gzip sizes show what the zeros could save with a sparse or compressed format.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

#: Bytes per CSR index. We assume int32 column indices and row pointers (enough for any layer below
#: 2**31 elements); torch's own ``to_sparse_csr`` stores int64 and would be larger.
CSR_INDEX_BYTES = 4
GZIP_LEVEL = 6
MB = 1_000_000


@dataclass
class SizeReport:
    """Bytes of a state_dict: dense ``torch.save``, CSR payload, and gzip(level 6) of the dense file.

    ``sparse_bytes`` counts raw payload only (no container overhead): every tensor with >= 2 dims is
    reshaped to (shape[0], -1) and stored as CSR = non-zero values (tensor dtype) + int32 column
    indices + int32 row pointers (rows + 1); tensors with < 2 dims are stored dense. CSR only beats
    dense fp32 above 50 % sparsity (each kept value costs 4 + 4 bytes).
    """

    dense_bytes: int
    sparse_bytes: int
    gzip_bytes: int

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        for key in ("dense", "sparse", "gzip"):
            out[f"{key}_mb"] = getattr(self, f"{key}_bytes") / MB
        return out


def _state_dict(obj: nn.Module | Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.state_dict() if isinstance(obj, nn.Module) else obj


def dense_file_bytes(obj: nn.Module | Mapping[str, Any]) -> bytes:
    """The bytes ``torch.save`` writes for the state_dict."""
    buffer = io.BytesIO()
    torch.save(_state_dict(obj), buffer)
    return buffer.getvalue()


def dense_bytes(obj: nn.Module | Mapping[str, Any]) -> int:
    return len(dense_file_bytes(obj))


def state_dict_bytes(module: nn.Module) -> int:
    """Bytes of ``torch.save(module.state_dict())``: the thesis's "pt file size"."""
    return dense_bytes(module)


def tensor_csr_bytes(tensor: torch.Tensor) -> int:
    """CSR payload bytes of one tensor (dense bytes for tensors with < 2 dims)."""
    elem = tensor.element_size()
    if tensor.dim() < 2:
        return tensor.numel() * elem
    rows = tensor.shape[0]
    nnz = int(torch.count_nonzero(tensor.detach()))
    return nnz * elem + nnz * CSR_INDEX_BYTES + (rows + 1) * CSR_INDEX_BYTES


def sparse_bytes(obj: nn.Module | Mapping[str, Any]) -> int:
    return sum(
        tensor_csr_bytes(v) for v in _state_dict(obj).values() if isinstance(v, torch.Tensor)
    )


def gzip_bytes(obj: nn.Module | Mapping[str, Any], *, data: bytes | None = None) -> int:
    """Length of gzip (level 6, fixed mtime) of the dense torch.save bytes."""
    raw = dense_file_bytes(obj) if data is None else data
    return len(gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0))


def measure_sizes(obj: nn.Module | Mapping[str, Any]) -> SizeReport:
    """All three sizes of a model or state_dict (serialises it once)."""
    raw = dense_file_bytes(obj)
    return SizeReport(
        dense_bytes=len(raw),
        sparse_bytes=sparse_bytes(obj),
        gzip_bytes=gzip_bytes(obj, data=raw),
    )
