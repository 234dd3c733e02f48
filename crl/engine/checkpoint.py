"""Loading a model and its tokenizer from a folder or a name, and the names of the files a checkpoint
folder holds beside the model (crl/engine/trainer.py writes them)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from crl.errors import CrlError

hf_logging.disable_progress_bar()  # crl shows its own progress; per-file loading bars are noise in logs

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
TRAIN_LOG = "train_log.parquet"


def resolve_model(spec: str, flag: str = "--model") -> str:
    """A model folder, a hub name, or the name of a model shipped in data/ (``tiny-arith``). A path that is
    plainly local (``./m``, ``../m``, ``/m``, ``~/m``) and missing is refused here, not sent to the hub."""
    from crl.default import SHIPPED_DIR

    if not Path(spec).exists() and (SHIPPED_DIR / spec).is_dir():
        return str(SHIPPED_DIR / spec)
    if spec.startswith((".", "/", "~")) and not Path(spec).expanduser().exists():
        raise CrlError(f"{flag} {spec}: no such folder")
    return str(Path(spec).expanduser()) if spec.startswith("~") else spec


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
