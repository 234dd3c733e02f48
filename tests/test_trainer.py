"""The trainer: LoRA against full fine-tuning, truncated importance sampling, behaviour log-probs with the
training packing, the frozen reference of a staged run, ConSPO's curriculum across staged rounds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import torch

from conftest import TRAIN_CPU, crl_main
from crl.config import parse_set, resolve
from crl.data.schemas import RolloutMeta, read_verified, tokenizer_fingerprint
from crl.engine.checkpoint import load_tokenizer
from crl.engine.policy import Runtime
from crl.engine.step import micro_batch, plan, rollouts_from, with_logprobs
from crl.engine.trainer import Trainer
from crl.errors import CrlError

def run_config(*items: str):
    return resolve([(parse_set(["train.device=cpu", *items]), "--set")]).config


def test_lora_gradient_is_full_fine_tuning_gradient_through_the_adapters(verified_setup):
    """dL/dB = s G A^T and dL/dA = s B^T G, with G the full fine-tuning gradient at W = W0 + s B A."""
    peft = pytest.importorskip("peft")
    _, model, _ = verified_setup
    from transformers import AutoModelForCausalLM

    from crl.engine.logprobs import TokenSeq, completion_logprobs

    torch.manual_seed(0)
    seqs = [TokenSeq([5, 6, 7], [8, 9, 10, 11]), TokenSeq([12, 13], [14, 15])]
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float64)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False))
    sum(lp.sum() for lp in completion_logprobs(lora, seqs)).backward()
    full = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float64)
    adapted = [(layer.self_attn.q_proj, plain.self_attn.q_proj) for layer, plain in zip(lora.base_model.model.model.layers, full.model.layers)]
    with torch.no_grad():
        for lora_q, q in adapted:
            q.weight += lora_q.scaling["default"] * lora_q.lora_B["default"].weight @ lora_q.lora_A["default"].weight
    sum(lp.sum() for lp in completion_logprobs(full, seqs)).backward()
    for lora_q, q in adapted:
        A, B, scale, G = lora_q.lora_A["default"].weight, lora_q.lora_B["default"].weight, lora_q.scaling["default"], q.weight.grad
        torch.testing.assert_close(B.grad, scale * G @ A.T, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(A.grad, scale * B.T @ G, rtol=1e-9, atol=1e-12)


def test_lora_round_saves_adapters_only_and_continues(verified_setup, cli):
    pytest.importorskip("peft")
    tmp, model, verified = verified_setup
    lora = ("--lora-rank", "4", "--lora-target", "q_proj", "--lora-target", "v_proj")
    assert crl_main("train", verified, "--model", model, "--out", tmp / "lora1", *lora, *TRAIN_CPU) == 0
    files = {p.name for p in (tmp / "lora1").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt"} <= files and "model.safetensors" not in files
    state = torch.load(tmp / "lora1" / "optimizer.pt", weights_only=True)["state"]
    assert state and all("lora_" in name for name in state)  # AdamW state of the adapters only
    assert crl_main("train", verified, "--model", tmp / "lora1", "--out", tmp / "lora2", *TRAIN_CPU) == 0
    assert json.loads((tmp / "lora2" / "trainer_state.json").read_text())["round"] == 2


def test_truncated_importance_weights_are_capped_ratios_of_trainer_to_sampler(verified_setup):
    _, model, verified = verified_setup
    rows, _, meta = read_verified(verified)  # the sampler's log-probs there are all -4
    run = run_config("train.objective=grpo", "train.tis_cap=2.0")
    trainer = Trainer(str(model), run)
    rt = Runtime("cpu", "fp32", 256, False, False)
    data = rollouts_from(rows, meta, "cpu")
    steps = plan(data, run.train, rt, torch.Generator().manual_seed(0))
    data = with_logprobs(trainer.model, data, steps, rt, None, recompute=True)
    b = micro_batch(trainer.model, data, steps[0], 0, rt, tis_cap=2.0)
    expected = torch.exp(b.old_logp - b.behaviour_logp).clamp(max=2.0) * b.mask
    torch.testing.assert_close(b.is_weight, expected)
    assert (b.is_weight[b.mask > 0] <= 2.0 + 1e-6).all() and (b.is_weight[b.mask > 0] < 2.0).any()
    log = trainer.train_round(rows, meta).steps
    assert (0 < log["tis_capped"]).all() and (log["tis_capped"] < 1).all()  # some tokens at the cap, not all
    assert (0 < log["tis_weight"]).all() and (log["tis_weight"] <= 2.0).all()
    with pytest.raises(CrlError, match="tis_cap"):
        Trainer(str(model), run_config("train.objective=conspo", "train.tis_cap=2.0"))


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_old_logprobs_use_the_packing_of_the_training_pass(verified_setup, precision):
    """In bf16 the old log-probs were once computed with another packing than the training forward, so the first
    update's ratios were not 1; every row's old log-probs, computed before the round's first update, come from
    exactly the micro-batch of the first step it appears in."""
    _, model, verified = verified_setup
    rows, _, meta = read_verified(verified)
    run = run_config(f"train.precision={precision}", "train.minibatches=2", "train.token_budget=64")
    trainer = Trainer(str(model), run)
    data = rollouts_from(rows, meta, "cpu")
    steps = plan(data, run.train, trainer.rt, torch.Generator().manual_seed(0))
    data = with_logprobs(trainer.model, data, steps, trainer.rt, None, recompute=True)
    trainer.model.train()
    for step in steps:  # before any update: ratio exactly 1
        for b in range(len(step.bins)):
            batch = micro_batch(trainer.model, data, step, b, trainer.rt, None)
            assert torch.equal(batch.logp.detach() * batch.mask, batch.old_logp * batch.mask)


def test_staged_online_dpo_keeps_the_run_start_as_reference(verified_setup):
    """Round 2 of a staged run trains against the base model recorded in round 1's checkpoint: its first loss
    is no longer exactly log 2 (the reference used to be the behaviour policy itself)."""
    tmp, model, verified = verified_setup
    args = ("--objective", "online-dpo", "--option", "beta=1.0", *TRAIN_CPU)
    assert crl_main("train", verified, "--model", model, "--out", tmp / "dpo1", *args) == 0
    assert crl_main("train", verified, "--model", tmp / "dpo1", "--out", tmp / "dpo2", *args) == 0
    first = pl.read_parquet(tmp / "dpo1" / "train_log.parquet")["loss"][0]
    second = pl.read_parquet(tmp / "dpo2" / "train_log.parquet")["loss"][0]
    assert first == pytest.approx(math.log(2), abs=1e-6)  # round 1: the policy is the reference
    assert abs(second - math.log(2)) > 1e-3
    assert json.loads((tmp / "dpo2" / "trainer_state.json").read_text())["base"] == str(model)


def test_staged_conspo_margin_follows_the_planned_rounds(verified_setup):
    """crl train used to run ConSPO's curriculum at progress 0 (margin 0) in every round of a staged run."""
    tmp, model, verified = verified_setup
    assert crl_main("train", verified, "--model", model, "--out", tmp / "c1", "--rounds", "2", "--objective", "conspo", *TRAIN_CPU) == 0
    assert crl_main("train", verified, "--model", tmp / "c1", "--out", tmp / "c2", "--rounds", "2", "--objective", "conspo", *TRAIN_CPU) == 0
    assert pl.read_parquet(tmp / "c1" / "train_log.parquet")["margin"][0] == 0.0  # progress 0/2
    assert pl.read_parquet(tmp / "c2" / "train_log.parquet")["margin"][0] == pytest.approx(0.01)  # 1/2 > alpha


