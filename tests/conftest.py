"""Shared fixtures: the shipped tiny model, a few arithmetic prompts, the benchmark data beside the repo,
and a way to run the command line in-process and see its exit status and error line."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest

from crl.default import DEFAULT_MODEL, TEST_PROMPTS

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model() -> str:
    assert DEFAULT_MODEL.is_dir(), "the shipped model is missing: run `crl build-default`"
    return str(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def few_prompts(tmp_path_factory) -> Path:
    """Six held-out arithmetic problems as a prompt set."""
    path = tmp_path_factory.mktemp("prompts") / "few.parquet"
    pl.read_parquet(TEST_PROMPTS).head(6).write_parquet(path)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside the repository")
    return SHARED_DATA


def crl_main(*args: object) -> int:
    """Run ``crl ARGS...`` in-process and return its exit status."""
    from crl.cli import main

    argv = sys.argv
    sys.argv = ["crl", *map(str, args)]
    try:
        main()
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv


@pytest.fixture
def cli(capsys):
    """Run ``crl ARGS...`` in-process; returns (exit status, stdout, stderr)."""

    def run(*args: object) -> tuple[int, str, str]:
        code = crl_main(*args)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


TRAIN_CPU = ("--device", "cpu", "--lr", "1e-3", "--token-budget", "256")  # small, quick updates that move the weights


@pytest.fixture(scope="module")
def verified_setup(tmp_path_factory):
    """(folder, model, verified/): random rollouts of 4 groups written as `crl verify` writes them."""
    from test_distributed import make_model, make_verified

    tmp = tmp_path_factory.mktemp("verified")
    model = make_model(tmp / "model")
    (tmp / "verified").mkdir()
    return tmp, model, make_verified(tmp / "verified", model, groups=4)
