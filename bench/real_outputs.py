"""Rebuild the collection of real model outputs from its committed labels and the public files they point to.

tests/verifier_real_labels.jsonl holds, for each completion, only our own work: the judged `label`, the source's
own flag (`source_label`), the `note`, the `part`, the model, the licence, and an `origin` that pins the
repository, the full commit, the file and the record (a line number, `uuid`, `idx` or `id`). The text itself
(question, gold answer, completion) is not in this repository: it was read from other public repositories, and
this project commits no text brought in from them. This script reads it back from those repositories at the
pinned commits and writes the whole collection, one JSON object a line (the labels' fields plus `question`,
`answer` and `completion`), to bench/data/verifier_real_cases.jsonl (gitignored), which tests/test_verifier_real.py
and bench/verify.py read.

    python bench/real_outputs.py                    # files from raw.githubusercontent.com at the pinned commits
    python bench/real_outputs.py --sources DIR      # files from local git snapshots, no network

With --sources, DIR holds one git directory per repository, named `owner+name` (the git directory itself, or a
folder holding it as `repo/`, `.git/` or `repo/.git/`); each file is read with `git show COMMIT:PATH`.
Every pointer must resolve to the very text that was judged: each label line carries the sha256 of its case's
`[question, answer, completion]`, and nothing is written unless every case resolves and matches.

How a source's record becomes (question, answer, completion), as the labels were judged:
- openai/grade-school-math, example_model_solutions.jsonl: the record on `line` (1-based); the completion is the
  `solution` of the model named by `field`; the gold is what follows the reference solution's final "A:".
- dvlab-research/MR-GSM8K, an evaluation file: the record with `uuid`; its "Step N: " lines, prefixes removed,
  joined by newlines; the gold is `ground_truth_answer`, except where that holds the backward questions' prompt
  "Let's think step by step.": then the value the reference solution's last line gives for x.
- microsoft/ToRA, an output file: the record with `idx`; the completion is its first `code` entry, the gold `gt`.
- GAIR-NLP/ReasonEval, a copy of PRM800K's GPT-4 solutions: the record with `id`; its steps joined by newlines,
  the gold `ground_truth_answer`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "tests" / "verifier_real_labels.jsonl"
REBUILT = ROOT / "bench" / "data" / "verifier_real_cases.jsonl"
RAW = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
BACKWARD_PROMPT = "Let's think step by step."


def _record(text: str, key: str, value: object) -> dict:
    """The one record of a JSON list or JSON-lines file whose `key` equals `value`."""
    text = text.strip()
    records = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.split("\n") if line]
    found = [r for r in records if r.get(key) == value]
    if len(found) != 1:
        raise LookupError(f"{len(found)} records with {key} = {value!r}")
    return found[0]


def _grade_school_math(text: str, origin: dict) -> tuple[str, str, str]:
    record = json.loads(text.split("\n")[origin["line"] - 1])
    return record["question"], record["ground_truth"].rsplit("\nA:", 1)[1].strip(), record[origin["field"]]["solution"]


def _mr_gsm8k(text: str, origin: dict) -> tuple[str, str, str]:
    record = _record(text, "uuid", origin["uuid"])
    gold = str(record["ground_truth_answer"])
    if gold == BACKWARD_PROMPT:
        last_line = record["ground_truth_solution"].rsplit("\n", 1)[-1]
        value = re.search(r"\bx is (-?\d[\d,]*(?:\.\d+)?)", last_line)
        if value is None:
            raise LookupError("a backward question whose reference solution gives no value for x")
        gold = value.group(1)
    steps = [re.sub(r"^Step \d+: ", "", step) for step in record["model_output_steps"]]
    return record["question"], gold, "\n".join(steps)


def _tora(text: str, origin: dict) -> tuple[str, str, str]:
    record = _record(text, "idx", origin["idx"])
    return record["question"], record["gt"], record["code"][0]


def _reason_eval(text: str, origin: dict) -> tuple[str, str, str]:
    record = _record(text, "id", origin["id"])
    steps = [line for step in record["model_output_step_format"] for line in step]
    return record["question"], record["ground_truth_answer"], "\n".join(steps)


READERS: dict[str, Callable[[str, dict], tuple[str, str, str]]] = {
    "openai/grade-school-math": _grade_school_math,
    "dvlab-research/MR-GSM8K": _mr_gsm8k,
    "microsoft/ToRA": _tora,
    "GAIR-NLP/ReasonEval": _reason_eval,
}


def text_digest(question: str, answer: str, completion: str) -> str:
    """The sha256 a label line carries for its case's text."""
    return hashlib.sha256(json.dumps([question, answer, completion], ensure_ascii=False).encode()).hexdigest()


