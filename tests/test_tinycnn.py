"""tinycnn: trained by our own code, deterministic and cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness import tinycnn
from harness.data.registry import open_split
from harness.store.fingerprint import model_content_hash


@pytest.mark.slow
def test_training_is_deterministic_and_cached(tmp_path: Path, shared_cache: Path) -> None:
    train = open_split("shapes", "train", data_root=tmp_path, cache_dir=shared_cache)
    a, meta_a = tinycnn.load_or_train(tmp_path / "a", train, epochs=1, seed=3)
    b, meta_b = tinycnn.load_or_train(tmp_path / "b", train, epochs=1, seed=3)
    assert model_content_hash(a) == model_content_hash(b)
    assert meta_a["final_loss"] == meta_b["final_loss"]
    c, _ = tinycnn.load_or_train(tmp_path / "c", train, epochs=1, seed=4)
    assert model_content_hash(c) != model_content_hash(a)
    # Second call loads the cached weights instead of training again.
    cached = list((tmp_path / "a" / "models").glob("*.pt"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    again, meta_again = tinycnn.load_or_train(tmp_path / "a", train, epochs=1, seed=3)
    assert cached[0].stat().st_mtime_ns == mtime and meta_again == meta_a
    assert model_content_hash(again) == model_content_hash(a)


def test_training_leaves_the_callers_thread_count_and_rng_alone(tmp_path: Path, shared_cache: Path) -> None:
    train = open_split("shapes", "train", data_root=tmp_path, cache_dir=shared_cache)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tinycnn.load_or_train(tmp_path / "d", train, epochs=1, seed=0)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


@pytest.mark.slow
def test_damaged_weights_are_retrained_not_unpickled(tmp_path: Path, shared_cache: Path) -> None:
    """Issue 9: a damaged cached weights file is retrained with a note, never an UnpicklingError."""
    import pickle

    import pytest

    from harness.store.cache_files import CacheRebuiltWarning, sidecar_of

    train = open_split("shapes", "train", data_root=tmp_path, cache_dir=shared_cache)
    model, meta = tinycnn.load_or_train(tmp_path / "w", train, epochs=1, seed=5)
    assert "rebuilt" not in meta
    (weights,) = (tmp_path / "w" / "models").glob("*.pt")
    good = weights.read_bytes()
    weights.write_bytes(b"\x80\x02garbage" + good[10:200])  # the fault, reproduced
    with pytest.raises((pickle.UnpicklingError, RuntimeError, EOFError)):
        torch.load(weights, map_location="cpu", weights_only=True)
    notes: list[str] = []
    again, meta_again = tinycnn.load_or_train(tmp_path / "w", train, epochs=1, seed=5, on_rebuild=notes.append)
    assert model_content_hash(again) == model_content_hash(model)  # deterministic retrain: same weights
    assert notes == [meta_again["rebuilt"]] and str(weights) in notes[0] and "weights_only" not in notes[0]
    assert weights.read_bytes() == good

    sidecar_of(weights).write_text("{")  # a garbled sidecar: retrained, reported as a warning
    with pytest.warns(CacheRebuiltWarning, match="sidecar"):
        tinycnn.load_or_train(tmp_path / "w", train, epochs=1, seed=5)
    _, meta_cached = tinycnn.load_or_train(tmp_path / "w", train, epochs=1, seed=5)
    assert "rebuilt" not in meta_cached and meta_cached["final_loss"] == meta["final_loss"]


def test_legacy_weights_without_sidecar_are_adopted_not_retrained(tmp_path: Path, shared_cache: Path) -> None:
    import json

    from harness.store.cache_files import sidecar_of, verify

    train = open_split("shapes", "train", data_root=tmp_path, cache_dir=shared_cache)
    model, meta = tinycnn.load_or_train(tmp_path / "l", train, epochs=1, seed=6)
    (weights,) = (tmp_path / "l" / "models").glob("*.pt")
    sidecar_of(weights).unlink()  # the layout of earlier versions: <key>.pt + <key>.json
    weights.with_suffix(".json").write_text(json.dumps(meta))
    mtime = weights.stat().st_mtime_ns
    adopted, meta_adopted = tinycnn.load_or_train(tmp_path / "l", train, epochs=1, seed=6)
    assert weights.stat().st_mtime_ns == mtime and meta_adopted == meta  # not retrained
    assert model_content_hash(adopted) == model_content_hash(model)
    assert verify(weights) is None and not weights.with_suffix(".json").exists()
