"""Training on N processes: the process group, FSDP2 sharding, dealing groups to ranks, reductions.

``torchrun --nproc-per-node N -m crl train ...`` runs the same command on N processes; torchrun sets
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address, and ``init`` joins them into a process group
(NCCL on GPUs, gloo on CPUs). A single process (no torchrun, or WORLD_SIZE=1) has no process group at
all, and every function here then answers for one rank, so the trainer reads the same either way.

With N > 1 the model is sharded by FSDP2 (``fully_shard``): each decoder layer is one unit and the root
(embeddings, final norm, output layer) another, so a rank holds 1/N of the weights, gradients and AdamW
state, and gathers one layer's weights at a time during forward and backward. Every forward and
backward is collective, so all ranks must run the same number of them; the trainer equalises the count
of micro-batches (``across_ranks`` in crl/engine/step.py).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import types
from typing import Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def init(device: str | None = None) -> bool:
    """Join the process group torchrun describes in the environment; False (and nothing done) for one process."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


@contextlib.contextmanager
def session(device: str | None = None) -> Iterator[None]:
    """The process group for the duration of a block, torn down after it if this block made it."""
    made = not dist.is_initialized() and init(device)
    try:
        yield
    finally:
        if made:
            dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def local_device(device: str) -> str:
    """``cuda`` means this process's GPU (LOCAL_RANK) under torchrun."""
    if device == "cuda" and active():
        return f"cuda:{torch.cuda.current_device()}"
    return device


def full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (a sharded gradient norm, say) as a plain tensor with its global value."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def barrier() -> None:
    if active():
        dist.barrier()


def shard_model(model: torch.nn.Module, methods: dict[str, Callable] | None = None, mp_policy=None) -> torch.nn.Module:
    """FSDP2 on each decoder layer, then on the root; a no-op for one process.

    ``methods`` are functions ``fn(model, ...)`` that run the model other than through ``forward`` (crl's
    packed log-prob pass calls the decoder and then the output layer itself); each becomes a method of
    this model instance around which FSDP2 gathers the root's weights, as it does around ``forward``.
    """
    if world() == 1:
        return model
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    kwargs = {"mp_policy": mp_policy} if mp_policy is not None else {}
    for layer in model.get_decoder().layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    for name, fn in (methods or {}).items():
        setattr(model, name, types.MethodType(fn, model))
        register_fsdp_forward_method(model, name)
    return model


def deal_groups(groups: Sequence[T], sizes: Sequence[int], world: int) -> list[list[T]]:
    """Deal whole items (groups) to ``world`` ranks, balanced by size: largest first to the lightest rank
    (ties: the earlier item, the lower rank), so every rank computes the same deal. Each rank's share
    keeps the original order."""
    order = sorted(range(len(groups)), key=lambda i: (-sizes[i], i))
    load = [(0, r) for r in range(world)]
    shares: list[list[int]] = [[] for _ in range(world)]
    for i in order:
        total, r = heapq.heappop(load)
        shares[r].append(i)
        heapq.heappush(load, (total + sizes[i], r))
    return [[groups[i] for i in sorted(share)] for share in shares]


def all_reduce_sum(values: dict[str, float]) -> dict[str, float]:
    """Sum named floats over ranks (a name missing on a rank counts as 0); the same dict for one process."""
    if not active():
        return dict(values)
    parts: list[dict[str, float]] = [{} for _ in range(world())]
    dist.all_gather_object(parts, dict(values))
    out: dict[str, float] = {}
    for part in parts:  # rank order, so every rank sums in the same order and gets the same floats
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + value
    return out


def gathered(part: dict[int, torch.Tensor], device: str) -> dict[int, torch.Tensor]:
    """Every rank's entries of a dict of tensors, on ``device`` (sent through the CPU); ``part`` itself for
    one process."""
    if not active():
        return part
    return {i: t.to(device) for p in all_gather({i: t.cpu() for i, t in part.items()}) for i, t in p.items()}


def all_gather(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable; tensors best on CPU), in rank order."""
    if not active():
        return [obj]
    parts: list = [None] * world()
    dist.all_gather_object(parts, obj)
    return parts
