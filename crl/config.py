"""The configuration of ``crl iterate``: defaults, a TOML file, and overrides, resolved into one table.
``0`` and ``"auto"`` leave a choice to the trainer (token budget and recompute by model size, bf16 on GPU).

Resolution order: the defaults below (the embedded default run), then the TOML file, then ``--set
section.key=value`` and the named flags. Unknown keys are errors, so a typo never silently does nothing.
The resolved table is written into the run folder as config.toml; ``--resume`` starts from it.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from crl.errors import CrlError

DEFAULTS: dict[str, Any] = {
    "model": "tiny-arith",
    "prompts": "arith_train",
    "eval_tasks": ["arith_test"],
    "rounds": 60,
    "prompts_per_round": 64,
    "eval_every": 10,
    "seed": 0,
    "backend": "auto",
    "weight_sync": "inplace",
    "log_to": "none",
    "generate": {
        "n": 8,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_new_tokens": 16,
        "template": "auto",
        "instruction": "",
        "dynamic_sampling": False,
        "max_attempts": 4,
    },
    "verify": {"verifier": "math", "workers": 0, "timeout": 5.0},
    "train": {
        "objective": "conspo",
        "lr": 3e-4,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "epochs": 1,
        "minibatches": 2,
        "token_budget": 0,
        "old_logprobs": "recompute",
        "ref": "",
        "gradient_checkpointing": "auto",
        "precision": "auto",
        "attn": "auto",
        "compile": False,
        "options": {},
    },
    "eval": {"k": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 16, "limit": 0},
}


def merge(base: dict[str, Any], update: dict[str, Any], where: str, free: tuple[str, ...] = ("options",)) -> dict:
    """``base`` updated by ``update``; keys that ``base`` lacks are errors, except inside ``free`` tables."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in out:
            raise CrlError(f"{where}: unknown setting {key!r}; known: {', '.join(out)}")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = value if key in free else merge(out[key], value, f"{where} [{key}]", free)
        else:
            out[key] = _typed(out[key], value, f"{where}: {key}")
    return out


def _typed(default: Any, value: Any, where: str) -> Any:
    """``value`` as the type of ``default`` (strings from the command line are parsed)."""
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            raise CrlError(f"{where}: cannot read {value!r} as a {type(default).__name__}") from None
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if default is not None and not isinstance(value, type(default)):
        raise CrlError(f"{where}: expected a {type(default).__name__}, got {value!r}")
    return value


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-4", "rounds=3"]`` as a nested table."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CrlError(f"--set {item}: expected section.key=value")
        *path, last = key.strip().split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value.strip()
    return out


def merge_tables(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Nested tables ``a`` and ``b`` combined, ``b`` winning (no checks: ``resolve`` checks the result)."""
    out = copy.deepcopy(a)
    for key, value in b.items():
        out[key] = merge_tables(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CrlError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise CrlError(f"{path}: not valid TOML ({e})") from None


def resolve(base: dict[str, Any], file: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    config = merge(base, load_toml(file), str(file)) if file else copy.deepcopy(base)
    options = overrides.get("train", {}).pop("options", None) if isinstance(overrides.get("train"), dict) else None
    config = merge(config, overrides, "--set")
    if options:
        config["train"]["options"] = {**config["train"]["options"], **options}
    return config


def dumps(config: dict[str, Any]) -> str:
    return tomli_w.dumps(config)
