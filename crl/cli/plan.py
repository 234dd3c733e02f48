"""``crl plan``: what a round of ``crl iterate`` will sample, train, hold in memory and take, before it runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from crl.cli import app
from crl.cli.iterate import FIELDS
from crl.cli.options import Given, settings_command


@settings_command(app, "plan", FIELDS)
def plan_cmd(
    probe: Annotated[bool, typer.Option(help="Load the model and time one micro-batch at the budget (and a few sampling steps).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON instead of tables.")] = False,
    *,
    given: Given,
) -> None:
    """The batch arithmetic of a round, the memory of each part against this device's, and the round's time.

    Takes the same settings and flags as `crl iterate`. Memory is predicted from the model's config.json before
    anything loads; a configuration that does not fit exits with status 2 and names a setting and a value that
    fits (`crl iterate` runs the same check). --probe (the default) then measures one micro-batch.
    """
    from crl.data.models import resolve_model
    from crl.stages import plan as planning
    from crl.stages.iterate import check_run
    from crl.views.report import stdout

    run = given.resolve().config
    model = resolve_model(run.model)
    result = planning.check_fits(run, model, check_run(run, model))
    if probe:
        result.time = planning.probe(run, model, result)
    if as_json:
        print(json.dumps(result.as_dict(), indent=1))
        return
    for table in tables(result):
        stdout.print(table)


def tables(result) -> list:
    from rich.table import Table

    from crl.engine.memory import GiB

    rt, worst, m = result.runtime, result.worst, result.memory
    round_ = Table(title=f"a round (at most), on {rt.device} in {rt.precision}", show_header=False)
    for key, value in result.arithmetic.items():
        round_.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    round_.add_row("largest micro-batch", f"{worst.groups} groups x {worst.n} rows of {worst.prompt} + {worst.completion} tokens "
                   f"({worst.tokens:,} computed)")
    memory = Table(title="memory (GiB)", show_header=False)
    recompute = "with recomputation" if rt.gradient_checkpointing else "without recomputation"
    other = "without recomputation" if rt.gradient_checkpointing else "with recomputation"
    labels = {"process": "this process (and loading the trainer)", "activations": f"activations, {recompute}",
              "backward's extra": "output layer's chunk (or a recomputed layer)",
              "activations, other choice": f"(activations and that, {other})",
              "sampling": "crl's sampler (KV cache, logits)", "vLLM": "vLLM", "vLLM KV cache": "(of which or beside it: KV cache)",
              "needed": "needed at the peak", "available": "available"}
    for key, value in m.items():
        memory.add_row(labels.get(key, key), f"{value / GiB:.2f}")
    memory.add_row("fits", "yes" if result.fits else "no")
    out = [round_, memory]
    if result.time:
        seconds = Table(title="time (s), from one measured micro-batch", show_header=False)
        for key, value in result.time.items():
            seconds.add_row(key, f"{value:.2f}")
        out.append(seconds)
    return out
