"""Every objective on the embedded default with the same seeds, prompts and budget.

Runs ``crl iterate`` (in-process) once per objective and prints one table: held-out accuracy of the warm
start and after the last round, wall time, completion tokens trained. The warm start's evaluation (round 0)
is the same for every objective, so it is computed once and copied into each run folder, which ``--resume``
then treats as done. Run folders go to OUT/ (default bench/results/objectives/), the table to OUT.json.

    python bench/objectives.py                       # all objectives, the default run's settings
    python bench/objectives.py --objectives conspo grpo --rounds 4 --set train.lr=1e-4
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from crl.objectives import OBJECTIVES
from crl import config as config_mod
from crl.stages.iterate import iterate

RESULTS = Path(__file__).resolve().parent / "results"


def tokens_trained(run: Path) -> int:
    logs = [pl.read_parquet(p) for p in sorted(run.glob("round-*/checkpoint/train_log.parquet"))]
    return int(sum(log["tokens"].sum() for log in logs))


def accuracy_column(metrics: pl.DataFrame) -> str:
    return next(c for c in metrics.columns if "/avg@" in c)


def run_objective(objective: str, cfg: dict, out: Path, warm_start: Path | None) -> dict:
    run = out / objective
    if run.exists():
        shutil.rmtree(run)
    if warm_start is not None:
        shutil.copytree(warm_start, run / warm_start.name)
    start = time.perf_counter()
    metrics = iterate(cfg, run, resume=True)
    wall = time.perf_counter() - start
    col = accuracy_column(metrics)
    evals = metrics.drop_nulls(col)
    return {
        "objective": objective,
        "metric": col,
        "before": evals[col][0],
        "after": evals[col][-1],
        "gain_points": 100 * (evals[col][-1] - evals[col][0]),
        "wall_s": wall,
        "tokens_trained": tokens_trained(run),
        "rounds": cfg["rounds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", nargs="*", default=sorted(OBJECTIVES))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--set", dest="settings", action="append", default=[], help="section.key=value")
    parser.add_argument("--out", type=Path, default=RESULTS / "objectives")
    args = parser.parse_args()

    overrides = config_mod.parse_set(args.settings)
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    rows, warm_start = [], None
    for objective in args.objectives:
        cfg = config_mod.resolve(config_mod.DEFAULTS, None, config_mod.merge_tables(overrides, {"train": {"objective": objective}}))
        rows.append(run_objective(objective, cfg, args.out, warm_start))
        warm_start = args.out / objective / "round-0000"
        print(json.dumps(rows[-1]), flush=True)

    table = Table(title=f"objectives on the embedded default ({rows[0]['metric']}, {rows[0]['rounds']} rounds)")
    for col in ("objective", "before", "after", "gain (points)", "wall (s)", "tokens trained"):
        table.add_column(col, justify="left" if col == "objective" else "right")
    for r in rows:
        table.add_row(r["objective"], f"{r['before']:.3f}", f"{r['after']:.3f}", f"{r['gain_points']:+.1f}",
                      f"{r['wall_s']:.0f}", str(r["tokens_trained"]))
    Console().print(table)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
