"""Downloading a catalogued prompt set from the Hugging Face hub (``crl data pull``).

With the ``datasets`` library when it is installed, else the hub's Parquet conversion of the dataset through
``huggingface_hub``. Without a network (or with ``HF_HUB_OFFLINE=1``) it fails at once with one line that
names ``crl data import``.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

from crl.data.catalogue import CATALOGUE, Known, known
from crl.data.importers import Written, read_rows, set_path, to_prompt_set, write_set
from crl.errors import CrlError
from crl.io import check_output

HUB_HOST = "huggingface.co"
CONNECT_TIMEOUT = 3.0


def offline_reason() -> str | None:
    """Why the hub cannot be reached right now, found within a few seconds, or None when it can."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT", f"https://{HUB_HOST}")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    hostname, _, port = host.partition(":")
    result: list[str | None] = ["no answer within %.0f s" % CONNECT_TIMEOUT]

    def probe() -> None:
        try:
            socket.create_connection((hostname, int(port or 443)), timeout=CONNECT_TIMEOUT).close()
            result[0] = None
        except OSError as e:
            result[0] = f"cannot reach {hostname} ({e.strerror or type(e).__name__})"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT + 1)
    return result[0]


def _offline_error(name: str, reason: str) -> CrlError:
    return CrlError(
        f"data pull {name}: the Hugging Face hub is not reachable ({reason}); download the files elsewhere "
        f"and run `crl data import PATH --name {name}`"
    )


def _hub_rows(entry: Known) -> list[dict[str, Any]]:
    """Download the rows of ``entry``: ``datasets`` if installed, else the hub's Parquet conversion."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        datasets = None
    if datasets is not None:
        ds = datasets.load_dataset(entry.hub_id, entry.config, split=entry.split)
        return list(ds)
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError:
        raise CrlError(
            f"data pull {entry.name}: needs `huggingface_hub` or `datasets` (pip install huggingface_hub), "
            f"or download the files and run `crl data import PATH --name {entry.name}`"
        ) from None
    revision = "refs/convert/parquet"
    files = HfApi().list_repo_files(entry.hub_id, repo_type="dataset", revision=revision)
    config = entry.config or "default"
    wanted = sorted(f for f in files if f.startswith(f"{config}/{entry.split}/") and f.endswith(".parquet"))
    if not wanted:
        wanted = sorted(f for f in files if f.startswith(f"{config}/") and f"-{entry.split}" in f and f.endswith(".parquet"))
    if not wanted:
        raise CrlError(f"data pull {entry.name}: no Parquet files for {entry.where} on the hub")
    rows: list[dict[str, Any]] = []
    for f in wanted:
        local = hf_hub_download(entry.hub_id, f, repo_type="dataset", revision=revision)
        rows.extend(read_rows(Path(local)))
    return rows


def pull(name: str, out: Path | None = None, overwrite: bool = False) -> Written:
    """Download the catalogued set ``name`` and write it as a prompt set."""
    entry = known(name)
    if entry is None:
        names = ", ".join(k.name for k in CATALOGUE)
        raise CrlError(f"data pull {name}: not a known set (known: {names}); for other data use `crl data import PATH`")
    target = check_output(set_path(entry.name, out), kind="prompts", overwrite=overwrite, flag="--out")
    reason = offline_reason()
    if reason is not None:
        raise _offline_error(entry.name, reason)
    try:
        rows = _hub_rows(entry)
    except CrlError:
        raise
    except Exception as e:  # network and hub errors of either library
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise CrlError(f"data pull {entry.name}: download of {entry.where} failed ({first}); "
                       f"or download the files and run `crl data import PATH --name {entry.name}`") from None
    if entry.keep is not None:
        rows = [r for r in rows if entry.keep(r)]
    df, skipped = to_prompt_set(rows, entry.name, entry.rename)
    return Written(entry.name, write_set(df, target, f"hf://datasets/{entry.hub_id}"), df.height, skipped)

