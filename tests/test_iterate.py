"""crl iterate: the run folder, config resolution, the resident loop's resume after kills at any moment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from conftest import crl_main
from crl.config import load_toml, parse_set, resolve
from crl.data.models import known
from crl.errors import CrlError

SMALL = [
    "--rounds", "4", "--backend", "hf",
    "--set", "prompts_per_round=4", "--set", "eval.every=2", "--set", "generate.n=4", "--set", "save_every=2",
    "--set", "generate.max_new_tokens=20", "--set", "eval.n=2", "--set", "eval.limit=4",
    "--set", "eval.max_new_tokens=20", "--set", "verify.workers=1", "--set", "train.lr=1e-4",
]


def crl(*args: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "crl", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_when(process: subprocess.Popen, path: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert path.exists(), process.communicate()[0]
    process.send_signal(signal.SIGKILL)
    process.wait()


def learning(run: Path) -> pl.DataFrame:
    """What a run learned, round by round (timings left out)."""
    metrics = pl.read_parquet(run / "metrics.parquet")
    return metrics.select(c for c in metrics.columns if not c.startswith("seconds/"))


def test_killed_three_times_then_resumed_equals_an_uninterrupted_run(tmp_path):
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert crl_main("iterate", "--out", whole, *SMALL) == 0
    moments = [
        run / "round-0001" / "rollouts.parquet",  # mid-round, nothing saved yet: redo from the start
        run / "checkpoints" / "round-0002",  # right after the first save
        run / "round-0004" / "verified",  # mid-round after a resume from round 2's state
    ]
    kill_when(crl("iterate", "--out", run, *SMALL), moments[0])
    for moment in moments[1:]:
        kill_when(crl("iterate", "--out", run, "--resume"), moment)
    final = crl("iterate", "--out", run, "--resume")
    output, _ = final.communicate(timeout=300)
    assert final.returncode == 0, output

    assert not list(run.rglob(".crl-tmp-*")), "a temporary file was left behind"
    assert learning(run)["round"].to_list() == [0, 1, 2, 3, 4]
    assert learning(run).equals(learning(whole)), "the resumed run learned something else than the uninterrupted one"
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["round-0002", "round-0004"]
    resolved = load_toml(run / "config.toml")
    assert resolved["generate"]["n"] == 4 and resolved["rounds"] == 4


def test_second_run_into_same_folder_needs_resume(cli, tmp_path):
    from crl.io import RUN, mark

    (tmp_path / "run").mkdir()
    mark(tmp_path / "run", RUN)  # a run folder is one that crl marked as such
    (tmp_path / "run" / "config.toml").write_text("rounds = 1\n")
    code, _, err = cli("iterate", "--out", tmp_path / "run", "--rounds", "1")
    assert code == 2 and "--resume" in err
    assert (tmp_path / "run" / "config.toml").read_text() == "rounds = 1\n"


def test_print_config_resolves_file_then_flags_with_origins(cli, tmp_path):
    (tmp_path / "c.toml").write_text('rounds = 7\n[train]\nobjective = "grpo"\nlr = 0.5\n')
    code, out, _ = cli("iterate", "--config", tmp_path / "c.toml", "--set", "train.lr=0.25", "--objective", "rence", "--print-config")
    assert code == 0
    cfg = tomllib.loads(out)
    assert cfg["rounds"] == 7 and cfg["train"]["objective"] == "rence" and cfg["train"]["lr"] == 0.25
    lines = {line.split("=")[0].strip(): line for line in out.splitlines() if "=" in line and not line.startswith("#")}
    assert lines["rounds"].endswith(f"# --config {tmp_path / 'c.toml'}")
    assert lines["objective"].endswith("# flag") and lines["lr"].endswith("# --set")
    assert lines["max_new_tokens"].endswith("# preset tiny-arith")


def test_real_models_get_the_real_defaults_not_the_tiny_preset():
    tiny = resolve([]).config
    real = resolve([(parse_set(["model=Qwen/Qwen2.5-Math-1.5B"]), "--set")]).config
    assert (tiny.train.lr, tiny.generate.max_new_tokens, tiny.eval.temperature) == (3e-4, 16, 1.0)
    assert (real.train.lr, real.generate.max_new_tokens, real.eval.temperature) == (1e-6, 1024, 0.6)
    assert real.eval.tasks == ("math500",) and "boxed" in real.instruction


def test_a_checkpoint_of_the_tiny_model_keeps_its_preset(tmp_path):
    """The README's stage example `crl eval --model checkpoint` after `crl train --model tiny-arith` must not get
    the real models' 1,024-token limit, which the tiny model's 256 positions refuse."""
    from crl.default import SHIPPED_DIR

    for name, base in (("tiny-ckpt", str(SHIPPED_DIR / "tiny-arith")), ("other-ckpt", "Qwen/Qwen2.5-Math-1.5B")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainer_state.json").write_text(json.dumps({"step": 2, "round": 1, "base": base}))
    tiny = resolve([(parse_set([f"model={tmp_path / 'tiny-ckpt'}"]), "--set")])
    other = resolve([(parse_set([f"model={tmp_path / 'other-ckpt'}"]), "--set")]).config
    assert tiny.config.generate.max_new_tokens == 16 and tiny.origins["generate.max_new_tokens"] == "preset tiny-arith"
    assert other.generate.max_new_tokens == 1024


def test_every_recipe_is_a_valid_configuration():
    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))
    assert recipes
    for recipe in recipes:
        config = resolve([(load_toml(recipe), f"--config {recipe}")]).config  # a bad key or value raises
        assert known(config.model) is not None, f"{recipe.name}: {config.model} is not a model `crl model pull` knows"


def test_unknown_or_bad_settings_are_errors():
    with pytest.raises(CrlError, match="unknown setting 'trian'"):
        resolve([(parse_set(["trian.lr=1"]), "--set")])
    with pytest.raises(CrlError, match="rounds"):
        resolve([(parse_set(["rounds=many"]), "--set")])


def test_a_further_draw_sampled_in_pieces_keeps_the_groups_of_the_whole_draw(monkeypatch):
    """Each prompt's samples depend on its seed alone, so sampling a draw piecewise must keep the same groups."""
    import crl.stages.iterate as it

    def rollouts(chunk, *_):  # prompt i's group is mixed when i % 3 == 0; 4 samples each
        return pl.DataFrame({"prompt_id": [p for p in chunk["id"] for _ in range(4)],
                             "positive": [k == 0 and int(p) % 3 == 0 for p in chunk["id"] for k in range(4)]})

    monkeypatch.setattr(it, "rollout_rows", rollouts)
    monkeypatch.setattr(it, "score", lambda rows, _: rows)
    run = SimpleNamespace(seed=0, prompts_per_round=16, model=None, verify=None,
                          generate=SimpleNamespace(dynamic_sampling=True, max_attempts=8))
    gen, prompts = SimpleNamespace(backend=None, trainer=SimpleNamespace(tokenizer=None)), pl.DataFrame({"id": [str(i) for i in range(300)]})
    pieces = it.sample_round(run, gen, prompts, 1, {})
    monkeypatch.setattr(it, "next_draw", lambda short, mixed, drawn, left: left)
    whole = it.sample_round(run, gen, prompts, 1, {})
    kept = [s[1].filter("train")["prompt_id"].unique(maintain_order=True).to_list() for s in (pieces, whole)]
    assert kept[0] == kept[1] and len(kept[0]) == 16
    assert pieces[0]["prompt_id"].n_unique() < whole[0]["prompt_id"].n_unique()


