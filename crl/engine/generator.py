"""The sampler of a resident run: one backend kept alive across rounds and given the trainer's weights.

- transformers (``backend.name = hf``): the backend samples with the trainer's module itself (``live``), so it
  always has the current weights and nothing is copied (the tiny default's preset uses it).
- vLLM: an engine in a child process, started from the run's starting model. After each round the trainer's
  weights go into the live engine through vLLM's weight-transfer calls (``weight_sync = inplace``): the full
  weights, or with LoRA only the adapter (the engine then serves the base model with that adapter), or a new
  engine is started from a checkpoint of the merged weights (``reload``). On a GPU the engine sleeps while the
  trainer runs, so its memory is free for training, and wakes for the next round (``backend.sleep``; vLLM's
  sleep mode needs CUDA).

``seconds`` holds how long the last round's sleep, wake and weight hand-over (sync) took.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from crl.config import RunConfig
from crl.engine.backends import Backend, WeightUpdate, make_backend
from crl.engine.backends.vllm import scratch_folder
from crl.engine.lora import adapter_weights, is_lora
from crl.engine.trainer import Trainer
from crl.progress import console


class Generator:
    """See the module docstring."""

    def __init__(self, run: RunConfig, trainer: Trainer) -> None:
        self.run, self.trainer = run, trainer
        self.adapter_only = is_lora(trainer.model) and run.backend.weight_sync == "inplace"
        self.backend: Backend = self._start(trainer.model if run.backend.name == "hf" else trainer.base)
        self.seconds = {"sleep": 0.0, "wake": 0.0, "sync": 0.0}
        self.folder: Path | None = None  # the checkpoint a reloaded engine was started from
        if run.backend.sleep and not self.backend.can_sleep:
            console.print("[yellow]backend.sleep: this engine cannot sleep (vLLM's sleep mode needs a CUDA GPU); it stays awake")
        if not self.backend.live and (trainer.rounds_done > 0 or self.adapter_only):
            self.sync()  # the engine starts from the base model: a resumed trainer is further on, an adapter is not in it

    def _start(self, model) -> Backend:
        rank = self.run.lora.rank if self.adapter_only else None
        return make_backend(self.run.backend, model, self.trainer.tokenizer, lora_rank=rank)

    @property
    def sync_seconds(self) -> float:
        return self.seconds["sync"]

    def before_training(self) -> None:
        self.seconds["sleep"] = _timed(self.backend.sleep)

    def after_training(self) -> None:
        self.seconds["wake"] = _timed(self.backend.wake)
        if not self.backend.live:
            self.sync()

    def sync(self) -> None:
        """Hand the trainer's current weights to the engine (and time it)."""
        start = time.perf_counter()
        if self.run.backend.weight_sync == "inplace":
            if self.adapter_only:
                tensors, config = adapter_weights(self.trainer.model)
                self.backend.update_weights(WeightUpdate(tensors, {**config, "base_model_name_or_path": self.trainer.base}))
            else:
                self.backend.update_weights(WeightUpdate(self.trainer.weights()))
        else:  # a new engine from a full checkpoint, kept until the engine after it has started
            weights = self.trainer.weights()
            folder = scratch_folder(sum(t.nbytes for t in weights.values()))
            model = self.trainer.model.get_base_model() if is_lora(self.trainer.model) else self.trainer.model
            model.save_pretrained(folder, state_dict=weights)
            self.trainer.tokenizer.save_pretrained(folder)
            self.backend.close()
            self.backend = self._start(str(folder))
            self._drop_folder()
            self.folder = folder
        self.seconds["sync"] = time.perf_counter() - start

    def _drop_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def close(self) -> None:
        self.backend.close()
        self._drop_folder()


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start
