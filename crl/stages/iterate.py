"""Online training: rounds of generate -> verify -> train, with held-out evaluation along the way.

The policy and its AdamW state stay in memory for the whole run (crl/engine/trainer.py) and the sampler gets
the new weights in place after each round (crl/engine/generator.py); every round still writes its rollouts,
verified/, train_log.parquet and round.json, and the full state is saved every ``save_every`` rounds and after
the last. The run folder and what ``--resume`` does are described in crl/stages/run_folder.py.

Everything is checked before the run folder is touched: the settings, the model, the prompt sets, the
verifiers, the objective's options, the tracker, and on --resume the saved state to continue from. A second
process on the same run is refused (a lock held while the run works, taken first on --resume), and only crl's
own files inside the run folder are ever replaced or removed.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import polars as pl

from crl.config import Resolved, RunConfig, as_table
from crl.data.models import resolve_model
from crl.data.prompts import load_prompts
from crl.data.rounds import RoundSummary, in_groups, mixed_groups
from crl.data.schemas import RolloutMeta, read_verified, rollout_metadata
from crl.engine.checkpoint import load_tokenizer, model_positions
from crl.engine.generator import Generator
from crl.engine.trainer import Trainer
from crl.errors import CrlError
from crl.io import atomic_path, write_parquet
from crl.locks import run_lock
from crl.objectives import check_options
from crl.progress import console
from crl.stages import run_folder as folder
from crl.stages.eval import evaluate
from crl.stages.generate import check_positions, tokenize_prompts
from crl.stages.plan import check_fits
from crl.stages.sampling import sample_round
from crl.stages.verify import write_verified
from crl.verifiers import get_verifier
from crl.views.tracking import check_tracker, open_tracker


def check_run(run: RunConfig, model: str) -> pl.DataFrame:
    """Everything that can be wrong with a run, found before anything is written; returns the prompts."""
    check_options(run.train.objective, run.train.options)
    for name in run.verify.verifier:
        get_verifier(name)
    check_tracker(run.log_to)
    if run.train.ref:
        resolve_model(run.train.ref, "--ref")
    tokenizer, positions = load_tokenizer(model), model_positions(model)
    prompts = load_prompts(run.prompts)
    for sets, sampling in (([prompts], run.generate), ([load_prompts(t, run.eval.limit) for t in run.eval.tasks], run.eval)):
        for s in sets:
            check_positions(positions, tokenize_prompts(s, run, tokenizer)[1], sampling.max_new_tokens)
    return prompts


def replayed(run_dir: Path, r: int, window: int) -> list[pl.DataFrame]:
    """The mixed groups of each of the ``window - 1`` rounds before round ``r``, read back from their verified/
    folders (``train.replay``): the only groups of an older round that any objective learns from. Read from
    disk, so a resumed run replays exactly what the uninterrupted one did."""
    frames = [read_verified(folder.round_dir(run_dir, k) / "verified")[0] for k in range(max(1, r - window + 1), r)]
    return [rows.filter(in_groups(rows, mixed_groups(rows))) for rows in frames]


def run_round(resolved: Resolved, run_dir: Path, r: int, trainer: Trainer, gen: Generator, prompts: pl.DataFrame, tracker, model: str) -> dict:
    """Round ``r``: sample, verify, train, maybe evaluate and save; returns its summary (round.json, written last)."""
    run, rd = resolved.config, folder.round_dir(run_dir, r)
    rd.mkdir(parents=True, exist_ok=True)
    summary = RoundSummary(r)
    begin = time.perf_counter()
    if r > 0:
        sampled = sample_round(run, gen, prompts, r)
        summary.seconds.update(sampled.seconds)
        start = time.perf_counter()
        meta = rollout_metadata(run.generate, trainer.tokenizer, model=run.model, seed=run.seed, round=r, attempts=sampled.attempts)
        write_parquet(sampled.rollouts, rd / "rollouts.parquet", meta, kind="rollouts")
        summary.rollouts = write_verified(sampled.scored, rd / "verified", {**meta, "verifier": run.verify.verifier})
        summary.attempts = sampled.attempts
        summary.seconds["write"] = time.perf_counter() - start
        start = time.perf_counter()
        older = replayed(run_dir, r, run.train.replay)
        gen.before_training()
        log = trainer.train_round(pl.concat([sampled.train, *older], how="diagonal_relaxed"), RolloutMeta.read(meta, str(rd)),
                                  lambda row: tracker.log(row["step"], {f"step/{k}": v for k, v in row.items()}), left_out=sampled.left_out)
        summary.seconds["train"] = time.perf_counter() - start
        gen.after_training()
        summary.seconds["sync"] = gen.sync_seconds
        start = time.perf_counter()
        write_parquet(log.steps, rd / "train_log.parquet", kind="train_log")
        summary.train = log.summary()
        if run.train.replay > 1:
            summary.train["groups_replayed"] = float(sum(mixed_groups(rows).height for rows in older))
        summary.seconds["write"] += time.perf_counter() - start
    summary.seconds["round"] = time.perf_counter() - begin
    if r == 0 or r % run.eval.every == 0 or r == run.rounds:
        start = time.perf_counter()
        table, _ = evaluate(list(run.eval.tasks), rd / "eval.parquet", run, model, backend=gen.backend, tokenizer=trainer.tokenizer,
                            verifier_named="verify.verifier" in resolved.origins, overwrite=True)
        summary.seconds["eval"] = time.perf_counter() - start
        for row in table.to_dicts():
            task = row.pop("task")
            summary.evals[task] = {k: v for k, v in row.items() if k not in ("problems", "k")}
    if r > 0 and (r % run.save_every == 0 or r == run.rounds):
        start = time.perf_counter()
        trainer.save(folder.checkpoint_dir(run_dir, r))
        summary.seconds["save"] = time.perf_counter() - start
    row = summary.row()
    with atomic_path(rd / folder.DONE) as tmp:
        tmp.write_text(json.dumps(row, indent=1))
    return row


def iterate(resolved: Resolved, run_dir: Path, resume: bool = False) -> pl.DataFrame:
    """Run (or continue) the rounds of the configuration in ``run_dir``; returns metrics.parquet's table.

    A resumed run is locked before anything is checked; a new one is checked first and then made whole, locked,
    in one step (crl/stages/run_folder.py), so a failed check leaves nothing behind."""
    run = resolved.config
    with contextlib.ExitStack() as stack:
        if resume:
            folder.check_resumable(run_dir)
            stack.enter_context(run_lock(run_dir))
        else:
            folder.check_new_run(run_dir, [run.prompts, *run.eval.tasks, run.model, *([run.train.ref] if run.train.ref else [])])
        model = resolve_model(run.model)
        prompts = check_run(run, model)
        check_fits(run, model, prompts)  # before the model loads: a run that cannot fit is refused in seconds
        start = folder.resume_point(run_dir) if resume else 0
        if start:
            folder.check_saved_state(run_dir, start, run.train.fresh_optimizer)
        if not resume:
            stack.enter_context(folder.new_run(run_dir, resolved))
        folder.forget_after(run_dir, start)
        trainer = Trainer(str(folder.checkpoint_dir(run_dir, start)) if start else model, run, reference=run.train.ref or model)
        if start and trainer.rounds_done != start:
            raise CrlError(f"{folder.checkpoint_dir(run_dir, start)}: holds round {trainer.rounds_done}, not {start}")
        gen = Generator(run, trainer)
        tracker = open_tracker(run.log_to, run_dir, as_table(run))
        try:
            for r in range(0, run.rounds + 1):
                if (folder.round_dir(run_dir, r) / folder.DONE).exists():
                    continue
                console.rule(f"round {r}/{run.rounds}")
                summary = run_round(resolved, run_dir, r, trainer, gen, prompts, tracker, model)
                folder.prune_checkpoints(run_dir, run.keep_last)  # once the round is done, so its state counts
                tracker.log(trainer.steps_done, summary)
                folder.write_metrics(run_dir)
        finally:
            gen.close()
            tracker.close()
        return folder.write_metrics(run_dir)
