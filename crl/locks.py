"""The lock of a run folder: one crl process works in a run at a time.

``crl iterate`` holds its run's lock from start to end, and any command writing inside a run folder takes it
before its other checks (crl/io.py's ``check_output``); a second process is refused with one line naming the
holder's pid. The lock is an ``flock`` on ``RUN/.crl-lock``, so the kernel drops it when the process ends,
however it ends; the holder writes its pid there and empties the file when it lets go.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from crl.errors import CrlError

LOCK_FILE = ".crl-lock"

_held: dict[tuple[int, int], int] = {}  # (device, inode) of a run folder -> the open lock file this process holds


def _key(folder: Path) -> tuple[int, int]:
    st = folder.stat()
    return st.st_dev, st.st_ino


def hold_run(folder: Path) -> bool:
    """Hold ``folder``'s lock until ``release_runs`` (the end of the command) or the end of the process, however
    it ends; a second crl process on the same run is refused with one line. False when already held here. Under
    torchrun the processes of one command write as one (the first saves), so only the first takes the lock."""
    if _key(folder) in _held or int(os.environ.get("RANK", "0")) != 0:
        return False
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CrlError(f"{folder}: cannot take the run's lock ({e.strerror}); nothing was changed") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise CrlError(f"{folder}: another crl process (pid {holder or '?'}) is working in this run; nothing was changed") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held[_key(folder)] = fd
    return True


def _release(key: tuple[int, int]) -> None:
    fd = _held.pop(key)
    os.ftruncate(fd, 0)  # no pid of a process that has let go
    os.close(fd)


def release_runs() -> None:
    """Let go of every run this process holds (the command is over)."""
    for key in list(_held):
        _release(key)


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder`` for the duration of the block (unless this process held it already)."""
    took = hold_run(folder)
    key = _key(folder)
    try:
        yield
    finally:
        if took and key in _held:
            _release(key)
