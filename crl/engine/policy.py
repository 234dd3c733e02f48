"""The policy as the trainer runs it: device, precision, attention kernel, activation recomputation, token
budget, LoRA adapters and FSDP2 sharding, each decided once from the ``[train]`` and ``[lora]`` settings.

``None`` settings are decided here by device and model size (``memory_defaults``). Throughput figures behind
these choices are in bench/README.md.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy

from crl.config import Lora, Train
from crl.engine import distributed
from crl.engine.checkpoint import default_device, load_model
from crl.engine.logprobs import packed_logprobs
from crl.engine.memory import return_freed_memory


@dataclass(frozen=True)
class Runtime:
    """How the model runs, every "decide for me" setting decided."""

    device: str
    precision: str  # fp32 | bf16-mixed | bf16
    token_budget: int
    gradient_checkpointing: bool
    packed: bool  # micro-batch layout: packed rows (flex_attention) or right-padded rows (crl/engine/logprobs.py)

    @property
    def share_prompts(self) -> bool:
        """Right-padded rows run each distinct prompt once, except under activation recomputation, which
        switches transformers' caches off (crl/engine/logprobs.py)."""
        return not self.packed and not self.gradient_checkpointing


def memory_defaults(n_params: int, device: str) -> tuple[int, bool]:
    """The micro-batch token budget and whether to recompute activations, by model size.

    From H100 80 GB reference measurements (Qwen2.5-1.5B shape, bf16): a packed 16k-token row needs 29 GiB with
    gradient checkpointing and runs out of memory without it, and chunked log-probs keep the output layer
    small, so a 1.5B model gets 16k tokens with checkpointing. Below 1B the saved activations of a 16k row
    (about 1 MB a token for the 0.5B shape, an estimate) fit beside the weights and AdamW state, and
    recomputing them would only cost time (about a third more compute). Above 4B the budget halves (an
    extrapolation, not measured). On a CPU memory is rarely the limit: 8k tokens (rows x longest), no recompute.
    """
    if not device.startswith("cuda"):
        return 8192, False
    if n_params < 1e9:
        return 16384, False
    return (16384, True) if n_params < 4e9 else (8192, True)


def decide(train: Train, n_params: int) -> Runtime:
    device = distributed.local_device(train.device or default_device())
    budget, recompute = memory_defaults(n_params, device)
    return Runtime(
        device=device,
        precision=train.precision or ("bf16-mixed" if device.startswith("cuda") else "fp32"),
        token_budget=train.token_budget or budget,
        gradient_checkpointing=recompute if train.gradient_checkpointing is None else train.gradient_checkpointing,
        packed=train.attn == "flex_attention",
    )


def autocast(rt: Runtime) -> contextlib.AbstractContextManager:
    """bf16 compute over fp32 master weights with bf16-mixed; nothing to do for fp32 and bf16."""
    if rt.precision == "bf16-mixed":
        return torch.autocast(rt.device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def mixed_precision(rt: Runtime) -> MixedPrecisionPolicy | None:
    """With N processes and bf16-mixed, FSDP2 gathers the weights in bf16 and reduces gradients in fp32."""
    if rt.precision != "bf16-mixed":
        return None
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer in backward (non-reentrant: the kind FSDP2 and torch.compile work with)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_policy(path: str | Path, train: Train, lora: Lora) -> tuple[torch.nn.Module, Runtime]:
    """The model to train, placed, sharded and (with ``lora.rank``) wrapped in LoRA adapters, and its runtime."""
    from crl.engine.lora import add_adapters, adapter_base

    device = distributed.local_device(train.device or default_device())
    if device == "cpu":
        return_freed_memory()  # resident memory then follows the live tensors (crl/engine/memory.py)
    dtype = torch.bfloat16 if train.precision == "bf16" else torch.float32
    base = adapter_base(path)
    model = load_model(base or path, device, dtype)
    if train.attn:
        model.set_attn_implementation(train.attn)
    rt = decide(train, sum(p.numel() for p in model.parameters()))
    if lora.rank or base:
        model = add_adapters(model, lora, path if base else None)
    if rt.gradient_checkpointing:
        enable_checkpointing(model)
    if train.compile:
        for layer in model.get_decoder().layers:
            layer.compile()
    distributed.shard_model(model, {"packed_logprobs": packed_logprobs}, mixed_precision(rt))
    return model, rt


def load_frozen(path: str | Path, rt: Runtime, attn: str | None) -> torch.nn.Module:
    """A reference model: the policy's precision and kernel, no gradient, sharded like it."""
    model = load_model(path, rt.device, torch.bfloat16 if rt.precision == "bf16" else torch.float32).eval()
    if attn:
        model.set_attn_implementation(attn)
    model.requires_grad_(False)
    distributed.shard_model(model, {"packed_logprobs": packed_logprobs}, mixed_precision(rt))
    return model
