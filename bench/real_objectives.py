"""A real pretrained model (SmolLM2-135M-Instruct) through ``crl iterate``: five objectives on two tasks, several
seeds, and training on stored rollouts (a replay window, an offline contrastive pass) against the online run.

Tasks, each a recipe in recipes/ (the same model, sampling, budget and evaluation for every objective):
- ``arith``: crl's arithmetic set (recipes/smollm2-arith.toml);
- ``chain``: reasoning-gym's chain_sum (two terms of one or two digits), imported by this script with
  ``crl data import reasoning-gym:...`` (recipes/smollm2-chain.toml; train seed 0, held-out seed 1).

Arms, per task and seed:
- ``online``: ``crl iterate --config RECIPE --objective OBJ --seed S`` for each objective (its paper's options,
  the recipe's learning rate for all);
- ``replay``: the same with ``train.replay`` = M: each round trains on the verified groups of the last M rounds
  (clipped objectives correct the older rounds with truncated importance ratios; contrastive ones need none);
- ``dynamic``: the same with ``generate.dynamic_sampling`` on, which only dapo has by default: prompts are drawn
  until the round holds ``prompts_per_round`` groups with a right and a wrong answer (does an objective lose to
  dapo because of its loss or because it trains on fewer groups?);
- ``offline``: the online dapo run's state after N rounds, then ``crl train`` with a contrastive objective over
  the verified/ folders of those N rounds for E epochs, then ``crl eval`` with the recipe's evaluation.

Each finished run gives a row: held-out avg@k and pass@k before and after, the completion tokens sampled for
training, the seconds of the whole run (rounds, evaluations and saves), the held-out gain per million sampled
tokens and per hour, and the round means of the quantities that explain a result (entropy, completion length,
score gap, weight of the hardest negative, groups dropped, clip fraction). A run already finished is read, not
redone, so the sweep runs in parts (``--tasks``, ``--objectives``, ``--seeds``, ``--arms``) across sessions, and
``--report`` prints the table of every finished run: the ones under OUT and the rows of the earlier OUT.json that
no folder here replaces (bench/results/real.json is committed, so a part finished on another machine counts).
Checkpoints are deleted once a run is finished (a SmolLM2 state is 1.6 GB) except the dapo states the offline arm
starts from.

    python bench/real_objectives.py --tasks arith --objectives dapo grpo --seeds 0      # a part of the sweep
    python bench/real_objectives.py --arms replay offline --seeds 0 1 2
    python bench/real_objectives.py --arms dynamic --dynamic-objectives rence --seeds 0
    python bench/real_objectives.py --tasks chain --objectives rence --option score=normalized   # an ablation
    python bench/real_objectives.py --report                                            # every finished run
    python bench/real_objectives.py --report --plot                                     # and the figure
    python bench/real_objectives.py --report --markdown                                 # the table in Markdown

Writes run folders to OUT/TASK/ARM/ (default bench/results/real/), the table to OUT.json and the figure to
OUT.png. Needs ``crl model pull smollm2-135m-instruct`` and reasoning-gym (``pip install 'crl[tasks]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from crl.config import parse_set
from crl.config.resolve import load_toml
from crl.data.importers import import_generated
from crl.data.prompts import data_home
from crl.io import read_metadata
from crl.stages.run_folder import CHECKPOINTS, checkpoint_dir, round_dir
from objectives import RESULTS, finished

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ("dapo", "grpo", "rence", "conspo", "disco")
# Every run: 12 rounds (about 15 minutes of a quiet 2-core CPU for SmolLM2), evaluated before and after; a
# verification limit far above any item's time, so that a loaded machine cannot turn a slow item into a zero.
BENCH = {"rounds": 12, "eval": {"every": 12}, "save_every": 12, "verify": {"timeout": 60.0}}
OFFLINE_EPOCHS = 1  # the offline arm's passes over the stored rounds, unless --offline-epochs (2 lost 8.8 points)
ANALYSIS = ("entropy", "mean_completion_tokens", "score_gap", "hardest_neg_weight", "groups_dropped", "clip_frac")


@dataclass(frozen=True)
class Task:
    recipe: Path
    # (source, name, rows, seed, params, sets whose problems it leaves out), imported in this order
    imports: tuple[tuple[str, str, int, int, tuple[str, ...], tuple[str, ...]], ...] = ()


TASKS = {
    "arith": Task(ROOT / "recipes" / "smollm2-arith.toml"),
    "chain": Task(
        ROOT / "recipes" / "smollm2-chain.toml",
        (("reasoning-gym:chain_sum", "chain_test", 100, 100_000, ("max_terms=2", "max_digits=2"), ()),
         ("reasoning-gym:chain_sum", "chain_train", 2000, 0, ("max_terms=2", "max_digits=2"), ("chain_test",))),
    ),
}


def prepare(task: Task) -> None:
    """The task's prompt sets in the data home, imported once."""
    from crl.data.reasoning_gym import parse_params

    for source, name, rows, seed, params, exclude in task.imports:
        if not (data_home() / f"{name}.parquet").is_file():
            import_generated(source, name, None, rows, seed, parse_params(list(params)), exclude=exclude)


