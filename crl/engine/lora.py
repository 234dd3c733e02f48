"""LoRA through PEFT: adapters on the chosen linear layers, the rest frozen.

Only the adapters are trained, so the optimizer state and the checkpoints hold adapter weights only (PEFT's
``adapter_config.json`` and ``adapter_model.safetensors``, which name the base model). The reference model
of a LoRA run costs nothing: it is the same module with the adapters switched off. A sampler in another
process (vLLM) gets the adapter alone (``adapter_weights``), or, when it is restarted from a checkpoint, merged
weights, W + (alpha / rank) B A, computed without touching the trained module.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import torch

from crl.config import Lora
from crl.errors import CrlError

ADAPTER_CONFIG = "adapter_config.json"


def adapter_base(path: str | Path) -> str | None:
    """The base model a LoRA checkpoint folder was trained from, or None for a full model."""
    config = Path(path) / ADAPTER_CONFIG
    return json.loads(config.read_text())["base_model_name_or_path"] if config.is_file() else None


def _peft():
    try:
        import peft
    except ImportError:
        raise CrlError("LoRA needs PEFT: pip install 'crl[lora]'") from None
    return peft


def add_adapters(model: torch.nn.Module, lora: Lora, checkpoint: str | Path | None = None) -> torch.nn.Module:
    """``model`` with trainable adapters: new ones from the settings, or a LoRA checkpoint's to continue."""
    peft = _peft()
    if checkpoint is not None:
        return peft.PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in lora.targets if t not in names]
    if missing:
        raise CrlError(f"lora.targets: the model has no module named {', '.join(missing)}")
    narrowest = min(min(m.in_features, m.out_features) for name, m in model.named_modules()
                    if name.rsplit(".", 1)[-1] in lora.targets and hasattr(m, "in_features"))
    if lora.rank > narrowest:
        raise CrlError(f"lora.rank = {lora.rank}: above the narrowest adapted layer ({narrowest}); a larger rank adds nothing")
    config = peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.targets), task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def without_adapters(model: torch.nn.Module) -> Iterator[None]:
    """The base model (the reference of a LoRA run) for the duration of a block."""
    with model.disable_adapter():
        yield


@torch.no_grad()
def adapter_weights(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """The trained adapter alone: its tensors keyed as PEFT saves them, and its ``adapter_config.json`` as a dict."""
    peft = _peft()
    tensors = {k: v.detach() for k, v in peft.get_peft_model_state_dict(model).items()}
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in model.peft_config["default"].to_dict().items()}
    return tensors, config


@torch.no_grad()
def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's weights with the adapters folded in, keyed as the base model saves them."""
    model.merge_adapter()
    try:
        state = model.get_base_model().state_dict()
        return {k.replace(".base_layer", ""): v.detach().clone() for k, v in state.items() if "lora_" not in k}
    finally:
        model.unmerge_adapter()
