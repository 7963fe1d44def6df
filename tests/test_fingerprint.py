"""harness.store.fingerprint: the content hashes that key every cache (ONNX, calibration, engines)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from harness.store.fingerprint import dict_hash, file_hash, model_content_hash


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 2)).eval()


def test_hash_is_stable_across_calls_and_copies() -> None:
    net = _net()
    first = model_content_hash(net)
    assert model_content_hash(net) == first
    assert model_content_hash(copy.deepcopy(net)) == first
    assert model_content_hash(_net()) == first  # same seed, same weights
    assert len(first) == 64 and int(first, 16) >= 0


def test_hash_changes_when_one_weight_changes() -> None:
    net = _net()
    before = model_content_hash(net)
    with torch.no_grad():
        net[0].weight[1, 2, 0, 1] += 1e-3
    assert model_content_hash(net) != before
    # putting the exact original value back restores the hash
    with torch.no_grad():
        net[0].weight[1, 2, 0, 1] = _net()[0].weight[1, 2, 0, 1]
    assert model_content_hash(net) == before


def test_hash_changes_with_a_zeroed_weight_and_with_architecture() -> None:
    net = _net()
    before = model_content_hash(net)
    with torch.no_grad():
        net[4].weight[0, 0] = 0.0  # Linear
    assert model_content_hash(net) != before
    # Same parameters, different non-parametric layer: the repr is part of the hash.
    other = _net()
    other[2] = nn.GELU()
    assert model_content_hash(other) != before


def test_hash_sees_integer_buffers() -> None:
    net = _net()
    bn = net[1]
    assert bn.num_batches_tracked.dtype == torch.long
    before = model_content_hash(net)
    bn.num_batches_tracked += 1
    assert model_content_hash(net) != before
    # running statistics (float buffers) count as well
    net2 = _net()
    with torch.no_grad():
        net2[1].running_mean[0] = 0.25
    assert model_content_hash(net2) != before


def test_hash_of_bf16_and_fp16_models() -> None:
    net = _net()
    h32 = model_content_hash(net)
    bf16 = copy.deepcopy(net).to(torch.bfloat16)
    fp16 = copy.deepcopy(net).to(torch.float16)
    h_bf16, h_fp16 = model_content_hash(bf16), model_content_hash(fp16)
    assert len({h32, h_bf16, h_fp16}) == 3  # dtype is part of the content
    assert model_content_hash(bf16) == h_bf16
    with torch.no_grad():
        bf16[0].weight[0, 0, 0, 0] += 1.0
    assert model_content_hash(bf16) != h_bf16


def test_hash_handles_empty_and_bool_tensors() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("empty", torch.zeros(0))
            self.register_buffer("mask", torch.tensor([True, False, True]))
            self.register_buffer("scalar", torch.tensor(3))

    odd = Odd()
    h = model_content_hash(odd)
    assert model_content_hash(Odd()) == h
    odd.mask[1] = True
    assert model_content_hash(odd) != h


def test_file_hash_and_dict_hash(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 3_000_000)
    b.write_bytes(b"x" * 2_999_999 + b"y")
    assert file_hash(a) == file_hash(a)
    assert file_hash(a) != file_hash(b)
    assert file_hash(a, chunk=7) == file_hash(a)  # chunking does not change the digest
    assert dict_hash({"a": 1, "b": [1, 2]}) == dict_hash({"b": [1, 2], "a": 1})
    assert dict_hash({"a": 1}) != dict_hash({"a": 2})
    assert dict_hash({"p": Path("/x")}) == dict_hash({"p": "/x"})  # non-JSON values hash by str()