def merged(base: dict, over: dict) -> dict:
    """``over`` laid on ``base``, table by table."""
    return {**base, **{k: merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v for k, v in over.items()}}


def recipe_rounds(task: Task, settings: dict) -> int:
    return int(settings.get("rounds", load_toml(task.recipe)["rounds"]))


def crl(*args: object) -> None:
    """A crl command in a child process, as a user runs it: each run starts with a fresh process's memory."""
    subprocess.run([sys.executable, "-m", "crl", *map(str, args)], check=True)


def flags(settings: dict, prefix: str = "") -> list[str]:
    """A table of settings as ``--set KEY=VALUE`` items."""
    out: list[str] = []
    for key, value in settings.items():
        value = json.dumps(value) if isinstance(value, bool) else value  # TOML's true and false
        out += flags(value, f"{prefix}{key}.") if isinstance(value, dict) else ["--set", f"{prefix}{key}={value}"]
    return out


def option_flags(options: tuple[str, ...]) -> list[str]:
    """Objective options KEY=VALUE as ``--option KEY=VALUE`` items."""
    return [x for o in options for x in ("--option", o)]


def named(prefix: str, options: tuple[str, ...]) -> str:
    """A run folder's name: the prefix, then each objective option KEY=VALUE as KEY_VALUE."""
    return "-".join((prefix, *(o.replace("=", "_") for o in options)))


