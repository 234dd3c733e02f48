"""Checkpoint folders: loading a model and its tokenizer from a folder or a name, and a trainer's state saved
and continued.

A checkpoint folder holds the model (or, with LoRA, the adapters) and tokenizer, which transformers and vLLM
load, ``optimizer.pt`` (the full AdamW state keyed by parameter name, which a run with any number of processes
can load), ``trainer_state.json`` (steps and rounds done, the run's starting model) and, from ``crl train``,
``train_log.parquet``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from crl.config import RunConfig
from crl.engine import distributed
from crl.engine.lora import is_lora, merged_state_dict
from crl.errors import CrlError
from crl.io import STATE_FILE, atomic_path

hf_logging.disable_progress_bar()  # crl shows its own progress; per-file loading bars are noise in logs

OPTIMIZER_FILE = "optimizer.pt"
TRAIN_LOG = "train_log.parquet"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(model: str | Path) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(str(model))
    except (OSError, ValueError) as e:
        raise CrlError(f"--model {model}: cannot load a tokenizer ({str(e).splitlines()[0]})") from None


def load_model(model: str | Path, device: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    try:
        return AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype).to(device)
    except (OSError, ValueError) as e:
        raise CrlError(f"--model {model}: cannot load a causal LM ({str(e).splitlines()[0]})") from None


def model_positions(model: str | Path) -> int | None:
    """How many positions (prompt plus completion tokens) the model was built for, if its config says."""
    from transformers import AutoConfig

    try:
        return getattr(AutoConfig.from_pretrained(str(model)), "max_position_embeddings", None)
    except (OSError, ValueError):
        return None  # load_model reports an unloadable model with its own line


def trainer_state(folder: str | Path) -> dict[str, Any]:
    """The counters a checkpoint folder's trainer_state.json holds (none for a model that was never trained)."""
    path = Path(folder) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def make_optimizer(model: torch.nn.Module, run: RunConfig, folder: str) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, continuing the state saved in ``folder`` when there is one (the
    previous round's), loaded into this run's shards; the learning rate and weight decay are this run's."""
    train = run.train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, fused=str(next(model.parameters()).device).startswith("cuda"))
    path = Path(folder) / OPTIMIZER_FILE
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        except (ValueError, KeyError, IndexError, RuntimeError, AssertionError):
            raise CrlError(f"--model {folder}: optimizer.pt does not match the model's parameters") from None
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = train.lr, train.weight_decay
    return optimizer


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full weights as the base architecture names them (LoRA adapters folded in), for a sampler."""
    if is_lora(model):
        return merged_state_dict(model)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=distributed.world() > 1))
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return {k: v for k, v in full.items() if k in names}  # tied weights once, as transformers saves them


def save_checkpoint(
    out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, tokenizer: Any, state: dict[str, Any],
    log: pl.DataFrame | None = None,
) -> None:
    """A checkpoint folder, whole or not at all: every rank takes part in gathering the full weights and
    optimizer state (on CPU), the first one writes them. Weights that are not finite are never written."""
    weights = None if is_lora(model) else full_weights(model)
    if weights is not None and not all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
        raise CrlError("the weights are not finite after training; nothing was saved (lower the learning rate)")
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if distributed.is_main():
        with atomic_path(out) as tmp:
            model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
            if log is not None:
                log.write_parquet(tmp / TRAIN_LOG)
    distributed.barrier()
