"""`crl verify` on completions made by any tool: a table of prompt_id, completion and answer (Parquet or JSONL).

The verified output keeps that table's columns and adds the verdicts, inventing none of the columns only crl's
generator writes; `crl train` refuses such a folder with one line naming what it lacks, and writes nothing.
"""

from __future__ import annotations

import polars as pl
import pytest

from crl.config import Verify
from crl.data.schemas import read_completions
from crl.errors import CrlError
from crl.stages.eval import metrics
from crl.stages.verify import score, verify

ROWS = {
    "prompt_id": ["q1", "q1", "q2", "q2"],
    "completion": ["80 + 5 = 85", "\\boxed{80+5}", "So the answer is $\\boxed{3}$.", "I think it is 4."],
    "answer": ["85", "85", "3", "3"],
    "judge": ["peer-a", "peer-a", "peer-b", "peer-b"],
}


def _verified(folder) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(folder / "positive.parquet"), pl.read_parquet(folder / "negative.parquet")])


def test_a_plain_parquet_table_is_verified_without_invented_columns(tmp_path):
    pl.DataFrame(ROWS).write_parquet(tmp_path / "mine.parquet")
    stats = verify(tmp_path / "mine.parquet", tmp_path / "v", Verify(workers=1))
    rows = _verified(tmp_path / "v")
    assert set(rows.columns) == {*ROWS, "reward", "pred", "status"}
    positive = pl.read_parquet(tmp_path / "v" / "positive.parquet")
    assert sorted(positive["completion"].to_list()) == ["80 + 5 = 85", "So the answer is $\\boxed{3}$."]
    assert stats["completions"] == 4 and stats["mixed"] == 2 and "truncated" not in stats


def test_a_jsonl_table_with_integer_ids_reads(tmp_path):
    path = tmp_path / "dump.jsonl"
    pl.DataFrame({"prompt_id": [7, 7], "completion": ["A: 18", "A: 19"], "answer": ["18", "18"]}).write_ndjson(path)
    rows, meta = read_completions(path)
    assert meta is None and rows["prompt_id"].to_list() == ["7", "7"]
    verify(path, tmp_path / "v", Verify(workers=1))
    assert pl.read_parquet(tmp_path / "v" / "positive.parquet")["completion"].to_list() == ["A: 18"]


@pytest.mark.parametrize("drop,named", [("answer", "answer"), ("completion", "completion")])
def test_a_table_without_a_needed_column_is_refused_by_name(tmp_path, drop, named):
    pl.DataFrame(ROWS).drop(drop).write_parquet(tmp_path / "mine.parquet")
    with pytest.raises(CrlError, match=f"missing column.*{named}"):
        verify(tmp_path / "mine.parquet", tmp_path / "v", Verify(workers=1))
    assert not (tmp_path / "v").exists()


def test_train_refuses_a_folder_verified_from_a_plain_table_in_one_line(tmp_path, cli):
    pl.DataFrame(ROWS).write_parquet(tmp_path / "mine.parquet")
    code, _, _ = cli("verify", tmp_path / "mine.parquet", "--out", tmp_path / "v", "--workers", "1")
    assert code == 0
    code, _, err = cli("train", tmp_path / "v", "--model", "tiny-arith", "--out", tmp_path / "ckpt")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "completion_ids" in err and "logprobs" in err and "crl generate" in err
    assert not (tmp_path / "ckpt").exists()


def test_eval_metrics_score_a_foreign_table():
    scored = score(pl.DataFrame(ROWS), Verify(workers=1), show_progress=False).with_columns(task=pl.lit("peer"))
    table = metrics(scored, 2)
    row = table.row(0, named=True)
    assert row["avg@2"] == 0.5 and row["pass@2"] == 1.0 and row["mean_tokens"] is None and row["truncated"] is None
