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
from typing import Any

import polars as pl

from crl.config import Resolved, RunConfig, as_table
from crl.data.models import resolve_model
from crl.data.prompts import load_prompts
from crl.data.schemas import RolloutMeta, rollout_metadata
from crl.engine.checkpoint import load_tokenizer, model_positions
from crl.engine.generator import Generator
from crl.engine.trainer import Trainer
from crl.errors import CrlError
from crl.io import atomic_path, write_parquet
from crl.locks import run_lock
from crl.objectives import check_options, spec
from crl.progress import console
from crl.stages import run_folder as folder
from crl.stages.eval import evaluate
from crl.stages.generate import check_positions, rollout_rows, tokenize_prompts
from crl.stages.verify import score, write_verified
from crl.verifiers import get_verifier
from crl.views.tracking import check_tracker, open_tracker


def round_prompts(prompts: pl.DataFrame, r: int, per_round: int, seed: int, attempt: int = 0) -> pl.DataFrame:
    """The prompts of round ``r`` (1-based): consecutive slices of a seeded shuffle, wrapping around; each
    further attempt of dynamic sampling slices another shuffle."""
    order = prompts.sample(fraction=1.0, shuffle=True, seed=seed + 7919 * attempt)
    start = ((r - 1) * per_round) % order.height
    return order[[(start + i) % order.height for i in range(min(per_round, order.height))]]


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


def dynamic_sampling(run: RunConfig) -> bool:
    return run.generate.dynamic_sampling if run.generate.dynamic_sampling is not None else spec(run.train.objective).dynamic_sampling


def sample_round(run: RunConfig, gen: Generator, prompts: pl.DataFrame, r: int, timings: dict) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """The round's rollouts, scored (each completion verified once), and the rows to train on: every group,
    or with dynamic sampling exactly ``prompts_per_round`` groups with a right and a wrong answer (fewer if
    ``max_attempts`` draws did not find that many). A further draw is sampled in pieces sized to the shortfall,
    in the draw's order; each prompt's samples depend only on its seed, so the groups kept are those of sampling
    the whole draw, at a fraction of the generation."""
    seed, dynamic = run.seed * 1_000_003 + r * 10_007, dynamic_sampling(run)
    frames, scored, attempts, seen, mixed = [], [], 0, set(), 0
    while attempts < (run.generate.max_attempts if dynamic else 1) and mixed < run.prompts_per_round:
        batch = round_prompts(prompts, r, run.prompts_per_round, run.seed, attempts).filter(~pl.col("id").is_in(list(seen)))
        attempts += 1
        while batch.height and mixed < run.prompts_per_round:
            take = next_draw(run.prompts_per_round - mixed, mixed, len(seen), batch.height) if frames else batch.height
            chunk, batch = batch.head(take), batch.slice(take)
            seen.update(chunk["id"].to_list())
            start = time.perf_counter()
            rows = rollout_rows(chunk, run, run.generate, seed, gen.backend, gen.trainer.tokenizer, r, run.model)
            timings["generate"] = timings.get("generate", 0.0) + time.perf_counter() - start
            start = time.perf_counter()
            frames.append(rows)
            scored.append(score(rows, run.verify))
            timings["verify"] = timings.get("verify", 0.0) + time.perf_counter() - start
            mixed += _mixed(scored[-1]).height  # the pieces hold distinct prompts
    rows, scored = pl.concat(frames), pl.concat(scored)
    if not dynamic:
        return rows, scored, attempts
    keep = _mixed(scored).head(run.prompts_per_round)["prompt_id"]
    return rows, scored.with_columns(train=pl.col("prompt_id").is_in(keep.to_list())), attempts


def next_draw(short: int, mixed: int, drawn: int, left: int) -> int:
    """Prompts to sample next: the shortfall over the share of mixed groups so far, with a quarter more for luck."""
    return left if mixed == 0 else min(left, -(-5 * short * drawn // (4 * mixed)))


def _mixed(scored: pl.DataFrame) -> pl.DataFrame:
    per = scored.group_by("prompt_id", maintain_order=True).agg(pos=pl.col("positive").sum(), n=pl.len())
    return per.filter((pl.col("pos") > 0) & (pl.col("pos") < pl.col("n")))


def run_round(resolved: Resolved, run_dir: Path, r: int, trainer: Trainer, gen: Generator, prompts: pl.DataFrame, tracker, model: str) -> dict:
    """Round ``r``: sample, verify, train, maybe evaluate and save; returns its summary (round.json, written last)."""
    run, rd = resolved.config, folder.round_dir(run_dir, r)
    rd.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"round": r}
    begin = time.perf_counter()
    if r > 0:
        rows, scored, attempts = sample_round(run, gen, prompts, r, timings)
        start = time.perf_counter()
        meta = rollout_metadata(run.generate, trainer.tokenizer, model=run.model, seed=run.seed, round=r, attempts=attempts)
        write_parquet(rows, rd / "rollouts.parquet", meta, kind="rollouts")
        stats = write_verified(scored.drop("train", strict=False), rd / "verified", {**meta, "verifier": run.verify.verifier})
        timings["write"] = time.perf_counter() - start
        summary.update({f"rollouts/{k}": v for k, v in stats.items()}, attempts=attempts)
        train_rows = scored.filter(pl.col("train")) if "train" in scored.columns else scored
        start = time.perf_counter()
        gen.before_training()
        log = trainer.train_round(train_rows, RolloutMeta.read(meta, str(rd)), lambda row: tracker.log(row["step"], {f"step/{k}": v for k, v in row.items()}))
        timings["train"] = time.perf_counter() - start
        gen.after_training()
        timings["sync"] = gen.sync_seconds
        start = time.perf_counter()
        write_parquet(log, rd / "train_log.parquet", kind="train_log")
        numeric = [c for c, t in log.schema.items() if t.is_numeric() and c not in ("step", "round", "seconds")]
        means = log.select(pl.col(numeric).cast(pl.Float64).fill_nan(None).mean()).to_dicts()[0]  # steps without a unit are NaN
        summary.update({f"train/{k}": v for k, v in means.items()})
        timings["write"] += time.perf_counter() - start
    timings["round"] = time.perf_counter() - begin
    if r == 0 or r % run.eval.every == 0 or r == run.rounds:
        start = time.perf_counter()
        table, _ = evaluate(list(run.eval.tasks), rd / "eval.parquet", run, model, backend=gen.backend, tokenizer=trainer.tokenizer,
                            verifier_named="verify.verifier" in resolved.origins, overwrite=True)
        timings["eval"] = time.perf_counter() - start
        for row in table.to_dicts():
            task = row.pop("task")
            summary.update({f"{task}/{k}": v for k, v in row.items() if k not in ("problems", "n")})
    if r > 0 and (r % run.save_every == 0 or r == run.rounds):
        start = time.perf_counter()
        trainer.save(folder.checkpoint_dir(run_dir, r))
        timings["save"] = time.perf_counter() - start
    summary.update({f"seconds/{k}": v for k, v in timings.items()})
    with atomic_path(rd / folder.DONE) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return summary


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
