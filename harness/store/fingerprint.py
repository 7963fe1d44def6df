"""Content hashes that key every cache (ONNX exports, calibration, engines)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch


def model_content_hash(module: torch.nn.Module) -> str:
    """sha256 over the architecture's repr and every state_dict tensor, in order."""
    digest = hashlib.sha256(repr(module).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        digest.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dict_hash(data: dict[str, Any]) -> str:
    """Stable sha256 of a JSON-serialisable mapping."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
