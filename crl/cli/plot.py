"""``crl plot``: PNG figures of a run's metrics over rounds, written into the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crl.cli import app
from crl.cli.options import Overwrite, out_option


@app.command("plot")
def plot_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder of `crl iterate` (or its metrics.parquet).")],
    out: Annotated[Optional[Path], out_option("Folder for the PNGs (default: RUN/plots).")] = None,
    dpi: Annotated[int, typer.Option(min=30, max=600, help="Resolution of the PNGs.")] = 110,
    overwrite: Overwrite = False,
) -> None:
    """Held-out accuracy per task, training pass rate, share of mixed groups, completion length, loss and the objective's statistics over rounds."""
    from crl.views.plot import plot_run
    from crl.progress import console

    for path in plot_run(run, out, dpi, overwrite):
        console.print(f"wrote {path}")
