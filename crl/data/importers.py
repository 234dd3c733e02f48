"""Importing prompt sets that a user already has into crl's format, under a name.

Everything ends as one file in crl's prompt-set format, ``{data_home}/{name}.parquet`` with the columns
id, prompt, answer, source, so that ``crl eval math500`` or ``--prompts math_train`` find it by name.
``import_path(path)`` converts JSONL, a JSON array, Parquet, a folder saved by ``datasets.save_to_disk``
(its Arrow files are read with pyarrow, so ``datasets`` is not needed), a verl-style RL Parquet (``prompt`` as
chat messages, ``reward_model.ground_truth``, ``data_source``), or a folder of such files (each becomes a set
named after its file).

The field mapping and the final-answer extraction are those of ``crl.data.prompts.load_prompts``;
``normalize_row`` only adds what that mapping does not know (verl rows, capitalised field names, a
catalogue entry's renames) before the rows are handed to it.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from crl.data import reasoning_gym
from crl.data.catalogue import known
from crl.data.prompts import ANSWER_FIELDS, PROMPT_FIELDS, data_home, load_prompts, read_json_rows, resolve
from crl.errors import CrlError
from crl.io import check_input, check_name, check_output, write_parquet

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
    if not check_input(path).is_file():
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
    value = row.get("answer")
    if isinstance(value, float) and not math.isfinite(value):
        row["answer"] = None  # a missing value (pandas writes NaN for one): the row is left out, not graded "nan"
    elif value is not None and not isinstance(value, (str, list)):
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


def set_path(name: str, out: Path | None) -> Path:
    """Where the prompt set ``name`` is written: ``OUT/NAME.parquet`` or the data home's. A name of a shipped
    set is refused for the data home, where a set is found by name: the shipped one would always be found first."""
    from crl.default import SHIPPED_DIR

    if out is None and any((SHIPPED_DIR / f"{check_name(name)}{ext}").is_file() for ext in (".parquet", ".jsonl")):
        raise CrlError(f"--name {name}: the name of a shipped prompt set, which `{name}` keeps finding; choose another --name")
    return (out if out is not None else data_home()) / f"{check_name(name)}.parquet"


def write_set(df: pl.DataFrame, target: Path, origin: str) -> Path:
    write_parquet(df, target, {"origin": origin, "name": target.stem}, kind="prompts")
    return target


@dataclass(frozen=True)
class Written:
    """A prompt set written by ``pull`` or ``import``: its name, file, rows, rows left out (empty gold), and rows
    left out because another set (``--exclude``) holds their problem."""

    name: str
    path: Path
    rows: int
    skipped: int = 0
    excluded: int = 0


def without(df: pl.DataFrame, exclude: tuple[str, ...]) -> tuple[pl.DataFrame, int]:
    """``df`` less the rows whose prompt one of the ``exclude`` sets holds (a held-out set kept out of a training
    set), and how many were left out."""
    if not exclude:
        return df, 0
    held = pl.concat([load_prompts(spec).select("prompt") for spec in exclude])["prompt"]
    kept = df.filter(~pl.col("prompt").is_in(held.implode()))
    if kept.is_empty():
        raise CrlError(f"--exclude {' '.join(exclude)}: holds every problem of the import; nothing is left to write")
    return kept, df.height - kept.height


def import_generated(
    source: str, name: str | None, out: Path | None, rows: int, seed: int, params: dict[str, Any], overwrite: bool = False,
    exclude: tuple[str, ...] = (),
) -> Written:
    """``rows`` problems of a reasoning-gym task (crl/data/reasoning_gym.py) as a prompt set, named after the task
    unless ``name`` is given, less those an ``exclude`` set holds."""
    set_name = name or source[len(reasoning_gym.PREFIX):]
    generated = reasoning_gym.generate_rows(source, rows, seed, params)  # checks the task and its options first
    inputs = [resolve(spec) for spec in exclude]
    target = check_output(set_path(set_name, out), kind="prompts", overwrite=overwrite, inputs=inputs, flag="--out")
    df, skipped = to_prompt_set(generated, set_name)
    df, excluded = without(df, exclude)
    origin = f"{source} rows={rows} seed={seed}" + "".join(f" {k}={v}" for k, v in params.items())
    origin += "".join(f" exclude={spec}" for spec in exclude)
    return Written(set_name, write_set(df, target, origin), df.height, skipped, excluded)


def import_path(
    path: Path, name: str | None = None, out: Path | None = None, split: str | None = None, plain: bool = False,
    overwrite: bool = False, exclude: tuple[str, ...] = (),
) -> list[Written]:
    """Convert a local file or folder into prompt sets, one per file (a saved dataset is one), less the problems an
    ``exclude`` set holds. Every target is checked before the first is written."""
    path = Path(path)
    if path.is_dir() and not is_saved_dataset(path):
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".json", ".parquet") and not p.name.startswith("."))
        if not files:
            raise CrlError(f"{path}: holds no .jsonl, .json or .parquet files and is not a saved `datasets` folder")
        if name is not None:
            raise CrlError(f"--name {name}: a folder of {len(files)} files gets one set per file, named after it")
        sources = [(f, default_name(f)) for f in files]
    else:
        sources = [(path, name or default_name(path))]
    inputs = [path, *(resolve(spec) for spec in exclude)]
    targets = [check_output(set_path(n, out), kind="prompts", overwrite=overwrite, inputs=inputs, flag="--out") for _, n in sources]
    written = []
    for (source, set_name), target in zip(sources, targets):
        entry = known(set_name)
        df, skipped = to_prompt_set(read_rows(source, split), set_name, entry.rename if entry else None, plain)
        df, excluded = without(df, exclude)
        written.append(Written(set_name, write_set(df, target, str(source.resolve())), df.height, skipped, excluded))
    return written
