"""Objectives on the embedded default: each objective at each learning rate, several seeds, the same budget.

Runs ``crl iterate`` (in-process) once per (objective, learning rate, seed) on the default task and prints one
table: held-out avg@k and pass@k of the warm start and after the last round (mean and standard deviation over
the seeds), the gain, and the time in rounds (generation, verification, training; evaluation excluded). Run
folders go to OUT/ (default bench/results/objectives/), the table to OUT.json. A run whose folder is complete is
read, not redone, so an interrupted sweep continues where it stopped.

    python bench/objectives.py                                            # every objective, its default lr, 3 seeds
    python bench/objectives.py --objectives conspo grpo --lrs 1e-4 3e-4 1e-3 --seeds 0 1 2
    python bench/objectives.py --objectives conspo --set train.options.inverse=true --out bench/results/conspo-inverse
    python bench/objectives.py --report                                   # the table of every finished run in OUT
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from crl.config import parse_set, resolve
from crl.config.resolve import load_toml
from crl.objectives import OBJECTIVES
from crl.stages.iterate import iterate
from crl.data.rounds import eval_columns

RESULTS = Path(__file__).resolve().parent / "results"


def run_one(objective: str, lr: float | None, seed: int, settings: dict, out: Path, recipe: Path | None = None) -> dict:
    """One run (or the finished run already in ``out``), from ``recipe``'s settings (a TOML file, else the
    defaults) under ``settings``: first and last evaluation, time in rounds."""
    layer = {**settings, "seed": seed, "train": {**settings.get("train", {}), "objective": objective}}
    if lr is not None:
        layer["train"]["lr"] = lr
    resolved = resolve([*([(load_toml(recipe), f"--config {recipe}")] if recipe else []), (layer, "bench")])
    run = out / f"{objective}-lr{resolved.config.train.lr:g}-seed{seed}"
    if not finished(run, resolved.config.rounds):
        iterate(resolved, run, resume=run.exists())
    return row(run)


def finished(run: Path, rounds: int) -> bool:
    return (run / "metrics.parquet").is_file() and pl.read_parquet(run / "metrics.parquet")["round"].max() == rounds


def row(run: Path) -> dict:
    """A finished run's table row, read from its config.toml and metrics.parquet."""
    config, metrics = load_toml(run / "config.toml"), pl.read_parquet(run / "metrics.parquet")
    evals = metrics.drop_nulls(eval_columns(metrics)[0])
    avg, pass_ = (next(c for c in eval_columns(metrics) if f"/{m}@" in c) for m in ("avg", "pass"))
    return {
        "objective": config["train"]["objective"], "lr": config["train"]["lr"], "seed": config["seed"],
        "rounds": config["rounds"], "metric": avg, "before": evals[avg][0], "after": evals[avg][-1],
        "pass_before": evals[pass_][0], "pass_after": evals[pass_][-1],
        "seconds_in_rounds": float(metrics["seconds/round"].sum()),
    }


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def table(rows: list[dict]) -> Table:
    out = Table(title=f"objectives on the embedded default ({rows[0]['metric']}, {rows[0]['rounds']} rounds, mean ± sd over seeds)")
    for col in ("objective", "lr", "seeds", "before", "after", "gain (points)", "pass after", "time in rounds (s)"):
        out.add_column(col, justify="left" if col == "objective" else "right")
    keys = sorted({(r["objective"], r["lr"]) for r in rows})
    for objective, lr in keys:
        group = [r for r in rows if (r["objective"], r["lr"]) == (objective, lr)]
        gains = [100 * (r["after"] - r["before"]) for r in group]
        out.add_row(objective, f"{lr:g}", str(len(group)), mean_std([r["before"] for r in group]),
                    mean_std([r["after"] for r in group]), f"{statistics.mean(gains):+.1f}",
                    mean_std([r["pass_after"] for r in group]), mean_std([r["seconds_in_rounds"] for r in group]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", nargs="*", default=sorted(OBJECTIVES))
    parser.add_argument("--lrs", nargs="*", type=float, default=[None], help="learning rates (default: the preset's)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--set", dest="settings", action="append", default=[], help="section.key=value")
    parser.add_argument("--out", type=Path, default=RESULTS / "objectives")
    parser.add_argument("--report", action="store_true", help="only the table of every finished run in OUT")
    args = parser.parse_args()

    if args.report:
        runs = sorted(p.parent for p in args.out.glob("*/config.toml"))
        rows = [row(r) for r in runs if finished(r, load_toml(r / "config.toml")["rounds"])]
        rows = [r for r in rows if r["objective"] in args.objectives]
        Console().print(table(rows))
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
        return
    settings = parse_set(args.settings)
    if args.rounds is not None:
        settings["rounds"] = args.rounds
    rows = []
    for objective in args.objectives:
        for lr in args.lrs:
            for seed in args.seeds:
                rows.append(run_one(objective, lr, seed, settings, args.out))
                print(json.dumps(rows[-1]), flush=True)
    Console().print(table(rows))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
