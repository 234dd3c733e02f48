"""The ``crl`` command: one small module per subcommand, flags only; the work is in crl.stages."""

from __future__ import annotations

import sys

import typer

from crl import __version__
from crl.errors import CrlError

app = typer.Typer(
    name="crl",
    help="Contrastive RL from verifiable rewards: generate -> verify -> train -> eval, or iterate them all.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(f"crl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Contrastive RL from verifiable rewards: generate -> verify -> train -> eval, or iterate them all."""


from crl.cli import build_default, data, eval, generate, inspect, iterate, plot, train, verify  # noqa: E402,F401  (registers commands)


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit status 2, never a traceback."""
    try:
        app()
    except CrlError as e:
        print(f"crl: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("crl: interrupted", file=sys.stderr)
        sys.exit(130)
