"""Prompt sets: reading them (Parquet or JSONL, common field names), final answers, and rendering.

A prompt set needs a problem (``prompt``, ``problem`` or ``question``) and a gold answer (``answer``, else
``final_answer``, else the last ``\\boxed{}`` of a ``solution``); ``id`` and ``source`` are optional.
GSM8K-style answers ("... #### 18") and MATH-style solutions yield their final answer.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import polars as pl

from crl.answers.extract import gold_answer
from crl.config.settings import TEMPLATES
from crl.errors import CrlError
from crl.io import check_input

PROMPT_FIELDS = ("prompt", "problem", "question")
ANSWER_FIELDS = ("answer", "final_answer", "solution")
ROLES = ("system", "user", "assistant")


def data_home() -> Path:
    """Where ``crl data`` keeps prompt sets: $CRL_DATA_DIR, else ~/.cache/crl/data."""
    return Path(os.environ.get("CRL_DATA_DIR", Path.home() / ".cache" / "crl" / "data"))


def resolve(spec: str | Path) -> Path:
    """A prompt-set path, or the file of a named set (shipped in crl/default/shipped/, or imported into the data home)."""
    path = Path(spec).expanduser()
    if path.exists():
        return check_input(path)
    from crl.default import SHIPPED_DIR

    for folder in (SHIPPED_DIR, data_home()):
        for ext in (".parquet", ".jsonl"):
            if (folder / f"{spec}{ext}").is_file():
                return folder / f"{spec}{ext}"
    raise CrlError(f"{spec}: no such file, and no prompt set of that name (see `crl data list`)")


def read_text(path: Path) -> str:
    """A text file's contents; a folder or text that is not UTF-8 is a one-line error naming the line."""
    if check_input(path).is_dir():
        raise CrlError(f"{path}: is a folder, not a {path.suffix or 'text'} file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise CrlError(f"{path}:{line}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None


def read_json_rows(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file, or of a JSON array; bad JSON or a row that is not an object is a
    one-line error naming the line."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise CrlError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not all(isinstance(r, dict) for r in rows):
            raise CrlError(f"{path}: a JSON array of objects was expected")
        return rows
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON strings may hold U+2028
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CrlError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise CrlError(f"{path}:{n}: a JSON object ({{...}}) was expected, not {type(row).__name__}")
            rows.append(row)
    return rows


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        raise CrlError(f"{path}: is a folder; a prompt set is a .parquet or .jsonl file")
    if path.suffix in (".jsonl", ".json"):
        return read_json_rows(path)
    if path.suffix == ".parquet":
        from crl.data.schemas import read_parquet

        return read_parquet(path).to_dicts()
    raise CrlError(f"{path}: prompt sets are .parquet or .jsonl files")


def _missing(value: Any) -> bool:
    """A gold answer that is not there: None, blank text, or a NaN/infinite number (a missing value)."""
    return value is None or (isinstance(value, float) and not math.isfinite(value)) or not str(value).strip()


def _as_answer(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            return ", ".join(str(v) for v in json.loads(value.replace("'", '"')))
        except json.JSONDecodeError:
            return value
    return gold_answer(str(value))


def load_prompts(spec: str | Path, limit: int | None = None) -> pl.DataFrame:
    """A prompt set as columns id, prompt (text or chat messages as JSON), answer, source."""
    path = resolve(spec)
    rows = _read_rows(path)
    if not rows:
        raise CrlError(f"{path}: holds no prompts")
    fields = rows[0].keys()
    p_field = next((f for f in PROMPT_FIELDS if f in fields), None)
    a_field = next((f for f in ANSWER_FIELDS if f in fields), None)
    if p_field is None:
        raise CrlError(f"{path}: no prompt column (expected one of {', '.join(PROMPT_FIELDS)})")
    if a_field is None:
        raise CrlError(f"{path}: no answer column (expected one of {', '.join(ANSWER_FIELDS)})")
    out: dict[str, list[str]] = {"id": [], "prompt": [], "answer": [], "source": []}
    first: dict[str, int] = {}
    for n, row in enumerate(rows[:limit] if limit else rows, 1):
        problem, answer = row.get(p_field), row.get(a_field)
        if problem is None or (isinstance(problem, str) and not problem.strip()):
            raise CrlError(f"{path}: row {n} has an empty {p_field}")
        if _missing(answer):
            raise CrlError(f"{path}: row {n} has no {a_field} (empty, null or NaN)")
        if isinstance(problem, (list, dict)) and not _is_chat(problem):
            raise CrlError(f"{path}: row {n}: {p_field} is neither text nor a list of chat messages "
                           f"({{\"role\": \"user\", \"content\": \"...\"}}, roles {', '.join(ROLES)})")
        prompt = problem if isinstance(problem, str) else json.dumps(problem)
        pid = str(row["id"]) if row.get("id") is not None else hashlib.sha1(prompt.encode()).hexdigest()[:16]
        if pid in first:
            what = f"the same id {pid!r}" if row.get("id") is not None else "the same problem and no id"
            raise CrlError(f"{path}: rows {first[pid]} and {n} have {what}; every prompt needs its own id")
        first[pid] = n
        out["id"].append(pid)
        out["prompt"].append(prompt)
        out["answer"].append(_as_answer(answer))
        out["source"].append(str(row.get("source") or path.stem))
    return pl.DataFrame(out)


def _is_chat(value: Any) -> bool:
    """A non-empty list of messages, each a role crl knows and text content."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in value
    )


def _messages(prompt: str) -> list[dict[str, str]] | None:
    if prompt.startswith("[{"):
        try:
            msgs = json.loads(prompt)
        except json.JSONDecodeError:
            return None
        if all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            return msgs
    return None


def render(prompt: str, tokenizer: Any, template: str = "auto", instruction: str = "") -> str:
    """The text the model sees: the problem (plus ``instruction``) in the chat template, or as it is."""
    if template not in TEMPLATES:
        raise CrlError(f"--template: unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    has_chat = getattr(tokenizer, "chat_template", None) is not None
    messages = _messages(prompt)
    if template == "chat" and not has_chat:
        raise CrlError("--template chat: the tokenizer has no chat template (use --template plain)")
    if messages is None:
        text = f"{prompt} {instruction}".strip() if instruction else prompt
        if template == "plain" or not has_chat:
            return text
        messages = [{"role": "user", "content": text}]
    if not has_chat:
        raise CrlError("a prompt given as chat messages needs a tokenizer with a chat template")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def shard(df: pl.DataFrame, spec: str | None) -> tuple[pl.DataFrame, tuple[int, int] | None]:
    """Rows i, i+n, i+2n, ... for ``--shard i/n``."""
    if not spec:
        return df, None
    m = re.fullmatch(r"(\d+)/(\d+)", spec)
    if not m or not 0 <= int(m[1]) < int(m[2]):
        raise CrlError(f"--shard {spec}: expected i/n with 0 <= i < n, e.g. 3/8")
    i, n = int(m[1]), int(m[2])
    return df.gather_every(n, offset=i), (i, n)
