"""`crl train` on 2 processes (torchrun, FSDP2, gloo on CPU) gives the loss and the weights of 1 process.

One round with a group-level objective (conspo), then a second round with a token-level one (dapo) that
continues the first round's AdamW state; the 2-process runs load checkpoints written by 1 process and
the other way round. The token budget is small, so each rank packs several micro-batches and the ranks
get different numbers of them (the zero-weight padding passes run).

Weights are compared by the size of the difference relative to the size of the update: AdamW's first
steps divide each gradient by its own magnitude, so the weights whose gradient is rounding noise (the
key-projection bias, whose gradient is exactly 0 in exact arithmetic since softmax ignores a shift
shared by all keys; a few near-unused entries) move by a different fraction of the learning rate when
2 processes sum in another order, while the update as a whole agrees to about 1e-5.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from conftest import crl_main
from crl.default import DEFAULT_MODEL
from crl.io import write_parquet
from crl.engine import distributed
from crl.config import Sampling
from crl.engine.checkpoint import load_tokenizer
from crl.data.schemas import GROUP_SCHEMA, VERIFIED_SCHEMA, rollout_metadata

TRAIN = ("--device", "cpu", "--precision", "fp32", "--lr", "1e-3", "--minibatches", "2", "--token-budget", "96")


def make_model(folder: Path) -> Path:
    """The shipped tiny model, or (before it is built) a random model of the same shape."""
    if (DEFAULT_MODEL / "config.json").is_file():
        return DEFAULT_MODEL
    from crl.default.model import build_model
    from crl.default.tokenizer import build_tokenizer, save_tokenizer

    tok = build_tokenizer()
    build_model(tok).save_pretrained(folder)
    save_tokenizer(tok, folder)
    return folder


def make_verified(folder: Path, model: Path, groups: int = 6, k: int = 4) -> Path:
    """Random rollouts with ragged lengths and mixed rewards, written as `crl verify` writes them."""
    tok = load_tokenizer(model)
    rng = random.Random(0)
    rows = []
    for g in range(groups):
        prompt = [rng.randrange(6, 100) for _ in range(rng.randrange(4, 14))]
        for s in range(k):
            completion = [rng.randrange(6, 100) for _ in range(rng.randrange(2, 18))]
            rows.append(
                dict(prompt_id=f"p{g}", sample=s, prompt="", completion="", answer="1", source="synthetic",
                     prompt_ids=prompt, completion_ids=completion, logprobs=[-4.0] * len(completion),
                     finish_reason="stop", model=str(model), round=0, temperature=1.0, seed=0,
                     reward=float(s == 0 or (g + s) % 3 == 0), pred="1", status="ok")
            )
    df = pl.DataFrame(rows).cast(VERIFIED_SCHEMA)
    meta = {**rollout_metadata(Sampling(n=k, max_new_tokens=18), tok), "verifier": {"math": 1.0}}
    write_parquet(df.filter(pl.col("reward") > 0), folder / "positive.parquet", meta)
    write_parquet(df.filter(pl.col("reward") <= 0), folder / "negative.parquet", meta)
    summary = df.group_by("prompt_id").agg(
        n=pl.len(), n_pos=(pl.col("reward") > 0).sum(), n_neg=(pl.col("reward") <= 0).sum()
    )
    write_parquet(summary.with_columns(pass_rate=pl.col("n_pos") / pl.col("n")).cast(GROUP_SCHEMA), folder / "groups.parquet", meta)
    return folder


def torchrun(*args: object, nproc: int = 2) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "crl", *map(str, args)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def assert_same_log(a: Path, b: Path) -> None:
    la, lb = pl.read_parquet(a / "train_log.parquet"), pl.read_parquet(b / "train_log.parquet")
    assert la.height == lb.height
    for col in ("loss", "units", "grad_norm", "entropy", "tokens", "groups", "groups_dropped"):
        if col in la.columns:
            # 1e-4: the second step starts from weights that already differ by fp32 reduction order
            torch.testing.assert_close(la[col].to_torch().double(), lb[col].to_torch().double(), rtol=1e-4, atol=1e-7)


def assert_same_update(base: Path, a: Path, b: Path, rtol: float = 5e-4, tensor_rtol: float = 1e-2) -> None:
    """The two updates agree to ``rtol`` over the whole model and to ``tensor_rtol`` in every tensor. Two Adam steps
    amplify fp32 reduction-order differences by an amount that depends on the CPU (1.25e-4 seen on one machine,
    under 1e-4 on others); a group counted twice or left out by one rank turns the update far more, and a
    gradient scaled wrongly across ranks shows in the logged grad_norm (``assert_same_log``)."""
    w0, wa, wb = (load_file(p / "model.safetensors") for p in (base, a, b))
    assert sorted(wa) == sorted(wb)
    diff, size = torch.zeros(()), torch.zeros(())
    for name in wa:
        update = (wa[name] - w0[name]).norm()
        assert update > 0, name
        assert (wa[name] - wb[name]).norm() <= tensor_rtol * update, name
        diff, size = diff + (wa[name] - wb[name]).norm() ** 2, size + update**2
    assert diff.sqrt() <= rtol * size.sqrt()


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    tmp = tmp_path_factory.mktemp("dist")
    base = make_model(tmp / "model")
    verified = make_verified(tmp / "verified", base)
    # 1 process (in this process) and 2 processes: round 1 conspo from the base model, round 2 dapo from
    # the 1-process round-1 checkpoint (so both continue the same saved AdamW state).
    assert crl_main("train", verified, "--model", base, "--out", tmp / "one-1", "--objective", "conspo", *TRAIN) == 0
    assert crl_main("train", verified, "--model", tmp / "one-1", "--out", tmp / "one-2", "--objective", "dapo", *TRAIN) == 0
    torchrun("train", verified, "--model", base, "--out", tmp / "two-1", "--objective", "conspo", *TRAIN)
    torchrun("train", verified, "--model", tmp / "one-1", "--out", tmp / "two-2", "--objective", "dapo", *TRAIN)
    # and a 2-process checkpoint continued by 1 process
    assert crl_main("train", verified, "--model", tmp / "two-1", "--out", tmp / "one-from-two", "--objective", "dapo", *TRAIN) == 0
    return tmp, base


def test_group_objective_same_on_two_processes(two_rounds):
    tmp, base = two_rounds
    assert_same_log(tmp / "one-1", tmp / "two-1")
    assert_same_update(base, tmp / "one-1", tmp / "two-1")


def test_token_objective_continuing_optimizer_same_on_two_processes(two_rounds):
    tmp, _ = two_rounds
    assert_same_log(tmp / "one-2", tmp / "two-2")
    assert_same_update(tmp / "one-1", tmp / "one-2", tmp / "two-2")
    assert json.loads((tmp / "two-2" / "trainer_state.json").read_text())["step"] == 4


def test_two_process_checkpoint_is_whole_and_continues_on_one(two_rounds):
    tmp, _ = two_rounds
    ckpt = tmp / "two-1"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(ckpt)
    weights = load_file(ckpt / "model.safetensors")
    assert "lm_head.weight" not in weights or not AutoModelForCausalLM.from_pretrained(ckpt).config.tie_word_embeddings
    optimizer = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert all(isinstance(k, str) for k in optimizer["state"])  # full state, keyed by parameter name
    assert optimizer["state"]["model.embed_tokens.weight"]["exp_avg"].shape == weights["model.embed_tokens.weight"].shape
    # round 2 from the 2-process checkpoint ≈ round 2 from the 1-process one (their starts differ by ~1e-5)
    assert_same_update(tmp / "one-1", tmp / "one-2", tmp / "one-from-two", rtol=1e-2, tensor_rtol=1.0)
    assert not any(p.name.startswith(".crl-tmp-") for p in tmp.iterdir())


def test_deal_groups_whole_balanced_deterministic():
    sizes = [50, 10, 40, 30, 30, 20, 5]
    shares = distributed.deal_groups(list(range(len(sizes))), sizes, 3)
    assert sorted(i for s in shares for i in s) == list(range(len(sizes)))  # every group once, whole
    assert all(s == sorted(s) for s in shares)  # original order kept within a share
    loads = [sum(sizes[i] for i in s) for s in shares]
    assert max(loads) - min(loads) <= max(sizes) and max(loads) <= 65
    assert shares == distributed.deal_groups(list(range(len(sizes))), sizes, 3)
    assert distributed.deal_groups(["a", "b"], [1, 2], 1) == [["a", "b"]]
    assert distributed.deal_groups(["a"], [1], 2) == [["a"], []]  # fewer groups than ranks: an empty share


def test_single_process_has_no_process_group():
    assert (distributed.rank(), distributed.world(), distributed.is_main()) == (0, 1, True)
    assert distributed.all_reduce_sum({"a": 1.5}) == {"a": 1.5}
