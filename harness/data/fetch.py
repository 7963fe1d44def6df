"""Download and unpack the fast.ai ImageNette / ImageWoof archives.

The download streams to ``<data_root>/<variant>.tgz.part`` and reports progress through a
callback (the CLI draws the bar). The archive is checked while it is extracted (members
must be plain files or folders that stay inside the target), extracted into a temporary
folder beside the target, checked for the 10 expected wnid folders in train/ and val/,
renamed into place, and deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from harness.data import imagenet_maps
from harness.data.registry import SIZES, SPLITS, VARIANTS, archive_url
from harness.errors import HarnessError

Progress = Callable[[int, "int | None"], None]  # (bytes_done, total or None)
Opener = Callable[..., Any]  # opener(url, timeout=...) -> response with .read(n) and .headers

# Archive file name -> md5 hex digest. Empty: no checksum has been verified by us yet.
# Pass md5= to fetch_dataset to check one.
KNOWN_MD5: Mapping[str, str] = MappingProxyType({})

DEFAULT_TIMEOUT_S = 30.0
CHUNK_SIZE = 1 << 20


def _offline_error(url: str, reason: object, data_root: Path, variant: str) -> HarnessError:
    archive = f"{variant}.tgz"
    return HarnessError(
        f"could not download {url} ({reason}); this machine looks offline or cannot reach the "
        f"server. Download {url} on another machine, copy it here and extract it under "
        f"{data_root} (e.g. `tar -xzf {archive} -C {data_root}`) so that "
        f"{data_root / variant / 'train'} and {data_root / variant / 'val'} exist, "
        f"or put {archive} at {data_root / archive} and run the fetch again"
    )


def _download(
    url: str,
    dest: Path,
    *,
    opener: Opener,
    timeout: float,
    progress: Progress | None,
    offline: Callable[[object], HarnessError],
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """Stream `url` into `dest`; return the number of bytes written."""
    try:
        response = opener(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise HarnessError(
            f"download of {url} failed: the server answered HTTP {e.code} {e.reason}; "
            "check the dataset name and size, or try again later"
        ) from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise offline(getattr(e, "reason", e)) from e
    with contextlib.closing(response):
        length = response.headers.get("Content-Length") if response.headers else None
        total = int(length) if length and str(length).isdigit() else None
        done = 0
        if progress is not None:
            progress(0, total)
        with open(dest, "wb") as out:
            while True:
                try:
                    chunk = response.read(chunk_size)
                except (OSError, http.client.HTTPException) as e:
                    raise offline(f"connection lost after {done} bytes: {e}") from e
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    if total is not None and done != total:
        raise offline(f"download stopped after {done} of {total} bytes")
    return done


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_SIZE), b""):
            h.update(block)
    return h.hexdigest()


def _check_member(member: tarfile.TarInfo, target: Path) -> None:
    """Reject anything that is not a plain file/folder inside `target`."""
    dest = (target / member.name).resolve()
    inside = dest == target or target in dest.parents
    if os.path.isabs(member.name) or not inside:
        raise HarnessError(
            f"archive member {member.name!r} would be written outside {target}; the archive is "
            "corrupt or malicious: delete it and download it again from the official URL"
        )
    if not (member.isfile() or member.isdir()):
        raise HarnessError(
            f"archive member {member.name!r} is a link or special file, which a dataset archive "
            "never contains; delete the archive and download it again from the official URL"
        )


def extract_archive(archive: Path, target: Path) -> None:
    """Extract a .tgz into `target`, checking each member before it is written."""
    target = target.resolve()
    kwargs: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                _check_member(member, target)
                tar.extract(member, target, **kwargs)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise HarnessError(
            f"{archive} is not a valid .tgz archive ({e}); it is probably an incomplete "
            "download: delete it and run the fetch again"
        ) from e


def layout_problem(variant_dir: Path, name: str) -> str | None:
    """Why `variant_dir` is not a complete fast.ai tree of `name`, or None when it is."""
    expected = set(imagenet_maps.wnids(name))
    for split in SPLITS:
        d = variant_dir / split
        if not d.is_dir():
            return f"{d} is missing"
        found = {e.name for e in os.scandir(d) if e.is_dir()}
        if found != expected:
            missing, extra = sorted(expected - found), sorted(found - expected)
            return f"{d} has missing class folders {missing or 'none'}, unexpected {extra or 'none'}"
    return None


def fetch_dataset(
    name: str,
    size: str | None,
    data_root: Path,
    *,
    progress: Progress | None = None,
    url: str | None = None,
    opener: Opener | None = None,
    md5: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download and extract `name` ("imagenette"/"imagewoof") at `size` under `data_root`.

    Returns ``<data_root>/<variant>`` (e.g. ``imagenette2-160``). Does nothing when that
    folder is already complete; uses ``<data_root>/<variant>.tgz`` when it is already there.
    `url` and `opener` exist for tests and mirrors; `md5` (or KNOWN_MD5) checks the archive.
    """
    if name == "imagenet":
        from harness.data.registry import IMAGENET_DIR, imagenet_prepare_hint

        val = Path(data_root).expanduser() / IMAGENET_DIR / "val"
        raise HarnessError(
            "ImageNet-1k cannot be downloaded by the harness (its licence needs your own copy): "
            + imagenet_prepare_hint("val", val)
        )
    if name not in VARIANTS:
        raise HarnessError(
            f"cannot fetch {name!r}; downloadable datasets: {', '.join(VARIANTS)} "
            "(shapes is generated locally, folder is your own data)"
        )
    size = size or "160"
    if size not in VARIANTS[name]:
        raise HarnessError(f"unknown size {size!r} for {name}; use one of: {', '.join(SIZES)}")
    variant = VARIANTS[name][size]
    data_root = Path(data_root).expanduser()
    final = data_root / variant
    if final.exists():
        problem = layout_problem(final, name)
        if problem is None:
            return final
        raise HarnessError(
            f"{final} already exists but is incomplete ({problem}); delete {final} and fetch again"
        )
    url = url or archive_url(name, size)
    try:
        data_root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"cannot create {data_root}: {e}; pass a writable --data-root") from e
    archive = data_root / f"{variant}.tgz"
    if not archive.is_file():
        part = data_root / f"{variant}.tgz.part"
        try:
            _download(
                url,
                part,
                opener=opener or urllib.request.urlopen,
                timeout=timeout,
                progress=progress,
                offline=lambda reason: _offline_error(url, reason, data_root, variant),
            )
            os.replace(part, archive)
        finally:
            part.unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{variant}.extract-", dir=data_root))
    try:
        expected_md5 = md5 or KNOWN_MD5.get(archive.name)
        actual_md5 = md5sum(archive) if expected_md5 else None
        if expected_md5 and actual_md5 != expected_md5.lower():
            raise HarnessError(
                f"{archive} has md5 {actual_md5}, expected {expected_md5}; the download is "
                "corrupt: run the fetch again"
            )
        extract_archive(archive, tmp)
        problem = layout_problem(tmp / variant, name)
        if problem is not None:
            raise HarnessError(
                f"the archive from {url} is not a valid {name} archive: "
                f"{problem.replace(str(tmp), '<archive>')}; check the URL and download it again"
            )
        os.rename(tmp / variant, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        archive.unlink(missing_ok=True)
    return final