def test_a_prompt_drawn_in_two_rounds_makes_two_groups(tiny_model):
    """A group is one prompt's samples in one round: replaying an earlier round's groups must not merge them
    with this round's samples of the same prompt (all right in round 1, mixed in round 2: one group dropped)."""
    rows, meta = pinned_rows(tiny_model)
    p1 = rows.filter(pl.col("prompt_id") == "p1").with_columns(round=pl.lit(1, pl.Int32))  # all right
    p0 = rows.filter(pl.col("prompt_id") == "p0").with_columns(prompt_id=pl.lit("p1"), round=pl.lit(2, pl.Int32))  # mixed
    both = pl.concat([p1, p0])
    data = rollouts_from(both, meta, "cpu")
    assert [len(g) for g in data.groups] == [p1.height, p0.height]
    trainer = Trainer(str(tiny_model), run_config("train.objective=dapo", "train.minibatches=1"))
    log = trainer.train_round(both, meta).steps
    assert log["groups"].to_list() == [1] and log["groups_dropped"].to_list() == [1.0]


@pytest.mark.parametrize("recompute_activations", [False, True])  # the shared-prompt layout, the padded one
def test_an_empty_completion_is_trained_in_every_layout(tiny_model, recompute_activations):
    """Imported rollouts may hold a completion of no token: it has no log-prob, but its reward still counts in
    its group; the shared-prompt forward used to stop on it with a bare ValueError."""
    rows, meta = pinned_rows(tiny_model)
    rows = rows.with_columns(
        completion_ids=pl.when(pl.int_range(pl.len()) == 1).then(pl.lit([], dtype=pl.List(pl.Int32))).otherwise("completion_ids"),
        logprobs=pl.when(pl.int_range(pl.len()) == 1).then(pl.lit([], dtype=pl.List(pl.Float32))).otherwise("logprobs"),
    )
    run = run_config("train.objective=grpo", "train.token_budget=256", f"train.gradient_checkpointing={str(recompute_activations).lower()}")
    trainer = Trainer(str(tiny_model), run)
    assert trainer.rt.share_prompts is not recompute_activations
    log = trainer.train_round(rows, meta).steps
    assert log["groups"].sum() == rows["prompt_id"].n_unique() and log["loss"].is_finite().all()


