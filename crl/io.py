"""Outputs: every file and folder crl writes appears whole or not at all, and never at the cost of a user's file.

The rule every command follows (``check_output`` before any work, ``atomic_path`` to write):

- An output path that does not exist is written. One that exists is refused with one line, unless
  ``--overwrite`` is given; the line says whether it holds a previous crl output of the same kind.
- Even with ``--overwrite``, crl never replaces an input of the command or a folder that holds one, the current
  folder or a folder above it, the home folder or the filesystem root, a folder by a file or a file by a
  folder, or a folder of files that crl did not write.
- A replaced output is swapped with the new one in a single rename (``renameat2(RENAME_EXCHANGE)`` where Linux
  has it, else two renames), so the old output is gone only once the new one is complete and in place.
- Writers produce a temporary sibling named ``.crl-tmp-*`` and rename it into place, so a killed command leaves
  no half-written output; SIGTERM and Ctrl-C remove the temporary (crl/cli/__init__.py turns them into
  exceptions), and ``--resume`` removes only such crl temporaries, only inside its own run folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl
import pyarrow.parquet as pq

from crl.errors import CrlError

TMP_PREFIX = ".crl-tmp-"
LOCK_FILE = ".crl-lock"
STATE_FILE = "trainer_state.json"  # a checkpoint's trainer state (crl/engine/checkpoint.py writes it)


def _tmp_sibling(path: Path, tag: str = "") -> Path:
    return path.with_name(f"{TMP_PREFIX}{tag}{path.name}.{os.getpid()}")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE); False where unsupported.

    ctypes because Python's os module does not expose renameat2's flags; without it, replacing a folder
    takes two renames with a moment in between where the output path is empty."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))


def _put_in_place(tmp: Path, path: Path) -> None:
    """Move the finished ``tmp`` to ``path``, replacing what stands there without a moment of neither."""
    if not path.exists() and not path.is_symlink():
        os.replace(tmp, path)
    elif path.is_file() and tmp.is_file():
        os.replace(tmp, path)  # atomic for files
    elif _exchange(tmp, path):
        remove(tmp)  # now the old output
    else:
        old = _tmp_sibling(path, "old-")
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)  # the old output back where it was
            raise
        remove(old)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write a file or a folder into; put it in place at ``path`` on success. A full
    disk is raised as the OSError it is, whichever library's exception reported it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    remove(tmp)
    try:
        try:
            yield tmp
        except Exception as e:
            if not isinstance(e, (OSError, CrlError)) and _disk_full(e, path.parent):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
            raise
        _put_in_place(tmp, path)
    finally:
        remove(tmp)


def _disk_full(error: Exception, folder: Path) -> bool:
    """Whether a writer failed because the disk is full: its message says so (safetensors and polars carry the
    system's words in their own exception types) or less than 1 MiB is left there (torch.save says neither)."""
    return os.strerror(errno.ENOSPC) in str(error) or shutil.disk_usage(folder).free < 2**20


def remove(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def kind_of(path: Path) -> str | None:
    """Which crl output stands at ``path`` (for messages), or None for anything else."""
    if path.is_file() and path.suffix == ".parquet":
        try:
            return read_metadata(path).get("kind")  # type: ignore[return-value]
        except Exception:
            return None
    if path.is_dir():
        marks = {"config.toml": "run folder", STATE_FILE: "checkpoint", "groups.parquet": "verified/ folder",
                 "crl-model.json": "model folder", "model.safetensors": "model folder"}
        return next((kind for name, kind in marks.items() if (path / name).is_file()), None)
    return None


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str, flag: str = "--name") -> str:
    """A name a user gives an output (a prompt set, a model): letters, digits, '.', '_' and '-', so that it can
    never leave its folder."""
    if not NAME.fullmatch(name) or ".." in name:
        raise CrlError(f"{flag} {name!r}: a name is letters, digits, '.', '_' and '-' (starting with a letter or digit), without '..'")
    return name


def _protected(inputs: Iterable[str | Path]) -> list[tuple[Path, str, bool]]:
    """(path, why, also its parents) that no output may replace."""
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    out = [(cwd, "the current folder or one above it", True), (home, "the home folder or one above it", True)]
    out += [(Path(p).expanduser().resolve(), "an input of this command", True) for p in inputs if str(p)]
    return out


def check_output(path: str | Path, *, overwrite: bool, inputs: Iterable[str | Path] = (), flag: str = "--out", folder: bool = False) -> Path:
    """Refuse, with one line, an output path that would destroy something the command was not asked to write,
    or that cannot be written at all; return it. ``folder``: the command writes a folder there, not a file.
    Called before any work starts."""
    if str(path).strip() == "":
        raise CrlError(f"{flag}: an empty path; name the file or folder to write")
    path = Path(path).expanduser()
    target = path.resolve()
    for guarded, why, parents in _protected(inputs):
        if target == guarded or (parents and target in guarded.parents):
            raise CrlError(f"{flag} {path}: is {why}; crl never replaces it (choose another {flag})")
    if path.exists() or path.is_symlink():
        _check_replaceable(path, folder, flag)
        if not overwrite:
            kind = kind_of(path)
            what = f"holds a previous crl output ({kind})" if kind else f"exists and is not a crl output of this kind ({'a folder' if path.is_dir() else 'a file'})"
            raise CrlError(f"{flag} {path}: {what}; it was left untouched (choose another {flag}, or pass --overwrite to replace it)")
    check_writable(path, flag)
    return path


def _check_replaceable(path: Path, folder: bool, flag: str) -> None:
    """Refuse, even with --overwrite, what one path would take many of a user's files with: a folder replaced
    by a file or a file by a folder, or a folder of files that crl did not write."""
    if path.is_dir() != folder:
        have, want = ("a folder", "a file") if path.is_dir() else ("a file", "a folder")
        raise CrlError(f"{flag} {path}: is {have} and this command writes {want}; crl never replaces one with the other (choose another {flag})")
    if folder and kind_of(path) is None and any(path.iterdir()):
        raise CrlError(f"{flag} {path}: is a folder of files that crl did not write; --overwrite replaces only crl's own folders (choose another {flag})")


def check_writable(path: Path, flag: str) -> None:
    """Refuse, with one line, an output whose nearest existing folder cannot be written in (read-only)."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CrlError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CrlError(f"{flag} {path}: cannot write in {parent} (permission denied or read-only)")


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder`` for this process: a second crl process on the same run is refused with one line. The
    kernel drops the lock when the process ends, however it ends."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise CrlError(f"{folder}: another crl process (pid {handle.read().strip() or '?'}) is working in this run") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def write_parquet(df: pl.DataFrame, path: str | Path, metadata: dict[str, object] | None = None, kind: str | None = None) -> None:
    """Write ``df`` atomically, with ``metadata`` (and the output's ``kind``) stored as JSON in the file's
    key-value metadata."""
    table = df.to_arrow()
    meta = dict(table.schema.metadata or {})
    extra = {**(metadata or {}), **({"kind": kind} if kind else {})}
    meta.update({f"crl.{k}".encode(): json.dumps(v).encode() for k, v in extra.items()})
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_metadata(path: str | Path) -> dict[str, object]:
    """The crl key-value metadata of a Parquet file written by ``write_parquet``."""
    raw = pq.read_schema(path).metadata or {}
    return {k.decode()[4:]: json.loads(v) for k, v in raw.items() if k.startswith(b"crl.")}
