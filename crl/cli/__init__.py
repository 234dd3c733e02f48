"""The ``crl`` command: one small module per subcommand, flags only; the work is in crl.stages."""

from __future__ import annotations

import signal
import sys

import click
import typer
import typer.main

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


from crl.cli import generate, verify, train, eval, iterate, data, model, inspect, plot, build_default  # noqa: E402,F401,I001  (registers commands, in --help's order)


class Terminated(BaseException):
    """SIGTERM as an exception, so that temporary outputs are removed on the way out (crl/io.py)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _fail(message: str, code: int) -> None:
    print(f"crl: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    """Entry point: a user mistake is one line on stderr and exit status 2, never a traceback; Ctrl-C and
    SIGTERM end the command with one line after its temporary outputs are removed."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = typer.main.get_command(app).main(prog_name="crl", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        print(e.format_message())
        code = 0
    except CrlError as e:
        _fail(str(e), 2)
    except click.ClickException as e:  # a flag's value or a missing argument: the parser's own message
        _fail(e.format_message(), 2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        print("crl: interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("crl: terminated", file=sys.stderr)
        sys.exit(143)
    except OSError as e:  # the disk is full, a file vanished: what the system said, about which file
        _fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}", 1)
    sys.exit(code if isinstance(code, int) else 0)
