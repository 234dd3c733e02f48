"""Resolving the configuration: defaults < the model's preset < a TOML file < command-line settings.

Each layer is a nested table (``{"train": {"lr": 3e-4}}``); unknown keys and values of the wrong type or out of
range are one-line errors naming the key and where it came from, so a typo never silently does nothing. The
result is a typed ``RunConfig`` and, for every setting, where its value came from (``--print-config`` shows it;
a run folder's config.toml keeps the resolved values so ``--resume`` needs nothing else).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from crl.config.settings import SECTIONS, RunConfig, check_config, check_value
from crl.errors import CrlError

PRESETS = Path(__file__).resolve().parent / "presets"
SHIPPED_MODELS = ("tiny-arith",)
MERGED_TABLES = ("options",)  # a later layer adds to these tables instead of replacing them


@dataclass(frozen=True)
class Resolved:
    """A checked configuration and, for each setting ("train.lr"), where its value came from."""

    config: RunConfig
    origins: dict[str, str]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(where: str, hint: Any, value: Any) -> Any:
    """``value`` (from TOML, a flag, or a string from ``--set``) as the type ``hint`` asks for."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "auto")):
            return None
        return coerce(where, next(a for a in args if a is not type(None)), value)
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str):
            value = _literal(where, value) if value.strip().startswith("[") else [value] if value else []
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise CrlError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise CrlError(f"{where}: expected a table of NAME = VALUE, got {value!r}")
        inner = args[1]
        return {str(k): v if inner is Any else coerce(f"{where}.{k}", inner, v) for k, v in value.items()}
    if hint is str:
        if not isinstance(value, str):
            raise CrlError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(value, str):
        value = _literal(where, value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise CrlError(f"{where}: expected {'an' if hint is int else 'a'} {hint.__name__}, got {value!r}")
    return value


def _literal(where: str, text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        if text.strip().lower() in ("nan", "+nan", "-nan", "inf", "+inf", "-inf"):
            return float(text)
        raise CrlError(f"{where}: cannot read {text!r}") from None


def assignments(items: list[str], flag: str, form: str) -> list[tuple[str, str, str]]:
    """Each ``KEY=VALUE`` item of a repeatable flag as (item, key, value); one line naming the flag otherwise."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CrlError(f"{flag} {item}: expected {form}")
        out.append((item, key.strip(), value))
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-4", "rounds=3", "train.options.tau=5"]`` as a nested table of strings."""
    out: dict[str, Any] = {}
    for item, key, value in assignments(items, "--set", "section.key=value"):
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CrlError(f"--set {item}: {part} is not a section")
        node[last] = value.strip()
    return out


def load_toml(path: Path, what: str = "--config") -> dict[str, Any]:
    from crl.io import check_input  # not at the top: crl.io imports polars, which resolving settings does not need

    try:
        return tomllib.loads(check_input(Path(path).expanduser()).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CrlError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CrlError(f"{what} {path}: is a folder, not a TOML file") from None
    except UnicodeDecodeError:
        raise CrlError(f"{what} {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise CrlError(f"{what} {path}: not valid TOML ({e})") from None


def _apply(values: dict[str, dict[str, Any]], origins: dict[str, str], layer: dict[str, Any], origin: str) -> None:
    """Check ``layer``'s keys and types and lay its values over ``values`` (per section; "" is the top level)."""
    for key, value in layer.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise CrlError(f"{origin}: [{key}] must be a table of settings")
            for sub, v in value.items():
                _set(values, origins, key, sub, v, origin)
        else:
            _set(values, origins, "", key, value, origin)


def _checked(cls: type, key: str, value: Any, origin: str, name: str) -> Any:
    """``value`` for the setting ``key`` of ``cls`` (shown as ``name``), converted to its type and checked."""
    match = [f for f in dataclasses.fields(cls) if f.name == key]
    if not match:
        known = ", ".join(f.name for f in dataclasses.fields(cls))
        raise CrlError(f"{origin}: unknown setting {name!r}; known: {known}")
    value = coerce(f"{origin}: {name}", _hints(cls)[key], value)
    check_value(f"{origin}: {name}", match[0], value)
    return value


def _set(values: dict, origins: dict, section: str, key: str, value: Any, origin: str) -> None:
    name = f"{section}.{key}" if section else key
    value = _checked(SECTIONS[section] if section else RunConfig, key, value, origin, name)
    if key in MERGED_TABLES and isinstance(value, dict):
        value = {**values[section].get(key, {}), **value}
    values[section][key] = value
    origins[name] = origin


def section_from(cls: type, table: Any, origin: str) -> Any:
    """``table`` as an instance of the settings section ``cls`` (the sampling settings a file records, say),
    every key known and every value of its type and in range."""
    if not isinstance(table, dict):
        raise CrlError(f"{origin}: expected a table of settings, got {table!r}")
    return cls(**{key: _checked(cls, key, value, origin, key) for key, value in table.items()})


def _model_of(layers: list[tuple[dict[str, Any], str]]) -> str:
    model = RunConfig.__dataclass_fields__["model"].default
    for layer, _ in layers:
        model = layer.get("model", model)
    return str(model)


def _trained_from(model: str) -> str | None:
    """The starting model recorded in a crl checkpoint's trainer state, if ``model`` is such a checkpoint."""
    from crl.io import STATE_FILE  # not crl.engine: resolving settings must not import torch

    try:
        base = json.loads((Path(model).expanduser() / STATE_FILE).read_text()).get("base")
    except (OSError, ValueError, AttributeError):
        return None
    return str(base) if base else None


def preset_for(model: str) -> Path | None:
    """The preset file of a shipped model, found by name, by its folder, or through a checkpoint trained from it
    (``crl eval --model checkpoint`` after ``crl train --model tiny-arith`` keeps the tiny model's settings)."""
    from crl.default import SHIPPED_DIR

    candidates = [m for m in (model, _trained_from(model)) if m is not None]
    for name in SHIPPED_MODELS:
        if any(m == name or (Path(m).exists() and Path(m).resolve() == (SHIPPED_DIR / name).resolve()) for m in candidates):
            return PRESETS / f"{name}.toml"
    return None


def resolve(layers: list[tuple[dict[str, Any], str]]) -> Resolved:
    """The defaults, then the preset of the model the layers choose, then each (table, origin) layer in order."""
    values: dict[str, dict[str, Any]] = {"": {}, **{s: {} for s in SECTIONS}}
    origins: dict[str, str] = {}
    preset = preset_for(_model_of(layers))
    if preset is not None and not any(origin.startswith("run ") for _, origin in layers):
        _apply(values, origins, load_toml(preset, "preset"), f"preset {preset.stem}")
    for layer, origin in layers:
        _apply(values, origins, layer, origin)
    sections = {s: cls(**values[s]) for s, cls in SECTIONS.items()}
    config = RunConfig(**values[""], **sections)
    check_config(config)
    return Resolved(config, origins)


def _path_settings() -> list[tuple[str, str]]:
    """(section, key) of the settings whose value may name a file or folder ("" is the top level)."""
    top = [("", f.name) for f in dataclasses.fields(RunConfig) if f.metadata.get("path")]
    return top + [(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls) if f.metadata.get("path")]


def _map_value(value: Any, fn: Any) -> Any:
    return type(value)(map(fn, value)) if isinstance(value, (list, tuple)) else fn(value) if isinstance(value, str) else value


def paths_relative_to(resolved: Resolved, folder: Path) -> Resolved:
    """The configuration with each path setting that names an existing file or folder by a relative path
    rewritten relative to ``folder`` (a run folder, whose config.toml is resolved against it on --resume)."""

    def rebase(value: str) -> str:
        path = Path(value).expanduser()
        return os.path.relpath(path.absolute(), Path(folder).absolute()) if not path.is_absolute() and path.exists() else value

    sections = {s: getattr(resolved.config, s) for s in SECTIONS}
    top: dict[str, Any] = {}
    for section, key in _path_settings():
        owner = sections[section] if section else resolved.config
        changed = _map_value(getattr(owner, key), rebase)
        if section:
            sections[section] = dataclasses.replace(sections[section], **{key: changed})
        else:
            top[key] = changed
    return Resolved(dataclasses.replace(resolved.config, **top, **sections), resolved.origins)


def paths_from(table: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A run's saved configuration with each relative path that exists relative to ``folder`` (the run folder)
    made usable from the current folder."""

    def anchor(value: str) -> str:
        path = Path(value)
        return str(folder / path) if not path.expanduser().is_absolute() and (folder / path).exists() else value

    out = {k: dict(v) if isinstance(v, dict) else v for k, v in table.items()}
    for section, key in _path_settings():
        owner = out.get(section) if section else out
        if isinstance(owner, dict) and key in owner:
            owner[key] = _map_value(owner[key], anchor)
    return out


def as_table(config: RunConfig) -> dict[str, Any]:
    """The configuration as a nested table (None values, "decide for me", left out; tuples as lists)."""

    def clean(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: clean(getattr(obj, f.name)) for f in dataclasses.fields(obj) if getattr(obj, f.name) is not None}
        return list(obj) if isinstance(obj, tuple) else obj

    return clean(config)


def _inline(value: Any) -> str:
    """A TOML value on one line (tables inline, so each setting stays one line with its origin beside it)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def dumps(resolved: Resolved, with_origins: bool = False) -> str:
    """TOML text of the configuration, one line per setting; with ``with_origins`` each line says where its
    value came from, and each "decide for me" (None) setting is listed as a comment."""
    lines: list[str] = []

    def block(obj: Any, section: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                continue
            name = f"{section}.{f.name}" if section else f.name
            if value is None:
                if with_origins:
                    line = f"# {f.name} = None"
                    lines.append(f"{line:<56} # {resolved.origins.get(name, 'default')}: decided at run time")
                continue
            line = f"{f.name} = {_inline(value)}"
            lines.append(f"{line:<56} # {resolved.origins.get(name, 'default')}" if with_origins else line)

    block(resolved.config, "")
    for section in SECTIONS:
        lines.append(f"\n[{section}]")
        block(getattr(resolved.config, section), section)
    return "\n".join(lines) + "\n"
