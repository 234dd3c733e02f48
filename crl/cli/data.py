"""``crl data``: get prompt sets: ``pull`` a known one from the Hugging Face hub, ``import`` local files, ``list``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crl.cli import app
from crl.cli.options import Overwrite, out_option

data_app = typer.Typer(
    help="Prompt sets: pull known benchmarks from the Hugging Face hub, import local files, list what is there.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

Out = Annotated[
    Optional[Path], out_option("Folder to write NAME.parquet into (default: $CRL_DATA_DIR or ~/.cache/crl/data).")
]


def _report(results) -> None:
    from crl.views.report import stdout as console

    for w in results:
        skipped = f" ({w.skipped} rows without a problem or gold answer left out)" if w.skipped else ""
        console.print(f"{w.name}: {w.rows} prompts -> {w.path}{skipped}")


@data_app.command("pull")
def pull_cmd(
    name: Annotated[str, typer.Argument(help="A known set (see `crl data list`), e.g. math500, gsm8k_test, aime24.")],
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """Download a known benchmark or training set from the Hugging Face hub and write it as a prompt set."""
    from crl.data.hub import pull

    _report([pull(name, out, overwrite)])


@data_app.command("import")
def import_cmd(
    path: Annotated[Path, typer.Argument(help="JSONL, JSON, Parquet (plain or verl-style), a saved `datasets` folder, or a folder of files.")],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Set name (default: the file's stem).")] = None,
    out: Out = None,
    split: Annotated[Optional[str], typer.Option(help="Split of a saved DatasetDict (default: test, else train).")] = None,
    plain: Annotated[bool, typer.Option(help="Store a prompt given as one user chat message as plain text.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Convert local data into crl's prompt-set format (id, prompt, answer, source) under a name."""
    from crl.data.importers import import_path

    _report(import_path(path, name, out, split, plain, overwrite))


@data_app.command("list")
def list_cmd() -> None:
    """Known sets, the shipped ones, and which are present locally, with their row counts."""
    from rich.markup import escape

    from crl.data.catalogue import listing
    from crl.data.prompts import data_home
    from crl.default import SHIPPED_DIR
    from crl.views.report import print_listing

    rows = []
    for row in listing():
        where = "shipped" if row["path"] and row["path"].parent == SHIPPED_DIR else "data home"
        present = f"[green]{where}: {escape(row['path'].name)}[/green]" if row["path"] else "[dim]no[/dim]"
        rows.append([escape(row["name"]), row["kind"], present, "" if row["rows"] is None else str(row["rows"]),
                     escape(row["hub"]), escape(row["note"])])
    columns = [("name", "left"), ("kind", "left"), ("present", "left"), ("rows", "right"), ("hub", "left"), ("about", "left")]
    print_listing(f"prompt sets (data home: {data_home()})", columns, rows)
