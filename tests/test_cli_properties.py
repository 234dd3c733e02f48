"""Random command lines over the real CLI: never a traceback, and nothing changes but the command's output.

Hypothesis draws a command (generate, verify, train, eval, iterate, data import/list, inspect, plot), a
positional argument and a random subset of that command's real flags (read from the typer app, so a new flag
is fuzzed too), with values that are often wrong: nan, inf, negative, huge, empty, a user's file or folder,
``..``, ``~``, crl's own outputs, paths inside them; ``--overwrite`` is drawn for every other line. Each line
runs in-process in a fresh copy of a folder holding crl outputs (a run folder among them), a user's files, and
a user's project that holds the file names crl writes (config.toml, model.safetensors, groups.parquet,
round.json ...), under a fake HOME. Whatever happens, the command ends with status 0, or with one
``crl: error:`` line as the last line of stderr and no traceback; on success only its output changed, and an
output that stood there before was crl's output of the same kind; on failure nothing at all changed; the
user's files never change.

The flags that only set how much work a successful command does (samples, lengths, rounds, epochs, workers,
the backend, the prompt sets of iterate) are pinned to tiny values, so a run costs a second or two.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polars as pl
from conftest import crl_main
from crl.cli import app
from crl.config import dumps, resolve
from crl.io import output_kind
from test_user_mistakes import ROOT, assert_one_line, inputs, snapshot  # noqa: F401 (inputs: a fixture)

COMMANDS = ("generate", "verify", "train", "eval", "iterate", "data import", "data list", "inspect", "plot")
CHEAP = {  # pinned after the random flags (the last value of a flag wins)
    "generate": ["--n", "2", "--max-new-tokens", "4", "--limit", "2", "--backend", "hf"],
    "eval": ["--n", "2", "--max-new-tokens", "4", "--limit", "2", "--backend", "hf", "--workers", "1"],
    "verify": ["--workers", "1"],
    "train": ["--epochs", "1", "--minibatches", "1"],
    "iterate": ["--rounds", "1", "--prompts-per-round", "2", "--prompts", "few.parquet", "--eval-task", "few.parquet",
                "--backend", "hf", *[x for kv in ("generate.n=2", "generate.max_new_tokens=4", "eval.n=2", "eval.max_new_tokens=4",
                                                  "eval.limit=2", "verify.workers=1") for x in ("--set", kv)]],
}
NOT_FUZZED = {"--n", "--max-new-tokens", "--limit", "--backend", "--workers", "--epochs", "--minibatches", "--rounds",
              "--prompts-per-round", "--prompts", "--eval-task", "--compile", "--attn", "--help", "--overwrite"}
KIND = {"generate": "rollouts", "verify": "verified", "train": "checkpoint", "eval": "eval"}  # what each writes at --out
USER = ("mywork", "notes.txt", "proj")  # the user's files in the working folder
BAD = ["nan", "inf", "-inf", "-1", "0", "1e30", "99999999999999999999", "", "..", "~", ".", "/", "notes.txt", "mywork",
       "mywork/src/main.py", "x=1", "nope", "./nope"]
GOOD = {  # values that get past the parser, so that the draw reaches deeper
    "--out": ["out", "out.parquet", "r.parquet", "v", "ck", "run", "new/deeper/out", "proj", "proj/model.safetensors",
              "proj/groups.parquet", "ck/model.safetensors", "run/round-0001/verified", "run/round-0001/rollouts.parquet"],
    "--model": ["tiny-arith", "ck"], "--ref": ["tiny-arith", "ck"], "--objective": ["conspo", "grpo", "dapo", "disco", "rft"],
    "--option": ["tau=5", "tau=nan", "beta=0.1", "nope=1", "=", "margin=-1"], "--lr": ["1e-4", "1.0"],
    "--temperature": ["1", "0", "0.5"], "--top-p": ["0.9", "1"], "--top-k": ["1", "5"], "--seed": ["3", "9223372036854775808"],
    "--template": ["plain", "chat", "auto"], "--old-logprobs": ["rollout", "recompute"], "--precision": ["fp32", "bf16"],
    "--verifier": ["math", "exact", "math=0.5", "nosuch", "math=nan"], "--set": ["train.lr=1e-4", "train.options.tau=nan",
    "eval.every=0", "seed=-1", "nosuch.key=1", "template=plain", "generate.temperature=inf"],
    "--config": ["notes.txt", "mywork", "nope.toml"], "--shard": ["0/2", "2/2", "1/0", "a/b"], "--stop": ["}", ""],
    "--device": ["cpu", "cuda", "cuda:7"], "--log-to": ["none", "tensorboard", "csv"], "--tis-cap": ["2", "1"],
    "--lora-rank": ["4", "100000"], "--token-budget": ["16", "64"], "--name": ["mine", "../escape", "a/b", ".hidden"],
    "--prompt": ["arith-test-00000", "nope"], "--dpi": ["30", "50"], "--width": ["40", "80"], "--split": ["train", "nope"],
}
SOME = ["1", "2", "0.5", "auto", "true"]  # for a flag without values of its own above
POSITIONAL = {
    "generate": ["few.parquet", "arith_test", "latin1.jsonl", "dup-ids.jsonl", "r.parquet"],
    "eval": ["few.parquet", "arith_test", "nan-answer.jsonl", "v"],
    "verify": ["r.parquet", "v", "few.parquet", "run/round-0001/rollouts.parquet", "proj"],
    "train": ["v", "r.parquet", "run/round-0001/verified", "ck", "proj"],
    "inspect": ["r.parquet", "v", "ck", "run", "run/metrics.parquet", "few.parquet", "latin1.jsonl", "proj"],
    "plot": ["run", "run/metrics.parquet", "r.parquet", "v"],
    "data import": ["few.parquet", "latin1.jsonl", "dup-ids.jsonl", "nan-answer.jsonl", "x.jsonl"],
}


def _options(command: str, fuzzed: bool = True) -> list[tuple[str, bool]]:
    """(flag, takes no value) for each option of a command, as the typer app declares them (``fuzzed``: only
    those drawn at random)."""
    cmd = typer.main.get_command(app)
    for word in command.split():
        cmd = cmd.commands[word]
    flags = []
    for param in cmd.params:
        for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
            if opt.startswith("--") and not (fuzzed and opt in NOT_FUZZED):
                flags.append((opt, bool(getattr(param, "is_flag", False))))
    return flags


OPTIONS = {command: _options(command) for command in COMMANDS}
OVERWRITES = {command for command in COMMANDS if ("--overwrite", True) in _options(command, fuzzed=False)}


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(COMMANDS))
    argv = command.split()
    if command in POSITIONAL:
        argv.append(draw(st.sampled_from(POSITIONAL[command]) | st.sampled_from(BAD)))
    for flag, bare in draw(st.lists(st.sampled_from(OPTIONS[command]), max_size=4, unique=True)) if OPTIONS[command] else []:
        argv += [flag] if bare else [flag, draw(st.sampled_from(GOOD.get(flag, SOME)) | st.sampled_from(BAD))]
    if command in OVERWRITES and draw(st.booleans()):
        argv.append("--overwrite")
    return argv + CHEAP.get(command, [])


@pytest.fixture(scope="module")
def template(tmp_path_factory, inputs) -> Path:  # noqa: F811 (the imported fixture, by name)
    """A working folder: crl's outputs (rollouts, verified/, a checkpoint, a one-round run), prompt files, and a
    user's files; each example works in a fresh copy of it."""
    work = tmp_path_factory.mktemp("template") / "work"
    shutil.copytree(inputs, work, ignore=shutil.ignore_patterns("mixed", "*-logprobs*", "*-ids.parquet"))
    (work / "mywork" / "src").mkdir(parents=True)
    (work / "mywork" / "src" / "main.py").write_text("print('my code')\n")
    (work / "notes.txt").write_text("my notes\n")
    project = work / "proj"  # a user's project that holds the names of files crl writes
    (project / "round-0002").mkdir(parents=True)
    (project / "config.toml").write_text(dumps(resolve([])))
    for name in ("model.safetensors", "trainer_state.json", "optimizer.pt", "round.json", "round-0002/round.json", "README.md"):
        (project / name).write_text(f"the user's {name}\n")
    pl.DataFrame({"prompt_id": ["a"], "n": [1], "n_pos": [0], "n_neg": [1]}).write_parquet(project / "groups.parquet")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("PYTHONPATH", str(ROOT))
        assert crl_main("train", "v", "--out", "ck", "--lr", "1e-4") == 0
        assert crl_main("iterate", "--out", "run", *CHEAP["iterate"]) == 0
    return work


