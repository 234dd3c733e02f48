"""Figures of a run over rounds, from RUN/metrics.parquet, as PNGs in RUN/plots/ (matplotlib, Agg backend).

``metrics.png``: the six curves that tell whether online RL is working: held-out accuracy per task (avg@k
solid, pass@k dashed, maj@k dotted), the training pass rate, the share of groups that are mixed (the only
groups a contrastive or group-relative objective learns from) beside all-correct and all-wrong, the mean
completion length (training rollouts and held-out), the loss, and the gradient norm.
``train.png``: every ``train/*`` statistic the objective logged (per round: counts summed, the rest averaged
over its steps), one panel each.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from crl.data.rounds import ROLLOUTS, TRAIN, eval_columns, metric, section_columns
from crl.data.schemas import read_parquet
from crl.errors import CrlError
from crl.io import KIND_KEY, atomic_path, check_output, read_metadata

EVAL_KINDS = (("avg@", "-"), ("pass@", "--"), ("maj@", ":"))


def load_metrics(run: str | Path) -> tuple[Path, pl.DataFrame]:
    """The run folder and its metrics table (a run folder or its metrics.parquet may be given)."""
    run = Path(run)
    path = run if run.suffix == ".parquet" else run / "metrics.parquet"
    if not path.is_file():
        raise CrlError(f"{run}: no metrics.parquet here (a run folder of `crl iterate` holds one once a round is done)")
    table = read_parquet(path)
    kind = read_metadata(path).get("kind")
    if kind not in (None, "metrics") or "round" not in table.columns or "prompt_id" in table.columns or table.is_empty():
        raise CrlError(f"{path}: not the metrics table of a `crl iterate` run{f' (a {kind} file)' if kind else ''}; plot takes a run folder or its metrics.parquet")
    return path.parent, table.sort("round")


def series(table: pl.DataFrame, column: str) -> tuple[list[float], list[float]]:
    """(rounds, values) of ``column`` where it is set and finite."""
    if column not in table.columns or not table.schema[column].is_numeric():
        return [], []
    pairs = [(r, float(v)) for r, v in table.select("round", column).iter_rows() if v is not None and math.isfinite(float(v))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def eval_tasks(table: pl.DataFrame) -> list[str]:
    return list(dict.fromkeys(c.split("/")[0] for c in eval_columns(table)))


def _finish(ax, title: str, ylabel: str = "", unit: bool = False, xlim: tuple[int, int] | None = None) -> None:
    from matplotlib.ticker import MaxNLocator

    if xlim is not None:
        ax.set_xlim(xlim[0] - 0.3, xlim[1] + 0.3)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("round", fontsize=8)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)
    if unit:
        ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if len(ax.get_legend_handles_labels()[0]) > 1:
        ax.legend(fontsize=7, loc="best")
    if not ax.lines:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")


def _line(ax, table: pl.DataFrame, column: str, label: str | None = None, **style) -> bool:
    x, y = series(table, column)
    if not x:
        return False
    ax.plot(x, y, marker="o", markersize=3, label=label, **style)
    return True


def draw_overview(fig, table: pl.DataFrame) -> None:
    axes = fig.subplots(2, 3).ravel()
    xlim = (int(table["round"].min()), int(table["round"].max()))
    colors = [f"C{i}" for i in range(10)]

    ax = axes[0]
    for i, task in enumerate(eval_tasks(table)):
        for prefix, style in EVAL_KINDS:
            for c in [c for c in table.columns if c.startswith(f"{task}/{prefix}")]:
                _line(ax, table, c, c, linestyle=style, color=colors[i % 10])
    _finish(ax, "held-out accuracy", "accuracy", unit=True, xlim=xlim)

    ax = axes[1]
    _line(ax, table, metric(ROLLOUTS, "pass_rate"), "pass rate", color="C0")
    _finish(ax, "training rollouts: pass rate", "share correct", unit=True, xlim=xlim)

    ax = axes[2]
    if metric(ROLLOUTS, "groups") in table.columns:
        shares = table.with_columns(
            [(pl.col(metric(ROLLOUTS, k)) / pl.col(metric(ROLLOUTS, "groups"))).alias(k) for k in ("mixed", "all_positive", "all_negative")
             if metric(ROLLOUTS, k) in table.columns]
        )
        for k, color in (("mixed", "C2"), ("all_positive", "C0"), ("all_negative", "C3")):
            _line(ax, shares, k, k.replace("_", " "), color=color)
    _finish(ax, "share of groups (prompts)", "share", unit=True, xlim=xlim)

    ax = axes[3]
    _line(ax, table, metric(ROLLOUTS, "mean_completion_tokens"), "training rollouts", color="C0")
    for i, task in enumerate(eval_tasks(table)):
        _line(ax, table, f"{task}/mean_tokens", task, linestyle="--", color=colors[(i + 1) % 10])
    _finish(ax, "mean completion length", "tokens", xlim=xlim)

    ax = axes[4]
    _line(ax, table, metric(TRAIN, "loss"), "loss", color="C1")
    _finish(ax, "training loss (mean per round)", xlim=xlim)

    ax = axes[5]
    name = next((k for k in ("grad_norm", "entropy", "kl") if metric(TRAIN, k) in table.columns), "grad_norm")
    _line(ax, table, metric(TRAIN, name), name, color="C4")
    _finish(ax, name.replace("_", " ") + " (mean per round)", xlim=xlim)


def train_columns(table: pl.DataFrame) -> list[str]:
    """``train/*`` columns that vary over the run (constants such as the learning rate say nothing)."""
    cols = []
    for c in section_columns(table, TRAIN):
        _, y = series(table, c)
        if len(y) and (len(y) == 1 or max(y) != min(y)):
            cols.append(c)
    return cols


def draw_train(fig, table: pl.DataFrame, columns: list[str]) -> None:
    ncols = min(4, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    xlim = (int(table["round"].min()), int(table["round"].max()))
    for ax, c in zip(axes, columns):
        _line(ax, table, c, color="C1")
        _finish(ax, c.split("/", 1)[1], xlim=xlim)
    for ax in axes[len(columns):]:
        ax.set_visible(False)


def _save(fig, path: Path, dpi: int) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={KIND_KEY: "plot"})  # crl's marker (crl/io.py)
    return path


def plot_run(run: str | Path, out: Path | None = None, dpi: int = 110, overwrite: bool = False) -> list[Path]:
    """Write metrics.png (and train.png when the objective logged statistics) into ``out`` or RUN/plots."""
    folder, table = load_metrics(run)
    out = Path(out) if out is not None else folder / "plots"
    for name in ("metrics.png", "train.png"):
        check_output(out / name, kind="plot", overwrite=overwrite, inputs=[folder / "metrics.parquet"])
    import matplotlib  # after the checks: its first import writes a font cache under HOME

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    title = f"{folder.name}: rounds {table['round'].min()}-{table['round'].max()}"
    written = []
    fig = Figure(figsize=(13, 7), layout="constrained")
    fig.suptitle(title, fontsize=11)
    draw_overview(fig, table)
    written.append(_save(fig, out / "metrics.png", dpi))
    columns = train_columns(table)
    if columns:
        ncols = min(4, len(columns))
        fig = Figure(figsize=(3.3 * ncols, 2.6 * math.ceil(len(columns) / ncols) + 0.5), layout="constrained")
        fig.suptitle(f"{title}: training statistics per round (counts summed, the rest averaged over its steps)", fontsize=11)
        draw_train(fig, table, columns)
        written.append(_save(fig, out / "train.png", dpi))
    return written
