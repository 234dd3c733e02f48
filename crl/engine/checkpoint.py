"""Loading a policy and its tokenizer, saving checkpoints that transformers and vLLM load, and the
tokenizer fingerprint that ties a rollouts file to the tokenizer that made its token ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from crl.errors import CrlError
from crl.io import atomic_path

hf_logging.disable_progress_bar()  # crl shows its own progress; per-file loading bars are noise in logs

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
TRAIN_LOG = "train_log.parquet"


def resolve_model(spec: str) -> str:
    """A model folder, a hub name, or the name of a model shipped in data/ (``tiny-arith``)."""
    from crl.default import SHIPPED_DIR

    return str(SHIPPED_DIR / spec) if not Path(spec).exists() and (SHIPPED_DIR / spec).is_dir() else spec


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


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short hash of the vocabulary: token ids mean the same thing exactly when it matches."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha1(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def save_checkpoint(
    out: Path, model: torch.nn.Module, weights: dict, tokenizer: Any, optimizer_state: dict, state: dict,
    train_log: pl.DataFrame,
) -> None:
    """Write a Hugging Face checkpoint folder (``weights``: a full state dict) with the optimizer state and
    the training log, whole or not at all."""
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        train_log.write_parquet(tmp / TRAIN_LOG)


def load_optimizer_state(model_dir: str | Path) -> dict | None:
    path = Path(model_dir) / OPTIMIZER_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def load_trainer_state(model_dir: str | Path) -> dict:
    path = Path(model_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
