"""The stages end to end on the tiny model, the file contracts, and one-line errors on bad input."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from crl.io import read_metadata, write_parquet
from conftest import crl_main
from crl.data.schemas import read_rollouts, read_verified

GEN = ("--n", "4", "--max-new-tokens", "24", "--backend", "hf")

# The file contracts as the README documents them, written out here rather than taken from the code.
ROLLOUTS_CONTRACT = pl.Schema({
    "prompt_id": pl.String, "sample": pl.Int32, "prompt": pl.String, "completion": pl.String, "answer": pl.String,
    "source": pl.String, "prompt_ids": pl.List(pl.Int32), "completion_ids": pl.List(pl.Int32),
    "logprobs": pl.List(pl.Float32), "finish_reason": pl.String, "model": pl.String, "round": pl.Int32,
    "temperature": pl.Float32, "seed": pl.Int64,
})
VERDICT_CONTRACT = {"reward": pl.Float32, "pred": pl.String, "status": pl.String}
GROUPS_CONTRACT = pl.Schema({"prompt_id": pl.String, "n": pl.Int32, "n_pos": pl.Int32, "n_neg": pl.Int32, "pass_rate": pl.Float32})


@pytest.fixture(scope="module")
def stages(tmp_path_factory, tiny_model, few_prompts):
    """generate -> verify -> train -> eval once, for the tests below to inspect."""
    tmp = tmp_path_factory.mktemp("stages")

    def run(*args):
        assert crl_main(*args) == 0, args

    run("generate", few_prompts, "--model", tiny_model, "--out", tmp / "rollouts.parquet", *GEN)
    run("verify", tmp / "rollouts.parquet", "--out", tmp / "verified", "--workers", "1")
    run("train", tmp / "verified", "--model", tiny_model, "--out", tmp / "ckpt", "--objective", "conspo", "--lr", "1e-4")
    run("eval", few_prompts, "--model", tmp / "ckpt", "--out", tmp / "eval.parquet", "--k", "2", "--max-new-tokens", "24", "--backend", "hf")
    return tmp


def test_rollouts_schema_and_metadata(stages, tiny_model):
    df, meta = read_rollouts(stages / "rollouts.parquet")
    assert pl.read_parquet(stages / "rollouts.parquet").schema == ROLLOUTS_CONTRACT
    assert df.height == 6 * 4 and sorted(set(df["sample"])) == [0, 1, 2, 3]
    assert meta.sampling.n == 4 and meta.sampling.max_new_tokens == 24 and meta.tokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model)
    for row in df.head(8).iter_rows(named=True):
        assert len(row["logprobs"]) == len(row["completion_ids"])
        assert all(lp <= 0 for lp in row["logprobs"])
        assert tok.decode(row["completion_ids"], skip_special_tokens=True) == row["completion"]
        assert tok.decode(row["prompt_ids"]) == row["prompt"]
        assert row["finish_reason"] in ("stop", "length")
        if row["finish_reason"] == "stop":
            assert row["completion_ids"][-1] == tok.eos_token_id


def test_verified_round_trip(stages):
    rows, groups, _ = read_verified(stages / "verified")
    assert pl.read_parquet(stages / "verified" / "positive.parquet").schema == pl.Schema({**ROLLOUTS_CONTRACT, **VERDICT_CONTRACT})
    assert pl.read_parquet(stages / "verified" / "groups.parquet").schema == GROUPS_CONTRACT
    assert rows.height == 24 and groups.height == 6
    assert (groups["n_pos"] + groups["n_neg"] == groups["n"]).all()
    pos = pl.read_parquet(stages / "verified" / "positive.parquet")
    assert (pos["reward"] > 0).all()


def test_checkpoint_loads_and_continues(stages):
    ckpt = stages / "ckpt"
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    assert model.config.model_type in ("qwen2", "llama")
    assert (ckpt / "optimizer.pt").is_file()
    log = pl.read_parquet(ckpt / "train_log.parquet")
    for col in ("step", "loss", "grad_norm", "lr", "tokens", "groups", "groups_dropped", "score_gap"):
        assert col in log.columns
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == log["step"].max()


def test_eval_metrics(stages):
    samples = pl.read_parquet(stages / "eval.parquet")
    assert samples.height == 12
    (row,) = read_metadata(stages / "eval.parquet")["metrics"]
    assert row["problems"] == 6 and 0 <= row["avg@2"] <= row["pass@2"] <= 1


def test_verify_labels_known_completions(tmp_path, stages):
    df, meta = read_rollouts(stages / "rollouts.parquet")
    known = df.head(4).with_columns(
        completion=pl.Series(["so \\boxed{12}", "it is \\boxed{13}", "no answer here", "\\boxed{-4}"]),
        answer=pl.Series(["12", "12", "12", "-4"]),
    )
    write_parquet(known, tmp_path / "r.parquet", meta.to_dict())
    from crl.config import Verify
    from crl.stages.verify import verify

    stats = verify(tmp_path / "r.parquet", tmp_path / "v", Verify(workers=1))
    rows, _, _ = read_verified(tmp_path / "v")
    by_text = dict(zip(rows["completion"], rows["reward"]))
    assert by_text == {"so \\boxed{12}": 1.0, "it is \\boxed{13}": 0.0, "no answer here": 0.0, "\\boxed{-4}": 1.0}
    assert stats["status_no_answer"] == 1


def test_weighted_verifiers_sum_and_keep_each_reward(tmp_path, stages, cli):
    """math (weight 1) plus a format reward (weight 0.2): the reward is the weighted sum, a positive gets more
    than half of the best 1.2, and each verifier's own reward is kept."""
    df, meta = read_rollouts(stages / "rollouts.parquet")
    known = df.head(4).with_columns(
        completion=pl.Series(["so \\boxed{12}", "it is \\boxed{13}", "it is 12", "no idea"]),
        answer=pl.Series(["12", "12", "12", "12"]),
    )
    write_parquet(known, tmp_path / "r.parquet", meta.to_dict())
    code, out, err = cli("verify", tmp_path / "r.parquet", "--out", tmp_path / "v", "--workers", "1",
                         "--verifier", "math", "--verifier", "box_reward:has_box=0.2")
    assert code == 0, err
    rows, _, meta = read_verified(tmp_path / "v")
    by_text = {r["completion"]: (r["reward"], r["reward/math"], r["reward/box_reward:has_box"], r["positive"]) for r in rows.to_dicts()}
    assert by_text["so \\boxed{12}"] == pytest.approx((1.2, 1.0, 1.0, True))
    assert by_text["it is \\boxed{13}"] == pytest.approx((0.2, 0.0, 1.0, False))  # format alone is not a positive
    assert by_text["it is 12"] == pytest.approx((1.0, 1.0, 0.0, True))
    assert meta.extra["verifier"] == {"math": 1.0, "box_reward:has_box": 0.2}
    assert meta.extra["summary"]["reward/box_reward:has_box"] == pytest.approx(0.5) and "reward/math" in out


