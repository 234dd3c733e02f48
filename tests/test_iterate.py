"""crl iterate: the run folder, config resolution, and resuming after a kill in the middle of a round."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from crl.errors import CrlError
from crl import config as config_mod

SMALL = [
    "--rounds", "2", "--backend", "hf",
    "--set", "prompts_per_round=4", "--set", "eval_every=1", "--set", "generate.n=4",
    "--set", "generate.max_new_tokens=20", "--set", "eval.k=2", "--set", "eval.limit=4",
    "--set", "eval.max_new_tokens=20", "--set", "verify.workers=1", "--set", "train.lr=1e-4",
]


def crl(*args: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "crl", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_mid_round_then_resume(tmp_path):
    run = tmp_path / "run"
    first = crl("iterate", "--out", run, *SMALL)
    target = run / "round-0001" / "rollouts.parquet"
    deadline = time.time() + 240
    while not target.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert target.exists(), first.communicate()[0]
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (run / "round-0001" / "round.json").exists(), "killed too late to test a mid-round crash"
    stamp = target.stat().st_mtime_ns

    second = crl("iterate", "--out", run, "--resume")
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output

    assert target.stat().st_mtime_ns == stamp, "round 1's rollouts were generated twice"
    assert not list(run.rglob(".tmp-*")), "a temporary file was left behind"
    for r in range(3):
        assert (run / f"round-{r:04d}" / "round.json").is_file()
    metrics = pl.read_parquet(run / "metrics.parquet")
    assert metrics["round"].to_list() == [0, 1, 2]
    assert metrics["arith_test/avg@2"].null_count() == 0
    resolved = config_mod.load_toml(run / "config.toml")
    assert resolved["generate"]["n"] == 4 and resolved["rounds"] == 2


def test_second_run_into_same_folder_needs_resume(cli, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.toml").write_text("rounds = 1\n")
    code, _, err = cli("iterate", "--out", tmp_path / "run", "--rounds", "1")
    assert code == 2 and "--resume" in err


def test_print_config_resolves_file_then_flags(cli, tmp_path):
    (tmp_path / "c.toml").write_text('rounds = 7\n[train]\nobjective = "grpo"\nlr = 0.5\n')
    code, out, _ = cli("iterate", "--config", tmp_path / "c.toml", "--set", "train.lr=0.25", "--objective", "rence", "--print-config")
    assert code == 0
    import tomllib

    cfg = tomllib.loads(out)
    assert cfg["rounds"] == 7 and cfg["train"]["objective"] == "rence" and cfg["train"]["lr"] == 0.25


def test_unknown_setting_is_an_error():
    with pytest.raises(CrlError, match="unknown setting 'trian'"):
        config_mod.resolve(config_mod.DEFAULTS, None, config_mod.parse_set(["trian.lr=1"]))
    with pytest.raises(CrlError, match="rounds"):
        config_mod.resolve(config_mod.DEFAULTS, None, config_mod.parse_set(["rounds=many"]))


def test_dynamic_sampling_draws_more_prompts_until_groups_are_mixed(tmp_path):
    from conftest import crl_main

    run = tmp_path / "run"
    args = ["iterate", "--out", run, *SMALL, "--rounds", "1", "--set", "generate.dynamic_sampling=true",
            "--set", "generate.max_attempts=3", "--set", "prompts_per_round=6"]
    assert crl_main(*args) == 0
    summary = json.loads((run / "round-0001" / "round.json").read_text())
    groups = pl.read_parquet(run / "round-0001" / "verified" / "groups.parquet")
    mixed = int(((groups["n_pos"] > 0) & (groups["n_neg"] > 0)).sum())
    assert 1 <= summary["attempts"] <= 3
    assert groups.height == 6 * summary["attempts"]  # each attempt adds a fresh slice of prompts
    assert mixed >= 6 or summary["attempts"] == 3  # stopped because enough groups were mixed, or at the cap