def outputs(argv: list[str], work: Path, home: Path) -> list[Path]:
    """What a successful command may write: its --out (or the command's default), and a library's caches."""
    given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--out", "-o")]
    command = " ".join(argv[:2]) if argv[0] == "data" else argv[0]
    default = {"generate": "rollouts.parquet", "verify": "verified", "train": "checkpoint", "eval": "eval.parquet",
               "iterate": "runs", "data import": str(home / ".cache" / "crl" / "data")}.get(command)
    if command == "plot":
        run = work / argv[1]
        default = str((run if run.is_dir() else run.parent) / "plots")
    out = given[-1] if given else default
    caches = [home / ".cache" / "matplotlib", home / ".config" / "matplotlib"]
    return [*([Path(os.path.normpath(work / Path(out).expanduser()))] if out is not None else []), *caches]


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


@settings(max_examples=int(os.environ.get("CRL_PROP_EXAMPLES", 60)), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=command_lines())
def test_any_command_line_is_clean(argv, template, cli):
    base = Path(tempfile.mkdtemp(prefix="crl-prop-"))
    work, home = base / "work", base / "home"
    shutil.copytree(template, work, symlinks=True)
    home.mkdir()
    (home / "sentinel.txt").write_text("the home folder\n")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HOME", str(home))
            mp.setenv("PYTHONPATH", str(ROOT))
            mp.setenv("HF_HUB_OFFLINE", "1")  # a name that is not a folder fails at once, without a network
            mp.delenv("CRL_DATA_DIR", raising=False)
            mp.chdir(work)
            allowed = outputs(argv, work, home)
            was = (output_kind(allowed[0]) if allowed[0].exists() else "absent") if argv[0] in KIND else None
            before = snapshot(base)
            code, _, err = cli(*argv)
            after = snapshot(base)
        mine = [p for p in before if any(Path(p) == work / u or work / u in Path(p).parents for u in USER)]
        assert all(after.get(p) == before[p] for p in mine), [p for p in mine if after.get(p) != before[p]]
        if code != 0:
            assert code in (1, 2), (code, err)
            assert_one_line(err, alone=False)
            assert not changed(before, after), changed(before, after)
        else:
            assert "Traceback" not in err, err
            inside = lambda p: any(Path(p) == a or a in Path(p).parents for a in allowed)
            made_for = lambda p: after.get(p) == "folder" and p not in before and any(Path(p) in a.parents for a in allowed)
            stray = [p for p in changed(before, after) if not inside(p) and not made_for(p)]  # new parent folders are fine
            assert not stray, stray
            written = any(Path(p) == allowed[0] or allowed[0] in Path(p).parents for p in changed(before, after))
            if argv[0] in KIND and written:  # what stood at --out was nothing, or crl's output of the kind written
                assert was in ("absent", KIND[argv[0]]), (was, argv)
    finally:
        shutil.rmtree(base, ignore_errors=True)
