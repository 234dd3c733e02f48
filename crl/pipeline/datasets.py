"""Prompt sets from elsewhere: a catalogue of known benchmarks and training sets, ``pull`` and ``import``.

Everything ends as one file in crl's prompt-set format, ``{data_home}/{name}.parquet`` with the columns
id, prompt, answer, source, so that ``crl eval math500`` or ``--prompts math_train`` find it by name.

- ``pull(name)`` downloads a catalogued set from the Hugging Face hub: with the ``datasets`` library when it
  is installed, else the hub's Parquet conversion of the dataset through ``huggingface_hub``. Without a
  network (or with ``HF_HUB_OFFLINE=1``) it fails at once with one line that names ``crl data import``.
- ``import_path(path)`` converts what a user already has: JSONL, a JSON array, Parquet, a folder saved by
  ``datasets.save_to_disk`` (its Arrow files are read with pyarrow, so ``datasets`` is not needed), a
  verl-style RL Parquet (``prompt`` as chat messages, ``reward_model.ground_truth``, ``data_source``), or a
  folder of such files (each becomes a set named after its file).

The field mapping and the final-answer extraction are those of ``crl.pipeline.prompts.load_prompts``;
``normalize_row`` only adds what that mapping does not know (verl rows, capitalised field names, a
catalogue entry's renames) before the rows are handed to it.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import polars as pl

from crl.errors import CrlError
from crl.io import write_parquet
from crl.pipeline.prompts import ANSWER_FIELDS, PROMPT_FIELDS, data_home, load_prompts, read_json_rows

HUB_HOST = "huggingface.co"
CONNECT_TIMEOUT = 3.0


@dataclass(frozen=True)
class Known:
    """A catalogued prompt set: where it lives on the hub and how its fields map onto crl's."""

    name: str
    hub_id: str
    split: str
    config: str | None = None
    kind: str = "benchmark"
    rename: dict[str, str] = field(default_factory=dict)
    keep: Callable[[dict[str, Any]], bool] | None = None
    aliases: tuple[str, ...] = ()
    note: str = ""

    @property
    def where(self) -> str:
        return f"{self.hub_id}" + (f" ({self.config})" if self.config else "") + f" [{self.split}]"


CATALOGUE: tuple[Known, ...] = (
    Known("math500", "HuggingFaceH4/MATH-500", "test", note="500 MATH test problems (Lightman et al.)"),
    Known("gsm8k_test", "openai/gsm8k", "test", config="main", aliases=("gsm8k",), note="GSM8K test, '#### n' answers"),
    Known("aime24", "HuggingFaceH4/aime_2024", "train", aliases=("aime2024", "aime_2024"), note="AIME 2024 I+II"),
    Known("aime25", "math-ai/aime25", "test", aliases=("aime2025", "aime_2025"), note="AIME 2025 I+II"),
    Known("amc23", "math-ai/amc23", "test", aliases=("amc2023", "amc_2023"), note="AMC 12 2023"),
    Known("minerva_math", "math-ai/minervamath", "test", aliases=("minerva",), note="Minerva OCW problems"),
    Known(
        "olympiadbench",
        "Hothan/OlympiadBench",
        "train",
        config="OE_TO_maths_en_COMP",
        note="English open-ended maths, gold = final_answer",
    ),
    Known("gsm8k_train", "openai/gsm8k", "train", config="main", kind="train", note="GSM8K train"),
    Known(
        "math_train",
        "DigitalLearningGmbH/MATH-lighteval",
        "train",
        config="default",
        kind="train",
        note="MATH train (Hendrycks), gold = last \\boxed{} of the solution",
    ),
    Known(
        "aime_1983_2023",
        "gneubig/aime-1983-2024",
        "train",
        kind="train",
        rename={"Question": "problem", "Answer": "answer", "ID": "id"},
        keep=lambda row: int(row.get("Year") or row.get("year") or 0) <= 2023,
        aliases=("aime_1983_2023_train",),
        note="AIME 1983-2023 (no overlap with AIME 2024/2025)",
    ),
    Known(
        "deepscaler",
        "agentica-org/DeepScaleR-Preview-Dataset",
        "train",
        kind="train",
        note="DeepScaleR-Preview 40k mix (AIME, AMC, Omni-MATH, STILL)",
    ),
)


def known(name: str) -> Known | None:
    """The catalogue entry called ``name`` (or one of its aliases), else None."""
    key = name.lower().replace("-", "_")
    return next((k for k in CATALOGUE if key == k.name or key in k.aliases), None)


# ---------------------------------------------------------------------------------------------- reading


def _arrow_table(path: Path):
    import pyarrow as pa
    import pyarrow.ipc as ipc

    try:
        with pa.memory_map(str(path)) as source:
            return ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        try:
            with pa.memory_map(str(path)) as source:
                return ipc.open_file(source).read_all()
        except pa.ArrowInvalid as e:
            raise CrlError(f"{path}: not a readable Arrow file ({e})") from None


