"""Training throughput of crl's optimiser step against the usual way, side by side in one run.

Models: randomly initialised transformers Qwen2 models with the shapes of Qwen2.5-0.5B and Qwen2.5-1.5B
(vocabulary 151,936; no weights are downloaded). Rollouts: synthetic groups of 8 with prompts an eighth of
each sequence: equal lengths of 1k tokens (16 x 1024), of 4k (4 x 4096), and ragged (32 sequences,
uniform 256..4096). For each model and rollout set, one optimiser step is timed (after one warm-up step) for:

- ``crl``: crl's own path, ``crl.engine.step.optimizer_step`` (whole groups in micro-batches of
  ``token_budget`` tokens: right-padded rows under sdpa, packed rows with restarting position ids under
  flex_attention; log-probs of the taken tokens only, output layer in 2,048-row chunks), with the DAPO
  objective, once per attention kernel (sdpa, flex_attention); its old log-probs are the sampler's, as the
  usual path's are (``--old-logprobs rollout``);
- ``usual``: padded micro-batches of ``budget // longest`` sequences, ``model(...).logits`` over the
  whole vocabulary, float32 ``log_softmax`` then ``gather``, the same clipped surrogate;
- ``trl``: where ``trl`` imports, TRL's own log-prob helper (``selective_log_softmax``) on logits kept for
  the completion only (``logits_to_keep``), prompts left-padded and completions right-padded, as
  ``GRPOTrainer`` computes them, and the same clipped surrogate.

Reported: useful tokens per second (prompt + completion, no padding), MFU = 6 x parameters x useful tokens
/ time / peak bf16 FLOP/s (989e12 for H100/H200 SXM, read from the GPU name; none on a CPU), and peak GPU
memory. Gradient checkpointing follows crl's default for the model size (``memory_defaults``) and is the
same for every method. Weights are bf16 on a GPU by default (as in MEASUREMENTS.md; ``--precision
bf16-mixed`` measures crl's GPU default instead), fp32 on a CPU.

    python bench/train_throughput.py                 # on a GPU: the real figures
    python bench/train_throughput.py --tiny          # any machine, seconds: small shapes, same table
    python bench/train_throughput.py --models 1.5b --workloads ragged --attn sdpa,flex_attention

Writes bench/results/train_throughput.json (or ``--out``), after every row, so a run stopped early keeps its rows.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crl.config import Train  # noqa: E402
from crl.engine.logprobs import TokenSeq, padded  # noqa: E402
from crl.engine.policy import Runtime, autocast, enable_checkpointing, memory_defaults  # noqa: E402
from crl.engine.step import Rollouts, optimizer_step, plan, with_logprobs  # noqa: E402
from crl.objectives import Context, get_objective  # noqa: E402

VOCAB = 151_936
SHAPES = {  # Qwen2.5 configurations (config.json of the released models)
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2),
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
}
# (name, number of sequences, shortest, longest): equal lengths when shortest == longest
WORKLOADS = {"equal-1k": (16, 1024, 1024), "equal-4k": (4, 4096, 4096), "ragged": (32, 256, 4096)}
TINY_WORKLOADS = {"equal-1k": (8, 64, 64), "equal-4k": (2, 256, 256), "ragged": (16, 16, 256)}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16, SXM
GROUP = 8


@dataclass
class Setup:
    device: str
    precision: str
    budget: int
    vocab: int
    peak_flops: float | None


def build_model(shape: str, setup: Setup, attn: str, checkpointing: bool) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=setup.vocab, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
        tie_word_embeddings=True, use_sliding_window=False, **SHAPES[shape],
    )
    torch.manual_seed(0)
    dtype = torch.bfloat16 if setup.precision == "bf16" else torch.float32
    with torch.device(setup.device):
        model = Qwen2ForCausalLM(config).to(dtype)
    model.set_attn_implementation(attn)
    if checkpointing:
        enable_checkpointing(model)
    return model.train()


def rollouts(workload: tuple[int, int, int], vocab: int, device: str) -> Rollouts:
    """Synthetic groups of ``GROUP`` rollouts with random tokens and rewards (at least one of each per group)."""
    n, lo, hi = workload
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    seqs = []
    for length in lengths:
        prompt = max(1, length // 8)
        ids = torch.randint(0, vocab, (length,), generator=g).tolist()
        seqs.append(TokenSeq(ids[:prompt], ids[prompt:]))
    k = min(GROUP, n)
    groups = tuple(tuple(range(i, min(i + k, n))) for i in range(0, n, k))
    reward = torch.tensor([float(i % 2 == 0) for i in range(n)], device=device)
    behaviour = tuple(torch.full((len(s.completion_ids),), -11.0, device=device) for s in seqs)
    return Rollouts(tuple(seqs), reward, reward > 0, groups, behaviour, 1.0, max(len(s.completion_ids) for s in seqs))


def advantages(data: Rollouts) -> torch.Tensor:
    adv = torch.zeros_like(data.reward)
    for g in map(list, data.groups):
        r = data.reward[g]
        adv[g] = (r - r.mean()) / (r.std() + 1e-4)
    return adv


def surrogate(logp: torch.Tensor, old: torch.Tensor, mask: torch.Tensor, adv: torch.Tensor, eps: float = 0.2) -> torch.Tensor:
    ratio = torch.exp(logp - old)
    per_token = -torch.minimum(ratio * adv[:, None], ratio.clamp(1 - eps, 1 + eps) * adv[:, None])
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def usual_step(model, optimizer, data: Rollouts, setup: Setup, trl: bool = False) -> None:
    """Padded micro-batches and full-vocabulary logits: the way most trainers compute the same update."""
    adv = advantages(data)
    per_batch = max(1, setup.budget // max(len(s) for s in data.seqs))
    optimizer.zero_grad(set_to_none=True)
    total_tokens = sum(len(s.completion_ids) for s in data.seqs)
    for lo in range(0, len(data.seqs), per_batch):
        rows = list(range(lo, min(lo + per_batch, len(data.seqs))))
        seqs = [data.seqs[i] for i in rows]
        with autocast(runtime(setup, "sdpa")):
            logp, mask = (trl_logprobs if trl else full_vocab_logprobs)(model, seqs, setup.device)
        old = padded([data.behaviour[i] for i in rows])[0]
        loss = surrogate(logp, old, mask, adv[rows])
        (loss * mask.sum() / total_tokens).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def full_vocab_logprobs(model, seqs, device):
    """Right-padded rows, logits for every position, float32 log_softmax, gather; completion slices."""
    ids, attn = padded([torch.tensor(list(s.prompt_ids) + list(s.completion_ids), device=device) for s in seqs])
    logits = model(input_ids=ids.long(), attention_mask=attn.long(), use_cache=False).logits
    logp = logits[:, :-1].float().log_softmax(-1).gather(-1, ids.long()[:, 1:, None]).squeeze(-1)
    rows = [logp[i, len(s.prompt_ids) - 1 : len(s) - 1] for i, s in enumerate(seqs)]
    return padded(rows)


def trl_logprobs(model, seqs, device):
    """As TRL's GRPOTrainer: left-padded prompts, right-padded completions, logits_to_keep, selective_log_softmax."""
    from trl.trainer.utils import selective_log_softmax

    prompt, prompt_mask = padded([torch.tensor(list(s.prompt_ids)[::-1], device=device) for s in seqs])
    prompt, prompt_mask = prompt.flip(1), prompt_mask.flip(1)
    completion, completion_mask = padded([torch.tensor(list(s.completion_ids), device=device) for s in seqs])
    ids = torch.cat([prompt, completion], 1).long()
    attn = torch.cat([prompt_mask, completion_mask], 1).long()
    keep = completion.shape[1]
    logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=keep + 1, use_cache=False).logits[:, :-1]
    return selective_log_softmax(logits, completion.long()), completion_mask