def test_next_draw_asks_for_the_shortfall_over_the_mixed_share():
    from crl.stages.iterate import next_draw
    assert next_draw(short=16, mixed=48, drawn=64, left=64) == 27  # 16 / 0.75 = 21.3, a quarter more: 26.7, up
    assert next_draw(short=5, mixed=0, drawn=64, left=40) == 40  # no mixed group yet: the whole draw
    assert next_draw(short=60, mixed=4, drawn=64, left=50) == 50  # never more than the draw holds


def test_dynamic_sampling_trains_on_exactly_the_mixed_groups(tmp_path):
    run = tmp_path / "run"
    args = ["iterate", "--out", run, *SMALL, "--rounds", "1", "--set", "generate.dynamic_sampling=true",
            "--set", "generate.max_attempts=3", "--set", "prompts_per_round=6"]
    assert crl_main(*args) == 0
    summary = json.loads((run / "round-0001" / "round.json").read_text())
    groups = pl.read_parquet(run / "round-0001" / "verified" / "groups.parquet")
    mixed = int(((groups["n_pos"] > 0) & (groups["n_neg"] > 0)).sum())
    assert 1 <= summary["attempts"] <= 3
    assert groups.height == groups["prompt_id"].n_unique() <= 6 * summary["attempts"]  # no prompt twice
    assert mixed >= 6 or summary["attempts"] == 3  # stopped because enough groups were mixed, or at the cap
    log = pl.read_parquet(run / "round-0001" / "train_log.parquet")
    assert int(log["groups"].sum()) == min(mixed, 6)  # exactly the batch: mixed groups only, no more than asked
