"""Generation backends behind one interface (``base.Backend``), chosen by the ``[backend]`` settings."""

from __future__ import annotations

import importlib.util

import torch

from crl import config
from crl.engine.backends.base import Backend, Progress, Sample, WeightUpdate, prompt_seed
from crl.errors import CrlError
from crl.progress import console


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def make_backend(settings: config.Backend, model: str | torch.nn.Module, tokenizer: object = None,
                 lora_rank: int | None = None) -> Backend:
    """``hf`` (transformers), ``vllm``, or ``auto``: vLLM where it is importable, else transformers. A live
    module (the trainer's) can only be sampled by transformers, or by vLLM loaded from ``model``'s folder;
    ``lora_rank``: vLLM serves a LoRA adapter of that rank over ``model`` (sent later by ``update_weights``)."""
    if settings.name == "vllm" or (settings.name == "auto" and vllm_available() and isinstance(model, str)):
        from crl.engine.backends.vllm import VLLMBackend

        try:
            return VLLMBackend(model, settings, lora_rank)
        except RuntimeError as e:
            if settings.name == "vllm":
                raise CrlError(f"--backend vllm: the engine did not start ({str(e).splitlines()[0]})") from None
            console.print(f"[yellow]vLLM is installed but did not start ({str(e).splitlines()[0]}); using transformers")
    from crl.engine.backends.hf import HFBackend

    return HFBackend(model, tokenizer)


__all__ = ["Backend", "Progress", "Sample", "WeightUpdate", "make_backend", "prompt_seed", "vllm_available"]
