"""File locks so that one machine runs one measurement at a time, with nothing heavy beside it.

* :class:`DeviceLock` - the *exclusive* per-device lock (``fcntl.flock`` ``LOCK_EX`` on
  ``<lock_dir>/<device>.lock``) held around each timing window. A second harness process (or
  thread) that wants the same device waits for it, calls ``on_wait`` once with a message naming
  the holder's pid, and records how long it waited.
* :func:`heavy_work` / :class:`SharedDeviceLock` - the *shared* side of the same lock
  (``LOCK_SH``), held around every other heavy piece of work a harness process does on a device
  (accuracy pass, calibration, export, engine build, profiling, training): any number of them run
  together, but never while another process's window is open, and a window waits until they end.
* :class:`OutDirLock` - one writer per output directory; by default a second writer is refused
  at once with a :class:`HarnessError` naming the other pid.

Readers-writer fairness: with plain ``flock`` a stream of overlapping shared holders (several
processes' accuracy passes) could keep a window waiting for ever. A window therefore first takes
``<device>.intent`` exclusively, then the device lock, and lets the intent go once it holds the
device; heavy work takes the intent *shared* for a moment before taking the device shared. While
a window waits (holding the intent), new heavy work queues behind it; work already running
finishes first.

Within one process: ``flock`` locks belong to an open file description, so a process that holds
the device shared (say, around a session's preparation) and opens a window on the same device
would wait for itself. The shared holds of a process are therefore kept on one descriptor per
lock file (:class:`_SharedHolds`; locks are a per-process resource, so this is the one place
that keeps process-wide bookkeeping), and an exclusive window of the same process releases that
shared lock while it is open and takes it back afterwards. Two threads that each open a window
still exclude each other like two processes.

The kernel releases every lock when its holder dies (no stale locks after a crash or kill -9).
Lock files are never deleted (deleting a lock file while another process waits on it would let
a third process lock a new file with the same name).

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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

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


def _try_lock(fd: int, op: int = fcntl.LOCK_EX) -> bool:
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
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


def _wait_lock(fd: int, op: int, poll_s: float, deadline: float | None) -> bool:
    """Take ``op`` on ``fd``, polling (so timeouts and Ctrl-C work); False when ``deadline`` passed."""
    while not _try_lock(fd, op):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def _lock_paths(device: str, lock_dir: Path | str | None) -> tuple[Path, Path]:
    directory = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    name = lock_name(device)
    return directory / f"{name}.lock", directory / f"{name}.intent"


class _SharedHold:
    """This process's shared hold on one device lock file: one descriptor, a count of holders, and
    whether an exclusive window of this process has it released for now."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pid = os.getpid()  # a forked child must not share (and unlock) its parent's descriptor
        self.count = 0
        self.suspended = 0


class _SharedHolds:
    """This process's shared holds, by lock-file path (see the module docstring)."""

    def __init__(self) -> None:
        self.guard = threading.RLock()
        self.by_path: dict[str, _SharedHold] = {}

    def get(self, path: Path) -> _SharedHold | None:
        hold = self.by_path.get(str(path))
        if hold is not None and hold.pid != os.getpid():
            del self.by_path[str(path)]  # inherited through fork: not ours
            return None
        return hold

    def drop_if_unused(self, path: Path) -> None:
        hold = self.by_path.get(str(path))
        if hold is not None and hold.count == 0 and hold.suspended == 0:
            del self.by_path[str(path)]
            try:
                fcntl.flock(hold.fd, fcntl.LOCK_UN)
            finally:
                os.close(hold.fd)

    def suspend(self, path: Path) -> None:
        """An exclusive window of this process is about to take ``path``: drop our shared lock."""
        with self.guard:
            hold = self.get(path)
            if hold is not None and hold.count > 0:
                if hold.suspended == 0:
                    fcntl.flock(hold.fd, fcntl.LOCK_UN)
                hold.suspended += 1

    def resume(self, path: Path, intent: Path, poll_s: float) -> None:
        """The window is closed: take the shared lock back for the holders still inside."""
        with self.guard:
            hold = self.get(path)
            if hold is None or hold.suspended == 0:
                return
            hold.suspended -= 1
            if hold.suspended == 0 and hold.count > 0:
                _take_shared(hold.fd, intent, poll_s, None)
            self.drop_if_unused(path)