def is_saved_dataset(folder: Path) -> bool:
    """A folder written by ``datasets.Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return folder.is_dir() and any((folder / f).is_file() for f in ("state.json", "dataset_info.json", "dataset_dict.json"))


def _saved_dataset_rows(folder: Path, split: str | None) -> list[dict[str, Any]]:
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits") or sorted(
            p.name for p in folder.iterdir() if p.is_dir()
        )
        if split is None:
            split = next((s for s in ("test", "train") if s in splits), splits[0])
        if split not in splits:
            raise CrlError(f"{folder}: no split {split!r} (has {', '.join(splits)})")
        folder = folder / split
    elif split is not None and split != folder.name:
        state = folder / "state.json"
        saved = json.loads(state.read_text()).get("_split") if state.is_file() else None
        if saved and saved != split:
            raise CrlError(f"{folder}: holds the {saved!r} split, not {split!r}")
    files = []
    if (folder / "state.json").is_file():
        files = [folder / f["filename"] for f in json.loads((folder / "state.json").read_text()).get("_data_files", [])]
    files = files or sorted(folder.glob("*.arrow"))
    if not files:
        raise CrlError(f"{folder}: a saved dataset folder without .arrow files")
    import pyarrow as pa

    table = pa.concat_tables([_arrow_table(f) for f in files])
    return table.to_pylist()


def read_rows(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The rows of a JSONL / JSON / Parquet file or of a saved ``datasets`` folder, as dicts."""
    if path.is_dir():
        if not is_saved_dataset(path):
            raise CrlError(f"{path}: not a saved `datasets` folder (no state.json / dataset_info.json)")
        return _saved_dataset_rows(path, split)
    if not path.is_file():
        raise CrlError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return read_json_rows(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several kinds
            raise CrlError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    if suffix == ".arrow":
        return _arrow_table(path).to_pylist()
    raise CrlError(f"{path}: expected .jsonl, .json, .parquet, .arrow or a saved `datasets` folder")


# ------------------------------------------------------------------------------------------- converting


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def normalize_row(row: dict[str, Any], rename: dict[str, str] | None = None, plain: bool = False) -> dict[str, Any]:
    """Map a row onto the fields ``load_prompts`` knows: catalogue renames, verl RL rows, capitalised names.

    verl: ``prompt`` is a list of chat messages, the gold is ``reward_model.ground_truth``, the source
    ``data_source``, the id ``extra_info.index``. With ``plain``, a prompt that is a single user message
    becomes its text, for models without a chat template.
    """
    row = {(rename or {}).get(k, k): v for k, v in row.items()}
    reward_model = row.get("reward_model")
    if isinstance(reward_model, dict) and reward_model.get("ground_truth") is not None and "answer" not in row:
        row["answer"] = reward_model["ground_truth"]
    if row.get("data_source") and not row.get("source"):
        row["source"] = row["data_source"]
    extra = row.get("extra_info")
    if isinstance(extra, dict) and row.get("id") is None and extra.get("index") is not None:
        row["id"] = extra["index"]
    if row.get("id") is None:
        row["id"] = next((row[k] for k in ("unique_id", "idx", "index", "ID", "Id") if row.get(k) is not None), None)
    lower = {k.lower(): k for k in row}
    for name in (*PROMPT_FIELDS, *ANSWER_FIELDS, "id", "source"):
        if name not in row and name in lower:
            row[name] = row[lower[name]]
    prompt = row.get("prompt")
    if plain and _is_messages(prompt) and len(prompt) == 1 and prompt[0]["role"] == "user":
        row["prompt"] = prompt[0]["content"]
    if row.get("answer") is not None and not isinstance(row["answer"], (str, list)):
        value = row["answer"]
        row["answer"] = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return row


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list)) and not (value.strip() if isinstance(value, str) else value))


