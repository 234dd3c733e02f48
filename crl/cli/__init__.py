"""The ``crl`` command: one small module per subcommand, flags only; the work is in crl.stages."""

from __future__ import annotations

import signal
import sys

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


from crl.cli import generate, verify, train, eval, plan, iterate, data, model, inspect, plot, build_default  # noqa: E402,F401,I001  (registers commands, in --help's order)


class Stopped(BaseException):
    """SIGTERM or Ctrl-C as an exception that the parser does not turn into an exit status, so that temporary
    outputs are removed on the way out (crl/io.py) and the command ends with one line saying which."""


STOPS = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: ("terminated", 143)}


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


def _fail(message: str, code: int) -> int:
    print(f"crl: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _run() -> int:
    """The command's exit status; every user mistake is one line on stderr and status 2. The run folders the
    command locked are let go when it ends."""
    from crl.locks import release_runs

    try:
        code = typer.main.get_command(app).main(prog_name="crl", standalone_mode=False)
    except CrlError as e:
        return _fail(str(e), 2)
    except typer.TyperException as e:  # the parser's own errors (typer vendors click since 0.26)
        if type(e).__name__ == "NoArgsIsHelpError":  # `crl` or `crl data` alone: the help, not an error
            print(e.format_message())
            return 0
        ctx = getattr(e, "ctx", None)
        return _fail(e.format_message() + (f" (see `{ctx.command_path} --help`)" if ctx else ""), 2)
    except OSError as e:  # the disk is full, a file vanished: what the system said, about which file
        return _fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}", 1)
    finally:
        release_runs()
    return code if isinstance(code, int) else 0


def main() -> None:
    """Entry point: a user mistake is one line on stderr and exit status 2, never a traceback; Ctrl-C (130) and
    SIGTERM (143) end the command with one line after its temporary outputs are removed. A signal ignored by the
    parent process (a background job's Ctrl-C) stays ignored."""
    previous = {s: signal.getsignal(s) for s in STOPS}
    for s, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, _stop)
    try:
        code = _run()
    except Stopped as e:
        word, code = STOPS[e.args[0]]
        print(f"crl: {word}", file=sys.stderr)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    sys.exit(code)