# ---- the numbers of the release before the step was restructured, pinned --------------------------------
# tests/trainer_values.json holds every statistic of every optimiser step of one round, and a digest of the
# update, as f148ed5 computed them for each objective on the same rows (flat and mixed groups, ragged lengths,
# several micro-batches and steps, a second epoch, the reference model, truncated importance sampling). The
# model runs in float64, so that neither the thread count nor the processor moves the figures.

TRAINER_PINNED = Path(__file__).with_name("trainer_values.json")
TRAINER_CASES = {
    **{name: () for name in ("conspo", "rence", "disco", "disco-b", "copg", "grpo", "dapo", "dr-grpo", "online-dpo", "rft")},
    "grpo-kl-two-epochs": ("train.objective=grpo", "train.options.beta=0.04", "train.epochs=2"),
    "grpo-tis-rollout": ("train.objective=grpo", "train.tis_cap=1.5", "train.old_logprobs=rollout"),
    "dapo-two-epochs": ("train.objective=dapo", "train.epochs=2", "train.minibatches=3"),
    "disco-two-epochs": ("train.objective=disco", "train.epochs=2"),
    "rence-kl-two-epochs": ("train.objective=rence", "train.options.kl_coef=0.1", "train.epochs=2"),
    "conspo-late": ("train.objective=conspo", "rounds=2"),
}


def pinned_rows(model) -> tuple[pl.DataFrame, RolloutMeta]:
    """Eight groups of 2..5 rollouts (mixed, all right, all wrong), ragged prompts and completions, as a
    verified/ folder reads; the sampler's log-probs are made up."""
    from crl.config import Sampling
    from crl.data.schemas import VERIFIED_SCHEMA

    gen = torch.Generator().manual_seed(0)
    rows = []
    for g, kind in enumerate(("mixed", "pos", "mixed", "neg", "mixed", "mixed", "neg", "mixed")):
        prompt = torch.randint(6, 100, (int(torch.randint(3, 12, (1,), generator=gen)),), generator=gen).tolist()
        K = int(torch.randint(2, 6, (1,), generator=gen))
        for s in range(K):
            n = int(torch.randint(1, 17, (1,), generator=gen))
            right = {"pos": True, "neg": False}.get(kind, s % 2 == 0)
            rows.append(dict(
                prompt_id=f"p{g}", sample=s, prompt="", completion="", answer="1", source="synthetic", prompt_ids=prompt,
                completion_ids=torch.randint(6, 100, (n,), generator=gen).tolist(),
                logprobs=(-4 * torch.rand(n, generator=gen)).tolist(), finish_reason="stop", model="tiny", round=1,
                temperature=1.0, seed=0, reward=float(right), pred="1", status="ok", positive=right,
            ))
    meta = RolloutMeta(Sampling(n=5, max_new_tokens=16), tokenizer_fingerprint(load_tokenizer(model)))
    return pl.DataFrame(rows).cast(VERIFIED_SCHEMA), meta


@pytest.fixture
def float64_models(monkeypatch):
    """The policy and the reference model loaded in float64, on one thread (a busy machine makes torch's
    threads wait on each other; the figures are the same either way)."""
    import crl.engine.policy as policy

    load = policy.load_model
    monkeypatch.setattr(policy, "load_model", lambda path, device, dtype=None: load(path, device, torch.float64))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pinned_round(model, case: str) -> dict:
    """Every step's statistics of one round, and the update's sum, square sum and projection on fixed weights."""
    settings = TRAINER_CASES[case] or (f"train.objective={case}",)
    run = run_config("train.lr=1e-3", "train.minibatches=2", "train.token_budget=256", *settings)
    trainer = Trainer(str(model), run)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    log = trainer.train_round(*pinned_rows(model)).steps
    gen = torch.Generator().manual_seed(1)
    update = [(p.detach() - before[n]).double() for n, p in trainer.model.named_parameters()]
    digest = [sum(float(u.sum()) for u in update), sum(float((u * u).sum()) for u in update),
              sum(float((u * torch.randn(u.shape, generator=gen, dtype=torch.float64)).sum()) for u in update)]
    steps = [{k: v for k, v in row.items() if k != "seconds" and isinstance(v, (int, float))} for row in log.to_dicts()]
    return {"steps": steps, "update": digest}


@pytest.mark.parametrize("case", TRAINER_CASES)
def test_every_step_statistic_and_the_update_are_those_pinned(case, tiny_model, float64_models):
    want = json.loads(TRAINER_PINNED.read_text())[case]
    got = pinned_round(tiny_model, case)
    assert len(got["steps"]) == len(want["steps"])
    for g, w in zip(got["steps"], want["steps"]):
        assert {k: g[k] for k in w} == pytest.approx(w, rel=1e-9, abs=1e-12, nan_ok=True)
    assert got["update"] == pytest.approx(want["update"], rel=1e-9, abs=1e-12)
