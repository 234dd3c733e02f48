"""Command-line flags derived from the settings (crl/config/settings.py), so each has one name, one default
and one help text in every command that takes it.

``settings_command(app, "train", fields=[...])`` registers a command whose own parameters (arguments, ``--out``)
are written as usual and whose settings flags are generated from the named fields: ``"train.*"`` for a whole
section, ``"generate.n"`` or ``"model"`` for one setting. Every generated flag defaults to "not given"; the
command receives a ``Given`` (what the user set) as its ``given`` parameter, whose ``resolve()`` gives the
checked configuration: defaults < the model's preset < (a run's saved config.toml) < ``--config FILE`` <
``--set KEY=VALUE`` < flags.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.markup import escape

from crl.config import SECTIONS, Resolved, RunConfig, Sampling, load_toml, parse_set, resolve
from crl.config.resolve import PRESETS, _hints
from crl.errors import CrlError

SAMPLING = [f.name for f in dataclasses.fields(Sampling)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output of the same kind that crl wrote (never anything else, an input, nor a run folder).")]


def out_path(text: str | Path) -> Path:
    """An output path as given (or the command's default): an empty one is refused (it would mean the current
    folder), and a leading ``~`` is the home folder even where the shell leaves it (``--out=~/x``)."""
    if not str(text).strip():
        raise typer.BadParameter("an empty path; name the file or folder to write")
    return Path(text).expanduser()


def out_option(help: str) -> Any:
    """The ``--out`` option of a command, parsed by ``out_path``."""
    return typer.Option("--out", "-o", help=help, parser=out_path)


def _fields(spec: str) -> list[tuple[str, dataclasses.Field, Any]]:
    """(section, field, type) for ``"section.*"``, ``"section.name"`` or a top-level ``"name"``."""
    section, _, name = spec.rpartition(".")
    cls = SECTIONS[section] if section else RunConfig
    hints = _hints(cls)
    chosen = [f for f in dataclasses.fields(cls) if name in ("*", f.name) and not dataclasses.is_dataclass(hints[f.name])]
    if not chosen:
        raise ValueError(f"no setting {spec}")
    return [(section, f, hints[f.name]) for f in chosen]


def _preset_value(section: str, name: str) -> Any:
    table = load_toml(PRESETS / "tiny-arith.toml", "preset")
    table = table.get(section, {}) if section else table
    return table.get(name)


def _default_text(section: str, f: dataclasses.Field) -> str:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    text = "decided at run time" if default is None else _show(default)
    tiny = _preset_value(section, f.name)
    return text + (f"; tiny-arith: {_show(tiny)}" if tiny is not None else "")


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _parameter(section: str, f: dataclasses.Field, hint: Any) -> tuple[str, inspect.Parameter]:
    """The typer parameter of one setting: its flags, its type, its help and its default (in the help)."""
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    flags = list(f.metadata.get("flags") or [f"--{f.name.replace('_', '-')}"])
    if base is bool:
        flags = [f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:]]
        annotation: Any = Optional[bool]
    elif typing.get_origin(base) in (tuple, dict):
        annotation = Optional[list[str]]
    else:
        annotation = Optional[base]
    key = f"{section}__{f.name}" if section else f.name
    text = escape(f"{f.metadata['help']} [default: {_default_text(section, f)}]")  # rich markup would eat [...]
    option = typer.Option(None, *flags, help=text, show_default=False)
    return key, inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def _as_layer(values: dict[str, Any], hints: dict[str, Any]) -> dict[str, Any]:
    """The flags given (not None) as a nested table; NAME=VALUE lists become tables."""
    layer: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        section, _, name = key.rpartition("__")
        if typing.get_origin(hints[key]) is dict:
            value = _pairs(name, value)
        (layer.setdefault(section, {}) if section else layer)[name] = value
    return layer


def _pairs(name: str, items: list[str]) -> dict[str, Any]:
    """``["tau=5", "math"]`` as ``{"tau": "5", "math": 1.0}``: a bare NAME (a verifier) gets weight 1."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key.strip() or (not sep and name != "verifier"):
            raise CrlError(f"--{name.replace('_', '-')} {item}: expected NAME=VALUE")
        out[key.strip()] = value.strip() if sep else 1.0
    return out


@dataclasses.dataclass(frozen=True)
class Given:
    """What the user set on the command line: a --config file, --set items and flags."""

    config: Path | None
    settings: list[str]
    flags: dict[str, Any]

    def resolve(self, base: dict[str, Any] | None = None, origin: str = "run config.toml") -> Resolved:
        """The checked configuration, with ``base`` (a run's saved table) under the file, --set and flags."""
        layers = [(base, origin)] if base is not None else []
        if self.config is not None:
            layers.append((load_toml(self.config), f"--config {self.config}"))
        if self.settings:
            layers.append((parse_set(self.settings), "--set"))
        layers.append((self.flags, "flag"))
        return resolve(layers)


def settings_command(app: typer.Typer, name: str, fields: list[str], **command_kwargs: Any) -> Callable:
    """Register ``fn`` as command ``name`` with generated flags for ``fields`` plus --config and --set; ``fn``
    receives what was given as ``given`` (a ``Given``)."""

    def register(fn: Callable) -> Callable:
        real = typing.get_type_hints(fn, include_extras=True)  # the annotations as objects (typer reads their Option)
        own = [p.replace(annotation=real[p.name]) for p in inspect.signature(fn).parameters.values() if p.name != "given"]
        generated = dict(_parameter(s, f, h) for spec in fields for s, f, h in _fields(spec))
        hints = {key: _hints(SECTIONS[key.rpartition("__")[0]] if "__" in key else RunConfig)[key.rpartition("__")[2]] for key in generated}
        common = [
            inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                              default=typer.Option(None, "--config", "-c", help="TOML file of settings (the keys of `crl iterate --print-config`).")),
            inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[str]],
                              default=typer.Option(None, "--set", help="Any setting as section.key=value (repeatable), e.g. train.lr=1e-5.")),
        ]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            given = Given(kwargs.pop("config"), kwargs.pop("set_") or [], _as_layer({k: kwargs.pop(k) for k in generated}, hints))
            return fn(**kwargs, given=given)

        command.__signature__ = inspect.Signature([*own, *common, *generated.values()])  # type: ignore[attr-defined]
        app.command(name, **command_kwargs)(command)
        return fn

    return register
