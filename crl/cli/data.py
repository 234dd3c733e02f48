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
        excluded = f" ({w.excluded} problems an --exclude set holds left out)" if w.excluded else ""
        console.print(f"{w.name}: {w.rows} prompts -> {w.path}{skipped}{excluded}")


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
    path: Annotated[str, typer.Argument(help="JSONL, JSON, Parquet (plain or verl-style), a saved `datasets` folder, a folder of files, or reasoning-gym:TASK (a task generator).")],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Set name (default: the file's stem, or the task's name).")] = None,
    out: Out = None,
    split: Annotated[Optional[str], typer.Option(help="Split of a saved DatasetDict (default: test, else train).")] = None,
    plain: Annotated[bool, typer.Option(help="Store a prompt given as one user chat message as plain text.")] = False,
    rows: Annotated[Optional[int], typer.Option(min=1, help="reasoning-gym:TASK only: problems to generate [default: 1000].")] = None,
    seed: Annotated[Optional[int], typer.Option(min=0, max=2**32 - 1, help="reasoning-gym:TASK only: generator seed [default: 0]. reasoning-gym draws problem i from seed + i, so sets from nearby seeds share problems: give a held-out split a seed at least --rows away, and --exclude it from the training set.")] = None,
    param: Annotated[Optional[list[str]], typer.Option(help="reasoning-gym:TASK only: generator option KEY=VALUE (repeatable), e.g. max_words=8.")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Leave out every problem this prompt set (name or file) holds, e.g. the held-out set of a training set (repeatable).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Convert local data, or problems from a reasoning-gym task generator, into crl's prompt-set format (id,
    prompt, answer, source) under a name."""
    from crl.data import reasoning_gym
    from crl.data.importers import import_generated, import_path
    from crl.errors import CrlError

    if reasoning_gym.is_generator(path):
        params = reasoning_gym.parse_params(param or [])
        _report([import_generated(path, name, out, rows or 1000, seed or 0, params, overwrite, tuple(exclude or ()))])
        return
    given = [flag for flag, value in (("--rows", rows), ("--seed", seed), ("--param", param)) if value]
    if given:
        raise CrlError(f"{given[0]}: only for a reasoning-gym:TASK source, not a file ({path})")
    _report(import_path(Path(path), name, out, split, plain, overwrite, tuple(exclude or ())))


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
