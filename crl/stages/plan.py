"""Plan a run before it starts: the batch arithmetic of a round, the memory of each part, and the time of a round.

In: the settings of ``crl iterate`` (the same resolution, the same flags), the model's config.json and the prompt
sets (their rendered prompt lengths). Out: a ``Plan``: what a round samples and trains (prompts x samples,
tokens, optimiser steps, micro-batches), the memory of each part (crl/engine/memory.py) against what this device
has, and, with ``probe``, the measured time of one micro-batch at the budget and the round's time from it.

Why before loading: a configuration that cannot fit is refused in seconds with one line naming a setting and a
value that fits (``check_fits``, which ``crl iterate`` also runs before it loads the model), instead of an
out-of-memory error after minutes of loading. Everything is a worst case the settings allow: every completion
at max_new_tokens, and the micro-batch the token budget lets in that computes the most, over the prompt set's
prompt lengths (short prompts let more groups in: with shared prompts they compute more per budget token).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import psutil
import torch

from crl.config import RunConfig
from crl.data.prompts import load_prompts
from crl.engine import memory
from crl.engine.backends import vllm_available
from crl.engine.checkpoint import load_tokenizer
from crl.engine.memory import GiB, MicroBatch, Precision, Shapes
from crl.engine.policy import Runtime, decide
from crl.errors import CrlError
from crl.objectives import check_options, needs_reference
from crl.stages.generate import tokenize_prompts
from crl.stages.sampling import dynamic_sampling

HF_BATCH = 64  # prompts per batch of crl's sampler (crl/engine/backends/hf.py)
PROBE_STEPS = 8  # decoding steps the sampling probe times


@dataclass(frozen=True)
class Workload:
    """What the settings and prompt sets let a round hold: prompt lengths (rendered, in tokens) of the training
    and evaluation sets."""

    prompts: list[int]
    eval_prompts: list[int]


@dataclass
class Plan:
    arithmetic: dict[str, Any]
    memory: dict[str, float]  # bytes of each part, the peaks and what is available
    runtime: Runtime
    worst: MicroBatch
    fits: bool
    time: dict[str, float] = field(default_factory=dict)  # seconds, from the probe

    def as_dict(self) -> dict[str, Any]:
        return {"arithmetic": self.arithmetic, "memory_gib": {k: v / GiB for k, v in self.memory.items()},
                "runtime": dataclasses.asdict(self.runtime), "worst_micro_batch": dataclasses.asdict(self.worst),
                "fits": self.fits, "seconds": self.time}


def workload(run: RunConfig, model: str, prompts: pl.DataFrame | None = None) -> Workload:
    """The rendered prompt lengths of the run's training set (``prompts`` when already loaded) and eval sets."""
    tokenizer = load_tokenizer(model)
    train = prompts if prompts is not None else load_prompts(run.prompts)
    evals = [load_prompts(t, run.eval.limit) for t in run.eval.tasks]
    lengths = [len(p) for p in tokenize_prompts(train, run, tokenizer)[1]]
    eval_lengths = [len(p) for e in evals for p in tokenize_prompts(e, run, tokenizer)[1]]
    return Workload(lengths, eval_lengths or lengths)


def uses_vllm(run: RunConfig) -> bool:
    """Whether iterate's generator will run vLLM (crl/engine/backends/__init__.py ``make_backend``)."""
    return run.backend.name == "vllm" or (run.backend.name == "auto" and vllm_available())


def layout(rt: Runtime) -> str:
    return "packed" if rt.packed else "shared" if rt.share_prompts else "padded"


