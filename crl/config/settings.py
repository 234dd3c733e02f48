"""Every setting of crl, defined once: typed sections with their default, their help and their checks.

The sections nest into one ``RunConfig``; each stage command takes the sections it needs. The TOML keys of
``crl iterate --config`` are the field names (``[train] lr = 1e-6``), the command-line flags are derived from
the same fields (``--lr``; crl/cli/options.py), and ``--help`` shows the help written here, so a setting has
one name, one default and one description everywhere.

The defaults are for real models. The shipped tiny model's own values are a preset
(crl/config/presets/tiny-arith.toml) applied only when that model is the one being trained or evaluated.
``None`` is the only value that means "decide for me" (by model size, device or objective, as each field's
help says); every other value is used as given, after the checks below.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from crl.errors import CrlError

TEMPLATES = ("auto", "chat", "plain")
BACKENDS = ("auto", "hf", "vllm")
OLD_LOGPROBS = ("recompute", "rollout")
PRECISIONS = ("fp32", "bf16-mixed", "bf16")
ATTENTION = ("sdpa", "flex_attention", "eager")
WEIGHT_SYNC = ("inplace", "reload")
TRACKERS = ("none", "tensorboard", "wandb")
BOXED_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
REPLAY_TIS_CAP = 2.0  # the truncation of importance ratios on replayed rounds when train.tis_cap is unset (a common value)
MIN_TEMPERATURE = 1e-2  # far below any sampling temperature in use; near 1e-38, logits / T leave float range (NaN log-probs)


def setting(default: Any, help: str, **checks: Any) -> Any:
    """A field with its default, its help text and its checks: ``ge``/``gt``/``le`` bounds, ``choices``,
    ``flags`` (the command-line names, when not ``--field-name``), ``path`` (its value may name a file or a
    folder, which a run's config.toml keeps relative to the run folder)."""
    meta = {"help": help, **checks}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Sampling:
    """How completions are sampled (the rollouts of a round, or the samples of an evaluation)."""

    n: int = setting(8, "Samples per prompt (K, the group size).", ge=1, flags=("--n", "--k", "-k"))
    temperature: float = setting(1.0, "Sampling temperature; 0 is greedy (then n must be 1).", ge=0.0, le=100.0)
    top_p: float = setting(1.0, "Nucleus sampling: sample from the most likely tokens holding this much probability.", gt=0.0, le=1.0)
    top_k: int | None = setting(None, "Sample from the k most likely tokens only (None: all).", ge=1)
    max_new_tokens: int = setting(1024, "Generation limit per completion, in tokens.", ge=1)
    stop: tuple[str, ...] = setting((), "Stop string (repeatable): the completion ends before it.")


@dataclass(frozen=True)
class Generate(Sampling):
    """The rollouts of a training round."""

    dynamic_sampling: bool | None = setting(
        None, "Draw more prompts until the round holds prompts_per_round groups with both a right and a wrong "
        "answer, then keep exactly that many (DAPO); None: on for objectives that call for it (dapo)."
    )
    max_attempts: int = setting(4, "Most prompt draws per round with dynamic sampling.", ge=1)


@dataclass(frozen=True)
class Eval(Sampling):
    """Held-out evaluation: avg@n, pass@n, maj@n per task (sampling as DisCO and ConSPO report it)."""

    n: int = setting(4, "Samples per problem (the k of avg@k and pass@k).", ge=1, flags=("--n", "--k", "-k"))
    temperature: float = setting(0.6, "Sampling temperature; 0 is greedy (then n must be 1).", ge=0.0, le=100.0)
    top_p: float = setting(0.95, "Nucleus sampling mass.", gt=0.0, le=1.0)
    tasks: tuple[str, ...] = setting(("math500",), "Held-out prompt set (repeatable; files or names, see `crl data list`).", flags=("--eval-task",), path=True)
    every: int = setting(10, "Evaluate every this many rounds (and after the first and the last).", ge=1)
    limit: int | None = setting(None, "Use only the first N problems of each task (None: all).", ge=1)


@dataclass(frozen=True)
class Verify:
    """How completions are checked."""

    verifier: dict[str, float] = setting(
        {"math": 1.0}, "Verifier NAME or NAME=WEIGHT (repeatable): math, math_boxed, gsm8k, exact, choice, or "
        "package.module:function; the reward is the weighted sum, each verifier's reward is kept too.",
    )
    workers: int | None = setting(None, "Verifier worker processes (None: one per core).", ge=1)
    timeout: float = setting(5.0, "Wall-clock limit per item, in seconds.", gt=0.0, le=3600.0)


@dataclass(frozen=True)
class Train:
    """One round of updates: the objective, the optimiser and how the model runs."""

    objective: str = setting("dapo", "Training objective (see `crl train --list-objectives`).", flags=("--objective",))
    options: dict[str, Any] = setting({}, "Objective option NAME=VALUE (repeatable).", flags=("--option",))
    lr: float = setting(1e-6, "AdamW learning rate (constant).", gt=0.0, le=1.0)
    weight_decay: float = setting(0.0, "AdamW weight decay.", ge=0.0, le=1.0)
    max_grad_norm: float = setting(1.0, "Gradient clipping norm.", gt=0.0)
    epochs: int = setting(1, "Passes over the round's groups.", ge=1)
    minibatches: int = setting(1, "Optimiser steps per epoch.", ge=1)
    replay: int = setting(
        1, "crl iterate: each round trains on its own groups and the mixed groups of the replay - 1 rounds before "
        "it, read back from their verified/ folders (1: this round's only). Clipped objectives weight the tokens by "
        f"truncated importance ratios to the sampler (train.tis_cap, {REPLAY_TIS_CAP:g} when unset); contrastive ones need no "
        "correction.", ge=1,
    )
    token_budget: int | None = setting(None, "Tokens per packed micro-batch (None: by device and model size).", ge=16)
    old_logprobs: str = setting("recompute", "Behaviour log-probs: recompute (with the trainer's weights) or rollout (the sampler's).", choices=OLD_LOGPROBS)
    tis_cap: float | None = setting(
        None, "Truncated importance sampling: weight each token by min(pi_trainer / pi_sampler, cap) to correct "
        f"the sampler/trainer mismatch (None: off, or {REPLAY_TIS_CAP:g} with train.replay > 1).", gt=1.0,
    )
    ref: str | None = setting(None, "Frozen reference model (None: the run's starting model, for the objectives that need one).", path=True)
    fresh_optimizer: bool = setting(False, "Start a new AdamW state instead of the checkpoint's optimizer.pt (a checkpoint without one, or with a damaged one, is refused otherwise).")
    gradient_checkpointing: bool | None = setting(None, "Recompute activations in backward (None: on for 1B+ parameters on a GPU).")
    precision: str | None = setting(None, "fp32, bf16-mixed (fp32 master weights, bf16 compute) or bf16 (None: bf16-mixed on a GPU, fp32 on CPU).", choices=PRECISIONS)
    attn: str | None = setting(None, "Attention kernel: sdpa, flex_attention (block-sparse packed rows) or eager (None: sdpa).", choices=ATTENTION)
    compile: bool = setting(False, "torch.compile each decoder layer (slow first step; pays on long GPU rounds).")
    device: str | None = setting(None, "cpu, cuda or cuda:N (None: cuda when available).")


@dataclass(frozen=True)
class Lora:
    """LoRA adapters through PEFT: only the adapters are trained and saved (rank None: full fine-tuning)."""

    rank: int | None = setting(None, "Adapter rank (None: no LoRA, train every weight).", ge=1, flags=("--lora-rank",))
    alpha: float = setting(32.0, "Adapter scale numerator (the update is alpha / rank * B A).", gt=0.0, flags=("--lora-alpha",))
    dropout: float = setting(0.0, "Dropout on the adapter input.", ge=0.0, lt=1.0, flags=("--lora-dropout",))
    targets: tuple[str, ...] = setting(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "Module names that get adapters (repeatable).", flags=("--lora-target",),
    )


@dataclass(frozen=True)
class Backend:
    """The generation engine: vLLM where it is installed, else transformers."""

    name: str = setting("auto", "auto (vLLM when importable), hf (transformers) or vllm.", choices=BACKENDS, flags=("--backend",))
    weight_sync: str = setting("inplace", "How iterate hands new weights to vLLM: inplace (into the live engine) or reload (a new engine).", choices=WEIGHT_SYNC)
    gpu_memory_utilization: float = setting(0.5, "vLLM's share of GPU memory (the trainer needs the rest).", gt=0.0, le=1.0)
    max_model_len: int | None = setting(None, "vLLM's longest sequence (None: the model's).", ge=16)
    dtype: str | None = setting(None, "vLLM's weight dtype (None: float32 on CPU, the model's on a GPU).")
    enforce_eager: bool | None = setting(None, "Run vLLM without CUDA graphs (None: eager on CPU, graphs on a GPU).")
    tensor_parallel_size: int = setting(1, "GPUs per vLLM engine.", ge=1)
    sleep: bool | None = setting(None, "Put vLLM to sleep during training to free its GPU memory (None: on with a GPU).")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. ``crl iterate`` uses all of it; each stage command uses its sections."""

    model: str = setting("tiny-arith", "Starting model: a folder, a model name (`crl model list`) or a hub id.", flags=("--model", "-m"), path=True)
    prompts: str = setting("math_train", "Training prompt set (file or name, see `crl data list`).", path=True)
    template: str = setting("auto", "auto (the chat template when the tokenizer has one), chat, or plain.", choices=TEMPLATES)
    instruction: str = setting(BOXED_INSTRUCTION, "Text appended to every problem.")
    rounds: int = setting(100, "Rounds of generate, verify and train (also the length of ConSPO's margin curriculum).", ge=1)
    prompts_per_round: int = setting(64, "Prompts per round (each sampled n times).", ge=1)
    save_every: int = setting(10, "Save weights and optimizer state every this many rounds (and after the last).", ge=1)
    keep_last: int = setting(2, "Saved states to keep (older ones are deleted).", ge=1)
    seed: int = setting(0, "Seed for prompt order, sampling and training.", ge=0, lt=2**32)  # seeds derived from it stay in 64 bits
    log_to: str = setting("none", "Mirror metrics to none, tensorboard or wandb (offline unless WANDB_API_KEY is set).", choices=TRACKERS, flags=("--log-to",))
    generate: Generate = field(default_factory=Generate)
    verify: Verify = field(default_factory=Verify)
    train: Train = field(default_factory=Train)
    lora: Lora = field(default_factory=Lora)
    eval: Eval = field(default_factory=Eval)
    backend: Backend = field(default_factory=Backend)


def sampling_of(section: Sampling) -> Sampling:
    """Only the sampling settings of a section (``Generate`` and ``Eval`` add fields of their own)."""
    return Sampling(**{f.name: getattr(section, f.name) for f in dataclasses.fields(Sampling)})


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(f.default_factory)}


def check_value(where: str, f: dataclasses.Field, value: Any) -> None:
    """Refuse a value outside its field's declared range or choices (None passes: it means "decide")."""
    if value is None:
        return
    meta = f.metadata
    if isinstance(value, float) and not math.isfinite(value):
        raise CrlError(f"{where} = {value}: must be a finite number")
    for key, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                          ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        if meta.get(key) is not None and not ok(value, meta[key]):
            raise CrlError(f"{where} = {value}: must be {word} {meta[key]}")
    if meta.get("choices") and value not in meta["choices"]:
        raise CrlError(f"{where} = {value!r}: choose one of {', '.join(meta['choices'])}")


def check_config(cfg: RunConfig) -> None:
    """Checks between settings, run before any work starts."""
    for section in (cfg.generate, cfg.eval):
        name = "generate" if section is cfg.generate else "eval"
        if section.temperature == 0 and section.n > 1:
            raise CrlError(f"{name}.temperature = 0 is greedy decoding: all {section.n} samples would be the same; set n = 1 or a temperature above 0")
        if 0 < section.temperature < MIN_TEMPERATURE:
            raise CrlError(f"{name}.temperature = {section.temperature}: use 0 for greedy decoding or at least {MIN_TEMPERATURE}")
    if not cfg.eval.tasks:
        raise CrlError("eval.tasks: name at least one held-out prompt set")
    for name, weight in cfg.verify.verifier.items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
            raise CrlError(f"verify.verifier {name} = {weight!r}: a weight must be a finite number")
    if cfg.verify.verifier and all(w <= 0 for w in cfg.verify.verifier.values()):
        raise CrlError("verify.verifier: at least one verifier needs a positive weight")
    if not cfg.verify.verifier:
        raise CrlError("verify.verifier: name at least one verifier")
    if cfg.train.device is not None:
        _check_device(cfg.train.device)
    if cfg.train.attn == "flex_attention":
        _check_flex(cfg.train.device)


def _check_flex(device: str | None) -> None:
    import torch

    if (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cpu":
        raise CrlError("train.attn = 'flex_attention': needs a CUDA GPU (flex attention has no backward pass on a CPU); use sdpa")


def _check_device(device: str) -> None:
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise CrlError(f"train.device = {device!r}: expected cpu, cuda or cuda:N")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CrlError(f"train.device = {device!r}: no CUDA GPU is available here (use cpu)")
        if index and int(index) >= torch.cuda.device_count():
            raise CrlError(f"train.device = {device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
