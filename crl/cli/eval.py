"""``crl eval``: accuracy of a model on prompt sets, k samples per problem."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from crl.cli import app
from crl.cli.generate import Backend, Instruction, Model, Template
from crl.engine.backends import SamplingConfig
from crl.progress import console


def print_metrics(table, title: str) -> None:
    out = Table(title=title)
    for col in table.columns:
        out.add_column(col, justify="left" if col == "task" else "right")
    for row in table.iter_rows():
        out.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    console.print(out)


@app.command("eval")
def eval_cmd(
    tasks: Annotated[list[str], typer.Argument(help="Prompt sets: files or names (arith_test, math500 after `crl data pull`).")],
    model: Model = "tiny-arith",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="eval.parquet to write (one row per sample).")] = Path("eval.parquet"),
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Samples per problem.")] = 4,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature (0.6 in DisCO/ConSPO; 0 greedy).")] = 0.6,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 256,
    seed: int = 0,
    template: Template = "auto",
    instruction: Instruction = "",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use only the first N problems of each set.")] = None,
    verifier: Annotated[str, typer.Option(help="Verifier name or package.module:function.")] = "math",
    workers: Annotated[int, typer.Option(min=0, help="Verifier worker processes; 0 uses every core.")] = 0,
    backend: Backend = "auto",
) -> None:
    """Sample k completions per problem; print avg@k, pass@k, maj@k, mean length and truncation per task."""
    from crl.engine.checkpoint import resolve_model
    from crl.stages.eval import EvalConfig, evaluate
    from crl.stages.generate import GenerateConfig
    from crl.stages.verify import VerifyConfig

    sampling = SamplingConfig(k, temperature, top_p, max_new_tokens, seed)
    gen = GenerateConfig(resolve_model(model), sampling, template, instruction, limit, None, backend)
    table, _ = evaluate(tasks, out, EvalConfig(gen, VerifyConfig(verifier, workers)))
    print_metrics(table, f"{model} (k={k}, T={temperature})")
    if out:
        console.print(f"wrote {out}")
