"""Looking at crl's outputs between stages: what kind of file a path is, and a rich summary of it.

Kinds, recognised by name and columns (a folder by what it holds):

- ``metrics``: RUN/metrics.parquet, or a run folder holding it: the rounds, first -> last of each metric.
- ``verified``: a verified/ folder (or a round folder of a run, holding one): pass rates, group kinds, statuses.
- ``train_log``: train_log.parquet, or a checkpoint folder of `crl train` holding it: steps and statistics.
- ``eval``: eval.parquet (verified samples with a ``task`` column): accuracy per task.
- ``rollouts``: rollouts.parquet or a folder of shards: prompts, samples, finish reasons.
- ``prompts``: a prompt set (``prompt``/``problem``/``question`` and ``answer``).

Verified samples (verified/, eval) also show completions of one prompt side by side, positives against
negatives; by default a prompt whose group is mixed, since those are the ones contrastive training learns from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from crl.data.rounds import ROLLOUTS, SECONDS, TRAIN, eval_columns, groups, metric, section_columns, summary
from crl.io import check_input
from crl.data.schemas import VERIFIED_FILES, parquet_files, read_parquet
from crl.errors import CrlError
from crl.views.tables import clip, counts_table, fmt, header, kv_table, length_table, side_by_side


def _columns(path: Path) -> set[str]:
    import pyarrow.parquet as pq

    try:
        return set(pq.read_schema(path).names)
    except Exception as e:
        raise CrlError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def _kind_of_file(path: Path) -> str | None:
    if path.suffix == ".jsonl":
        return "prompts"
    if path.suffix != ".parquet":
        return None
    cols = _columns(path)
    if path.name == "train_log.parquet" or {"step", "loss"} <= cols:
        return "train_log"
    if "round" in cols and any("/" in c for c in cols) and "prompt_id" not in cols:
        return "metrics"
    if {"reward", "task", "prompt_id"} <= cols:
        return "eval"
    if {"prompt_id", "completion"} <= cols:
        return "rollouts"
    if {"prompt_id", "n_pos", "n_neg"} <= cols:
        return "groups"
    if cols & {"prompt", "problem", "question"}:
        return "prompts"
    return None


def detect(path: str | Path) -> tuple[str, Path]:
    """The kind of crl output at ``path`` and the file or folder to read for it."""
    path = check_input(path)
    if not path.exists():
        raise CrlError(f"{path}: no such file or folder")
    if path.is_dir():
        if all((path / f).is_file() for f in VERIFIED_FILES):
            return "verified", path
        if (path / "metrics.parquet").is_file():
            return "metrics", path / "metrics.parquet"
        if (path / "verified").is_dir():  # a round folder
            return "verified", path / "verified"
        if (path / "train_log.parquet").is_file():
            return "train_log", path / "train_log.parquet"
        for name in ("rollouts.parquet", "eval.parquet"):
            if (path / name).exists():
                return detect(path / name)
        shards = [p for p in path.glob("*.parquet") if not p.name.startswith(".")]
        if shards and all(_kind_of_file(p) == "rollouts" for p in shards):
            return "rollouts", path
        raise CrlError(f"{path}: not a crl output folder (run, round, verified/, checkpoint, or rollout shards)")
    kind = _kind_of_file(path)
    if kind == "groups":
        return "verified", path.parent
    if kind is None:
        raise CrlError(
            f"{path}: not a crl output (expected rollouts, verified/, train_log, metrics or eval Parquet, or a prompt set)"
        )
    return kind, path



# ---------------------------------------------------------------------------------------------- kinds


def _completion_lengths(rows: pl.DataFrame) -> pl.Series:
    return rows["completion_ids"].list.len().alias("completion tokens")


def _meta(path: Path) -> dict[str, Any]:
    from crl.io import read_metadata

    try:
        return read_metadata(path)
    except Exception:
        return {}


def summarize_rollouts(path: Path, prompt_id: str | None, n: int) -> list[RenderableType]:
    from crl.data.schemas import read_rollouts

    rows, meta = read_rollouts(path)
    per = rows.group_by("prompt_id").len()
    items = {
        "files": len(parquet_files(path)),
        "completions": rows.height,
        "prompts": per.height,
        "samples per prompt": f"{per['len'].min()}..{per['len'].max()}",
        "models": ", ".join(sorted(set(rows["model"].cast(pl.String).to_list()))),
        "rounds": ", ".join(str(r) for r in sorted(set(rows["round"].to_list()))),
        "truncated": float((rows["finish_reason"] == "length").mean()),
    }
    items.update({f"meta {k}": json.dumps(v) if not isinstance(v, (str, int, float)) else v for k, v in meta.to_dict().items()})
    return [
        header("rollouts", path),
        kv_table("summary", items),
        length_table(_completion_lengths(rows)),
        counts_table("finish reasons", rows["finish_reason"]),
        side_by_side(rows, prompt_id, n),
    ]


def _verdicts(rows: pl.DataFrame, stats: dict[str, Any]) -> list[RenderableType]:
    """The verify summary (crl verify's own numbers) and the lengths and statuses by verdict."""
    lengths = rows.select(pl.col("completion_ids").list.len().alias("tokens"), "positive")
    by = Table(title="completion tokens by verdict", title_justify="left")
    for c in ("verdict", "n", "p10", "p50", "p90", "max", "mean"):
        by.add_column(c, justify="left" if c == "verdict" else "right")
    for label, flag in (("positive", True), ("negative", False)):
        s = lengths.filter(pl.col("positive") == flag)["tokens"]
        if s.len():
            by.add_row(label, str(s.len()), *[fmt(s.quantile(q, "nearest")) for q in (0.1, 0.5, 0.9)], fmt(s.max()), fmt(s.mean()))
    return [
        kv_table("summary", stats),
        length_table(lengths["tokens"]),
        by,
        counts_table("statuses", rows["status"]),
        counts_table("finish reasons", rows["finish_reason"]),
    ]


def summarize_verified(path: Path, prompt_id: str | None, n: int) -> list[RenderableType]:
    from crl.data.schemas import read_verified

    rows, grouped, meta = read_verified(path)
    stats = meta.extra.get("summary") or summary(rows, grouped)  # what crl verify computed when it wrote them
    out = [header("verified", path), *_verdicts(rows, stats)]
    if "source" in rows.columns and rows["source"].n_unique() > 1:
        out.append(_per(rows, "source"))
    hist = grouped.group_by("n_pos").len().sort("n_pos")
    table = Table(title="groups by number of positives", title_justify="left")
    table.add_column("n_pos", justify="right")
    table.add_column("groups", justify="right")
    for k, v in hist.iter_rows():
        table.add_row(str(k), str(v))
    out.append(table)
    described = {k: v for k, v in meta.to_dict().items() if k != "summary"}
    out.append(kv_table("metadata", {k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in described.items()}))
    out.append(side_by_side(rows, prompt_id, n))
    return out


def _per(rows: pl.DataFrame, key: str) -> Table:
    per = (
        rows.group_by(key, maintain_order=True)
        .agg(
            prompts=pl.col("prompt_id").n_unique(),
            samples=pl.len(),
            avg=pl.col("positive").mean(),
            tokens=pl.col("completion_ids").list.len().mean(),
            truncated=(pl.col("finish_reason") == "length").mean(),
        )
    )
    solved = rows.group_by(key, "prompt_id").agg(ok=pl.col("positive").any()).group_by(key).agg(solved=pl.col("ok").mean())
    per = per.join(solved, on=key, maintain_order="left")
    table = Table(title=f"per {key}", title_justify="left")
    for c in (key, "prompts", "samples", "avg", "solved (pass@n)", "mean tokens", "truncated"):
        table.add_column(c, justify="left" if c == key else "right")
    for r in per.iter_rows(named=True):
        table.add_row(str(r[key]), str(r["prompts"]), str(r["samples"]), fmt(r["avg"]), fmt(r["solved"]), fmt(r["tokens"]), fmt(r["truncated"]))
    return table


def summarize_eval(path: Path, prompt_id: str | None, n: int) -> list[RenderableType]:
    from crl.data.schemas import VERIFIED_SCHEMA, conform

    rows = conform(read_parquet(path), VERIFIED_SCHEMA, str(path))
    if "positive" not in rows.columns:  # written before crl kept the verifier's split
        rows = rows.with_columns(positive=pl.col("reward") > 0)
    meta = _meta(path)
    out = [header("eval", path), *_verdicts(rows, summary(rows, groups(rows)))]
    out.insert(2, _per(rows, "task"))
    if meta.get("metrics"):
        table = Table(title="metrics (as written by crl eval)", title_justify="left")
        metrics = meta["metrics"]
        for c in metrics[0]:
            table.add_column(c, justify="left" if c == "task" else "right")
        for m in metrics:
            table.add_row(*[fmt(v) for v in m.values()])
        out.insert(2, table)
    out.append(side_by_side(rows, prompt_id, n))
    return out


def _numeric(df: pl.DataFrame, skip: tuple[str, ...] = ()) -> list[str]:
    return [c for c, t in df.schema.items() if t.is_numeric() and c not in skip]


def trend_table(df: pl.DataFrame, title: str, order: str, columns: list[str]) -> Table:
    """first, last, min, max, mean of each column, with the rows in ``order``."""
    table = Table(title=title, title_justify="left")
    for c in ("column", "n", "first", "last", "min", "max", "mean"):
        table.add_column(c, justify="left" if c == "column" else "right")
    df = df.sort(order)
    for c in columns:
        s = df[c].drop_nulls()
        if s.dtype.is_float():
            s = s.drop_nans()
        if not s.len():
            continue
        table.add_row(c, str(s.len()), fmt(s[0]), fmt(s[-1]), fmt(s.min()), fmt(s.max()), fmt(s.mean()))
    return table


def summarize_train_log(path: Path, prompt_id: str | None, n: int) -> list[RenderableType]:
    log = read_parquet(path)
    if log.is_empty():
        raise CrlError(f"{path}: holds no training steps")
    order = "step" if "step" in log.columns else log.columns[0]
    items = {"steps": log.height, "epochs": log["epoch"].n_unique() if "epoch" in log.columns else None}
    state = path.parent / "trainer_state.json"
    if state.is_file():
        try:
            items.update({f"state {k}": v for k, v in json.loads(state.read_text()).items()})
        except (ValueError, AttributeError):  # cut short or not an object: shown, since inspect is how one finds out
            items["state"] = f"{state.name} is damaged"
    return [header("train_log", path), kv_table("summary", items), trend_table(log, "per-step statistics", order, _numeric(log, ("step", "epoch")))]


def summarize_metrics(path: Path, prompt_id: str | None, n: int) -> list[RenderableType]:
    m = read_parquet(path)
    if m.is_empty():
        raise CrlError(f"{path}: holds no finished rounds")
    evals = eval_columns(m)
    items = {"rounds": m.height, "last round": m["round"].max(), "eval rounds": m.drop_nulls(evals[:1]).height if evals else 0}
    if metric(SECONDS, "round") in m.columns:
        items["seconds in rounds"] = float(m[metric(SECONDS, "round")].sum())
    held_out = [c for c in m.columns if c.endswith(("/mean_tokens", "/truncated")) and not c.startswith(f"{ROLLOUTS}/")]
    sections = [
        ("held-out evaluation", evals + held_out),
        ("rollouts", section_columns(m, ROLLOUTS)),
        ("training (per round)", section_columns(m, TRAIN)),
        ("seconds", section_columns(m, SECONDS)),
    ]
    out: list[RenderableType] = [header("metrics", path), kv_table("summary", items)]
    for title, cols in sections:
        cols = [c for c in cols if m.schema[c].is_numeric()]
        if cols:
            out.append(trend_table(m, title, "round", cols))
    return out


def summarize_prompts(path: Path, prompt_id: str | None, n: int) -> list[RenderableType]:
    from crl.data.prompts import load_prompts

    df = load_prompts(path)
    lengths = df["prompt"].str.len_chars().alias("prompt characters")
    out: list[RenderableType] = [
        header("prompt set", path),
        kv_table("summary", {"prompts": df.height, "unique ids": df["id"].n_unique()}),
        counts_table("sources", df["source"]),
        length_table(lengths, "prompt characters"),
    ]
    row = df.filter(pl.col("id") == prompt_id).row(0, named=True) if prompt_id and prompt_id in df["id"].to_list() else df.row(0, named=True)
    out.append(Panel(Text(clip(row["prompt"])), title=f"{row['id']} · gold {row['answer']!r}", title_align="left"))
    return out


SUMMARIES = {
    "metrics": summarize_metrics,
    "verified": summarize_verified,
    "train_log": summarize_train_log,
    "eval": summarize_eval,
    "rollouts": summarize_rollouts,
    "prompts": summarize_prompts,
}


def summarize(path: str | Path, prompt_id: str | None = None, n: int = 2) -> tuple[str, list[RenderableType]]:
    """The kind of ``path`` and the renderables that describe it."""
    kind, target = detect(path)
    return kind, SUMMARIES[kind](target, prompt_id, n)
