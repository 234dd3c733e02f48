"""Checkpoint folders: loading a model and its tokenizer from a folder or a name, a trainer's state saved and
continued, and reading those files back with one line for a damaged one.

A checkpoint folder holds the model (or, with LoRA, the adapters) and tokenizer, which transformers and vLLM
load, ``optimizer.pt`` (the full AdamW state keyed by parameter name, which a run with any number of processes
can load), ``trainer_state.json`` (steps and rounds done, the run's starting model) and, from ``crl train``,
``train_log.parquet``. A crash or a partial copy leaves files cut short: each is checked where it is read (the
weights' headers, the JSON, the optimizer archive's index), and the line names the file and what to do. A
checkpoint without its optimizer state is refused unless the user asks for a new one (``--fresh-optimizer``),
since continuing with a fresh AdamW state changes what the next rounds learn.
"""

from __future__ import annotations

import json
import zipfile
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
from crl.data.models import weights_problem
from crl.engine import distributed
from crl.engine.lora import is_lora, merged_state_dict
from crl.errors import CrlError, first_line
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
        raise CrlError(f"--model {model}: cannot load a tokenizer ({first_line(e)})") from None


def load_model(model: str | Path, device: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    problem = weights_problem(Path(model))
    if problem is not None:
        raise CrlError(f"--model {model}: {problem}")
    try:
        return AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype).to(device)
    except (OSError, ValueError) as e:
        raise CrlError(f"--model {model}: cannot load a causal LM ({first_line(e)})") from None


def model_positions(model: str | Path) -> int | None:
    """How many positions (prompt plus completion tokens) the model was built for, if its config says."""
    from transformers import AutoConfig

    try:
        return getattr(AutoConfig.from_pretrained(str(model)), "max_position_embeddings", None)
    except (OSError, ValueError):
        return None  # load_model reports an unloadable model with its own line


def trainer_state(folder: str | Path) -> dict[str, Any]:
    """The steps and rounds done and the starting model recorded in a checkpoint ({} for a plain model folder)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        int(state.get("step", 0)), int(state.get("round", 0))
    except (ValueError, TypeError, AttributeError) as e:  # bad JSON or UTF-8, not an object, counts that are not numbers
        raise CrlError(f"{path}: damaged ({first_line(e)}); restore it from a copy, or remove it to train these "
                       "weights as a new start") from None
    return state


def optimizer_file(folder: str | Path, fresh: bool) -> Path | None:
    """The optimizer state a checkpoint continues, or None for a new one (``fresh``, or a plain model folder).
    A checkpoint without it, or with one cut short, is refused."""
    folder = Path(folder)
    path = folder / OPTIMIZER_FILE
    if fresh:
        return None
    if not path.is_file():
        if (folder / STATE_FILE).is_file():
            raise CrlError(f"{folder}: a crl checkpoint without {OPTIMIZER_FILE} (its AdamW state); pass "
                           "--fresh-optimizer to continue with a new one")
        return None
    try:
        zipfile.ZipFile(path).close()  # torch.save writes a zip archive, whose index is at the end of the file
    except (zipfile.BadZipFile, OSError) as e:
        raise _damaged_optimizer(path, e) from None
    return path


def _damaged_optimizer(path: Path, e: BaseException) -> CrlError:
    return CrlError(f"{path}: damaged ({first_line(e)}); restore it from a copy, or pass --fresh-optimizer to "
                    "continue with a new AdamW state")


def load_optimizer_state(folder: str | Path, fresh: bool) -> dict[str, Any] | None:
    """The AdamW state saved in a checkpoint (see ``optimizer_file``), on the CPU."""
    path = optimizer_file(folder, fresh)
    if path is None:
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch reports a damaged archive as RuntimeError, EOFError or an unpickling error
        raise _damaged_optimizer(path, e) from None


def check_saved_state(folder: Path, fresh_optimizer: bool) -> None:
    """Refuse, before any work, a checkpoint whose weights, trainer state or optimizer state is damaged or
    missing, with the first problem found (reading headers and indexes only)."""
    problem = weights_problem(folder)
    if problem is not None:
        raise CrlError(f"{folder}: {problem}")
    if not (folder / STATE_FILE).is_file():
        raise CrlError(f"{folder}: {STATE_FILE} is missing; restore it from a copy")
    trainer_state(folder)
    optimizer_file(folder, fresh_optimizer)


def make_optimizer(model: torch.nn.Module, run: RunConfig, folder: str) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, continuing the state saved in ``folder`` when there is one (the
    previous round's; a checkpoint without it is refused unless ``train.fresh_optimizer``), loaded into this
    run's shards; the learning rate and weight decay are this run's."""
    train = run.train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, fused=str(next(model.parameters()).device).startswith("cuda"))
    state = load_optimizer_state(folder, train.fresh_optimizer)
    if state is not None:
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
        with atomic_path(out, kind="checkpoint") as tmp:
            model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
            if log is not None:
                log.write_parquet(tmp / TRAIN_LOG)
    distributed.barrier()
