"""crl plot: the PNGs of a run's metrics over rounds, opened again and checked for size and content."""

from __future__ import annotations

import re
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from crl.errors import CrlError
from crl.io import write_parquet
from crl.views.plot import eval_tasks, plot_run, series, train_columns


def synthetic_run(run: Path, rounds: int = 6) -> Path:
    """A metrics.parquet shaped like iterate's: eval columns on rounds 0, 2, 4 and the last, null elsewhere."""
    rows = []
    for r in range(rounds + 1):
        row = {"round": r}
        if r > 0:
            row.update({
                "rollouts/completions": 32, "rollouts/pass_rate": 0.3 + 0.05 * r, "rollouts/groups": 8,
                "rollouts/mixed": min(8, 2 + r), "rollouts/all_positive": r // 3, "rollouts/all_negative": max(0, 6 - r - r // 3),
                "rollouts/mean_completion_tokens": 20.0 - r, "train/loss": 1.0 / r, "train/grad_norm": 2.0 - 0.1 * r,
                "train/lr": 2e-4, "train/pos_logprob": -3.0 + 0.2 * r, "seconds/train": 1.5,
            })
        evaluated = r % 2 == 0 or r == rounds
        for task, base in (("arith_test", 0.2), ("math500", 0.05)):
            for metric, bump in (("avg@4", 0.0), ("pass@4", 0.2), ("maj@4", 0.1)):
                row[f"{task}/{metric}"] = base + bump + 0.04 * r if evaluated else None
            row[f"{task}/mean_tokens"] = 22.0 - r if evaluated else None
        rows.append(row)
    write_parquet(pl.from_dicts(rows, infer_schema_length=None), run / "metrics.parquet")
    return run


def image_stats(path: Path) -> tuple[int, int, float]:
    from PIL import Image

    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
        return img.width, img.height, float(pixels.std())


def test_series_and_columns(tmp_path):
    run = synthetic_run(tmp_path / "run")
    table = pl.read_parquet(run / "metrics.parquet")
    assert eval_tasks(table) == ["arith_test", "math500"]
    x, y = series(table, "arith_test/avg@4")
    assert x == [0, 2, 4, 6] and math.isclose(y[-1], 0.2 + 0.24)
    assert series(table, "no/such") == ([], [])
    cols = train_columns(table)
    assert "train/loss" in cols and "train/pos_logprob" in cols and "train/lr" not in cols  # constants left out


def test_plot_writes_nonblank_pngs(tmp_path, cli):
    run = synthetic_run(tmp_path / "run")
    code, _, err = cli("plot", run)
    assert code == 0, err
    overview, train = run / "plots" / "metrics.png", run / "plots" / "train.png"
    w, h, std = image_stats(overview)
    assert (w, h) == (1430, 770) and std > 10, (w, h, std)  # 13x7 inches at 110 dpi, not a blank canvas
    w, h, std = image_stats(train)
    assert w > 600 and h > 300 and std > 10
    assert not list((run / "plots").glob(".tmp-*"))


def test_plot_a_blank_figure_would_fail_the_check(tmp_path):
    """The non-blank check can fail: an empty white canvas has no pixel variance."""
    from PIL import Image

    Image.new("RGB", (200, 100), "white").save(tmp_path / "blank.png")
    assert image_stats(tmp_path / "blank.png")[2] == 0.0


def test_plot_options_and_errors(tmp_path, cli):
    run = synthetic_run(tmp_path / "run", rounds=1)
    paths = plot_run(run / "metrics.parquet", tmp_path / "figs", dpi=50)
    assert [p.name for p in paths] == ["metrics.png", "train.png"]
    assert image_stats(paths[0])[:2] == (650, 350)
    with pytest.raises(CrlError, match="no metrics.parquet"):
        plot_run(tmp_path / "nowhere")
    code, _, err = cli("plot", tmp_path / "nowhere")
    assert code == 2 and err.startswith("crl: error:") and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ a real run of the tiny default

SMALL = [
    "--rounds", "1", "--backend", "hf", "--set", "prompts_per_round=3", "--set", "eval.every=1",
    "--set", "generate.n=4", "--set", "generate.max_new_tokens=12", "--set", "eval.n=2", "--set", "eval.limit=2",
    "--set", "eval.max_new_tokens=12", "--set", "verify.workers=1",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One small round of `crl iterate` on the shipped tiny model (about 30 s on two CPU cores)."""
    import os

    from conftest import crl_main
    from crl.default import SHIPPED_DIR

    data = Path(os.environ.get("CRL_TEST_DEFAULT_DIR", SHIPPED_DIR))  # lets a rebuilt default stand in
    if not (data / "tiny-arith").is_dir():
        pytest.skip("the shipped tiny model is missing: run `crl build-default`")
    run = tmp_path_factory.mktemp("tiny") / "run"
    from crl.config.resolve import PRESETS

    args = ["--config", PRESETS / "tiny-arith.toml",  # the preset, also for a rebuilt model elsewhere
            "--model", data / "tiny-arith", "--prompts", data / "arith_train.parquet", "--eval-task", data / "arith_test.parquet"]
    assert crl_main("iterate", "--out", run, *args, *SMALL) == 0
    return run


@pytest.mark.slow
def test_inspect_and_plot_a_real_run(tiny_run, cli):
    from crl.views.inspect import detect

    r1 = tiny_run / "round-0001"
    expected = {
        tiny_run: "metrics", r1 / "rollouts.parquet": "rollouts", r1 / "verified": "verified", r1: "verified",
        r1 / "train_log.parquet": "train_log", r1 / "eval.parquet": "eval",
    }
    for path, kind in expected.items():
        assert detect(path)[0] == kind, path
        code, out, err = cli("inspect", path, "--width", "160")
        assert code == 0 and f"{kind}: " in out, (path, err)
    code, out, _ = cli("inspect", r1 / "verified", "--width", "160")
    sampled = pl.read_parquet(r1 / "rollouts.parquet").height  # dapo's dynamic sampling draws past 3 x 4
    assert re.search(rf"completions\W+{sampled}\b", out) and "statuses" in out and "prompt " in out
    code, out, _ = cli("inspect", tiny_run, "--width", "160")
    assert "arith_test/avg@2" in out and "rollouts/pass_rate" in out and "train/" in out
    code, _, err = cli("plot", tiny_run)
    assert code == 0, err
    w, h, std = image_stats(tiny_run / "plots" / "metrics.png")
    assert (w, h) == (1430, 770) and std > 10
