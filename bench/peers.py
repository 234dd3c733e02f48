"""crl beside TRL's GRPOTrainer on the embedded default, with matched settings, several seeds.

TRL 1.16's GRPOTrainer trains the shipped tiny-arith model on crl's default task with crl's settings (arith_train
in crl's own round order, K=8, 16 new tokens, T=1, no top-p or top-k, lr 3e-4 constant, two optimiser steps per
64 prompts, no KL, crl's `math` verifier as the reward), and its final model is scored by crl's own held-out
evaluation exactly as ``crl iterate`` scores its rounds; beside it ``crl iterate`` with the default objective and
with grpo (bench/objectives.py's ``run_one``). Where TRL cannot do what crl does, TRL's own defaults are kept (see
``DIFFERENCES``): the bench measures TRL as its users run it. One table: held-out avg@4 before -> after, pass@4
after, time in rounds (TRL: ``trainer.train()``; crl: the sum of ``seconds/round``), mean ± sd over the seeds. Run
folders go to OUT/, the table to OUT.json; a finished run is read, not redone.

    python bench/peers.py                                          # trl, crl-default, crl-grpo; seeds 0 1 2; 60 rounds
    python bench/peers.py --peers trl --seeds 0 --rounds 2 --out /tmp/peers-smoke
    python bench/peers.py --peers trl --trl-set loss_type=grpo           # what one TRL difference is worth
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import torch
from rich.console import Console
from rich.table import Table

from crl.config import RunConfig, resolve
from crl.data.models import resolve_model
from crl.data.prompts import load_prompts, render
from crl.engine.checkpoint import load_tokenizer
from crl.stages.eval import evaluate
from crl.stages.sampling import round_prompts
from crl.verifiers.math import verify
from objectives import RESULTS, mean_std, run_one

if TYPE_CHECKING:  # trl is imported where a TRL run needs it, so the crl peers run without it
    from transformers import PreTrainedTokenizerBase
    from trl import GRPOConfig, GRPOTrainer

PEERS = ("trl", "crl-default", "crl-grpo")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
# What TRL cannot do as crl does; TRL 1.16's GRPOTrainer defaults are kept there. Written into each TRL row.
DIFFERENCES = {
    "loss_type": "dapo (TRL's default): clipped-surrogate token losses summed over the step and divided by the "
                 "generation batch's token count / 2; crl grpo averages each sequence, then the groups",
    "scale_rewards": "group (TRL's default): (r - group mean) / (group sample std + 1e-4), as crl grpo and dapo do",
    "minibatches": "TRL shuffles the 512 completions and cuts them into 2 steps of 256, so a group is split "
                   "across steps; crl shuffles whole groups into 2 steps of 32 groups",
    "sampling": "the same distribution (T=1, no top-p, no top-k) but other samples: transformers' generate draws "
                "from torch's global generator seeded with `seed`; crl seeds each prompt from (seed, prompt id)",
    "optim": "adamw_torch_fused (TRL's default on torch >= 2.8): the same AdamW update as crl's torch.optim.AdamW",
}
# The settings read back from TRL's trainer into each row, beside the sampling it hands to generate().
RECORDED = ("seed", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "generation_batch_size",
            "steps_per_generation", "num_generations", "max_completion_length", "temperature", "top_p", "top_k",
            "learning_rate", "lr_scheduler_type", "warmup_steps", "beta", "loss_type", "scale_rewards", "epsilon",
            "epsilon_high", "num_iterations", "importance_sampling_level", "mask_truncated_completions", "optim",
            "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "weight_decay", "shuffle_dataset",
            "gradient_checkpointing", "bf16", "use_cpu")


def default_run(seed: int, rounds: int) -> RunConfig:
    """The default run's configuration (tiny-arith's preset) with this seed and number of rounds."""
    return resolve([({"seed": seed, "rounds": rounds}, "bench")]).config


def round_order(run: RunConfig, tokenizer: PreTrainedTokenizerBase) -> dict[str, list[str]]:
    """crl's prompts of rounds 1..N, in order and rendered as crl renders them: TRL's dataset, read unshuffled."""
    prompts = load_prompts(run.prompts)
    rounds = pl.concat([round_prompts(prompts, r, run.prompts_per_round, run.seed) for r in range(1, run.rounds + 1)])
    text = [render(p, tokenizer, run.template, run.instruction) for p in rounds["prompt"]]
    if tokenizer(text[0])["input_ids"] != tokenizer(text[0], add_special_tokens=False)["input_ids"]:
        raise SystemExit("the tokenizer adds special tokens to a rendered prompt: TRL would see other ids than crl")
    return {"prompt": text, "answer": rounds["answer"].to_list()}


def math_reward(eos_id: int) -> Callable[..., list[float]]:
    """crl's `math` verifier as a TRL reward function: 1.0 for a correct final answer, else 0.0; a completion
    that hit the length limit (no end-of-sequence token) is truncated, as crl's verify stage marks it."""

    def math(completions: list[str], completion_ids: list[list[int]], answer: list[str], **_) -> list[float]:
        return [verify(c, a, truncated=not ids or ids[-1] != eos_id).reward
                for c, ids, a in zip(completions, completion_ids, answer, strict=True)]

    return math


