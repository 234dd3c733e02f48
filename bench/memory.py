"""`crl plan`'s predicted peak memory against the measured peak resident memory, on a CPU.

For each model, token budget and variant (activations kept, recomputed, or a LoRA adapter of rank 16), one child
process does what `crl iterate` does before and during a round: resolve the settings (the model's preset, the
arithmetic prompt sets, n = 8, GRPO, two optimiser steps a round), run the plan check (`crl plan`'s prediction,
from config.json and the prompt lengths, before any weight is loaded), load the trainer, and train one round on
synthetic rollouts shaped like the plan's largest micro-batch (two steps of one such micro-batch each, so the
second runs with the AdamW state allocated, as every later round does). A second kind of child measures
sampling: after a small training step (gradients and AdamW state exist, as in a running loop) crl's sampler
draws one batch of the round's prompts and one of the evaluation's, at the longest prompt and without stopping
at an end-of-sequence token (every completion at max_new_tokens: the plan's worst case). The measured peak is
the child's maximum resident set size (getrusage); the prediction includes the child's own resident memory at
the time of the check (Python, torch, transformers, the prompts), as `crl plan` does.

    python bench/memory.py                       # the tiny model and SmolLM2-135M (pulled), every case
    python bench/memory.py --models tiny-arith --budgets 1024,4096,16384

Run it alone (SmolLM2 at a 16k budget needs about 12 GB). Prints a table; writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGETS = {"tiny-arith": (1024, 4096, 16384), "smollm2-135m-instruct": (4096, 8192, 16384)}
VARIANTS = {"kept": {}, "recompute": {"train": {"gradient_checkpointing": True}}, "lora": {"lora": {"rank": 16}}}
COMPLETION = {"tiny-arith": 16, "smollm2-135m-instruct": 24}  # the preset's and the recipe's max_new_tokens
GiB = 2**30


def settings(model: str, budget: int, variant: str) -> dict:
    """The run's settings as a --config table: enough prompts that a step holds the largest micro-batch."""
    n, completion = 8, COMPLETION[model]
    table = {
        "model": model, "prompts": "arith_train", "prompts_per_round": 2 * max(1, budget // (n * (8 + completion))),
        "generate": {"n": n, "max_new_tokens": completion},
        "train": {"objective": "grpo", "lr": 1e-5, "token_budget": budget, "minibatches": 2, "device": "cpu",
                  "gradient_checkpointing": False},
        "eval": {"tasks": ["arith_test"], "limit": 100, "n": 4, "max_new_tokens": completion},
        "backend": {"name": "hf"},
    }
    for section, values in VARIANTS[variant].items():
        table[section] = {**table.get(section, {}), **values}
    return table


def child(spec: dict) -> dict:
    """Runs in its own process: the plan check, then a training round or a sampling batch; peaks in bytes."""
    import dataclasses

    import torch

    from crl.config import resolve
    from crl.data.models import resolve_model
    from crl.engine.backends.sampler import sample_batch
    from crl.engine.trainer import Trainer
    from crl.stages import plan as planning
    from crl.stages.iterate import check_run

    run = resolve([(spec["settings"], "bench")]).config
    model = resolve_model(run.model)
    prompts = check_run(run, model)
    plan = planning.check_fits(run, model, prompts)
    trainer = Trainer(model, run)
    if spec["kind"] == "train":
        mb = dataclasses.replace(plan.worst, groups=2 * plan.worst.groups)  # two steps of the largest micro-batch
        rows, meta = planning.synthetic_round(mb, trainer.tokenizer, trainer.fingerprint, run.generate.temperature)
        start = time.perf_counter()
        trainer.train_round(rows, meta)
        predicted = plan.memory["peak of training"]
        seconds = time.perf_counter() - start
    else:
        small = dataclasses.replace(plan.worst, groups=1, prompt=8, completion=4)
        trainer.train_round(*planning.synthetic_round(small, trainer.tokenizer, trainer.fingerprint, 1.0))
        work = planning.workload(run, model, prompts)
        start = time.perf_counter()
        for section, count, longest in ((run.generate, run.prompts_per_round, max(work.prompts)),
                                        (run.eval, len(work.eval_prompts), max(work.eval_prompts))):
            batch = min(planning.HF_BATCH, count)
            with torch.no_grad():
                sample_batch(trainer.model.eval(), [[5] * longest] * batch, list(range(batch)), section, set(), 0, trainer.tokenizer)
        predicted = plan.memory["peak of sampling"]
        seconds = time.perf_counter() - start
    measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"predicted": predicted, "measured": measured, "seconds": seconds,
            "parts": {k: v for k, v in plan.memory.items()}, "worst": dataclasses.asdict(plan.worst)}


def measure(model: str, budget: int, variant: str, kind: str) -> dict:
    spec = {"settings": settings(model, budget, variant), "kind": kind}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})
    if done.returncode != 0:
        return {"model": model, "budget": budget, "variant": variant, "kind": kind, "error": done.stderr.strip().splitlines()[-1]}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {"model": model, "budget": budget, "variant": variant, "kind": kind, **out,
            "error_pct": 100 * (out["predicted"] - out["measured"]) / out["measured"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(BUDGETS))
    ap.add_argument("--budgets", default=None, help="comma list (default: each model's three)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    rows = []
    for model in args.models.split(","):
        budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else BUDGETS[model]
        cases = [(b, v, "train") for b in budgets for v in args.variants.split(",")] + [(budgets[0], "kept", "sample")]
        for budget, variant, kind in cases:
            row = measure(model, budget, variant, kind)
            rows.append(row)
            print(line(row), file=sys.stderr, flush=True)
    print("\n| model | phase | token budget | activations | largest micro-batch | predicted peak | measured peak | error |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(line(r))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\nwrote {args.out}")


def line(r: dict) -> str:
    phase = "training" if r["kind"] == "train" else "sampling"
    if "error" in r:
        return f"| {r['model']} | {phase} | {r['budget']} | {r['variant']} | | | | {r['error']} |"
    w = r["worst"]
    shape = f"{w['groups']} x {w['n']} x ({w['prompt']}+{w['completion']})" if phase == "training" else ""
    return (f"| {r['model']} | {phase} | {r['budget']:,} | {r['variant'] if phase == 'training' else ''} | {shape} | "
            f"{r['predicted'] / GiB:.2f} GiB | {r['measured'] / GiB:.2f} GiB | {r['error_pct']:+.1f}% |")


if __name__ == "__main__":
    main()
