"""Outputs: every file and folder crl writes appears whole or not at all, and never at the cost of a user's file.

The rule every command follows (``check_output`` before any work, ``atomic_path`` to write):

- Every output carries a marker that crl writes itself, naming its kind: a folder holds ``.crl-output.json``
  (written into the temporary folder before it is renamed into place), a Parquet file has ``crl.kind`` in its
  key-value metadata, a PNG figure a ``crl.kind`` text chunk. A common file name (config.toml,
  model.safetensors) is never taken for a marker.
- An output path that does not exist is written. One that exists is refused with one line, unless
  ``--overwrite`` is given and its marker names the kind of output the command writes; a run folder is never
  replaced, a symbolic link, a device, a FIFO or a socket never either.
- No output may be an input of the command, lie inside one or hold one (symbolic links resolved), nor be the
  current folder, the home folder or a folder above them, with or without ``--overwrite``.
- An output inside a run folder of ``crl iterate`` is written under that run's lock (crl/locks.py), taken
  before any other check, so no two processes work in one run.
- A replaced output is swapped with the new one in a single rename (``renameat2(RENAME_EXCHANGE)`` where Linux
  has it, else two renames), so the old output is gone only once the new one is complete and in place.
- Writers produce a temporary sibling ``.crl-tmp-NAME.HOST.PID`` and rename it into place, so a killed command
  leaves no half-written output; SIGTERM and Ctrl-C remove the temporary (crl/cli/__init__.py turns them into
  exceptions), and the temporaries of a process of this machine that no longer runs (SIGKILL) are removed the
  next time crl writes in their folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl
import pyarrow.parquet as pq

from crl.errors import CrlError
from crl.locks import hold_run

TMP_PREFIX = ".crl-tmp-"
MARKER = ".crl-output.json"  # a folder output's kind, written by crl into the folder
KIND_KEY = "crl.kind"  # a file output's kind: Parquet key-value metadata, PNG text chunk
STATE_FILE = "trainer_state.json"  # a checkpoint's trainer state (crl/engine/checkpoint.py writes it)
RUN = "run"  # the kind of a run folder of ``crl iterate``
FOLDER_KINDS = ("verified", "checkpoint", "model", RUN)  # the other kinds are files


def _owner() -> str:
    """This process, as temporaries name it: the machine (shared filesystems hold other machines' temporaries)
    and the process id."""
    return f"{socket.gethostname()}.{os.getpid()}"


def tmp_sibling(path: Path, tag: str = "") -> Path:
    return path.with_name(f"{TMP_PREFIX}{tag}{path.name}.{_owner()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(folder: Path) -> None:
    """Remove the temporaries in ``folder`` left by a crl process of this machine that no longer runs (killed
    with SIGKILL, or by a power cut); a running process's temporaries and other machines' are left alone."""
    host = socket.gethostname()
    for tmp in folder.glob(f"{TMP_PREFIX}*") if folder.is_dir() else ():
        rest, _, pid = tmp.name.rpartition(".")
        if pid.isdigit() and rest.endswith(f".{host}") and int(pid) != os.getpid() and not _alive(int(pid)):
            remove(tmp)


def temporary_folder(folder: Path, tag: str) -> tempfile.TemporaryDirectory:
    """A scratch folder inside ``folder`` (on the output's filesystem), named as crl's temporaries are."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder)
    return tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{tag}-", suffix=f".{_owner()}", dir=folder)


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
        old = tmp_sibling(path, "old-")
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)  # the old output back where it was
            raise
        remove(old)


def mark(folder: Path, kind: str) -> None:
    """Write the marker that makes ``folder`` recognisable as crl's output of ``kind``."""
    (folder / MARKER).write_text(json.dumps({"kind": kind}) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | Path, kind: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write a file or a folder into; put it in place at ``path`` on success. A folder
    gets the marker of ``kind`` before it is put in place. A full disk is raised as the OSError it is, whichever
    library's exception reported it."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    tmp = tmp_sibling(path)
    remove(tmp)
    try:
        try:
            yield tmp
            if tmp.is_dir():
                if kind not in FOLDER_KINDS:
                    raise ValueError(f"a folder output needs its kind (one of {', '.join(FOLDER_KINDS)}), not {kind!r}")
                mark(tmp, kind)
        except Exception as e:
            if not isinstance(e, (OSError, CrlError, ValueError)) and _disk_full(e, path.parent):
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


def special_file(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (symbolic links followed), else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    for test, what in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return None


def check_input(path: str | Path) -> Path:
    """Refuse, with one line, an input that is a device, a FIFO or a socket: reading one may never end, and no
    signal stops a read blocked inside a library. Returns the path."""
    path = Path(path)
    what = special_file(path)
    if what is not None:
        raise CrlError(f"{path}: is {what}, not a file; crl reads regular files and folders")
    return path


def output_kind(path: Path) -> str | None:
    """The kind of crl output at ``path``, read from the marker crl wrote into it, or None for anything else."""
    try:
        if path.is_symlink():
            return None
        if path.is_dir():
            kind = json.loads((path / MARKER).read_text()).get("kind")
        elif path.is_file() and path.suffix == ".parquet":
            kind = read_metadata(path).get("kind")
        elif path.is_file() and path.suffix == ".png":
            from PIL import Image  # matplotlib's own dependency, present wherever crl plot runs

            with Image.open(path) as image:
                kind = getattr(image, "text", {}).get(KIND_KEY)
        else:
            return None
    except Exception:  # no marker, or a file that is not what its name says: not crl's
        return None
    return kind if isinstance(kind, str) else None


def what_kind(kind: str) -> str:
    """A kind of output in words: "verified folder", "rollouts file"."""
    return f"{kind} {'folder' if kind in FOLDER_KINDS else 'file'}"


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str, flag: str = "--name") -> str:
    """A name a user gives an output (a prompt set, a model): letters, digits, '.', '_' and '-', so that it can
    never leave its folder."""
    if not NAME.fullmatch(name) or ".." in name:
        raise CrlError(f"{flag} {name!r}: a name is letters, digits, '.', '_' and '-' (starting with a letter or digit), without '..'")
    return name


def check_place(path: Path, inputs: Iterable[str | Path], flag: str) -> None:
    """Refuse an output at the current folder, the home folder or one above them, or one that is an input of
    the command, holds one or lies inside one (symbolic links resolved)."""
    target = path.resolve()
    for guarded, why in ((Path.cwd().resolve(), "the current folder or one above it"), (Path.home().resolve(), "the home folder or one above it")):
        if target == guarded or target in guarded.parents:
            raise CrlError(f"{flag} {path}: is {why}; crl never replaces it (choose another {flag})")
    for given in (p for p in inputs if str(p)):
        source = Path(given).expanduser().resolve()
        if not source.exists():  # a name (a hub id, a prompt set's name), not a file here
            continue
        if target == source or target in source.parents:
            raise CrlError(f"{flag} {path}: is an input of this command or holds one ({given}); crl never replaces it (choose another {flag})")
        if source in target.parents:
            raise CrlError(f"{flag} {path}: lies inside {given}, an input of this command; crl never writes into its inputs (choose another {flag})")


def check_output(path: str | Path, *, kind: str, overwrite: bool, inputs: Iterable[str | Path] = (), flag: str = "--out") -> Path:
    """Refuse, with one line, an output path that would destroy something the command was not asked to write,
    or that cannot be written at all; return it (``~`` expanded). ``kind``: what the command writes there.
    Called before any work starts; an output inside a run folder first takes the run's lock."""
    if str(path).strip() == "":
        raise CrlError(f"{flag}: an empty path; name the file or folder to write")
    path = Path(path).expanduser()
    run = enclosing_run(path)
    if run is not None:
        hold_run(run)
    check_place(path, inputs, flag)
    if path.exists() or path.is_symlink():
        why = _irreplaceable(path, kind)
        if why is not None:
            raise CrlError(f"{flag} {path}: {why}; it was left untouched (choose another {flag})")
        if not overwrite:
            raise CrlError(f"{flag} {path}: holds a previous crl output ({what_kind(kind)}); it was left untouched "
                           f"(choose another {flag}, or pass --overwrite to replace it)")
    check_writable(path, flag)
    return path


def _irreplaceable(path: Path, kind: str) -> str | None:
    """Why ``--overwrite`` may not replace what stands at ``path`` with an output of ``kind``, or None."""
    if path.is_symlink():
        return "is a symbolic link; crl replaces only its own files and folders"
    special = special_file(path)
    if special is not None:
        return f"is {special}; crl replaces only its own files and folders"
    have = output_kind(path)
    if have == RUN:
        return "is a run folder of `crl iterate`, which crl never replaces"
    if have is None:
        return f"exists and is not a crl output (a {'folder' if path.is_dir() else 'file'} that crl did not write)"
    if have != kind:
        return f"holds a crl {what_kind(have)}, and this command writes a {what_kind(kind)}"
    return None


def check_writable(path: Path, flag: str) -> None:
    """Refuse, with one line, an output whose nearest existing folder cannot be written in (read-only)."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CrlError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CrlError(f"{flag} {path}: cannot write in {parent} (permission denied or read-only)")


def enclosing_run(path: Path) -> Path | None:
    """The run folder of ``crl iterate`` that ``path`` lies inside, if any."""
    return next((p for p in Path(path).resolve().parents if output_kind(p) == RUN), None)


def write_parquet(df: pl.DataFrame, path: str | Path, metadata: dict[str, object] | None = None, kind: str | None = None) -> None:
    """Write ``df`` atomically, with ``metadata`` (and the output's ``kind``) stored as JSON in the file's
    key-value metadata."""
    table = df.to_arrow()
    meta = dict(table.schema.metadata or {})
    extra = {**(metadata or {}), **({"kind": kind} if kind else {})}
    meta.update({f"crl.{k}".encode(): json.dumps(v).encode() for k, v in extra.items()})
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")  # as polars writes: a third of snappy's size on rollouts


def read_metadata(path: str | Path) -> dict[str, object]:
    """The crl key-value metadata of a Parquet file written by ``write_parquet``."""
    raw = pq.read_schema(path).metadata or {}
    return {k.decode()[4:]: json.loads(v) for k, v in raw.items() if k.startswith(b"crl.")}