_HOLDS = _SharedHolds()


def _take_shared(fd: int, intent: Path, poll_s: float, deadline: float | None,
                 on_first_wait: Callable[[], None] | None = None) -> bool:
    """Shared lock on ``fd``, queueing behind a waiting window (the intent file, taken shared for a
    moment). ``on_first_wait`` is called once if either step has to wait. False when ``deadline``
    passed."""
    waited = False

    def wait(lock_fd: int) -> bool:
        nonlocal waited
        if _try_lock(lock_fd, fcntl.LOCK_SH):
            return True
        if not waited and on_first_wait is not None:
            on_first_wait()
        waited = True
        return _wait_lock(lock_fd, fcntl.LOCK_SH, poll_s, deadline)

    ifd = _open_lock_file(intent)
    try:
        return wait(ifd) and wait(fd)
    finally:
        try:
            fcntl.flock(ifd, fcntl.LOCK_UN)
        finally:
            os.close(ifd)


class DeviceLock(_FileLock):
    """Exclusive lock on one device for the duration of a timing window.

    ::

        with DeviceLock("cpu", on_wait=console.print) as lock:
            result = measure(...)
        lock.waited_s  # seconds spent waiting for another harness process

    ``device`` is "cpu" or a GPU's UUID (preferred over "cuda:0": indices differ
    between processes with different ``CUDA_VISIBLE_DEVICES``). ``on_wait`` is
    called once, only when the lock is busy, with a message such as "waiting for
    another harness process (pid 1234) timing on cpu..." (or "... heavy work on cpu"
    when only other processes' shared holders are in the way). ``timeout_s=None``
    waits for ever. Heavy work of this same process on the device (:func:`heavy_work`)
    is paused for the window's length as far as the lock goes (it does not block it).
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
        path, self.intent_path = _lock_paths(device, lock_dir)
        super().__init__(path, f"device {device}", poll_s)
        self.on_wait = on_wait
        self.timeout_s = timeout_s

    def _message(self, holder: str) -> str:
        if holder and holder != "unknown":
            return f"waiting for another harness process (pid {holder}) timing on {self.device}..."
        return f"waiting for other harness processes' heavy work on {self.device}..."

    def acquire(self) -> DeviceLock:
        if self._fd is not None:
            raise HarnessError(f"{self.what} lock is already held by this object (locks are not reentrant)")
        start = time.monotonic()
        deadline = None if self.timeout_s is None else start + self.timeout_s
        told = False

        def tell(fd: int) -> None:
            nonlocal told
            holder = _read_holder(fd) or "unknown"
            self.waited_for_pid = holder
            if not told and self.on_wait is not None:
                self.on_wait(self._message(holder))
            told = True

        def give_up(fd: int) -> HarnessError:
            holder = _read_holder(fd)
            who = f"held by pid {holder}" if holder else "held by other harness processes' heavy work"
            return HarnessError(f"gave up after {self.timeout_s:g} s waiting for the {self.what} lock {who} "
                                f"({self.path})")

        _HOLDS.suspend(self.path)
        fd = ifd = None
        try:
            fd = _open_lock_file(self.path)
            ifd = _open_lock_file(self.intent_path)
            if not _try_lock(ifd):
                tell(fd)
                if not _wait_lock(ifd, fcntl.LOCK_EX, self.poll_s, deadline):
                    raise give_up(fd)
            if not _try_lock(fd):
                tell(fd)
                if not _wait_lock(fd, fcntl.LOCK_EX, self.poll_s, deadline):
                    raise give_up(fd)
            self.waited_s = time.monotonic() - start
            _write_holder(fd, self.what)
            self.acquired_at = time.time()
        except BaseException:
            if fd is not None:
                os.close(fd)
            _HOLDS.resume(self.path, self.intent_path, self.poll_s)
            raise
        finally:
            if ifd is not None:
                os.close(ifd)  # lets the intent go: the next window may queue, heavy work waits on the device
        self._fd = fd
        return self

    def release(self) -> None:
        was_held = self._fd is not None
        super().release()
        if was_held:
            _HOLDS.resume(self.path, self.intent_path, self.poll_s)

    def __enter__(self) -> DeviceLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class SharedDeviceLock:
    """The shared side of a device lock, for heavy work that is not a timing window (see
    :func:`heavy_work`, the usual way in). Reentrant within a process; ``waited_s`` is how long
    it waited for other processes' windows."""

    def __init__(self, device: str, lock_dir: Path | str | None = None,
                 on_wait: Callable[[str], None] | None = None, timeout_s: float | None = None,
                 poll_s: float = 0.05) -> None:
        self.device = device
        self.path, self.intent_path = _lock_paths(device, lock_dir)
        self.on_wait = on_wait
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.waited_s = 0.0
        self.waited_for_pid: str | None = None
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> SharedDeviceLock:
        if self._held:
            raise HarnessError(f"shared lock on device {self.device} is already held by this object")
        start = time.monotonic()
        deadline = None if self.timeout_s is None else start + self.timeout_s
        key = str(self.path)
        with _HOLDS.guard:
            hold = _HOLDS.get(self.path)
            if hold is not None and (hold.count > 0 or hold.suspended > 0):
                hold.count += 1  # this process already holds it (or its own open window has it)
                self._held = True
                return self
            fd = hold.fd if hold is not None else _open_lock_file(self.path)

            def tell() -> None:
                holder = _read_holder(fd)
                self.waited_for_pid = holder or None
                if self.on_wait is not None:
                    self.on_wait(f"waiting for another harness process (pid {holder}) timing on {self.device}..."
                                 if holder else f"waiting for another harness process timing on {self.device}...")

            try:
                if not _take_shared(fd, self.intent_path, self.poll_s, deadline, tell):
                    holder = _read_holder(fd)
                    raise HarnessError(
                        f"gave up after {self.timeout_s:g} s waiting for the device {self.device} lock "
                        f"held by pid {holder or 'unknown'} ({self.path})")
            except BaseException:
                if hold is None:
                    os.close(fd)
                raise
            if hold is None:
                hold = _HOLDS.by_path[key] = _SharedHold(fd)
            hold.count = 1
        self.waited_s = time.monotonic() - start
        self._held = True
        return self

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        with _HOLDS.guard:
            hold = _HOLDS.get(self.path)
            if hold is None or hold.count == 0:
                return
            hold.count -= 1
            _HOLDS.drop_if_unused(self.path)

    def __enter__(self) -> SharedDeviceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class HeavyWork:
    """One piece of heavy work held under a device's shared lock: what, on which device, when
    (epoch seconds; ``end`` is None while it runs) and how long it waited for others' windows."""

    device: str
    what: str
    start: float = 0.0
    end: float | None = None
    waited_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "what": self.what, "start": self.start, "end": self.end,
                "waited_s": self.waited_s}


@contextmanager
def heavy_work(device: str, what: str, *, lock_dir: Path | str | None = None,
               on_wait: Callable[[str], None] | None = None, timeout_s: float | None = None,
               poll_s: float = 0.05) -> Iterator[HeavyWork]:
    """Hold ``device`` ("cpu" or a GPU UUID) shared around heavy work that is not a timing window::

        with heavy_work("cpu", "accuracy pass", on_wait=notice) as work:
            evaluate(...)
        work.to_dict()  # {"device": "cpu", "what": "accuracy pass", "start": ..., "end": ..., "waited_s": ...}

    It waits while another harness process's window on the device is open (or queued), and a
    window waits until it ends; this process's own windows are not blocked by it."""
    lock = SharedDeviceLock(device, lock_dir=lock_dir, on_wait=on_wait, timeout_s=timeout_s, poll_s=poll_s)
    lock.acquire()
    record = HeavyWork(device=device, what=what, start=time.time(), waited_s=lock.waited_s)
    try:
        yield record
    finally:
        record.end = time.time()
        lock.release()


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
