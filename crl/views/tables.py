"""The building blocks of ``crl inspect``'s output: small rich tables and completions side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from crl.data.rounds import group_counts, mixed
from crl.errors import CrlError

QUANTILES = (0.0, 0.1, 0.5, 0.9, 0.99, 1.0)
MAX_CHARS = 1200


def fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def header(kind: str, path: Path) -> Text:
    return Text.assemble((f"{kind}: ", "bold magenta"), (str(path), "bold"))


def kv_table(title: str, items: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in items.items():
        table.add_row(k, fmt(v))
    return table


def counts_table(title: str, series: pl.Series) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(series.name)
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    total = max(series.len(), 1)
    for value, n in series.value_counts(sort=True).iter_rows():
        table.add_row(str(value), str(n), f"{n / total:.1%}")
    return table


def length_table(lengths: pl.Series, title: str = "completion tokens") -> Table:
    table = Table(title=title, title_justify="left")
    for q in QUANTILES:
        table.add_column({0.0: "min", 1.0: "max"}.get(q, f"p{int(q * 100)}"), justify="right")
    table.add_column("mean", justify="right")
    table.add_row(*[fmt(lengths.quantile(q, "nearest")) for q in QUANTILES], fmt(lengths.mean()))
    return table


def clip(text: str, limit: int = MAX_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f" … [{len(text) - limit} more characters]"


# -------------------------------------------------------------------------------------------- samples


def pick_prompt(rows: pl.DataFrame, prompt_id: str | None) -> str:
    """``prompt_id`` if given (checked), else a prompt with both correct and wrong samples, else the first."""
    ids = rows["prompt_id"]
    if prompt_id is not None:
        if prompt_id not in set(ids.unique().to_list()):
            raise CrlError(f"--prompt {prompt_id}: no such prompt_id here (e.g. {', '.join(ids.unique(maintain_order=True).head(3).to_list())})")
        return prompt_id
    if "positive" in rows.columns:
        per = group_counts(rows).filter(mixed(pl.col("n_pos"), pl.col("n")))
        if per.height:
            return per.sort((pl.col("n_pos") / pl.col("n") - 0.5).abs(), maintain_order=True)["prompt_id"][0]
    return ids[0]


def _sample_panel(row: dict[str, Any], style: str) -> Panel:
    title = f"sample {row['sample']}"
    if "reward" in row:
        title += f" · reward {row['reward']:g} · pred {row.get('pred')!r} · {row.get('status')}"
    title += f" · {len(row['completion_ids'] or [])} tok · {row['finish_reason']}"
    return Panel(Text(clip(row["completion"])), title=title, title_align="left", border_style=style)


def side_by_side(rows: pl.DataFrame, prompt_id: str | None, n: int) -> RenderableType:
    """The prompt, its gold answer, and up to ``n`` positive and ``n`` negative completions in two columns."""
    pid = pick_prompt(rows, prompt_id)
    group = rows.filter(pl.col("prompt_id") == pid).sort("sample")
    first = group.row(0, named=True)
    head = Panel(
        Text(clip(first["prompt"])),
        title=f"prompt {pid} · gold {first['answer']!r} · {group.height} samples",
        title_align="left",
    )
    if "positive" not in group.columns:
        panels = [_sample_panel(r, "cyan") for r in group.head(2 * n).iter_rows(named=True)]
        return Group(head, Columns(panels, equal=True, expand=True))
    pos = group.filter(pl.col("positive"))
    neg = group.filter(~pl.col("positive"))
    table = Table(expand=True, show_lines=False)
    table.add_column(f"positive ({pos.height})", ratio=1)
    table.add_column(f"negative ({neg.height})", ratio=1)
    left = [_sample_panel(r, "green") for r in pos.head(n).iter_rows(named=True)] or [Text("(none)", style="dim")]
    right = [_sample_panel(r, "red") for r in neg.head(n).iter_rows(named=True)] or [Text("(none)", style="dim")]
    table.add_row(Group(*left), Group(*right))
    return Group(head, table)

