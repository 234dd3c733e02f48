"""The sampler of a resident run: one backend kept alive across rounds and given the trainer's weights.

- transformers (``backend.name = hf``): the backend samples with the trainer's own module, so it always has the
  current weights and nothing is copied (the tiny default's preset uses it).
- vLLM: an engine in a child process, started from the run's starting model. After each round the trainer's
  weights (LoRA adapters folded in) are written as one safetensors file to a temporary folder in memory
  (/dev/shm where it exists) and loaded into the live engine (``weight_sync = inplace``), or a new engine is
  started from them (``reload``). On a GPU the engine sleeps while the trainer runs, so its memory is free for
  training, and wakes for the next round (``backend.sleep``; vLLM's sleep mode needs CUDA).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from safetensors.torch import save_file

from crl.config import RunConfig
from crl.engine.backends import Backend, make_backend
from crl.engine.trainer import Trainer
from crl.progress import console


def _scratch() -> Path:
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="crl-weights-", dir=shm if shm.is_dir() else None))


class Generator:
    """See the module docstring; ``sync_seconds`` holds the time the last weight hand-over took."""

    def __init__(self, run: RunConfig, trainer: Trainer) -> None:
        self.run, self.trainer = run, trainer
        self.backend: Backend = make_backend(run.backend, trainer.model if run.backend.name == "hf" else trainer.base, trainer.tokenizer)
        self.live = not hasattr(self.backend, "update_weights")  # samples with the trainer's module itself
        self.sync_seconds = 0.0
        self.folder: Path | None = None  # the checkpoint a reloaded engine was started from
        if run.backend.sleep and not getattr(self.backend, "can_sleep", False):
            console.print("[yellow]backend.sleep: this engine cannot sleep (vLLM's sleep mode needs a CUDA GPU); it stays awake")
        if not self.live and trainer.rounds_done > 0:
            self.sync()  # a resumed run: the engine starts from the base model, the trainer is further on

    def before_training(self) -> None:
        if not self.live:
            self.backend.sleep()

    def after_training(self) -> None:
        if not self.live:
            self.backend.wake()
            self.sync()

    def sync(self) -> None:
        """Hand the trainer's current weights to the engine."""
        start = time.perf_counter()
        folder = _scratch()
        if self.run.backend.weight_sync == "inplace":
            try:
                save_file({k: v.contiguous() for k, v in self.trainer.weights().items()}, folder / "model.safetensors")
                self.backend.update_weights(folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        else:  # a new engine from a full checkpoint, kept until the engine after it has started
            self.trainer.model.save_pretrained(folder, state_dict=self.trainer.weights())
            self.trainer.tokenizer.save_pretrained(folder)
            self.backend.close()
            self.backend = make_backend(self.run.backend, str(folder))
            self._drop_folder()
            self.folder = folder
        self.sync_seconds = time.perf_counter() - start

    def _drop_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def close(self) -> None:
        self.backend.close()
        self._drop_folder()
