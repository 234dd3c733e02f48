"""crl inspect: kind detection and the summary of each crl output, on small synthetic files and on a real
round of the tiny default (rollouts, verified/, checkpoint, eval, metrics written by `crl iterate`)."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from crl.errors import CrlError
from crl.io import write_parquet
from crl.views.inspect import detect
from crl.views.tables import pick_prompt
from crl.data.schemas import ROLLOUT_SCHEMA, VERDICT_SCHEMA

WIDE = ("--width", "160")


def make_outputs(folder: Path) -> Path:
    """A round-like folder: rollouts.parquet, verified/, checkpoint/train_log.parquet, eval.parquet, metrics.

    Prompt p0 is all correct, p1 mixed (samples 0 and 2 correct), p2 all wrong; sample 3 is cut at the limit.
    """
    rows, verdicts = [], []
    for p in range(3):
        for s in range(4):
            correct = p == 0 or (p == 1 and s % 2 == 0)
            answer = str(p + 10)
            pred = answer if correct else "99"
            rows.append(dict(
                prompt_id=f"p{p}", sample=s, prompt=f"What is {p}+10?", completion=f"{p}+10 = \\boxed{{{pred}}} #{p}-{s}",
                answer=answer, source="synthetic", prompt_ids=[1, 2, 3], completion_ids=list(range(5 + s)),
                logprobs=[-0.1] * (5 + s), finish_reason="length" if s == 3 else "stop", model="tiny", round=1,
                temperature=1.0, seed=0,
            ))
            verdicts.append(dict(reward=1.0 if correct else 0.0, pred=pred, status="ok" if s < 3 else "no_answer"))
    rollouts = pl.DataFrame(rows, schema=ROLLOUT_SCHEMA)
    scored = pl.concat([rollouts, pl.DataFrame(verdicts, schema=VERDICT_SCHEMA)], how="horizontal")
    scored = scored.with_columns(positive=pl.col("reward") > 0)
    meta = {"sampling": {"n": 4}, "tokenizer": "0123456789abcdef"}
    write_parquet(rollouts, folder / "rollouts.parquet", meta)
    from crl.stages.verify import write_verified

    write_verified(scored, folder / "verified", {**meta, "verifier": {"math": 1.0}})
    write_parquet(scored.with_columns(task=pl.lit("arith_test")), folder / "eval.parquet")
    log = pl.DataFrame({"step": [1, 2, 3], "epoch": [0, 0, 0], "loss": [0.9, 0.7, 0.5], "grad_norm": [1.5, 1.2, 1.1]})
    write_parquet(log, folder / "checkpoint" / "train_log.parquet")
    metrics = pl.DataFrame({
        "round": [0, 1, 2], "rollouts/pass_rate": [None, 0.4, 0.6], "train/loss": [None, 0.8, 0.6],
        "arith_test/avg@4": [0.25, None, 0.5], "seconds/generate": [None, 2.0, 2.5],
    })
    write_parquet(metrics, folder / "metrics.parquet")
    return folder


@pytest.fixture
def outputs(tmp_path) -> Path:
    return make_outputs(tmp_path / "round")


def test_detect_kinds(outputs):
    assert detect(outputs / "rollouts.parquet") == ("rollouts", outputs / "rollouts.parquet")
    assert detect(outputs / "verified") == ("verified", outputs / "verified")
    assert detect(outputs / "verified" / "groups.parquet")[0] == "verified"
    assert detect(outputs / "checkpoint") == ("train_log", outputs / "checkpoint" / "train_log.parquet")
    assert detect(outputs / "eval.parquet")[0] == "eval"
    assert detect(outputs)[0] == "metrics"  # a run folder: metrics.parquet wins
    assert detect(outputs / "metrics.parquet")[0] == "metrics"
    shards = outputs / "shards"
    shards.mkdir()
    rollouts = pl.read_parquet(outputs / "rollouts.parquet")
    write_parquet(rollouts.head(6), shards / "rollouts-00000-of-00002.parquet")
    write_parquet(rollouts.tail(6), shards / "rollouts-00001-of-00002.parquet")
    assert detect(shards) == ("rollouts", shards)


def test_unknown_file_is_one_line_error(tmp_path, cli):
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    pl.DataFrame({"a": [1]}).write_parquet(tmp_path / "other.parquet")
    (tmp_path / "notes.txt").write_text("hi")
    for path in ("x.parquet", "other.parquet", "notes.txt", "missing.parquet"):
        with pytest.raises(CrlError):
            detect(tmp_path / path)
        code, out, err = cli("inspect", tmp_path / path)
        assert code == 2 and err.startswith("crl: error:") and len(err.strip().splitlines()) == 1, err


def test_default_prompt_is_a_mixed_group(outputs):
    from crl.data.schemas import read_verified

    rows, _, _ = read_verified(outputs / "verified")
    assert pick_prompt(rows, None) == "p1"
    assert pick_prompt(rows, "p2") == "p2"
    with pytest.raises(CrlError, match="--prompt nope"):
        pick_prompt(rows, "nope")


def test_inspect_verified_side_by_side(outputs, cli):
    code, out, err = cli("inspect", outputs / "verified", *WIDE)
    assert code == 0, err
    assert re.search(r"pass_rate\W+0\.5\b", out)  # 6 of 12 correct
    assert re.search(r"mixed\W+1\b", out) and "no_answer" in out and "length" in out
    assert "positive (2)" in out and "negative (2)" in out  # p1 by default
    assert "#1-0" in out and "#1-1" in out and "#0-" not in out
    code, out, _ = cli("inspect", outputs / "verified", "--prompt", "p0", "--n", "1", *WIDE)
    assert code == 0 and "positive (4)" in out and "#0-0" in out and "#0-1" not in out and "(none)" in out


def test_inspect_rollouts_eval_train_log_metrics(outputs, cli):
    code, out, _ = cli("inspect", outputs / "rollouts.parquet", *WIDE)
    assert code == 0 and re.search(r"completions\W+12\b", out) and "p50" in out and "finish reasons" in out
    code, out, _ = cli("inspect", outputs / "eval.parquet", *WIDE)
    assert code == 0 and "arith_test" in out and "per task" in out and "positive (2)" in out
    code, out, _ = cli("inspect", outputs / "checkpoint", *WIDE)
    assert code == 0 and re.search(r"steps\W+3\b", out)
    # per step: column, n, first, last, min, max, mean
    assert re.search(r"loss\W+3\W+0\.9\W+0\.5\W+0\.5\W+0\.9\W+0\.7\b", out)
    assert re.search(r"grad_norm\W+3\W+1\.5\W+1\.1\W+1\.1\W+1\.5\W+1\.267\b", out)
    code, out, _ = cli("inspect", outputs, *WIDE)
    assert code == 0 and "rounds" in out and "arith_test/avg@4" in out and "rollouts/pass_rate" in out


def test_inspect_prompt_set(shared_data, cli):
    code, out, _ = cli("inspect", shared_data / "gsm8k_test.jsonl", *WIDE)
    assert code == 0 and "1319" in out and "gold '18'" in out
