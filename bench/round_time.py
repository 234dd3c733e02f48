"""Where the time of a ``crl iterate`` round goes, against crl before the resident loop, in one run.

Each round of a run is split into sampling, verifying, training (forward, backward and optimiser steps, with the
behaviour and reference log-prob passes) and everything else (writing the round's files, the weight hand-over,
saving the state every ``save_every`` rounds, bookkeeping); evaluation rounds are timed apart and left out. The
first round (warm-up) is reported separately from the mean of the others.

The baseline is crl at the git revision ``--baseline`` (default: the first release, which saved and reloaded
the whole model and optimizer every round), checked out into a temporary worktree and run with the same
settings and objective (``--objective``, default conspo, the first release's default); its timers cover
sampling, verifying and training (the checkpoint load and save are inside its training time), so its round is
their sum. Both runs also report the held-out gain, which must not suffer.

    python bench/round_time.py                          # the tiny default, 60 rounds, this crl and the baseline
    python bench/round_time.py --rounds 20 --seeds 0 1 2
    python bench/round_time.py --runs runs/smollm2      # only the split of finished runs (a recipe's, say)

Writes bench/results/round_time.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

from crl.data.rounds import eval_columns

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "verify", "train")


def split(metrics: pl.DataFrame) -> dict[str, float]:
    """Mean seconds per training round (the first left out) in each part, the rest, and the held-out gain."""
    rounds = metrics.filter(pl.col("round") > 1).sort("round")
    parts = {s: rounds[f"seconds/{s}"].fill_null(0).mean() for s in STAGES}
    total = rounds["seconds/round"].mean() if "seconds/round" in rounds.columns else sum(parts.values())
    avg = next(c for c in eval_columns(metrics) if "/avg@" in c)
    evals = metrics.filter(pl.col(avg).is_not_null()).sort("round")
    first = metrics.filter(pl.col("round") == 1)
    return {
        **parts, "rest": total - sum(parts.values()), "round": total, "rest_share": 1 - sum(parts.values()) / total,
        "first_round": float(first["seconds/round"][0] if "seconds/round" in first.columns else sum(first[f"seconds/{s}"][0] for s in STAGES)),
        "rounds": int(metrics["round"].max()), "metric": avg, "before": evals[avg][0], "after": evals[avg][-1],
    }


def run(cwd: Path, out: Path, settings: list[str], env: dict) -> pl.DataFrame:
    cmd = [sys.executable, "-m", "crl", "iterate", "--out", str(out), *settings]
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return pl.read_parquet(out / "metrics.parquet")


def measure(rounds: int, seeds: list[int], baseline: str, objective: str, folder: Path) -> list[dict]:
    rows = []
    typed = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{baseline}:crl/config/settings.py"]).returncode == 0
    old_key = "eval.every" if typed else "eval_every"  # the first release's setting, before the typed configuration
    every = ["--set", f"eval.every={max(rounds // 6, 1)}"], ["--set", f"{old_key}={max(rounds // 6, 1)}"]
    with tempfile.TemporaryDirectory(prefix="crl-baseline-") as tree:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", tree, baseline], check=True)
        try:
            for seed in seeds:
                common = ["--rounds", str(rounds), "--seed", str(seed), "--backend", "hf", "--objective", objective]
                now = run(ROOT, folder / f"crl-seed{seed}", [*common, *every[0]], dict(os.environ))
                rows.append({"version": "crl", "seed": seed, **split(now)})
                print(json.dumps(rows[-1]), flush=True)
                old_env = {**os.environ, "PYTHONPATH": tree}
                before = run(Path(tree), folder / f"baseline-seed{seed}", [*common, *every[1]], old_env)
                rows.append({"version": f"crl@{baseline}", "seed": seed, **split(before)})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tree], check=False)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| version | seeds | round (s) | sampling | verifying | training | rest | rest share | first round (s) | held-out before -> after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for version in dict.fromkeys(r["version"] for r in rows):
        group = [r for r in rows if r["version"] == version]

        def ms(key: str, fmt: str = "{:.2f}") -> str:
            values = [r[key] for r in group]
            sd = f" ± {fmt.format(statistics.stdev(values))}" if len(values) > 1 else ""
            return fmt.format(statistics.mean(values)) + sd

        lines.append(f"| {version} | {len(group)} | {ms('round')} | {ms('generate')} | {ms('verify')} | {ms('train')} | "
                     f"{ms('rest')} | {ms('rest_share', '{:.1%}')} | {ms('first_round')} | {ms('before', '{:.3f}')} -> {ms('after', '{:.3f}')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--baseline", default="e7f90a8", help="git revision of the crl to compare with")
    parser.add_argument("--objective", default="conspo", help="the same in both runs (conspo: the first release's default)")
    parser.add_argument("--runs", nargs="*", type=Path, help="only report the split of these finished run folders")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "round_time.json")
    args = parser.parse_args()
    if args.runs:
        rows = [{"version": str(r), "seed": 0, **split(pl.read_parquet(r / "metrics.parquet"))} for r in args.runs]
    else:
        with tempfile.TemporaryDirectory(prefix="crl-round-time-") as runs:
            rows = measure(args.rounds, args.seeds, args.baseline, args.objective, Path(runs))
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_average": os.getloadavg(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
