"""``crl iterate``: the online loop, generate -> verify -> train, with evaluation along the way."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from crl.cli import app
from crl.errors import CrlError
from crl import config as config_mod


def latest_run(root: Path) -> Path:
    runs = sorted((p for p in root.glob("*") if (p / "config.toml").is_file()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise CrlError(f"--resume: no run folder under {root}/ to resume (pass --out)")
    return runs[-1]


@app.command("iterate")
def iterate_cmd(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file; flags and --set override it.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default: a new folder under ./runs/).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out (or the latest under ./runs/).")] = False,
    rounds: Annotated[Optional[int], typer.Option(min=0, help="Number of rounds.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Starting model (default: the shipped tiny-arith).")] = None,
    prompts: Annotated[Optional[str], typer.Option(help="Training prompt set (file or name).")] = None,
    eval_task: Annotated[Optional[list[str]], typer.Option(help="Held-out prompt set (repeatable).")] = None,
    objective: Annotated[Optional[str], typer.Option(help="Training objective (see `crl train --list-objectives`).")] = None,
    backend: Annotated[Optional[str], typer.Option(help="auto, hf or vllm.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for prompts, sampling and training.")] = None,
    log_to: Annotated[Optional[str], typer.Option("--log-to", help="none, tensorboard or wandb (offline unless WANDB_API_KEY is set).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any setting, section.key=value (repeatable), e.g. train.lr=1e-5.")] = None,
    print_config: Annotated[bool, typer.Option(help="Print the resolved configuration and exit.")] = False,
) -> None:
    """Run N rounds of generate, verify and train; evaluate every few rounds; write RUN/metrics.parquet.

    With no flags it trains the shipped tiny model on synthetic arithmetic on the CPU in a few minutes.
    """
    from crl.stages.iterate import iterate

    if resume and out is None:
        out = latest_run(Path("runs"))
    base = config_mod.DEFAULTS
    if resume and out is not None and (out / "config.toml").is_file():
        base = config_mod.merge(base, config_mod.load_toml(out / "config.toml"), str(out / "config.toml"))
    named = {"rounds": rounds, "model": model, "prompts": prompts, "eval_tasks": eval_task, "backend": backend, "seed": seed, "log_to": log_to}
    overrides = {k: v for k, v in named.items() if v is not None}
    overrides = config_mod.merge_tables(config_mod.parse_set(set_ or []), overrides)
    if objective is not None:
        overrides.setdefault("train", {})["objective"] = objective
    cfg = config_mod.resolve(base, config, overrides)
    if print_config:
        print(config_mod.dumps(cfg), end="")
        return
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{stamp}-{cfg['train']['objective']}"
    table = iterate(cfg, out, resume)
    from crl.views.report import print_run

    print_run(table, out)
