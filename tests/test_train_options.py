"""The throughput options of `crl train`: precision, attention kernel, compile, and the size-based defaults."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import TRAIN_CPU, crl_main
from crl.engine.checkpoint import load_model
from crl.engine.logprobs import TokenSeq, completion_logprobs
from crl.engine.policy import memory_defaults

def seqs() -> list[TokenSeq]:
    g = torch.Generator().manual_seed(0)
    lengths = [(7, 5), (3, 9), (12, 1), (5, 4), (20, 30)]
    return [TokenSeq(torch.randint(6, 100, (p,), generator=g).tolist(), torch.randint(6, 100, (c,), generator=g).tolist()) for p, c in lengths]


def test_bf16_weights_train_and_write_a_loadable_checkpoint(verified_setup):
    tmp, model, verified = verified_setup
    assert crl_main("train", verified, "--model", model, "--out", tmp / "bf16", "--precision", "bf16", *TRAIN_CPU) == 0
    loaded = AutoModelForCausalLM.from_pretrained(tmp / "bf16")
    assert json.loads((tmp / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    before = load_model(model, "cpu", torch.bfloat16).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp / "bf16", dtype=torch.bfloat16).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # lr 1e-3 is above bf16's resolution
    assert all(torch.isfinite(p).all() for p in loaded.parameters())
    # the next round (fp32 by default) continues the bf16 AdamW state
    assert crl_main("train", verified, "--model", tmp / "bf16", "--out", tmp / "bf16-then-fp32", *TRAIN_CPU) == 0


def test_bf16_mixed_runs_on_cpu(verified_setup):
    tmp, model, verified = verified_setup
    assert crl_main("train", verified, "--model", model, "--out", tmp / "mixed", "--precision", "bf16-mixed", *TRAIN_CPU) == 0
    assert json.loads((tmp / "mixed" / "config.json").read_text())["dtype"] == "float32"  # fp32 master weights


def test_gradient_checkpointing_gives_the_same_update(verified_setup):
    tmp, model, verified = verified_setup
    assert crl_main("train", verified, "--model", model, "--out", tmp / "plain", "--no-gradient-checkpointing", *TRAIN_CPU) == 0
    assert crl_main("train", verified, "--model", model, "--out", tmp / "recompute", "--gradient-checkpointing", *TRAIN_CPU) == 0
    a = AutoModelForCausalLM.from_pretrained(tmp / "plain").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp / "recompute").state_dict()
    w0 = AutoModelForCausalLM.from_pretrained(model).state_dict()
    diff = sum((a[k] - b[k]).norm() ** 2 for k in a) ** 0.5
    assert diff <= 1e-4 * sum((a[k] - w0[k]).norm() ** 2 for k in a) ** 0.5


@pytest.mark.parametrize("packed", [False, True])
def test_eager_and_sdpa_logprobs_agree(verified_setup, packed):
    _, model, _ = verified_setup
    out = {}
    for attn in ("sdpa", "eager"):
        m = load_model(model, "cpu").eval()
        m.set_attn_implementation(attn)
        with torch.no_grad():
            out[attn] = torch.cat(completion_logprobs(m, seqs(), packed=packed))
    torch.testing.assert_close(out["eager"], out["sdpa"], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_flex_attention_document_mask_matches_sdpa(verified_setup):
    """flex_attention runs on CPU in torch 2.13 (compiled by inductor: tens of seconds the first time)."""
    _, model, _ = verified_setup
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        pytest.skip("this torch has no flex_attention")
    m = load_model(model, "cpu").eval()
    with torch.no_grad():
        sdpa = torch.cat(completion_logprobs(m, seqs()))  # right-padded rows, the plain causal kernel
        m.set_attn_implementation("flex_attention")
        packed = torch.cat(completion_logprobs(m, seqs(), packed=True))  # one row, a block-sparse document mask
        alone = torch.cat([completion_logprobs(m, [s], packed=True)[0] for s in seqs()])  # no other sequence to leak from
    torch.testing.assert_close(packed, sdpa, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def test_compile_flag_reaches_the_trainer(verified_setup, monkeypatch):
    """The flag is accepted and passed on; compiling for real is left to GPU runs (minutes of inductor on CPU)."""
    import crl.stages.train as train_module

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda verified, out, run, model, **kw: seen.setdefault("train", run.train) and _empty_log())
    tmp, model, verified = verified_setup
    code = crl_main("train", verified, "--model", model, "--out", tmp / "c", "--compile", "--attn", "eager", "--precision", "bf16")
    assert code == 0
    train = seen["train"]
    assert (train.compile, train.attn, train.precision) == (True, "eager", "bf16")


def _empty_log():
    import polars as pl

    return pl.DataFrame({"step": [1], "loss": [0.0]})


@pytest.mark.parametrize("flag,value", [("--precision", "fp16"), ("--attn", "flash")])
def test_unknown_choice_is_one_line(cli, verified_setup, flag, value):
    tmp, model, verified = verified_setup
    code, _, err = cli("train", verified, "--model", model, "--out", tmp / "x", flag, value, "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1 and value in err
    assert not (tmp / "x").exists()


def test_memory_defaults_by_model_size():
    assert memory_defaults(3_000_000, "cpu") == (8192, False)
    assert memory_defaults(500_000_000, "cuda") == (16384, False)
    assert memory_defaults(1_540_000_000, "cuda") == (16384, True)  # measured: out of memory without it
    assert memory_defaults(7_600_000_000, "cuda:0") == (8192, True)
    assert memory_defaults(7_600_000_000, "cpu") == (8192, False)
