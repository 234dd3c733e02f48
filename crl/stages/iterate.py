"""Online training: rounds of generate -> verify -> train, with held-out evaluation along the way.

Layout of a run folder::

    RUN/config.toml                       the resolved configuration
    RUN/round-0000/eval.parquet           the starting model's evaluation
    RUN/round-NNNN/rollouts.parquet       samples of the round's prompts from the previous checkpoint
    RUN/round-NNNN/verified/              positive, negative, groups
    RUN/round-NNNN/checkpoint/            the updated model, optimizer state, train_log.parquet
    RUN/round-NNNN/eval.parquet           every ``eval_every`` rounds and after the last
    RUN/round-NNNN/round.json             written last: the round's summary; the round is done
    RUN/metrics.parquet                   one row per finished round, rebuilt from the round.json files

Every file appears whole or not at all (crl/io.py), and each stage is skipped when its output exists,
so ``--resume`` after a crash continues where the run stopped without repeating finished work.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import polars as pl

from crl.errors import CrlError
from crl.io import atomic_path, clean_partial, write_parquet
from crl import config as config_mod
from crl.engine.backends import Backend, SamplingConfig, make_backend
from crl.stages.eval import EvalConfig, evaluate
from crl.stages.generate import GenerateConfig, rollout_metadata, rollout_rows
from crl.engine.checkpoint import load_tokenizer, resolve_model
from crl.data.prompts import load_prompts, resolve as resolve_prompts
from crl.engine.trainer import ATTENTION, PRECISIONS, TrainConfig, train
from crl.stages.verify import VerifyConfig, verify
from crl.progress import console
from crl.views.tracking import open_tracker

DONE = "round.json"


def round_dir(run: Path, r: int) -> Path:
    return run / f"round-{r:04d}"


def round_prompts(prompts: pl.DataFrame, r: int, per_round: int, seed: int, attempt: int = 0) -> pl.DataFrame:
    """The prompts of round ``r`` (1-based): consecutive slices of a seeded shuffle, wrapping around;
    each further attempt of dynamic sampling slices another shuffle."""
    order = prompts.sample(fraction=1.0, shuffle=True, seed=seed + 7919 * attempt)
    start = ((r - 1) * per_round) % order.height
    idx = [(start + i) % order.height for i in range(min(per_round, order.height))]
    return order[idx]


def sampling(cfg: dict[str, Any], section: str, n: int, seed: int) -> SamplingConfig:
    s = cfg[section]
    return SamplingConfig(n=n, temperature=s["temperature"], top_p=s["top_p"], max_new_tokens=s["max_new_tokens"], seed=seed)


def generate_round(
    cfg: dict[str, Any], model: str, backend: Backend, r: int, out: Path, prompts: pl.DataFrame
) -> dict[str, Any]:
    """Sample the round's rollouts; with dynamic sampling, keep drawing prompts until enough groups are mixed."""
    g = cfg["generate"]
    gen = GenerateConfig(
        model=model,
        sampling=sampling(cfg, "generate", g["n"], cfg["seed"] * 1_000_003 + r * 10_007),
        template=g["template"],
        instruction=g["instruction"],
        backend=cfg["backend"],
        round=r,
    )
    tokenizer = load_tokenizer(model)
    frames, attempts = [], 0
    mixed_needed = cfg["prompts_per_round"]
    while True:
        batch = round_prompts(prompts, r, cfg["prompts_per_round"], cfg["seed"], attempts)
        attempts += 1
        frames.append(rollout_rows(batch, gen, backend, tokenizer))
        if not g["dynamic_sampling"] or attempts >= g["max_attempts"]:
            break
        rows = pl.concat(frames)
        if _mixed_groups(rows, cfg) >= mixed_needed:
            break
    rows = pl.concat(frames).unique(["prompt_id", "sample"], keep="first", maintain_order=True)
    write_parquet(rows, out, rollout_metadata(gen, tokenizer, attempts=attempts))
    return {"attempts": attempts}


def verify_config(cfg: dict[str, Any], progress: bool = True) -> VerifyConfig:
    v = cfg["verify"]
    return VerifyConfig(v["verifier"], v["workers"], v["timeout"], progress)


def _mixed_groups(rows: pl.DataFrame, cfg: dict[str, Any]) -> int:
    """How many groups have both a correct and a wrong completion (a quick verify in process)."""
    from crl.stages.verify import groups, score

    grouped = groups(score(rows, verify_config(cfg, progress=False)))
    return int(((grouped["n_pos"] > 0) & (grouped["n_neg"] > 0)).sum())


def eval_round(cfg: dict[str, Any], model: str, backend: Backend, out: Path) -> dict[str, float]:
    e = cfg["eval"]
    gen = GenerateConfig(
        model=model,
        sampling=sampling(cfg, "eval", e["k"], cfg["seed"] + 12345),
        template=cfg["generate"]["template"],
        instruction=cfg["generate"]["instruction"],
        limit=e["limit"] or None,
    )
    table, _ = evaluate(cfg["eval_tasks"], out, EvalConfig(gen, verify_config(cfg)), backend)
    flat = {}
    for row in table.to_dicts():
        task = row.pop("task")
        flat.update({f"{task}/{k}": v for k, v in row.items() if k not in ("problems", "k")})
    return flat


