"""The worker pool behind `verify_many`: parallel, ordered, and with a hard per-item wall-clock limit.

Each worker is a process with its own pipe; the parent hands it chunks of items and the worker answers with one
message per chunk. Two limits guard every item:
- soft: the worker arms `setitimer` for `timeout` seconds around each item (it is its own main thread, so
  signals work there); an overrun raises inside the verifier and the item gets status "timeout";
- hard: the worker writes the start time and position of the item it is on to shared memory; when an item has
  run `timeout + GRACE` seconds (a hang in C code that ignores signals), the parent kills the worker, marks the
  item "timeout", requeues the rest of its chunk and starts a replacement. A worker that dies marks its item
  "error" the same way. So a run never stalls and never loses an item.
The parent uses no signals, only pipes and polling, so `verify_many` works from any thread. Workers start with
the "forkserver" method (cheap, thread-safe replacements: forked from a server that has `crl.verifiers`
imported) where available, else "spawn".

The forkserver is a fresh `python -c` process, which would put the current folder first on its path: run from a
folder holding a `crl/` subfolder (a run folder), it imported that instead of the installed package and every item
failed. So it starts with PYTHONSAFEPATH=1 (no current folder) and the folder holding the parent's own `crl`
package first on PYTHONPATH, and the workers import exactly the parent's `crl`. A run in which every item ends in
"error" raises CrlError naming the first failure, instead of returning verdicts that look like wrong answers.
"""

from __future__ import annotations

import inspect
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from multiprocessing.sharedctypes import RawArray
from pathlib import Path
from typing import Any

import crl
from crl.errors import CrlError
from crl.verifiers import Verdict, get_verifier

GRACE = 0.5  # seconds past the soft limit before the parent kills a worker
POLL = 0.05  # seconds between deadline checks in the parent
START_LIMIT = 120.0  # seconds a fresh worker may take to import its verifier
MAX_CHUNK = 64


class _ItemTimeout(BaseException):
    """Raised in a worker by SIGALRM; a BaseException so that `except Exception` in a verifier cannot eat it."""


_armed = False


def _on_alarm(signum: int, frame: Any) -> None:
    if _armed:
        raise _ItemTimeout()


Result = tuple[float, str | None, str, str]  # reward, pred, status, and for "error" the exception in one line


def _check_one(fn: Any, completion: str, answer: str, truncated: bool, timeout: float) -> Result:
    """Run one item under the soft limit; any failure becomes a status, never an exception."""
    global _armed
    try:
        try:
            _armed = True
            signal.setitimer(signal.ITIMER_REAL, timeout)
            v = fn(completion, answer, truncated=True) if truncated else fn(completion, answer)
            _armed = False
            if not isinstance(v, Verdict):
                raise TypeError(f"verifier returned {type(v).__name__}")
            return float(v.reward), None if v.pred is None else str(v.pred), str(v.status), ""
        except _ItemTimeout:
            return 0.0, None, "timeout", ""
        except Exception as exc:
            return 0.0, None, "error", f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        finally:
            _armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _ItemTimeout:  # the alarm landed between the verifier's return and disarming
        return 0.0, None, "timeout", ""