def _fail(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(2)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _git_dir(sources: Path, repo: str) -> Path:
    base = sources / repo.replace("/", "+")
    for candidate in (base, base / "repo", base / ".git", base / "repo" / ".git"):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    raise LookupError(f"no git directory for {repo} under {base}")


def file_reader(sources: Path | None) -> Callable[[str, str, str], str]:
    """A function (repo, commit, path) -> the file's text: from git snapshots under `sources`, else from GitHub."""
    cache: dict[tuple[str, str, str], str] = {}

    def read(repo: str, commit: str, path: str) -> str:
        key = (repo, commit, path)
        if key not in cache:
            if sources is None:
                with urllib.request.urlopen(RAW.format(repo=repo, commit=commit, path=path), timeout=60) as reply:
                    cache[key] = reply.read().decode()
            else:
                git = ["git", "--git-dir", str(_git_dir(sources, repo)), "show", f"{commit}:{path}"]
                shown = subprocess.run(git, capture_output=True, check=False)
                if shown.returncode:
                    raise LookupError(shown.stderr.decode().strip())
                cache[key] = shown.stdout.decode()
        return cache[key]

    return read


def rebuild(labels: list[dict], read: Callable[[str, str, str], str]) -> list[dict]:
    """Each label line (less its sha256) with its question, gold answer and completion read back from its origin."""
    cases = []
    for label in labels:
        origin = label["origin"]
        where = f"{label['id']} ({origin['repo']}@{origin['commit'][:7]} {origin['path']})"
        try:
            text = read(origin["repo"], origin["commit"], origin["path"])
            question, answer, completion = READERS[origin["repo"]](text, origin)
        except (OSError, LookupError, ValueError) as e:
            _fail(f"{LABELS.name}: {where} does not resolve: {e}")
        if text_digest(question, answer, completion) != label["sha256"]:
            _fail(f"{LABELS.name}: {where} resolves to other text than was judged (its sha256 differs)")
        cases.append({**{k: v for k, v in label.items() if k != "sha256"},
                      "question": question, "answer": answer, "completion": completion})
    return cases


def read_collection(path: Path = REBUILT, labels_path: Path = LABELS) -> list[dict] | None:
    """The rebuilt collection, or None where it has not been built; stops if it is older than the labels."""
    if not path.exists():
        return None
    cases = _rows(path)
    labels = [{k: v for k, v in label.items() if k != "sha256"} for label in _rows(labels_path)]
    if len(cases) != len(labels) or any({k: c.get(k) for k in lab} != lab for c, lab in zip(cases, labels)):
        _fail(f"{path} is older than {labels_path.name}: rebuild it with python bench/real_outputs.py")
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=Path, help="folder of git snapshots named owner+name (default: GitHub)")
    parser.add_argument("--out", type=Path, default=REBUILT)
    args = parser.parse_args()
    if args.sources is not None and not args.sources.is_dir():
        _fail(f"--sources: {args.sources} is not a folder")
    cases = rebuild(_rows(LABELS), file_reader(args.sources))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".tmp")
    partial.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases))
    partial.replace(args.out)
    parts = {p: sum(c["part"] == p for c in cases) for p in ("tune", "holdout")}
    print(f"{len(cases)} cases ({parts}) written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
