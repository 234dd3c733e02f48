"""``crl iterate``: the online loop, generate -> verify -> train, with evaluation along the way."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from crl.cli import app
from crl.cli.options import Given, settings_command
from crl.errors import CrlError

TOP = ["model", "prompts", "template", "instruction", "rounds", "prompts_per_round", "save_every", "keep_last", "seed", "log_to"]
FIELDS = [*TOP, "train.objective", "train.options", "eval.tasks", "backend.name"]  # crl plan takes the same


def latest_run(root: Path) -> Path:
    runs = sorted((p for p in root.glob("*") if (p / "config.toml").is_file()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise CrlError(f"--resume: no run folder under {root}/ to resume (pass --out)")
    return runs[-1]


@settings_command(app, "iterate", FIELDS)
def iterate_cmd(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: a new folder under ./runs/).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out (or the latest under ./runs/) from its last saved state.")] = False,
    print_config: Annotated[bool, typer.Option(help="Print the resolved configuration, each value with where it came from, and exit.")] = False,
    *,
    given: Given,
) -> None:
    """Run N rounds of generate, verify and train; evaluate every few rounds; write RUN/metrics.parquet.

    With no flags it trains the shipped tiny model on synthetic arithmetic on the CPU in a few minutes.
    Settings: defaults < the model's preset < --config FILE < --set section.key=value < flags; see --print-config.
    """
    from crl.config import dumps, load_toml
    from crl.stages.iterate import iterate
    from crl.views.report import print_run

    if resume and out is None:
        out = latest_run(Path("runs"))
    saved = out / "config.toml" if resume and out is not None else None
    resolved = given.resolve(load_toml(saved, "--resume") if saved and saved.is_file() else None, f"run {saved}")
    if print_config:
        print(dumps(resolved, with_origins=True), end="")  # plain text: a terminal width must not wrap TOML
        return
    if out is None:
        out = Path("runs") / f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}-{resolved.config.train.objective}"
    print_run(iterate(resolved, out, resume), out)
