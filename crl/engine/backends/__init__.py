"""Generation backends behind one interface (``base.Backend``), chosen by name."""

from __future__ import annotations

import importlib.util

from crl.errors import CrlError
from crl.progress import console
from crl.engine.backends.base import Backend, Sample, SamplingConfig

BACKENDS = ("auto", "hf", "vllm")


def make_backend(name: str, model: str, **options: object) -> Backend:
    """``hf`` (transformers), ``vllm``, or ``auto``: vLLM where it is importable, else transformers."""
    if name not in BACKENDS:
        raise CrlError(f"--backend {name}: choose one of {', '.join(BACKENDS)}")
    if name in ("auto", "vllm") and (name == "vllm" or importlib.util.find_spec("vllm")):
        from crl.engine.backends.vllm import VLLMBackend

        try:
            return VLLMBackend(model, **{k: v for k, v in options.items() if k in VLLMBackend.OPTIONS})
        except RuntimeError as e:
            if name == "vllm":
                raise CrlError(f"--backend vllm: the engine did not start ({str(e).splitlines()[0]})") from None
            console.print(f"[yellow]vLLM is installed but did not start ({str(e).splitlines()[0]}); using transformers")
    from crl.engine.backends.hf import HFBackend

    return HFBackend(model, **{k: v for k, v in options.items() if k in ("device", "batch_size")})


__all__ = ["Backend", "Sample", "SamplingConfig", "make_backend", "BACKENDS"]
