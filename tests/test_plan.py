"""crl plan and the memory model behind it: the count of saved activations against autograd's own, the largest
micro-batch, the command's output, and a configuration that does not fit refused before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crl.config import resolve
from crl.data.models import resolve_model
from crl.engine import memory
from crl.engine.logprobs import TokenSeq, completion_logprobs
from crl.engine.memory import MicroBatch, Precision
from crl.stages import plan as planning


def saved_bytes(model: torch.nn.Module, seqs: list[TokenSeq], share_prompts: bool) -> int:
    """Bytes of the tensors autograd keeps for backward over one forward (parameters left out, each storage once)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        completion_logprobs(model, seqs, 1.0, chunk=10**6, share_prompts=share_prompts)
    return sum(saved.values())


def small_model(kind: str, tmp_path) -> str:
    """A randomly initialised Llama or Qwen2 with grouped-query attention, saved so its shapes can be read back."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    shape = dict(vocab_size=512, hidden_size=256, intermediate_size=704, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)
    config, cls = (LlamaConfig(**shape), LlamaForCausalLM) if kind == "llama" else (Qwen2Config(**shape), Qwen2ForCausalLM)
    torch.manual_seed(0)
    cls(config).save_pretrained(tmp_path / kind)
    return str(tmp_path / kind)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("share_prompts", [True, False], ids=["shared", "padded"])
def test_the_activation_count_agrees_with_what_autograd_saves(kind, share_prompts, tmp_path):
    from transformers import AutoModelForCausalLM

    path = small_model(kind, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(path).train()
    model.set_attn_implementation("sdpa")
    mb = MicroBatch(groups=3, n=4, prompt=40, completion=24, layout="shared" if share_prompts else "padded")
    g = torch.Generator().manual_seed(0)
    seqs = []
    for _ in range(mb.groups):
        prompt = torch.randint(0, 512, (mb.prompt,), generator=g).tolist()
        seqs += [TokenSeq(prompt, torch.randint(0, 512, (mb.completion,), generator=g).tolist()) for _ in range(mb.n)]
    measured = saved_bytes(model, seqs, share_prompts)
    predicted = memory.activations(memory.shapes_of(path), mb, Precision.of("fp32"), recompute=False, lora_rank=None)
    assert abs(predicted - measured) / measured < 0.1, (predicted, measured)


def test_the_largest_micro_batch_has_the_shortest_prompts_when_prompts_are_shared():
    run = resolve([({"prompts_per_round": 64, "generate": {"n": 8, "max_new_tokens": 16}, "train": {"token_budget": 2048}}, "test")]).config
    rt = planning.decide(run.train, 10**6)
    worst = planning.worst_micro_batch(run, rt, [8, 40, 100])
    assert (worst.prompt, worst.groups) == (8, 2048 // (8 * 24))  # 10 groups of short prompts compute the most
    assert worst.cost <= 2048
    recompute = planning.decide(resolve([({"train": {"token_budget": 2048, "gradient_checkpointing": True}}, "t")]).config.train, 10**6)
    padded = planning.worst_micro_batch(run, recompute, [8, 40, 100])
    assert padded.tokens == padded.cost <= 2048 and padded.layout == "padded"


def test_plan_prints_the_round_the_memory_and_the_time(cli):
    code, out, err = cli("plan", "--json", "--set", "verify.workers=1")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["fits"] and plan["arithmetic"]["prompts x samples"].startswith("64 x 8 = 512 rollouts")
    assert plan["arithmetic"]["optimiser steps"] == 2 and plan["runtime"]["token_budget"] == 8192
    gib = plan["memory_gib"]
    assert gib["peak"] >= gib["peak of training"] >= gib["process"] + gib["weights"] + gib["AdamW state"]
    assert gib["needed"] <= gib["available"]
    assert plan["seconds"]["micro-batch"] > 0 and plan["seconds"]["round"] >= plan["seconds"]["training"]


def test_a_run_that_does_not_fit_is_refused_before_the_model_loads(cli, tmp_path, monkeypatch, few_prompts):
    import psutil

    half = psutil.Process().memory_info().rss + 0.5 * memory.GiB  # this process and half a GiB
    monkeypatch.setattr(planning, "available", lambda rt: (half, half))
    monkeypatch.setattr("crl.stages.iterate.Trainer", lambda *a, **k: pytest.fail("the model was loaded"))
    big = ["--set", "train.token_budget=1000000", "--set", "prompts_per_round=4096", "--set", "generate.max_new_tokens=200",
           "--set", f"prompts={few_prompts}", "--set", f"eval.tasks=['{few_prompts}']"]
    code, _, err = cli("iterate", "--out", tmp_path / "run", *big)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "GiB" in err and "train.token_budget = " in err and "fits" in err
    assert not (tmp_path / "run").exists()
    suggested = err.rsplit("train.token_budget = ", 1)[1].split()[0]
    code, _, err = cli("plan", "--no-probe", *big, "--set", f"train.token_budget={suggested}")
    assert code == 0, err


def test_the_gpu_recipe_is_accepted_by_plan(cli, tmp_path):
    """recipes/qwen2.5-math-1.5b-math.toml as a user's first GPU run reads it: crl plan takes the file whole, with
    a model of 4,096 positions in place of the hub's (the shipped tokenizer, Qwen2's layout) and the shipped sets."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    shipped = Path(resolve_model("tiny-arith"))
    tokenizer = AutoTokenizer.from_pretrained(shipped)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "qwen2.5-math-1.5b-math.toml"
    code, out, err = cli("plan", "--config", recipe, "--model", tmp_path / "qwen", "--prompts", "arith_train",
                         "--eval-task", "arith_test", "--no-probe", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["arithmetic"]["prompts x samples"].startswith("64 x 8 = 512 rollouts")
    assert plan["runtime"]["token_budget"] > 0 and plan["memory_gib"]["peak"] > 0