def to_prompt_set(
    rows: list[dict[str, Any]], name: str, rename: dict[str, str] | None = None, plain: bool = False
) -> tuple[pl.DataFrame, int]:
    """Rows of any known shape -> the prompt-set columns id, prompt, answer, source (via ``load_prompts``),
    and the number of rows left out because their problem or gold answer is empty."""
    if not rows:
        raise CrlError(f"{name}: holds no rows")
    keep = {*PROMPT_FIELDS, *ANSWER_FIELDS, "id", "source"}
    normalised = [normalize_row(row, rename, plain) for row in rows]
    fields = set().union(*(r.keys() for r in normalised))
    p_field = next((f for f in PROMPT_FIELDS if f in fields), None)
    a_field = next((f for f in ANSWER_FIELDS if f in fields), None)
    if p_field is None or a_field is None:
        missing = "prompt" if p_field is None else "answer"
        expected = PROMPT_FIELDS if p_field is None else (*ANSWER_FIELDS, "reward_model.ground_truth")
        raise CrlError(f"{name}: no {missing} field (expected one of {', '.join(expected)}; found {', '.join(sorted(fields))})")
    kept = []
    for row in normalised:
        if _blank(row.get(p_field)) or _blank(row.get(a_field)):
            continue
        row = {k: v for k, v in row.items() if k in keep}
        row.setdefault("source", name)
        kept.append(row)
    if not kept:
        raise CrlError(f"{name}: no row has both a {p_field} and an {a_field}")
    normalised = kept
    with tempfile.TemporaryDirectory(prefix="crl-import-") as tmp:
        path = Path(tmp) / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for row in normalised:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        try:
            df = load_prompts(path)
            dollars = pl.col("answer").str.extract(r"^\$([^$]*)\$$")
            return df.with_columns(answer=pl.coalesce(dollars, pl.col("answer"))), len(rows) - len(kept)
        except CrlError as e:
            raise CrlError(str(e).replace(str(path), name)) from None


def default_name(path: Path) -> str:
    """The set name of an imported file: its stem, or the catalogue name it is an alias of."""
    stem = path.stem if path.is_file() else path.name
    entry = known(stem)
    return entry.name if entry else stem


def write_set(df: pl.DataFrame, name: str, out: Path | None, origin: str) -> Path:
    folder = out if out is not None else data_home()
    target = folder / f"{name}.parquet"
    write_parquet(df, target, {"origin": origin, "name": name})
    return target


@dataclass(frozen=True)
class Written:
    """A prompt set written by ``pull`` or ``import``: its name, file, rows, and rows left out (empty gold)."""

    name: str
    path: Path
    rows: int
    skipped: int = 0


def import_path(
    path: Path, name: str | None = None, out: Path | None = None, split: str | None = None, plain: bool = False
) -> list[Written]:
    """Convert a local file or folder into prompt sets, one per file (a saved dataset is one)."""
    path = Path(path)
    if path.is_dir() and not is_saved_dataset(path):
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".json", ".parquet") and not p.name.startswith("."))
        if not files:
            raise CrlError(f"{path}: holds no .jsonl, .json or .parquet files and is not a saved `datasets` folder")
        if name is not None:
            raise CrlError(f"--name {name}: a folder of {len(files)} files gets one set per file, named after it")
        return [r for f in files for r in import_path(f, None, out, split, plain)]
    name = name or default_name(path)
    entry = known(name)
    rows = read_rows(path, split)
    df, skipped = to_prompt_set(rows, name, entry.rename if entry else None, plain)
    return [Written(name, write_set(df, name, out, str(path.resolve())), df.height, skipped)]


# ---------------------------------------------------------------------------------------------- pulling


def _offline_reason() -> str | None:
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


def pull(name: str, out: Path | None = None) -> Written:
    """Download the catalogued set ``name`` and write it as a prompt set."""
    entry = known(name)
    if entry is None:
        names = ", ".join(k.name for k in CATALOGUE)
        raise CrlError(f"data pull {name}: not a known set (known: {names}); for other data use `crl data import PATH`")
    reason = _offline_reason()
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
    return Written(entry.name, write_set(df, entry.name, out, f"hf://datasets/{entry.hub_id}"), df.height, skipped)


# ---------------------------------------------------------------------------------------------- listing


def count_rows(path: Path) -> int | None:
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    except Exception:
        return None


def _local_file(folder: Path, names: Iterable[str]) -> Path | None:
    for n in names:
        for ext in (".parquet", ".jsonl"):
            if (folder / f"{n}{ext}").is_file():
                return folder / f"{n}{ext}"
    return None


def listing() -> list[dict[str, Any]]:
    """Known and present sets: name, kind, hub id, where it is found locally and its rows."""
    from crl.default import DATA_DIR

    home = data_home()
    rows = []
    for entry in CATALOGUE:
        local = _local_file(home, (entry.name, *entry.aliases))
        rows.append(
            {"name": entry.name, "kind": entry.kind, "hub": entry.where, "path": local,
             "rows": count_rows(local) if local else None, "note": entry.note}
        )
    listed = {r["name"] for r in rows}
    for folder, kind in ((DATA_DIR, "shipped"), (home, "imported")):
        if not folder.is_dir():
            continue
        for f in sorted([*folder.glob("*.parquet"), *folder.glob("*.jsonl")]):
            if f.stem in listed or f.name.startswith(".") or known(f.stem):
                continue
            listed.add(f.stem)
            rows.append({"name": f.stem, "kind": kind, "hub": "", "path": f, "rows": count_rows(f), "note": ""})
    return rows
