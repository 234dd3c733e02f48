"""What crl adds inside vLLM's own processes: a weight-transfer engine that reads the trainer's weights from a file.

vLLM 0.32 gives RL trainers weight-transfer calls (``start_weight_update``, ``update_weights``,
``finish_weight_update``) over pluggable transfer engines; the ones it ships move tensors over NCCL or CUDA IPC,
which need a GPU. crl's engine (``TRANSFER``) works on any device: ``update_weights`` names a safetensors file
(written by crl/engine/backends/vllm.py, in /dev/shm when there is room), and each worker loads it with vLLM's
layerwise reload, the path vLLM's own engines take, so the weights are processed as at start-up (fused
projections, CPU weight packing). One more step on a CPU: a tied output layer shares the embedding's weight but
has its own packed copy, which no loaded tensor reaches, so the embeddings are packed again after each update
(without it the old ``lm_head`` keeps producing the logits).

Importing this module registers the engine. vLLM imports it in every worker process because the engine is
started with ``worker_extension_cls=EXTENSION`` (an empty mix-in: its only job is that import).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from safetensors import safe_open
from vllm.distributed.weight_transfer.base import WeightTransferEngine, WeightTransferInitInfo, WeightTransferUpdateInfo
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

TRANSFER = "crl_file"
EXTENSION = f"{__name__}.Extension"


class Extension:
    """Mixed into vLLM's worker class; see the module docstring."""


@dataclass
class FileInit(WeightTransferInitInfo):
    """Nothing to set up: no process group, no handles."""


@dataclass
class FileUpdate(WeightTransferUpdateInfo):
    path: str  # a safetensors file of the model's tensors, named as transformers saves them


class FileTransfer(WeightTransferEngine[FileInit, FileUpdate]):
    """Loads a safetensors file into the worker's model through vLLM's layerwise reload."""

    init_info_cls = FileInit
    update_info_cls = FileUpdate

    def init_transfer_engine(self, init_info: FileInit) -> None:
        pass

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def receive_weights(self, update_info: FileUpdate) -> None:
        with safe_open(update_info.path, framework="pt") as f:
            self.model.load_weights((name, f.get_tensor(name)) for name in f.keys())

    def finish_weight_update(self) -> None:
        from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload
        from vllm.platforms import current_platform

        finalize_layerwise_reload(self.model, self.model_config)
        if current_platform.is_cpu():  # re-pack the tied output layer (see the module docstring)
            for module in self.model.modules():
                if isinstance(module, VocabParallelEmbedding):
                    module.quant_method.process_weights_after_loading(module)

    def shutdown(self) -> None:
        pass


with contextlib.suppress(ValueError):  # registered already: a forked worker inherits the registry
    WeightTransferEngineFactory.register_engine(TRANSFER, FileTransfer)
