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
    import crl.stages.sampling as sampling

    def rollouts(chunk, *_):  # prompt i's group is mixed when i % 3 == 0; 4 samples each
        return pl.DataFrame({"prompt_id": [p for p in chunk["id"] for _ in range(4)], "round": 1,
                             "positive": [k == 0 and int(p) % 3 == 0 for p in chunk["id"] for k in range(4)]})

    monkeypatch.setattr(sampling, "rollout_rows", rollouts)
    monkeypatch.setattr(sampling, "score", lambda rows, _: rows)
    run = SimpleNamespace(seed=0, prompts_per_round=16, model=None, verify=None,
                          generate=SimpleNamespace(dynamic_sampling=True, max_attempts=8))
    gen, prompts = SimpleNamespace(backend=None, trainer=SimpleNamespace(tokenizer=None)), pl.DataFrame({"id": [str(i) for i in range(300)]})
    pieces = sampling.sample_round(run, gen, prompts, 1)
    monkeypatch.setattr(sampling, "next_draw", lambda short, mixed, drawn, left: left)
    whole = sampling.sample_round(run, gen, prompts, 1)
    kept = [s.train["prompt_id"].unique(maintain_order=True).to_list() for s in (pieces, whole)]
    assert kept[0] == kept[1] and len(kept[0]) == 16
    assert pieces.rollouts["prompt_id"].n_unique() < whole.rollouts["prompt_id"].n_unique()
    for s in (pieces, whole):  # every group drawn is trained on or counted as left out
        assert s.left_out == s.scored["prompt_id"].n_unique() - 16


def test_next_draw_asks_for_the_shortfall_over_the_mixed_share():
    from crl.stages.sampling import next_draw
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
    # every group the sampler left out is counted as dropped, once for the round (summed over its steps)
    assert summary["train/groups_dropped"] == log["groups_dropped"].sum() == groups.height - min(mixed, 6)


def test_replay_trains_each_round_on_the_mixed_groups_of_the_rounds_before(tmp_path):
    """train.replay = 3: round r trains on its own groups and the mixed groups of rounds r-2 and r-1, read back
    from their verified/ folders as groups of their own round; a clipped objective weights them by truncated
    importance ratios."""
    run = tmp_path / "run"
    assert crl_main("iterate", "--out", run, *SMALL, "--rounds", "3", "--objective", "grpo", "--set", "train.replay=3") == 0
    mixed = []
    for r in (1, 2, 3):
        groups = pl.read_parquet(run / f"round-{r:04d}" / "verified" / "groups.parquet")
        mixed.append(int(((groups["n_pos"] > 0) & (groups["n_neg"] > 0)).sum()))
        summary = json.loads((run / f"round-{r:04d}" / "round.json").read_text())
        log = pl.read_parquet(run / f"round-{r:04d}" / "train_log.parquet")
        replayed = sum(mixed[max(0, r - 3):r - 1])
        assert summary["train/groups_replayed"] == replayed
        assert int(log["groups"].sum()) == groups.height + replayed  # grpo keeps its own flat groups, not older ones
        assert "tis_weight" in log.columns and log["tis_weight"].drop_nans().drop_nulls().max() <= 2.0
    assert sum(mixed[:2]) > 0, "no round had a mixed group: the test checked nothing replayed"


def test_train_over_several_rounds_keeps_each_round_s_groups_apart(tmp_path, cli):
    """crl train on two rounds' verified/ folders: one training set of every round's groups (tests/test_rounds.py
    checks that a prompt drawn in two rounds makes two groups); a folder given twice is refused in one line."""
    run = tmp_path / "run"
    assert crl_main("iterate", "--out", run, *SMALL, "--rounds", "2", "--set", "prompts_per_round=8") == 0
    folders = [run / f"round-{r:04d}" / "verified" for r in (1, 2)]
    code, _, err = cli("train", *folders, "--model", run / "checkpoints" / "round-0002", "--objective", "rence",
                       "--epochs", "2", "--out", tmp_path / "offline")
    assert code == 0, err
    log = pl.read_parquet(tmp_path / "offline" / "train_log.parquet")
    groups = pl.concat([pl.read_parquet(f / "groups.parquet") for f in folders])
    mixed = int(((groups["n_pos"] > 0) & (groups["n_neg"] > 0)).sum())
    first = log.filter(pl.col("epoch") == 0)
    assert int(first["groups"].sum()) == mixed and int(first["groups_dropped"].sum()) == groups.height - mixed  # rence: mixed only
    code, _, err = cli("train", folders[0], folders[0], "--model", "tiny-arith", "--out", tmp_path / "twice")
    assert code == 2 and "in two of the folders given" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "twice").exists()


def test_the_offline_recipe_runs_its_three_steps(tmp_path):
    """recipes/offline-smollm2.sh on the tiny model: the online warm-up, crl train over every stored round, the
    held-out evaluation of the result."""
    config = tmp_path / "tiny.toml"
    config.write_text('model = "tiny-arith"\nprompts_per_round = 4\n[generate]\nn = 4\nmax_new_tokens = 20\n'
                      '[verify]\nworkers = 1\n[eval]\nn = 2\nlimit = 4\nmax_new_tokens = 20\n[backend]\nname = "hf"\n')
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "offline-smollm2.sh"
    env = {**os.environ, "CONFIG": str(config), "TASK": "arith_test", "ROUNDS": "2", "EPOCHS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(recipe), str(tmp_path / "run")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    log = pl.read_parquet(tmp_path / "run" / "offline" / "train_log.parquet")
    assert log["epoch"].max() == 0 and log.height == 4  # one epoch of 2 x ROUNDS steps
    evaluated = pl.read_parquet(tmp_path / "run" / "offline-eval.parquet")
    assert evaluated.height == 4 * 2 and set(evaluated["task"]) == {"arith_test"}
