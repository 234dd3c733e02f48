"""A wheel built from the repository carries the shipped model, prompt sets and presets: installed anywhere,
`crl iterate` runs from another directory without the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_runs_iterate_from_another_directory(tmp_path):
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, REPO], check=True, capture_output=True)
    (wheel,) = wheels.glob("crl-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", target, wheel], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import crl; print(crl.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target)), where  # the installed copy, not the source tree
    args = ["--rounds", "2", "--set", "prompts_per_round=4", "--set", "eval.limit=4", "--set", "eval.every=2"]
    result = subprocess.run([sys.executable, "-m", "crl", "iterate", "--out", "run", *args], cwd=elsewhere, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert pl.read_parquet(elsewhere / "run" / "metrics.parquet")["round"].to_list() == [0, 1, 2]