def trl_config(run: RunConfig, folder: Path, changes: dict[str, object]) -> GRPOConfig:
    """GRPOConfig with crl's settings: 64 prompts x 8 = 512 completions per generation, two optimiser steps
    of 256 completions each (steps_per_generation 2, no accumulation), so one generation is one crl round;
    `changes` (from --trl-set) override them, to measure what one setting is worth."""
    from trl import GRPOConfig

    settings = dict(
        output_dir=str(folder / "trainer"), seed=run.seed, max_steps=run.train.minibatches * run.rounds,
        per_device_train_batch_size=run.prompts_per_round * run.generate.n // run.train.minibatches,
        gradient_accumulation_steps=1, steps_per_generation=run.train.minibatches, num_generations=run.generate.n,
        max_completion_length=run.generate.max_new_tokens, temperature=run.generate.temperature,
        top_p=run.generate.top_p, top_k=0,  # 0: no top-k (transformers' own default would be 50)
        learning_rate=run.train.lr, lr_scheduler_type="constant", warmup_steps=0, beta=0.0,
        max_grad_norm=run.train.max_grad_norm, weight_decay=run.train.weight_decay,
        shuffle_dataset=False,  # the dataset is already crl's round order
        gradient_checkpointing=False,  # crl's choice for a model under 1B parameters (TRL's default is on)
        bf16=False, use_cpu=not torch.cuda.is_available(), save_strategy="no", report_to="none",
        logging_steps=10 * run.train.minibatches, disable_tqdm=True,
    )
    return GRPOConfig(**{**settings, **changes})


def train_trl(run: RunConfig, folder: Path, changes: dict[str, object]) -> tuple[float, dict]:
    """Train with TRL; save the final model with crl's tokenizer files in folder/model; (seconds, settings)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    model = resolve_model(run.model)
    tokenizer = load_tokenizer(model)
    trainer = GRPOTrainer(model=model, reward_funcs=math_reward(tokenizer.eos_token_id), args=trl_config(run, folder, changes),
                          train_dataset=Dataset.from_dict(round_order(run, tokenizer)))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(str(folder / "model"))
    for name in TOKENIZER_FILES:
        shutil.copy(Path(model) / name, folder / "model" / name)
    return seconds, trl_settings(trainer)


def trl_settings(trainer: GRPOTrainer) -> dict:
    """What TRL ran with: its settings as the trainer holds them and the sampling it passes to generate()."""
    import trl

    generate = {k: getattr(trainer.generation_config, k) for k in ("do_sample", "temperature", "top_p", "top_k", "max_new_tokens", "eos_token_id")}
    return {"trl": trl.__version__, **{k: getattr(trainer.args, k) for k in RECORDED}, "generate": generate,
            "differences": DIFFERENCES}


def held_out(run: RunConfig, model: str, out: Path) -> tuple[float, float]:
    """avg@k and pass@k on the held-out set, by crl's evaluation with the run's [eval] settings (as iterate)."""
    table, _ = evaluate(list(run.eval.tasks), out, run, model, overwrite=True, show_progress=False)
    return table[f"avg@{run.eval.n}"][0], table[f"pass@{run.eval.n}"][0]


def trl_name(changes: dict[str, object]) -> str:
    """The peer's name: "trl", or "trl loss_type=grpo" with --trl-set changes."""
    return " ".join(["trl", *(f"{k}={v}" for k, v in changes.items())])


