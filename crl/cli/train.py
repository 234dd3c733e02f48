"""``crl train``: one round of updates on a verified/ folder.

On N processes: ``torchrun --nproc-per-node N -m crl train VERIFIED ...`` (docs/multinode.md)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from crl.cli import app
from crl.errors import CrlError
from crl.progress import console


def parse_options(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CrlError(f"-o {item}: expected NAME=VALUE")
        out[key.strip()] = value.strip()
    return out


def list_objectives() -> None:
    from crl.objectives import OBJECTIVES, options

    table = Table(title="objectives (-o NAME=VALUE sets an option)")
    table.add_column("objective")
    table.add_column("options and defaults")
    table.add_column("what it does")
    for name, fn in sorted(OBJECTIVES.items()):
        opts = ", ".join(f"{k}={v}" for k, v in options(name).items())
        table.add_row(name, opts, (fn.__doc__ or "").strip().splitlines()[0])
    console.print(table)


@app.command("train")
def train_cmd(
    verified: Annotated[Optional[Path], typer.Argument(help="A verified/ folder written by `crl verify`.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="The policy to update (the model that sampled the rollouts).")] = "tiny-arith",
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write.")] = Path("checkpoint"),
    objective: Annotated[str, typer.Option(help="Training objective; see --list-objectives.")] = "conspo",
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="Objective option NAME=VALUE (repeatable).")] = None,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-6,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm.")] = 1.0,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the round's groups.")] = 1,
    minibatches: Annotated[int, typer.Option(min=1, help="Optimiser steps per epoch.")] = 1,
    token_budget: Annotated[Optional[int], typer.Option(min=1, help="Tokens per packed micro-batch; default 2048 on CPU, 16384 on a GPU (8192 for models over 4B).")] = None,
    progress: Annotated[float, typer.Option(min=0.0, max=1.0, help="Training progress in [0, 1] (ConSPO's margin curriculum).")] = 0.0,
    old_logprobs: Annotated[str, typer.Option(help="recompute (with the loaded weights) or rollout (from the sampler).")] = "recompute",
    ref: Annotated[Optional[str], typer.Option(help="Frozen reference model for objectives with a KL or reference term.")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations in backward to save memory; default on for models of 1B parameters or more on a GPU.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32, bf16-mixed (fp32 master weights and AdamW state, bf16 autocast) or bf16 (bf16 weights and AdamW state: half the memory for weights and optimizer, but an update smaller than about 0.2% of a weight rounds away, so small learning rates barely move it); default bf16-mixed on a GPU, fp32 on CPU.")] = None,
    attn: Annotated[Optional[str], typer.Option(help="Attention kernel: sdpa (default), flex_attention (a block-sparse document mask for packed rows, where sdpa works on a dense block-diagonal one) or eager.")] = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile each decoder layer (slow first step; pays off on long GPU rounds).")] = False,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda; default cuda when available.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the order of groups.")] = 0,
    log_to: Annotated[str, typer.Option("--log-to", help="none, tensorboard or wandb (offline unless WANDB_API_KEY is set); logs beside --out.")] = "none",
    list_objectives_: Annotated[bool, typer.Option("--list-objectives", help="List objectives and their options, then exit.")] = False,
) -> None:
    """Update the model on a verified/ folder with one objective; write a checkpoint with optimizer state and train_log.parquet.

    Runs the same on N processes under torchrun (FSDP2): torchrun --nproc-per-node N -m crl train VERIFIED ...
    """
    if list_objectives_:
        list_objectives()
        return
    if verified is None:
        raise CrlError("missing argument VERIFIED (a verified/ folder)")
    from crl.engine.checkpoint import resolve_model
    from crl.engine.trainer import TrainConfig, train
    from crl.views.tracking import open_tracker

    cfg = TrainConfig(
        model=resolve_model(model), objective=objective, options=parse_options(option or []), lr=lr,
        weight_decay=weight_decay, max_grad_norm=max_grad_norm, epochs=epochs, minibatches=minibatches,
        token_budget=token_budget, progress=progress, old_logprobs=old_logprobs,
        ref=resolve_model(ref) if ref else None, device=device, gradient_checkpointing=gradient_checkpointing, seed=seed,
        precision=precision, attn=attn, compile=compile_,
    )
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun every process runs this command; one reports
    tracker = open_tracker(log_to if main else "none", out.parent, dataclasses.asdict(cfg))
    with tracker:
        log = train(verified, out, cfg)
        for row in log.to_dicts():
            tracker.log(row["step"], row)
    if main:
        console.print(log.select([c for c in ("step", "loss", "units", "groups", "grad_norm", "tokens") if c in log.columns]))
        console.print(f"wrote {out}")