def test_catalogue_names_the_verifier_of_a_known_set():
    """crl eval gsm8k_test was graded by math; a catalogue entry now names its verifier, used unless the run names one."""
    from crl.config import Verify
    from crl.stages.eval import task_verifier

    assert task_verifier("gsm8k_test", Verify(), named=False).verifier == {"gsm8k": 1.0}
    assert task_verifier("math500", Verify(), named=False).verifier == {"math": 1.0}
    assert task_verifier("gsm8k_test", Verify(verifier={"exact": 1.0}), named=True).verifier == {"exact": 1.0}


def _assert_user_error(result, *words):
    code, _, err = result
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


def test_prompt_set_without_answer(cli, tmp_path, tiny_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "What is 1+1?"}\n')
    _assert_user_error(cli("generate", bad, "--model", tiny_model, "--out", tmp_path / "o.parquet"), "bad.jsonl", "answer")
    assert not (tmp_path / "o.parquet").exists()


def test_empty_prompt_set(cli, tmp_path, tiny_model):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _assert_user_error(cli("generate", empty, "--model", tiny_model, "--out", tmp_path / "o.parquet"), "empty.jsonl")
    assert not (tmp_path / "o.parquet").exists()


def test_folder_that_is_not_verified(cli, tmp_path, tiny_model):
    (tmp_path / "notverified").mkdir()
    _assert_user_error(cli("train", tmp_path / "notverified", "--model", tiny_model, "--out", tmp_path / "ck"), "verified")
    assert not (tmp_path / "ck").exists()


def test_rollouts_from_another_tokenizer(cli, tmp_path, stages, tiny_model):
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model, other)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<another>"])
    tok.save_pretrained(other)
    _assert_user_error(cli("train", stages / "verified", "--model", other, "--out", tmp_path / "ck"), "tokenizer")
    assert not (tmp_path / "ck").exists()


def test_unknown_objective_option(cli, tmp_path, stages, tiny_model):
    result = cli("train", stages / "verified", "--model", tiny_model, "--out", tmp_path / "ck", "--option", "nope=1")
    _assert_user_error(result, "nope")
    assert not (tmp_path / "ck").exists()


def test_shards_are_read_as_one(cli, tmp_path, tiny_model, few_prompts):
    for i in range(2):
        code, _, err = cli("generate", few_prompts, "--model", tiny_model, "--out", tmp_path / "shards", "--shard", f"{i}/2", *GEN)
        assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "rollouts-00000-of-00002.parquet",
        "rollouts-00001-of-00002.parquet",
    ]
    df, _ = read_rollouts(tmp_path / "shards")
    assert df["prompt_id"].n_unique() == 6