def run_trl(seed: int, rounds: int, out: Path, changes: dict[str, object]) -> dict:
    """One TRL run (or the finished one in out/trl[-changes]-seedS): held-out before and after, time in train()."""
    name = trl_name(changes)
    folder, run = out / f"{name.replace(' ', '-')}-seed{seed}", default_run(seed, rounds)
    done = folder / "result.json"
    finished = json.loads(done.read_text()) if done.is_file() else {}
    if finished.get("rounds") == rounds:
        return finished
    folder.mkdir(parents=True, exist_ok=True)
    before, pass_before = held_out(run, resolve_model(run.model), folder / "eval-before.parquet")
    seconds, settings = train_trl(run, folder, changes)
    after, pass_after = held_out(run, str(folder / "model"), folder / "eval-after.parquet")
    row = {"peer": name, "seed": seed, "rounds": rounds, "metric": f"{run.eval.tasks[0]}/avg@{run.eval.n}",
           "before": before, "after": after, "pass_before": pass_before, "pass_after": pass_after,
           "seconds_in_rounds": seconds, "settings": settings}
    done.write_text(json.dumps(row, indent=2))
    return row


def run_peer(peer: str, seed: int, rounds: int, out: Path, changes: dict[str, object]) -> dict:
    """One run of a peer: TRL (with `changes` to its settings), or crl iterate with the default objective or grpo."""
    if peer == "trl":
        return run_trl(seed, rounds, out, changes)
    objective = default_run(seed, rounds).train.objective if peer == "crl-default" else peer.removeprefix("crl-")
    return {"peer": peer, **run_one(objective, None, seed, {"rounds": rounds}, out)}


def table(rows: list[dict]) -> Table:
    """One row per peer: held-out avg@k before -> after, pass@k after, time in rounds; mean ± sd over seeds."""
    out = Table(title=f"crl and TRL on the embedded default ({rows[0]['metric']}, {rows[0]['rounds']} rounds, mean ± sd over seeds)")
    for col in ("peer", "seeds", "held-out before -> after", "pass after", "time in rounds (s)"):
        out.add_column(col, justify="left" if col == "peer" else "right")
    for peer in dict.fromkeys(r["peer"] for r in rows):
        group = [r for r in rows if r["peer"] == peer]
        name = f"{peer} ({group[0]['objective']})" if "objective" in group[0] else peer
        ms = {k: mean_std([r[k] for r in group]) for k in ("before", "after", "pass_after", "seconds_in_rounds")}
        out.add_row(name, str(len(group)), f"{ms['before']} -> {ms['after']}", ms["pass_after"], ms["seconds_in_rounds"])
    return out


def literal(item: str) -> tuple[str, object]:
    """ "loss_type=grpo" -> ("loss_type", "grpo"); "top_k=50" -> ("top_k", 50)."""
    key, _, value = item.partition("=")
    try:
        return key.strip(), ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key.strip(), value.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS / "peers")
    parser.add_argument("--trl-set", dest="trl_set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one GRPOConfig setting of the TRL runs (value read as a Python literal)")
    parser.add_argument("--json", type=Path, default=None, help="where the table goes (default: OUT.json)")
    args = parser.parse_args()
    changes = dict(literal(item) for item in args.trl_set)

    rows = []
    for peer in args.peers:
        for seed in args.seeds:
            rows.append(run_peer(peer, seed, args.rounds, args.out, changes))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "settings"}), flush=True)
    Console().print(table(rows))
    (args.json or args.out.with_suffix(".json")).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
