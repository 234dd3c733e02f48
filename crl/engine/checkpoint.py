"""Loading a model and its tokenizer from a folder or a name, and the names of the files a checkpoint
folder holds beside the model (crl/engine/trainer.py writes them)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from crl.errors import CrlError
from crl.io import STATE_FILE

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
