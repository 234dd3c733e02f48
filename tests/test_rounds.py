"""The verified round's vocabulary (crl/data/rounds.py): one definition of a mixed group for polars and torch, groups
keyed by (round, prompt_id), the summary, a round's train statistics (counts summed, means averaged) and its row."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from crl.data.rounds import RoundSummary, TrainLog, groups, in_groups, mixed, mixed_groups, summary


def scored() -> pl.DataFrame:
    """Round 1: p0 mixed, p1 all right, p2 all wrong; round 2: p0 again, all wrong."""
    positive = [True, False, True, True, False, False, False, False]
    return pl.DataFrame({
        "round": [1, 1, 1, 1, 1, 1, 2, 2], "prompt_id": ["p0", "p0", "p1", "p1", "p2", "p2", "p0", "p0"],
        "positive": positive, "reward": [float(p) for p in positive], "completion_ids": [[1, 2]] * 7 + [[3]],
        "finish_reason": ["stop"] * 7 + ["length"], "status": ["ok"] * 6 + ["no_answer", "ok"],
    })


def test_a_mixed_group_is_one_definition_for_numbers_polars_and_torch():
    n_pos, n = [0, 1, 3, 2, 0], [3, 3, 3, 1, 0]
    want = [False, True, False, False, False]
    assert [mixed(a, b) for a, b in zip(n_pos, n)] == want
    assert mixed(pl.Series(n_pos), pl.Series(n)).to_list() == want
    assert mixed(torch.tensor(n_pos), torch.tensor(n)).tolist() == want


def test_groups_are_keyed_by_round_and_prompt():
    rows = scored()
    grouped = groups(rows)
    assert grouped.columns == ["prompt_id", "n", "n_pos", "n_neg", "pass_rate"]
    assert grouped.rows() == [("p0", 2, 1, 1, 0.5), ("p1", 2, 2, 0, 1.0), ("p2", 2, 0, 2, 0.0), ("p0", 2, 0, 2, 0.0)]
    assert mixed_groups(rows).rows() == [(1, "p0")]
    assert rows.filter(in_groups(rows, mixed_groups(rows)))["round"].to_list() == [1, 1]


def test_summary_counts_the_kinds_of_group_and_the_statuses():
    rows = scored()
    out = summary(rows, groups(rows))
    assert (out["groups"], out["mixed"], out["all_positive"], out["all_negative"]) == (4, 1, 1, 2)
    assert out["pass_rate"] == 3 / 8 and out["truncated"] == 1 / 8 and out["mean_completion_tokens"] == 15 / 8
    assert (out["status_ok"], out["status_no_answer"], out["status_error"]) == (7, 1, 0)


def test_a_round_sums_its_counts_over_one_epoch_and_averages_the_rest():
    """groups_dropped used to be the mean over a round's steps (0.5 for 2 groups left out before 2 steps)."""
    steps = pl.DataFrame({
        "step": [1, 2, 3, 4], "round": [1] * 4, "epoch": [0, 0, 1, 1], "loss": [1.0, 3.0, math.nan, 4.0],
        "groups": [2, 2, 2, 2], "groups_dropped": [2.0, 1.0, 0.0, 1.0], "seconds": [0.1, 0.2, 0.3, 0.4],
    })
    out = TrainLog(steps, frozenset({"groups_dropped"})).summary()
    assert out == {"loss": pytest.approx(8 / 3), "groups": 2.0, "groups_dropped": 3.0}


def test_a_round_row_names_each_metric_by_its_section():
    row = RoundSummary(3, rollouts={"pass_rate": 0.5}, attempts=2, train={"loss": 0.1}, evals={"arith_test": {"avg@4": 0.4}},
                       seconds={"train": 1.5}).row()
    assert row == {"round": 3, "rollouts/pass_rate": 0.5, "attempts": 2, "train/loss": 0.1, "arith_test/avg@4": 0.4,
                   "seconds/train": 1.5}
    assert list(RoundSummary(0, seconds={"round": 0.0}).row()) == ["round", "seconds/round"]
