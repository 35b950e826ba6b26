"""File output that survives kills, power loss and a second run: atomic, durable writes (write to a
temporary name beside the target, fsync, rename, fsync the folder) and one exclusive lock per output."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Optional, Type


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` only on success.

    ``durable``: flush the data before the rename and the rename after it. Without the flushes a power
    cut can persist the rename before the data: a valid name on an empty file (checkpoints, engines,
    data-set indexes). Files whose damage is detected and repaired on use (cached tiles) skip them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs (checkpoints, engines) are read by other users' nodes
    try:
        yield Path(tmp)
        if durable:
            fsync_path(tmp)
            replace_durably(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's data, or a folder's entries (renames, new files), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``os.replace`` a finished file or folder into place and flush the rename (its folder) to the disk."""
    os.replace(src, dst)
    fsync_path(Path(dst).parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, durable: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode(), durable)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class OutputLocked(RuntimeError):
    """Another live process holds the lock on an output (the message names its pid)."""


def lock_path_for(target: str | os.PathLike) -> Path:
    """The lock file of an output: ``<target>.lock`` beside it."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


class OutputLock:
    """An exclusive lock on one output (data set, run folder, city, cache): ``flock`` on
    ``<target>.lock``, which holds the owner's pid for the message another run gets.

    The kernel drops a flock when its process dies, so a killed run never leaves a stale lock. The
    file is removed on release; a process that opened it just before then sees that its file is no
    longer the one at the path and retries on the new one.
    """

    def __init__(self, target: str | os.PathLike, what: str = "output") -> None:
        self.target = Path(target)
        self.path = lock_path_for(target)
        self.what = what
        self._fd: Optional[int] = None

    def acquire(self) -> "OutputLock":
        """Take the lock or raise :class:`OutputLocked` at once (never waits)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"  # empty while it starts
                os.close(fd)
                raise OutputLocked(f"{self.what} {self.target} is being written by another run (pid {holder}, "
                                   f"lock {self.path}); wait for it to finish or stop it") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous owner removed this file between our open and our flock: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.release()