def worst_micro_batch(run: RunConfig, rt: Runtime, prompt_lengths: list[int]) -> MicroBatch:
    """The micro-batch that computes the most tokens: for each prompt length, as many whole groups as the budget
    lets in (at least one, at most a step's), every completion at max_new_tokens."""
    n, completion = run.generate.n, run.generate.max_new_tokens
    per_step = groups_per_step(run)
    candidates = []
    for prompt in sorted(set(prompt_lengths)):
        groups = min(per_step, max(1, rt.token_budget // (n * (prompt + completion))))
        candidates.append(MicroBatch(groups, n, prompt, completion, layout(rt)))
    return max(candidates, key=lambda mb: (mb.tokens, mb.rows * (mb.prompt + mb.completion)))


def groups_per_step(run: RunConfig) -> int:
    """The most groups one optimiser step trains: the round's, and with ``train.replay`` those of earlier rounds."""
    return math.ceil(run.prompts_per_round * run.train.replay / run.train.minibatches)


def arithmetic(run: RunConfig, rt: Runtime, work: Workload) -> dict[str, Any]:
    """What one round samples and trains, at most."""
    n, completion, longest = run.generate.n, run.generate.max_new_tokens, max(work.prompts)
    rollouts = run.prompts_per_round * n
    trained = rollouts * run.train.replay
    per_step = groups_per_step(run)
    fit = max(1, rt.token_budget // (n * (longest + completion)))
    draws = f", sampled in up to {run.generate.max_attempts} draws (dynamic sampling)" if dynamic_sampling(run) else ""
    return {
        "prompts x samples": f"{run.prompts_per_round} x {n} = {rollouts} rollouts sampled{draws}"
        + (f", trained with up to {run.train.replay - 1} earlier rounds' (train.replay)" if run.train.replay > 1 else ""),
        "prompt tokens": f"{min(work.prompts)} to {longest}",
        "tokens sampled": rollouts * completion,
        "tokens trained": trained * (longest + completion),
        "optimiser steps": run.train.epochs * run.train.minibatches,
        "groups per step": per_step,
        "micro-batches per step": math.ceil(per_step / fit),
        "token budget": rt.token_budget,
        "layout": {"shared": "right-padded rows, each prompt once", "padded": "right-padded rows (recomputation)",
                   "packed": "packed rows (flex_attention)"}[layout(rt)],
    }


def available(rt: Runtime) -> tuple[float, float]:
    """Bytes this process may still use on the training device, and the device's total."""
    if rt.device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info(torch.device(rt.device))
        return float(free), float(total)
    vm = psutil.virtual_memory()
    return float(vm.available + psutil.Process().memory_info().rss), float(vm.total)


def memory_parts(run: RunConfig, rt: Runtime, s: Shapes, work: Workload, reference: bool, total: float) -> tuple[dict[str, float], MicroBatch]:
    """Bytes of each part and the peaks; see crl/engine/memory.py."""
    p, lora = Precision.of(rt.precision), run.lora.rank
    trainable = s.adapter_params if lora else s.params
    worst = worst_micro_batch(run, rt, work.prompts)
    gpu, vllm = rt.device.startswith("cuda"), uses_vllm(run)
    parts = {
        "process": 0.0 if gpu else float(psutil.Process().memory_info().rss + memory.TRAINER_LOAD),
        "weights": float(s.params * p.weights + (s.adapter_params * 4 if lora else 0)),
        "gradients": float(trainable * p.weights),
        "AdamW state": float(2 * trainable * p.weights),
        "reference model": float(s.params * p.weights) if reference and (not lora or run.train.ref) else 0.0,
        "activations": memory.activations(s, worst, p, rt.gradient_checkpointing, lora),
        "backward's extra": memory.backward_extra(s, worst, p, rt.gradient_checkpointing, lora),
    }
    other = not rt.gradient_checkpointing
    parts["activations, other choice"] = memory.activations(s, worst, p, other, lora) + memory.backward_extra(s, worst, p, other, lora)
    static = parts["process"] + parts["weights"] + parts["AdamW state"] + parts["reference model"]
    parts["peak of training"] = static + max(parts["activations"] + parts["backward's extra"], parts["gradients"])
    if vllm:
        kv_space = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", 1))  # GiB; the vLLM backend's default
        parts["vLLM"] = memory.vllm_share(s, rt.device, total, run.backend.gpu_memory_utilization, kv_space)
        parts["vLLM KV cache"] = max(0.0, parts["vLLM"] - s.params * 2) if gpu else kv_space * GiB
        parts["peak of sampling"] = static + parts["gradients"]
    else:
        size = 4 if not gpu or rt.precision != "bf16" else 2
        generate = memory.sampling(s, min(HF_BATCH, run.prompts_per_round), run.generate.n, max(work.prompts),
                                   run.generate.max_new_tokens, size)
        evaluate = memory.sampling(s, min(HF_BATCH, len(work.eval_prompts)), run.eval.n, max(work.eval_prompts),
                                   run.eval.max_new_tokens, size)
        parts["sampling"] = max(generate, evaluate)
        parts["peak of sampling"] = static + parts["gradients"] + parts["sampling"]
    parts["peak"] = max(parts["peak of training"], parts["peak of sampling"])
    return parts, worst


def needed(parts: dict[str, float], rt: Runtime, run: RunConfig) -> float:
    """Bytes the run needs on the training device at its peak (with vLLM beside it)."""
    vllm = parts.get("vLLM", 0.0)
    if not rt.device.startswith("cuda"):
        return parts["peak"] + vllm  # vLLM's processes share the machine's memory
    own = memory.CUDA_CONTEXT  # this process's CUDA context, outside what torch allocates
    if not vllm:
        return own + parts["peak"]
    asleep = run.backend.sleep is not False
    during_training = parts["peak of training"] + (memory.CUDA_CONTEXT if asleep else vllm)
    at_start = parts["weights"] + parts["reference model"] + vllm  # vLLM takes its share beside the loaded policy
    return own + max(during_training, at_start, parts["peak of sampling"] + vllm)


def plan_round(run: RunConfig, model: str, work: Workload) -> Plan:
    """The plan from shapes and settings alone: nothing is loaded but config.json (see the module docstring)."""
    s = memory.shapes_of(model, run.lora.rank, tuple(run.lora.targets))
    rt = decide(run.train, s.params)
    reference = needs_reference(run.train.objective, check_options(run.train.objective, run.train.options)) or bool(run.train.ref)
    free, total = available(rt)
    parts, worst = memory_parts(run, rt, s, work, reference, total)
    parts["needed"], parts["available"] = needed(parts, rt, run), free
    return Plan(arithmetic(run, rt, work), parts, rt, worst, parts["needed"] <= free)


def suggestion(run: RunConfig, model: str, work: Workload, plan: Plan) -> str:
    """One setting and a value that fits, for a plan that does not."""
    tried: list[tuple[str, RunConfig]] = []
    budget, smallest = plan.runtime.token_budget, run.generate.n * (min(work.prompts) + run.generate.max_new_tokens)
    while budget // 2 >= max(16, smallest):
        budget //= 2
        tried.append((f"train.token_budget = {budget}", _with(run, "train", token_budget=budget)))
    if not plan.runtime.gradient_checkpointing:
        tried.append(("train.gradient_checkpointing = true", _with(run, "train", gradient_checkpointing=True)))
    if not run.lora.rank:
        tried.append(("lora.rank = 16", _with(run, "lora", rank=16)))
    for text, variant in tried:
        other = plan_round(variant, model, work)
        if other.fits:
            return f"{text} fits ({other.memory['needed'] / GiB:.1f} GiB)"
    return "the weights and optimizer state alone do not fit: use a smaller model or a device with more memory"


def _with(run: RunConfig, section: str, **values: Any) -> RunConfig:
    return dataclasses.replace(run, **{section: dataclasses.replace(getattr(run, section), **values)})


def check_fits(run: RunConfig, model: str, prompts: pl.DataFrame | None = None) -> Plan:
    """Refuse, with one line naming a setting and a value that fits, a run predicted not to fit."""
    work = workload(run, model, prompts)
    plan = plan_round(run, model, work)
    if not plan.fits:
        m = plan.memory
        raise CrlError(
            f"a round of this run needs about {m['needed'] / GiB:.1f} GiB at its peak (activations "
            f"{m['activations'] / GiB:.1f} GiB at train.token_budget = {plan.runtime.token_budget}) and "
            f"{m['available'] / GiB:.1f} GiB are free on {plan.runtime.device}; {suggestion(run, model, work, plan)}"
        )
    return plan


def probe(run: RunConfig, model: str, plan: Plan) -> dict[str, float]:
    """Seconds of one optimiser step on the largest micro-batch (after a warm-up step), and of the round from it;
    on a GPU the memory that step allocated at its peak goes into ``plan.memory`` (``measured peak of training``)."""
    from crl.engine.backends.hf import HFBackend
    from crl.engine.trainer import Trainer

    trainer = Trainer(model, _with(run, "train", minibatches=1, epochs=1))
    mb = plan.worst
    rows, meta = synthetic_round(mb, trainer.tokenizer, trainer.fingerprint, run.generate.temperature)
    cuda = plan.runtime.device.startswith("cuda")
    trainer.train_round(rows, meta)  # warm-up; allocates the AdamW state
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train_round(rows, meta)
    if cuda:
        torch.cuda.synchronize()
    step = time.perf_counter() - start
    out = {"micro-batch": step}
    if cuda:
        plan.memory["measured peak of training"] = float(torch.cuda.max_memory_allocated())
    steps = run.train.epochs * run.train.minibatches
    out["training"] = step * steps * plan.arithmetic["micro-batches per step"]
    if not uses_vllm(run):
        sampler = HFBackend(trainer.model, trainer.tokenizer)
        batch = min(HF_BATCH, run.prompts_per_round)
        cfg = dataclasses.replace(run.generate, max_new_tokens=min(PROBE_STEPS, run.generate.max_new_tokens))
        prompt = [list(rows["prompt_ids"][0])] * batch
        start = time.perf_counter()
        sampler.sample(prompt, list(range(batch)), cfg)
        per_token = (time.perf_counter() - start) / cfg.max_new_tokens
        out["sampling"] = per_token * run.generate.max_new_tokens * math.ceil(run.prompts_per_round / batch)
    if "sampling" in out:
        out["round"] = out["training"] + out["sampling"]
    return out


def synthetic_round(mb: MicroBatch, tokenizer: Any, fingerprint: str, temperature: float) -> tuple[pl.DataFrame, Any]:
    """Verified rows shaped like micro-batch ``mb`` (random tokens, no end-of-sequence, half the rows right),
    and their rollout metadata: what the probe and bench/memory.py train on."""
    from crl.config import Sampling
    from crl.data.schemas import RolloutMeta

    g = torch.Generator().manual_seed(0)
    vocab, eos = len(tokenizer), tokenizer.eos_token_id
    rows = []
    for k in range(mb.groups):
        prompt = torch.randint(0, vocab, (mb.prompt,), generator=g).tolist()
        for i in range(mb.n):
            completion = [t if t != eos else (t + 1) % vocab for t in torch.randint(0, vocab, (mb.completion,), generator=g).tolist()]
            rows.append({"round": 0, "prompt_id": f"probe-{k}", "sample": i, "prompt_ids": prompt, "completion_ids": completion,
                         "logprobs": [-math.log(vocab)] * mb.completion, "reward": float(i % 2), "positive": bool(i % 2)})
    meta = RolloutMeta(Sampling(n=mb.n, temperature=temperature or 1.0, max_new_tokens=mb.completion), fingerprint)
    return pl.DataFrame(rows), meta
