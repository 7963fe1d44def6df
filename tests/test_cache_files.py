"""harness.store.cache_files and harness.store.atomic: checksum sidecars, healing verdicts, the user's umask."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from harness.store import cache_files
from harness.store.atomic import atomic_write_bytes


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_written_files_get_the_umask_not_0600(tmp_path: Path, umask_022) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    path = cache_files.write_bytes(tmp_path / "b.bin", b"y", {"k": 1})
    for p in (tmp_path / "a.bin", path, cache_files.sidecar_of(path)):
        assert p.stat().st_mode & 0o777 == 0o644, p
    os.umask(0o002)
    atomic_write_bytes(tmp_path / "c.bin", b"z")
    assert (tmp_path / "c.bin").stat().st_mode & 0o777 == 0o664
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_verify_names_each_fault(tmp_path: Path) -> None:
    path = cache_files.write_bytes(tmp_path / "f.bin", b"0123456789", {"model": "m"})
    assert cache_files.verify(path) is None and cache_files.read_meta(path) == {"model": "m"}
    assert cache_files.damaged(tmp_path / "never-written.bin") is None  # first build: no warning

    path.write_bytes(b"01234")
    assert "truncated to 5 of 10 bytes" in cache_files.verify(path)
    path.write_bytes(b"0123456789x")
    assert "grown" in cache_files.verify(path)
    path.write_bytes(b"9876543210")
    assert "sha256" in cache_files.verify(path)
    cache_files.sidecar_of(path).write_text("not json")
    assert "unreadable" in cache_files.verify(path)
    cache_files.sidecar_of(path).unlink()
    assert "no checksum sidecar" in cache_files.damaged(path)
    cache_files.seal(path)
    path.unlink()
    assert "missing" in cache_files.damaged(path)  # sidecar without file: damage, rebuilt with a note
    cache_files.discard(path)
    assert not cache_files.sidecar_of(path).exists()


def test_report_rebuild_goes_to_the_callback_or_a_warning() -> None:
    notes: list[str] = []
    cache_files.report_rebuild("one line", notes.append)
    assert notes == ["one line"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache_files.report_rebuild("another", None)
    assert [w.category for w in caught] == [cache_files.CacheRebuiltWarning]
