# SPDX-License-Identifier: Apache-2.0
"""File output that survives kills, power loss and a second run: atomic, durable writes (write to a
temporary name beside the target, fsync, rename, fsync the folder), one exclusive lock per output,
and the step cache that decides whether a step's outputs can be reused."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Type


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
                raise OutputLocked(
                    f"{self.what} {self.target} is being written by another run (pid {holder}, "
                    f"lock {self.path}); wait for it to finish or stop it"
                ) from None
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

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.release()


DONE_NAME, STARTED_NAME = "done.json", "started.json"


def output_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes; for a folder, sha256 over its files' relative paths and sizes
    (stat only: a city or a bag folder holds thousands of files, and what a crash or a deletion
    leaves behind changes the listing)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path).as_posix()}\0{p.stat().st_size}\n".encode())
    return "dir:" + h.hexdigest()


class StepCache:
    """The one step-cache rule: a step is done when its record (``folder/record``, JSON) holds the
    same ``inputs`` and every output it lists still has its recorded fingerprint; a step that is
    not done is redone from scratch (``start``) and recorded last (``finish``), so a crash in
    between never looks done. ``inputs`` is any JSON value (checksums, options, a command line);
    outputs are paths relative to ``folder`` (files, or folders fingerprinted by their listing)."""

    def __init__(self, folder: str | os.PathLike, inputs: Any, record: str = DONE_NAME) -> None:
        self.folder = Path(folder)
        self.inputs = json.loads(json.dumps(inputs, default=_json_default))  # as it reads back from the record
        self.record_path = self.folder / record

    def record(self) -> Optional[Dict[str, Any]]:
        """The step's record, or None when there is none or it is unreadable."""
        try:
            rec = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) else None

    def why_not_done(self, check_inputs: bool = True) -> Optional[str]:
        """None when the step is done; otherwise the reason, for logs and errors. With
        ``check_inputs`` False only the outputs are verified (reading a cache whose inputs are
        unknown to the reader)."""
        rec = self.record()
        if rec is None:
            return f"{self.record_path}: no valid record"
        if check_inputs and rec.get("inputs") != self.inputs:
            old, new = rec.get("inputs"), self.inputs
            if isinstance(old, dict) and isinstance(new, dict):
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                return f"{self.folder}: stale (inputs differ in {', '.join(diff)})"
            return f"{self.folder}: stale (made from other inputs)"
        for name, fp in (rec.get("outputs") or {}).items():
            p = self.folder / name
            if not p.exists() or output_fingerprint(p) != fp:
                return f"{p}: missing or corrupt (fingerprint differs from {self.record_path.name})"
        return None

    def done(self) -> bool:
        return self.why_not_done() is None

    def start(self, outputs: Sequence[str] = (), resumable: bool = False) -> None:
        """Begin the step; its record goes first. The listed ``outputs`` are removed (made from
        other inputs, or partial). A ``resumable`` step owns its folder: the folder is emptied when
        it holds a started run of other inputs (``started.json``) and kept when the inputs are the
        same, so a killed training resumes from its checkpoint."""
        self.record_path.unlink(missing_ok=True)
        if resumable:
            started = self.folder / STARTED_NAME
            try:
                same = json.loads(started.read_text()) == self.inputs
            except (OSError, ValueError):
                same = False
            if not same and self.folder.is_dir():
                shutil.rmtree(self.folder)
        for name in outputs:
            p = self.folder / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        if resumable:
            atomic_write_json(self.folder / STARTED_NAME, self.inputs)

    def finish(self, outputs: Sequence[str], **info: Any) -> Dict[str, Any]:
        """Record the step as done: its inputs, its outputs' fingerprints and ``info`` (plain values)."""
        rec = {"inputs": self.inputs, "outputs": {n: output_fingerprint(self.folder / n) for n in outputs}, **info}
        atomic_write_json(self.record_path, rec)
        return rec


class CommandSteps:
    """Steps that each run one command line writing one output (file or folder) under ``root``:
    the demo's and the benchmarks' steps, on the StepCache rule. A step is done when its record
    (``root/.steps/OUTPUT.json``) holds the same command line and the same fingerprints of what the
    command reads (files outside ``root`` it names, such as a checkpoint, and the outputs of earlier
    steps it names or reaches into, so a redone step redoes what was made from it), and its output
    still matches. A step that is not done has its output removed first, then runs."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.made: Dict[str, str] = {}  # output path -> fingerprint, of the steps seen so far

    def _reads(self, argv: Sequence[str], output: str) -> Dict[str, str]:
        reads = {}
        for a in argv:
            if a == output:  # a step's own output is not what it reads (a step met twice in one session)
                continue
            paths = (a, a.partition(":")[2])  # a tile source names its folder after a scheme: xyz:DIR
            made = [o for o in self.made if any(p == o or p.startswith(o + os.sep) for p in paths)]
            if made:
                reads[a] = self.made[made[0]]
            elif Path(a).is_file() and self.root.resolve() not in Path(a).resolve().parents:
                reads[a] = file_sha256(a)
        return reads

    def run(self, output: str | os.PathLike, argv: Sequence[str], execute: Callable[[], None]) -> bool:
        """Run ``execute`` (which runs ``argv`` and must make ``output``) unless the step is done.
        Returns True when it ran."""
        out = Path(output)
        rel = out.relative_to(self.root).as_posix()
        argv = [str(a) for a in argv]
        step = StepCache(
            self.root,
            {"command": argv, "reads": self._reads(argv, str(out))},
            record=f".steps/{rel.replace('/', '__')}.json",
        )
        ran = not step.done()
        if ran:
            step.start(outputs=[rel])
            execute()
            if not out.exists():
                raise RuntimeError(f"step did not make {out}: {' '.join(argv)}")
            rec = step.finish([rel])
        else:
            rec = step.record() or {}
        self.made[str(out)] = rec["outputs"][rel]
        return ran
