"""``crl iterate``: the online loop, generate -> verify -> train, with evaluation along the way."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from crl.cli import app
from crl.cli.options import Given, out_option, settings_command
from crl.errors import CrlError

TOP = ["model", "prompts", "template", "instruction", "rounds", "prompts_per_round", "save_every", "keep_last", "seed", "log_to"]
FIELDS = [*TOP, "train.objective", "train.options", "train.fresh_optimizer", "eval.tasks", "backend.name"]  # crl plan takes the same


def latest_run(root: Path) -> Path:
    from crl.stages.run_folder import is_run

    runs = sorted((p for p in root.glob("*") if is_run(p)), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise CrlError(f"--resume: no run folder under {root}/ to resume (pass --out)")
    return runs[-1]


@settings_command(app, "iterate", FIELDS)
def iterate_cmd(
    out: Annotated[Optional[Path], out_option("Run folder (default: a new folder under ./runs/).")] = None,
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
    from crl.config.resolve import paths_from
    from crl.locks import hold_run
    from crl.stages import run_folder
    from crl.stages.iterate import iterate
    from crl.views.report import print_run

    saved = None
    if resume:
        out = out if out is not None else latest_run(Path("runs"))
        run_folder.check_resumable(out)
        hold_run(out)  # before anything else is read: no other process works in the run from here on
        saved = paths_from(load_toml(out / run_folder.CONFIG, "--resume"), out)
    resolved = given.resolve(saved, f"run {out / run_folder.CONFIG}" if saved is not None else "")
    if print_config:
        print(dumps(resolved, with_origins=True), end="")  # plain text: a terminal width must not wrap TOML
        return
    if out is None:
        out = Path("runs") / f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}-{resolved.config.train.objective}"
    print_run(iterate(resolved, out, resume), out)
