"""File locks so that one machine runs one measurement at a time.

* :class:`DeviceLock` - an exclusive per-device lock (``fcntl.flock`` on
  ``<lock_dir>/<device>.lock``) held around each timing window. A second harness
  process (or thread) that wants the same device waits for it, calls ``on_wait``
  once with a message naming the holder's pid, and records how long it waited.
* :class:`OutDirLock` - one writer per output directory; by default a second
  writer is refused at once with a :class:`HarnessError` naming the other pid.

``flock`` locks belong to an open file description, so two threads that each
open the lock file exclude each other just like two processes, and the kernel
releases the lock when its holder dies (no stale locks after a crash or kill -9).
Lock files are never deleted (deleting a lock file while another process waits
on it would let a third process lock a new file with the same name).

The default lock directory is ``$PQ_HARNESS_LOCK_DIR`` if set, else
``/tmp/pq-harness-locks`` (shared by all users of the machine, so it is made
world-writable with the sticky bit), else the user's cache directory. Containers
that should exclude each other must share this directory (bind-mount it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from harness.errors import HarnessError

SHARED_LOCK_DIR = Path("/tmp/pq-harness-locks")
LOCK_DIR_ENV = "PQ_HARNESS_LOCK_DIR"


def default_lock_dir() -> Path:
    """Where device locks live (see the module docstring); created if missing."""
    env = os.environ.get(LOCK_DIR_ENV)
    candidates = [Path(env)] if env else [SHARED_LOCK_DIR, _user_cache_dir() / "pq-harness" / "locks"]
    errors = []
    for cand in candidates:
        try:
            cand.mkdir(parents=True, exist_ok=True)
            if cand == SHARED_LOCK_DIR:
                try:
                    os.chmod(cand, 0o1777)
                except OSError:
                    pass  # made by another user; fine if we can write to it
            if os.access(cand, os.W_OK | os.X_OK):
                return cand
            errors.append(f"{cand}: not writable")
        except OSError as exc:
            errors.append(f"{cand}: {exc.strerror or exc}")
    raise HarnessError(
        f"no usable lock directory ({'; '.join(errors)}); set {LOCK_DIR_ENV} to a writable directory"
    )


def _user_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) if xdg else Path.home() / ".cache"


def lock_name(device: str) -> str:
    """A file-name-safe name for a device ("cpu", "cuda:0", a GPU UUID such as "GPU-8f...")."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", device.strip())
    if not name or name in (".", ".."):
        raise HarnessError(f"cannot lock device {device!r}: give a device name such as 'cpu' or a GPU UUID")
    return name


def _open_lock_file(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        os.fchmod(fd, 0o666)  # other users' harness processes must be able to open it
    except OSError:
        pass
    return fd


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 256).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return text.split()[0] if text else ""


def _write_holder(fd: int, what: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()} {what} {time.time():.3f}\n".encode())


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


class _FileLock:
    """Shared machinery: open, try, wait (polling, so timeouts and Ctrl-C work), release."""

    def __init__(self, path: Path, what: str, poll_s: float = 0.05) -> None:
        self.path = path
        self.what = what
        self.poll_s = poll_s
        self.waited_s = 0.0
        self.waited_for_pid: str | None = None
        self.acquired_at: float | None = None  # time.time() when acquired
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _acquire(
        self,
        wait: bool,
        on_wait: Callable[[str], None] | None,
        timeout_s: float | None,
        message: Callable[[str], str],
        refuse: Callable[[str], HarnessError],
    ) -> None:
        if self._fd is not None:
            raise HarnessError(f"{self.what} lock is already held by this object (locks are not reentrant)")
        fd = _open_lock_file(self.path)
        try:
            start = time.monotonic()
            if not _try_lock(fd):
                holder = _read_holder(fd) or "unknown"
                self.waited_for_pid = holder
                if not wait:
                    raise refuse(holder)
                if on_wait is not None:
                    on_wait(message(holder))
                while not _try_lock(fd):
                    if timeout_s is not None and time.monotonic() - start >= timeout_s:
                        raise HarnessError(
                            f"gave up after {timeout_s:g} s waiting for the {self.what} lock held by pid "
                            f"{holder} ({self.path})"
                        )
                    time.sleep(self.poll_s)
            self.waited_s = time.monotonic() - start
            _write_holder(fd, self.what)
            self.acquired_at = time.time()
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


class DeviceLock(_FileLock):
    """Exclusive lock on one device for the duration of a timing window.

    ::

        with DeviceLock("cpu", on_wait=console.print) as lock:
            result = measure(...)
        lock.waited_s  # seconds spent waiting for another harness process

    ``device`` is "cpu" or a GPU's UUID (preferred over "cuda:0": indices differ
    between processes with different ``CUDA_VISIBLE_DEVICES``). ``on_wait`` is
    called once, only when the lock is busy, with a message such as "waiting for
    another harness process (pid 1234) timing on cpu...". ``timeout_s=None``
    waits for ever.
    """

    def __init__(
        self,
        device: str,
        lock_dir: Path | str | None = None,
        on_wait: Callable[[str], None] | None = None,
        timeout_s: float | None = None,
        poll_s: float = 0.05,
    ) -> None:
        self.device = device
        directory = Path(lock_dir) if lock_dir is not None else default_lock_dir()
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(directory / f"{lock_name(device)}.lock", f"device {device}", poll_s)
        self.on_wait = on_wait
        self.timeout_s = timeout_s

    def acquire(self) -> DeviceLock:
        self._acquire(
            wait=True,
            on_wait=self.on_wait,
            timeout_s=self.timeout_s,
            message=lambda pid: f"waiting for another harness process (pid {pid}) timing on {self.device}...",
            refuse=lambda pid: HarnessError(f"device {self.device} is locked by pid {pid}"),
        )
        return self

    def __enter__(self) -> DeviceLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class OutDirLock(_FileLock):
    """One writer per output directory (lock file ``<out_dir>/.harness.lock``).

    By default a second writer is refused at once with a :class:`HarnessError`
    naming the other process; with ``wait=True`` it waits (calling ``on_wait``
    once) instead.
    """

    FILE_NAME = ".harness.lock"

    def __init__(
        self,
        out_dir: Path | str,
        wait: bool = False,
        on_wait: Callable[[str], None] | None = None,
        timeout_s: float | None = None,
        poll_s: float = 0.05,
    ) -> None:
        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HarnessError(f"cannot create output directory {self.out_dir}: {exc.strerror or exc}") from exc
        super().__init__(self.out_dir / self.FILE_NAME, f"output directory {self.out_dir}", poll_s)
        self.wait = wait
        self.on_wait = on_wait
        self.timeout_s = timeout_s

    def acquire(self) -> OutDirLock:
        self._acquire(
            wait=self.wait,
            on_wait=self.on_wait,
            timeout_s=self.timeout_s,
            message=lambda pid: f"waiting for another harness process (pid {pid}) writing to {self.out_dir}...",
            refuse=lambda pid: HarnessError(
                f"{self.out_dir} is being written by another harness process (pid {pid}); wait for it to "
                "finish (or stop it), or choose a different --out directory"
            ),
        )
        return self

    def __enter__(self) -> OutDirLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