def online(task: Task, objective: str, seed: int, out: Path, settings: dict, keep: int | None, options: tuple[str, ...] = ()) -> Path:
    """One online run (continued where it stopped) with the objective's ``options``; with ``keep``, the state
    after round ``keep`` is saved and kept (the offline arm's start)."""
    if keep:
        settings = merged(settings, {"save_every": keep, "keep_last": recipe_rounds(task, settings) // keep + 1})
    lr = settings.get("train", {}).get("lr", load_toml(task.recipe)["train"]["lr"])
    run = out / named(f"{objective}-lr{lr:g}-seed{seed}", options)
    if not finished(run, recipe_rounds(task, settings)):
        crl("iterate", "--config", task.recipe, "--objective", objective, "--seed", seed, *flags(settings),
            *option_flags(options), "--out", run, *(["--resume"] if run.exists() else []))
    return run


def evaluation(path: Path) -> dict:
    """An eval output's figures as metrics.parquet names them (TASK/avg@4, ...)."""
    return {f"{r['task']}/{k}": v for r in read_metadata(path)["metrics"] for k, v in r.items() if k not in ("task", "problems", "k")}


def offline(task: Task, base: Path, n: int, epochs: int, objective: str, out: Path, options: tuple[str, ...] = ()) -> Path:
    """``crl train`` over the verified/ folders of the base run's rounds 1..n from its state after round n, then
    ``crl eval`` with the base run's settings, as recipes/offline-smollm2.sh does; the run folder's
    metrics.parquet holds the base run's rounds 1..n, round n with the evaluation of the state the pass starts
    from, and a last row for the offline pass (its training seconds and statistics from train_log.parquet, kept
    in the run folder, its evaluation's wall time)."""
    run = out / named(f"{base.name}-n{n}-e{epochs}-{objective}", options)
    if (run / "metrics.parquet").is_file():
        return run
    config = base / "config.toml"
    base_config = load_toml(config)
    tasks, minibatches = base_config["eval"]["tasks"], base_config["train"].get("minibatches", 1) * n
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    crl("train", *[round_dir(base, r) / "verified" for r in range(1, n + 1)], "--config", config, "--model",
        checkpoint_dir(base, n), "--objective", objective, "--epochs", epochs, "--minibatches", minibatches,
        *option_flags(options), "--out", run / "checkpoint")
    log = pl.read_parquet(run / "checkpoint" / "train_log.parquet")
    shutil.copy(run / "checkpoint" / "train_log.parquet", run / "train_log.parquet")
    seconds_train = float(log["seconds"].max())
    # the pass's quantities of item 4, per stored round passed over as iterate logs them per round
    stats = {f"train/{k}": float(log[k].sum()) / (n * epochs) if k == "groups_dropped" else float(log[k].mean())
             for k in ANALYSIS if k in log.columns and log[k].drop_nulls().len()}
    start = time.perf_counter()
    crl("eval", *tasks, "--config", config, "--model", run / "checkpoint", "--out", run / "eval.parquet")
    seconds_eval = time.perf_counter() - start
    shutil.rmtree(run / "checkpoint")
    crl("eval", *tasks, "--config", config, "--model", checkpoint_dir(base, n), "--out", run / "start.parquet")
    start_row = pl.DataFrame([{"round": n, **evaluation(run / "start.parquet")}])
    base_metrics = pl.read_parquet(base / "metrics.parquet").filter(pl.col("round") <= n).update(start_row, on="round")
    last = pl.DataFrame([{"round": n + 1, "seconds/train": seconds_train, "seconds/round": seconds_train,
                          "seconds/eval": seconds_eval, **stats, **evaluation(run / "eval.parquet")}])
    pl.concat([base_metrics, last], how="diagonal_relaxed").write_parquet(run / "metrics.parquet")
    (run / "arm.json").write_text(json.dumps({"base": str(base), "n": n, "epochs": epochs, "objective": objective, "options": options}))
    return run


def row(run: Path, task: str, arm: str, objective: str, seed: int) -> dict:
    """A finished run's figures, read from its metrics.parquet; the offline arm's quantities of item 4 are its
    pass's (the last row), not its warm-up's."""
    m = pl.read_parquet(run / "metrics.parquet").sort("round")
    avg = next(c for c in m.columns if "/avg@" in c)
    pass_ = next(c for c in m.columns if "/pass@" in c)
    evals = m.filter(pl.col(avg).is_not_null())
    sampled = float((m["rollouts/completions"] * m["rollouts/mean_completion_tokens"]).sum())
    seconds = sum(float(m[c].fill_null(0).sum()) for c in ("seconds/round", "seconds/eval", "seconds/save") if c in m.columns)
    gain = float(evals[avg][-1] - evals[avg][0])
    out = {
        "task": task, "arm": arm, "objective": objective, "seed": seed, "rounds": int(m["round"].max()),
        "metric": avg, "before": float(evals[avg][0]), "after": float(evals[avg][-1]),
        "pass_before": float(evals[pass_][0]), "pass_after": float(evals[pass_][-1]),
        "sampled_tokens": sampled, "seconds": seconds, "seconds_per_round": float(m["seconds/round"].drop_nulls().mean()),
        "gain_per_mtok": 1e6 * gain / max(sampled, 1.0), "gain_per_hour": 3600 * gain / max(seconds, 1e-9),
        "start_of_last_pass": float(evals[avg][-2]) if arm == "offline" else None,  # the pass's start state
    }
    rounds = m.tail(1) if arm == "offline" else m
    for name in ANALYSIS:
        column = next((c for c in (f"train/{name}", f"rollouts/{name}") if c in rounds.columns), None)
        out[name] = float(rounds[column].drop_nulls().mean()) if column and rounds[column].drop_nulls().len() else None
    return out


def constant_floor(config: dict) -> float:
    """The held-out score of the best constant answer (the most common gold answer's share of the problems the
    evaluation reads): a policy that always gives it scores this much without reading the problem."""
    from crl.data.prompts import load_prompts

    answers = load_prompts(config["eval"]["tasks"][0], config["eval"].get("limit"))["answer"]
    return float(answers.value_counts()["count"].max()) / max(answers.len(), 1)


COLUMNS = ("task", "arm", "objective", "seeds", "floor", "before", "pass start", "after", "gain (points)", "pass after",
           "s / round", "run (s)", "gain / Mtok", "gain / h", "entropy", "length", "score gap", "hardest neg w", "dropped",
           "clip")


def cells(rows: list[dict]) -> list[list[str]]:
    """One line of COLUMNS per (task, arm, objective): the mean over its seeds, ± their standard deviation."""
    lines = []
    for key in dict.fromkeys((r["task"], r["arm"], r["objective"]) for r in rows):
        group = [r for r in rows if (r["task"], r["arm"], r["objective"]) == key]

        def ms(k: str, fmt: str = "{:.3f}") -> str:
            values = [r[k] for r in group if r.get(k) is not None]
            if not values:
                return ""
            return fmt.format(statistics.mean(values)) + (f" ± {fmt.format(statistics.stdev(values))}" if len(values) > 1 else "")

        gains = [100 * (r["after"] - r["before"]) for r in group]
        lines.append([*key, ",".join(str(r["seed"]) for r in group), ms("floor"), ms("before"), ms("start_of_last_pass"),
                      ms("after"), f"{statistics.mean(gains):+.1f}", ms("pass_after"), ms("seconds_per_round", "{:.0f}"),
                      ms("seconds", "{:.0f}"), ms("gain_per_mtok", "{:.2f}"), ms("gain_per_hour", "{:.2f}"),
                      ms("entropy", "{:.2f}"), ms("mean_completion_tokens", "{:.1f}"), ms("score_gap", "{:.3f}"),
                      ms("hardest_neg_weight", "{:.2f}"), ms("groups_dropped", "{:.1f}"), ms("clip_frac", "{:.3f}")])
    return lines


def table(rows: list[dict]) -> Table:
    out = Table(title=f"SmolLM2-135M-Instruct: held-out {rows[0]['metric'].split('/')[-1]} before -> after, mean ± sd over seeds")
    for col in COLUMNS:
        out.add_column(col, justify="left" if col in ("task", "arm", "objective") else "right")
    for line in cells(rows):
        out.add_row(*line)
    return out


def markdown(rows: list[dict]) -> str:
    """The same table in Markdown, for bench/README.md and the README."""
    return "\n".join(["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS), *("| " + " | ".join(line) + " |" for line in cells(rows))])


def finished_rows(out: Path) -> list[dict]:
    """Every finished run under OUT/TASK/ARM/."""
    rows = []
    for task in TASKS:
        for run in sorted((out / task).glob("*/*/metrics.parquet")):
            folder, arm = run.parent, run.parent.parent.name
            if (folder / "arm.json").is_file():
                meta = json.loads((folder / "arm.json").read_text())
                config = load_toml(Path(meta["base"]) / "config.toml")
                name = " ".join((meta["objective"], *meta.get("options", ()), *([f"e{meta['epochs']}"] if meta["epochs"] != OFFLINE_EPOCHS else [])))
                rows.append(row(folder, task, arm, name, int(config["seed"])) | {"floor": constant_floor(config)})
                continue
            config = load_toml(folder / "config.toml")
            if finished(folder, config["rounds"]):
                replay = config["train"].get("replay", 1)
                options = tuple(f"{k}={v}" for k, v in config["train"].get("options", {}).items())
                name = " ".join((config["train"]["objective"], *([f"m={replay}"] if replay > 1 else []), *options))
                rows.append(row(folder, task, arm, name, int(config["seed"])) | {"floor": constant_floor(config)})
    return rows


def with_earlier(report: Path, rows: list[dict]) -> list[dict]:
    """``rows`` with the rows of an earlier report that no run folder here replaces: the report is committed
    (bench/results/real.json), so runs finished in another session or on another machine stay in the table."""
    def key(r: dict) -> tuple:
        return r["task"], r["arm"], r["objective"], r["seed"]

    earlier = json.loads(report.read_text())["rows"] if report.is_file() else []
    fresh = {key(r) for r in rows}
    order = {name: i for i, name in enumerate(OBJECTIVES)}
    everything = rows + [r for r in earlier if key(r) not in fresh]
    return sorted(everything, key=lambda r: (r["task"], r["arm"], order.get(r["objective"].split()[0], 99), r["objective"], r["seed"]))


def plot(out: Path, rows: list[dict]) -> Path:
    """Per task, the round curves of each online objective (mean over seeds): training pass rate, entropy,
    completion length, score gap, weight of the hardest negative, groups dropped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = ("rollouts/pass_rate", "train/entropy", "rollouts/mean_completion_tokens", "train/score_gap",
              "train/hardest_neg_weight", "train/groups_dropped")
    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(len(tasks), len(curves), figsize=(4 * len(curves), 3.2 * len(tasks)), squeeze=False)
    for t, task in enumerate(tasks):
        for objective in OBJECTIVES:
            frames = [pl.read_parquet(p) for p in (out / task / "online").glob(f"{objective}-lr*-seed*/metrics.parquet")]
            if not frames:
                continue
            mean = pl.concat(frames, how="diagonal_relaxed").filter(pl.col("round") > 0).group_by("round").agg(
                [pl.col(c).mean() for c in curves if any(c in f.columns for f in frames)]).sort("round")
            for ax, c in zip(axes[t], curves):
                if c in mean.columns:
                    ax.plot(mean["round"], mean[c], label=objective)
                ax.set_title(f"{task}: {c}", fontsize=9)
        axes[t][0].legend(fontsize=8)
    fig.tight_layout()
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=90)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--objectives", nargs="*", default=list(OBJECTIVES))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--arms", nargs="*", default=["online"], choices=("online", "replay", "dynamic", "offline"))
    parser.add_argument("--option", nargs="*", default=[], help="the online arm's objective options (KEY=VALUE), an ablation")
    parser.add_argument("--replay", type=int, default=3, help="the replay arm's window M (rounds)")
    parser.add_argument("--replay-objectives", nargs="*", default=["dapo", "rence"])
    parser.add_argument("--replay-option", nargs="*", default=[], help="the replay arm's objective options (KEY=VALUE)")
    parser.add_argument("--dynamic-objectives", nargs="*", default=["rence", "conspo"])
    parser.add_argument("--offline-rounds", type=int, default=None, help="N online dapo rounds before the offline pass (default: half the recipe's)")
    parser.add_argument("--offline-epochs", type=int, default=OFFLINE_EPOCHS)
    parser.add_argument("--offline-objective", default="rence")
    parser.add_argument("--offline-option", nargs="*", default=[], help="the offline pass's objective options (KEY=VALUE)")
    parser.add_argument("--set", dest="settings", action="append", default=[], help="section.key=value for every run")
    parser.add_argument("--out", type=Path, default=RESULTS / "real")
    parser.add_argument("--report", action="store_true", help="only the table of every finished run")
    parser.add_argument("--plot", action="store_true", help="with --report: the figure of the round curves")
    parser.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    args = parser.parse_args()

    if not args.report:
        settings = merged(BENCH, parse_set(args.settings))
        for name in args.tasks:
            prepare(TASKS[name])
        for seed, name in ((seed, name) for seed in args.seeds for name in args.tasks):  # a whole seed first
            task = TASKS[name]
            n = args.offline_rounds or recipe_rounds(task, settings) // 2
            for objective in args.objectives if "online" in args.arms else ():
                online(task, objective, seed, args.out / name / "online", settings, n if objective == "dapo" else None,
                       tuple(args.option))
            for objective in args.replay_objectives if "replay" in args.arms else ():
                replay = merged(settings, {"train": {"replay": args.replay}})
                online(task, objective, seed, args.out / name / f"replay-m{args.replay}", replay, None, tuple(args.replay_option))
            for objective in args.dynamic_objectives if "dynamic" in args.arms else ():
                dynamic = merged(settings, {"generate": {"dynamic_sampling": True}})
                online(task, objective, seed, args.out / name / "dynamic", dynamic, None)
            if "offline" in args.arms:
                base = online(task, "dapo", seed, args.out / name / "online", settings, n)
                offline(task, base, n, args.offline_epochs, args.offline_objective, args.out / name / "offline",
                        tuple(args.offline_option))
            for run in (args.out / name).glob("*/*-seed*/"):
                keep = {checkpoint_dir(run, n)} if run.parent.name == "online" and run.name.startswith("dapo-") else set()
                for state in (run / CHECKPOINTS).glob("round-*"):
                    if state not in keep and finished(run, load_toml(run / "config.toml")["rounds"]):
                        shutil.rmtree(state)
    report = args.out.with_suffix(".json")
    rows = with_earlier(report, finished_rows(args.out))
    if not rows:
        raise SystemExit(f"no finished run under {args.out} and no earlier table at {report}")
    if args.markdown:
        print(markdown(rows))
    else:
        Console(width=250).print(table(rows))
    report.write_text(json.dumps({"load_average": os.getloadavg(), "rows": rows}, indent=2) + "\n")
    if args.plot:
        print(f"figure: {plot(args.out, rows)}")


if __name__ == "__main__":
    main()