def _takes_truncated(fn: Any) -> bool:
    """Whether a verifier accepts the `truncated` keyword (the built-in math verifiers do; user ones may not)."""
    try:
        return "truncated" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _worker(conn: Connection, name: str, timeout: float, state: Any) -> None:
    """Worker main: resolve the verifier, then answer chunks of (completion, answer) until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGALRM, _on_alarm)
    fn = get_verifier(name)
    honours_truncated = _takes_truncated(fn)
    state[2] = 1.0
    while True:
        try:
            items = conn.recv()
        except EOFError:
            return
        if items is None:
            return
        out = []
        for k, (completion, answer, truncated) in enumerate(items):
            state[1] = k
            state[0] = time.monotonic()
            out.append(_check_one(fn, completion, answer, truncated and honours_truncated, timeout))
        state[0] = 0.0
        conn.send(out)


_start_lock = threading.Lock()


@contextmanager
def _caller_script_hidden() -> Iterator[None]:
    """Start a worker without the caller's script: a forkserver or spawn child imports the parent's `__main__`
    file before it runs its target, and a script that imports torch (a bench, a notebook export) then costs
    every worker seconds (5 s of a 6 s round of the tiny default). `_worker` needs nothing from that script.
    multiprocessing has no switch for this, so the main module is swapped for an empty one while the child's
    start-up data is taken (under `_start_lock`, as crl starts its workers one at a time)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _start_forkserver() -> None:
    """Start (or find running) the forkserver, importing the parent's own `crl` whatever the current folder holds.

    The server inherits the environment at its start, so the two variables are set around that moment only (a
    subprocess started by another thread in those milliseconds would inherit them too, harmlessly).
    """
    from multiprocessing import forkserver

    root = str(Path(crl.__file__).resolve().parents[1])
    with _start_lock:
        saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "PYTHONSAFEPATH")}
        os.environ["PYTHONSAFEPATH"] = "1"
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, saved["PYTHONPATH"]) if p)
        try:
            forkserver.ensure_running()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _context() -> Any:
    """forkserver (with crl.verifiers preloaded) where the platform has it, else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["crl.verifiers"])  # not __main__: a caller's unguarded script would rerun
        _start_forkserver()
        return ctx
    return mp.get_context("spawn")


class _Slot:
    """One worker process, its pipe, its shared (start time, position, ready) state, and its current chunk."""

    def __init__(self, ctx: Any, name: str, timeout: float):
        self.state = RawArray("d", 3)
        parent, child = ctx.Pipe()
        self.conn: Connection = parent
        self.proc = ctx.Process(target=_worker, args=(child, name, timeout, self.state), daemon=True)
        with _start_lock, _caller_script_hidden():
            self.proc.start()
        child.close()
        self.born = time.monotonic()
        self.chunk: list[int] | None = None

    def stop(self, kill: bool) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except (OSError, BrokenPipeError):
                self.proc.kill()
        self.proc.join(timeout=2.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def run_pool(
    completions: list[str],
    answers: list[str],
    name: str,
    workers: int,
    timeout: float,
    progress: bool,
    truncated: list[bool] | None = None,
) -> list[Verdict]:
    """Verdicts for all items in input order; see the module docstring for the limits and the all-error rule."""
    n = len(completions)
    if n == 0:
        return []
    flags = truncated or [False] * n
    errors: list[str] = []
    workers = workers if workers > 0 else (os.cpu_count() or 1)
    size = max(1, min(MAX_CHUNK, n // (workers * 4)))
    todo: deque[list[int]] = deque(list(range(i, min(i + size, n))) for i in range(0, n, size))
    results: list[Verdict | None] = [None] * n
    ctx = _context()
    slots = [_Slot(ctx, name, timeout) for _ in range(min(workers, len(todo)))]
    bar = _progress_bar(n) if progress else None
    done = 0

    def assign(slot: _Slot) -> None:
        if todo:
            slot.chunk = todo.popleft()
            slot.conn.send([(completions[i], answers[i], bool(flags[i])) for i in slot.chunk])
        else:
            slot.chunk = None

    def replace(slot: _Slot, status: str) -> _Slot:
        """Kill a stuck or dead worker, give its current item `status`, requeue the rest, start a new one."""
        nonlocal done
        chunk = slot.chunk or []
        pos = int(slot.state[1]) if slot.state[0] > 0 else 0
        if status == "error":
            code = slot.proc.exitcode
            errors.append(f"a worker process exited (code {code}) before answering; its traceback is above")
        slot.stop(kill=True)
        if chunk:
            results[chunk[pos]] = Verdict(0.0, None, status)
            done += 1
            rest = chunk[:pos] + chunk[pos + 1 :]
            if rest:
                todo.appendleft(rest)
        fresh = _Slot(ctx, name, timeout)
        assign(fresh)
        return fresh

    try:
        for slot in slots:
            assign(slot)
        while done < n:
            busy = {s.conn: s for s in slots if s.chunk is not None}
            for conn in wait(list(busy), timeout=POLL):
                slot = busy[conn]  # type: ignore[index]
                try:
                    out = conn.recv()
                except (EOFError, OSError):
                    slots[slots.index(slot)] = replace(slot, "error")
                    continue
                for i, r in zip(slot.chunk or [], out):
                    results[i] = Verdict(*r[:3])
                    if r[3]:
                        errors.append(r[3])
                done += len(out)
                if bar is not None:
                    bar[0].update(bar[1], completed=done)
                assign(slot)
            now = time.monotonic()
            for k, slot in enumerate(slots):
                if slot.chunk is None:
                    continue
                started = slot.state[0]
                if started > 0 and now - started > timeout + GRACE:
                    slots[k] = replace(slot, "timeout")
                elif slot.state[2] == 0 and now - slot.born > START_LIMIT:
                    raise CrlError(f"verifier '{name}' workers did not start within {START_LIMIT:.0f} s")
                elif not slot.proc.is_alive() and not slot.conn.poll():
                    slots[k] = replace(slot, "error")
    finally:
        for slot in slots:
            slot.stop(kill=slot.chunk is not None)
        if bar is not None:
            bar[0].update(bar[1], completed=done)
            bar[0].stop()
    if all(v is not None and v.status == "error" for v in results):
        why = errors[0] if errors else "no detail"
        raise CrlError(f"verifier '{name}' failed on every one of {n} items; first failure: {why}")
    return results  # type: ignore[return-value]


def _progress_bar(total: int) -> tuple[Any, Any]:
    """A started rich progress bar and its task id."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar.start()
    return bar, bar.add_task("verify", total=total)
