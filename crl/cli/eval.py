"""``crl eval``: accuracy of a model on prompt sets, k samples per problem."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crl.cli import app
from crl.cli.options import Given, Overwrite, SAMPLING, out_option, settings_command


@settings_command(app, "eval", ["model", "template", "instruction", "seed", *(f"eval.{f}" for f in SAMPLING), "eval.limit", "verify.*", "backend.*"])
def eval_cmd(
    tasks: Annotated[list[str], typer.Argument(help="Prompt sets: files or names (arith_test, math500 after `crl data import`).")],
    out: Annotated[Path, out_option("eval.parquet to write (one row per sample).")] = Path("eval.parquet"),
    overwrite: Overwrite = False,
    *,
    given: Given,
) -> None:
    """Sample n completions per problem; print avg@n, pass@n, maj@n, mean length and truncation per task."""
    from crl.data.models import resolve_model
    from crl.progress import console
    from crl.stages.eval import evaluate
    from crl.views.report import print_metrics

    resolved = given.resolve()
    run = resolved.config
    table, _ = evaluate(tasks, out, run, resolve_model(run.model), verifier_named="verify.verifier" in resolved.origins, overwrite=overwrite)
    print_metrics(table, f"{run.model} (n={run.eval.n}, T={run.eval.temperature}, top-p={run.eval.top_p})")
    console.print(f"wrote {out}")