def runtime(setup: Setup, attn: str) -> Runtime:
    return Runtime(setup.device, setup.precision, setup.budget, gradient_checkpointing=False, packed=attn == "flex_attention")


def crl_step(model, optimizer, data: Rollouts, setup: Setup, attn: str) -> None:
    """One optimiser step over all the groups, as crl's trainer takes it (one epoch, one minibatch)."""
    rt = runtime(setup, attn)
    (step,) = plan(data, Train(objective="dapo"), rt, torch.Generator().manual_seed(0))
    data = with_logprobs(model, data, [step], rt, None, recompute=False)
    optimizer_step(model, optimizer, data, step, rt, get_objective("dapo"), Context(max_new_tokens=data.max_new_tokens), {}, 1.0, None)


def measure(step, setup: Setup) -> tuple[float, float | None]:
    """Seconds of one step after a warm-up step, and peak GPU memory in GiB during it."""
    cuda = setup.device.startswith("cuda")
    step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, (torch.cuda.max_memory_allocated() / 2**30 if cuda else None)


def peak_flops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small shapes and rollouts (CPU sanity run)")
    ap.add_argument("--models", default=None, help="comma list of 0.5b, 1.5b (default both; tiny with --tiny)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of " + ", ".join(WORKLOADS))
    ap.add_argument("--methods", default="crl,usual,trl", help="comma list of crl, usual, trl")
    ap.add_argument("--attn", default=None, help="kernels for crl (default sdpa,flex_attention on a GPU, sdpa on CPU)")
    ap.add_argument("--precision", default=None, choices=["fp32", "bf16-mixed", "bf16"], help="default bf16 on a GPU, fp32 on CPU")
    ap.add_argument("--token-budget", type=int, default=None, help="default: crl's for the model size (1024 with --tiny)")
    ap.add_argument("--gradient-checkpointing", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_throughput.json")
    args = ap.parse_args()

    cuda = args.device.startswith("cuda")
    args.precision = args.precision or ("bf16" if cuda else "fp32")  # CPUs without bf16 units emulate it slowly
    models = (args.models or ("tiny" if args.tiny else "0.5b,1.5b")).split(",")
    attns = (args.attn or ("sdpa,flex_attention" if cuda else "sdpa")).split(",")
    methods = args.methods.split(",")
    if "trl" in methods:
        try:
            import trl.trainer.utils  # noqa: F401
        except ImportError:
            print("trl does not import here: its column is left out", file=sys.stderr)
            methods.remove("trl")
    workloads = TINY_WORKLOADS if args.tiny else WORKLOADS
    vocab = 4096 if args.tiny else VOCAB
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    meta = dict(device=device_name, torch=torch.__version__, tiny=args.tiny, precision=args.precision)
    with contextlib.suppress(ImportError):
        import transformers

        meta["transformers"] = transformers.__version__
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for shape in models:
        n_params = sum(p.numel() for p in build_model(shape, Setup("meta", "fp32", 0, vocab, None), "sdpa", False).parameters())
        budget, recompute = memory_defaults(n_params, args.device)
        budget = args.token_budget or (1024 if args.tiny else budget)
        recompute = {"on": True, "off": False}.get(args.gradient_checkpointing, recompute)
        setup = Setup(args.device, args.precision, budget, vocab, peak_flops(args.device))
        runs = [("crl", a) for a in attns if "crl" in methods] + [(m, "sdpa") for m in ("usual", "trl") if m in methods]
        for method, attn in runs:
            model = build_model(shape, setup, attn, recompute)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=cuda)
            for wname in args.workloads.split(","):
                data = rollouts(workloads[wname], vocab, args.device)
                tokens = sum(len(s) for s in data.seqs)
                step = {
                    "crl": functools.partial(crl_step, model, optimizer, data, setup, attn),
                    "usual": functools.partial(usual_step, model, optimizer, data, setup),
                    "trl": functools.partial(usual_step, model, optimizer, data, setup, trl=True),
                }[method]
                row = dict(model=shape, params=n_params, workload=wname, method=method, attn=attn, tokens=tokens,
                           budget=budget, gradient_checkpointing=recompute, precision=args.precision)
                try:
                    seconds, peak = measure(step, setup)
                    row.update(seconds=seconds, tokens_per_s=tokens / seconds, peak_gib=peak,
                               mfu=6 * n_params * tokens / seconds / setup.peak_flops if setup.peak_flops else None)
                except torch.cuda.OutOfMemoryError:
                    row.update(error="out of memory")
                    optimizer.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
                results.append(row)
                print_row(row)
                args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")  # kept if stopped
            del model, optimizer
            if cuda:
                torch.cuda.empty_cache()
    print_table(results, device_name)
    print(f"wrote {args.out}")


def print_row(row: dict) -> None:
    print(f"  {row['model']} {row['workload']} {row['method']}/{row['attn']}: "
          + (row.get("error") or f"{row['tokens_per_s']:,.0f} tokens/s"), file=sys.stderr)


def print_table(results: list[dict], device: str) -> None:
    print(f"\n{device}, one optimiser step after one warm-up step")
    print("| model | rollouts | method | attention | ckpt | useful tokens/s | MFU | peak memory |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            cells = (r["error"], "", "")
        else:
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
            peak = f"{r['peak_gib']:.1f} GiB" if r.get("peak_gib") is not None else "-"
            cells = (f"{r['tokens_per_s']:,.0f}", mfu, peak)
        ckpt = "on" if r["gradient_checkpointing"] else "off"
        print(f"| {r['model']} | {r['workload']} | {r['method']} | {r['attn']} | {ckpt} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
