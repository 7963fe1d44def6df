"""Model sizes: dense torch.save, CSR payload and gzip, as sparsity grows."""

from __future__ import annotations

import gzip
import io

import pytest
import torch
from torch import nn

from harness.compression import PruneSpec, apply_pruning, measure_sizes
from harness.compression.sizes import (
    CSR_INDEX_BYTES,
    SizeReport,
    dense_bytes,
    gzip_bytes,
    sparse_bytes,
    tensor_csr_bytes,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10),
    ).eval()


def test_csr_bytes_formula():
    t = torch.zeros(3, 2, 2)
    t[0, 0, 0] = 1.0
    t[2, 1, 1] = 2.0
    assert tensor_csr_bytes(t) == 2 * 4 + 2 * CSR_INDEX_BYTES + (3 + 1) * CSR_INDEX_BYTES
    assert tensor_csr_bytes(torch.ones(7)) == 7 * 4  # 1-D tensors stay dense
    assert tensor_csr_bytes(torch.tensor(5, dtype=torch.int64)) == 8
    assert tensor_csr_bytes(torch.ones(4, 4, dtype=torch.float16)) == 16 * 2 + 16 * 4 + 5 * 4


def test_dense_and_gzip_match_torch_save():
    model = _model()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    raw = buffer.getvalue()
    assert abs(dense_bytes(model) - len(raw)) <= 64
    assert abs(gzip_bytes(model) - len(gzip.compress(raw, compresslevel=6))) <= 128
    assert dense_bytes(model.state_dict()) == dense_bytes(model)  # module or state_dict


def test_sizes_shrink_as_sparsity_grows():
    example = torch.randn(1, 3, 16, 16)
    reports = []
    for amount in (0.0, 0.5, 0.9):
        pruned, _ = apply_pruning(_model(), PruneSpec("l1-global", amount), example_input=example)
        reports.append(measure_sizes(pruned))
    dense = {r.dense_bytes for r in reports}
    assert max(dense) - min(dense) <= 64  # zero-fill never changes the dense file size
    assert reports[0].sparse_bytes > reports[1].sparse_bytes > reports[2].sparse_bytes
    assert reports[0].gzip_bytes > reports[1].gzip_bytes > reports[2].gzip_bytes
    at_90 = reports[2]
    assert at_90.sparse_bytes < at_90.dense_bytes
    assert at_90.gzip_bytes < at_90.dense_bytes
    # dense fp32 weights take 8 bytes per value in int32-indexed CSR: bigger than dense
    assert reports[0].sparse_bytes > reports[0].dense_bytes


def test_structural_removal_shrinks_dense_size():
    pytest.importorskip("torch_pruning")
    example = torch.randn(1, 3, 16, 16)
    base = measure_sizes(_model())
    pruned, _ = apply_pruning(_model(), PruneSpec("removal", 0.5), example_input=example)
    assert measure_sizes(pruned).dense_bytes < base.dense_bytes


def test_report_to_dict_in_megabytes():
    report = SizeReport(dense_bytes=2_500_000, sparse_bytes=1_000_000, gzip_bytes=500)
    out = report.to_dict()
    assert out["dense_bytes"] == 2_500_000
    assert out["dense_mb"] == pytest.approx(2.5)
    assert out["sparse_mb"] == pytest.approx(1.0)
    assert out["gzip_mb"] == pytest.approx(0.0005)
    assert sparse_bytes({"w": torch.zeros(2, 3)}) == 3 * CSR_INDEX_BYTES