def train_config(cfg: dict[str, Any], model: str, r: int) -> TrainConfig:
    t = cfg["train"]
    return TrainConfig(
        model=model,
        objective=t["objective"],
        options=t["options"],
        lr=t["lr"],
        weight_decay=t["weight_decay"],
        max_grad_norm=t["max_grad_norm"],
        epochs=t["epochs"],
        minibatches=t["minibatches"],
        token_budget=t["token_budget"] or None,
        progress=(r - 1) / max(cfg["rounds"], 1),
        old_logprobs=t["old_logprobs"],
        ref=resolve_model(t["ref"]) if t["ref"] else None,
        gradient_checkpointing=auto(t["gradient_checkpointing"], {"on": True, "off": False}, "train.gradient_checkpointing"),
        precision=auto(t["precision"], {p: p for p in PRECISIONS}, "train.precision"),
        attn=auto(t["attn"], {a: a for a in ATTENTION}, "train.attn"),
        compile=t["compile"],
        seed=cfg["seed"] + r,
    )


def auto(value: str, choices: dict[str, object], key: str) -> object:
    """``"auto"`` as None (the trainer decides), else one of ``choices``."""
    if value == "auto":
        return None
    if value not in choices:
        raise CrlError(f"{key} = {value!r}: choose auto or one of {', '.join(choices)}")
    return choices[value]


def train_summary(checkpoint: Path) -> dict[str, float]:
    log = pl.read_parquet(checkpoint / "train_log.parquet")
    numeric = [c for c, t in log.schema.items() if t.is_numeric() and c not in ("step", "epoch")]
    means = log.select(numeric).mean().to_dicts()[0]
    return {f"train/{k}": v for k, v in means.items()}


class Engine:
    """The sampler for the current model. When the model changes, a backend that can load weights in place
    (vLLM) gets them with ``weight_sync = "inplace"``; otherwise (``"reload"``, or transformers) it is
    rebuilt from the new checkpoint."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        if cfg["weight_sync"] not in ("inplace", "reload"):
            raise CrlError(f"weight_sync = {cfg['weight_sync']!r}: choose inplace or reload")
        self.cfg, self.model, self.backend = cfg, None, None

    def get(self, model: str) -> Backend:
        if self.model != model:
            inplace = self.cfg["weight_sync"] == "inplace" and hasattr(self.backend, "update_weights")
            if self.backend is not None and inplace:
                self.backend.update_weights(model)
            else:
                self.close()
                self.backend = make_backend(self.cfg["backend"], model)
            self.model = model
        return self.backend

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
        self.backend = None


def run_round(cfg: dict[str, Any], run: Path, r: int, model: str, engine: Engine, prompts: pl.DataFrame) -> dict:
    """All stages of round ``r`` whose outputs are missing; returns the round's summary."""
    rd = round_dir(run, r)
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"round": r}

    def timed(name: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        timings[f"seconds/{name}"] = time.perf_counter() - start
        return result

    if r > 0:
        if not (rd / "rollouts.parquet").exists():
            summary.update(timed("generate", generate_round, cfg, model, engine.get(model), r, rd / "rollouts.parquet", prompts))
        if not (rd / "verified").exists():
            timed("verify", verify, rd / "rollouts.parquet", rd / "verified", verify_config(cfg))
        if not (rd / "checkpoint").exists():
            timed("train", train, rd / "verified", rd / "checkpoint", train_config(cfg, model, r))
        from crl.data.schemas import read_verified
        from crl.stages.verify import summary as verify_summary

        rows, grouped, _ = read_verified(rd / "verified")
        summary.update({f"rollouts/{k}": val for k, val in verify_summary(rows, grouped).items()})
        summary.update(train_summary(rd / "checkpoint"))
        model = str(rd / "checkpoint")
    if r == 0 or r % cfg["eval_every"] == 0 or r == cfg["rounds"]:
        summary.update(timed("eval", eval_round, cfg, model, engine.get(model), rd / "eval.parquet"))
    summary.update(timings)
    with atomic_path(rd / DONE) as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return summary


def metrics_table(run: Path) -> pl.DataFrame:
    """One row per finished round, from the rounds' summaries."""
    rows = [json.loads(p.read_text()) for p in sorted(run.glob(f"round-*/{DONE}"))]
    return pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()


def iterate(cfg: dict[str, Any], run: Path, resume: bool = False) -> pl.DataFrame:
    """Run (or continue) the rounds of ``cfg`` in ``run``; returns metrics.parquet's table."""
    if run.exists() and any(run.iterdir()) and not resume:
        raise CrlError(f"--out {run}: folder exists and is not empty; pass --resume to continue it")
    run.mkdir(parents=True, exist_ok=True)
    clean_partial(run)
    with atomic_path(run / "config.toml") as tmp:
        tmp.write_text(config_mod.dumps(cfg))
    base = resolve_model(cfg["model"])
    prompts = load_prompts(resolve_prompts(cfg["prompts"]))
    engine = Engine(cfg)
    tracker = open_tracker(cfg["log_to"], run, cfg)
    try:
        model = base
        for r in range(0, cfg["rounds"] + 1):
            rd = round_dir(run, r)
            if not (rd / DONE).exists():
                console.rule(f"round {r}/{cfg['rounds']}")
                tracker.log(r, run_round(cfg, run, r, model, engine, prompts))
                write_parquet(metrics_table(run), run / "metrics.parquet")
            if r > 0:
                model = str(rd / "checkpoint")
    finally:
        engine.close()
        tracker.close()
    table = metrics_table(run)
    write_parquet(table, run / "metrics.parquet")
    return table
