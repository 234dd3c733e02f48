"""bench/real_outputs.py: the real-output collection rebuilt from its labels and the files they point to.

The records here are written for the tests in each source's layout (no text of the sources themselves): a label's
pointer must resolve to the one record it names and to the text that was judged, or nothing is written.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "real_outputs.py"
spec = importlib.util.spec_from_file_location("real_outputs", SCRIPT)
real_outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(real_outputs)

COMMIT = "0" * 40
FILES = {
    "openai/grade-school-math": json.dumps({
        "question": "Two pens cost 3 each. How much?", "ground_truth": "2*3=<<2*3=6>>6\nA: 6",
        "6b_finetuning": {"solution": "2 * 3 = 6\nA: 6", "is_correct": True}}) + "\n",
    "dvlab-research/MR-GSM8K": json.dumps([
        {"uuid": "u1", "question": "Q1", "ground_truth_answer": 4, "ground_truth_solution": "... #### 4",
         "model_output_steps": ["Step 1: 2 + 2 = 4", "Step 2: #### 4"]},
        {"uuid": "u2", "question": "Q2 with x", "ground_truth_answer": "Let's think step by step.",
         "ground_truth_solution": "We solve 2x = 10.\nThe value of x is 5.",
         "model_output_steps": ["Step 1:  x = 10 / 2 = 5", "Step 2: The answer is: 5"]}]),
    "microsoft/ToRA": "\n".join(json.dumps({"idx": i, "question": f"Q{i}", "gt": str(i), "code": [f"\\boxed{{{i}}}"]})
                                for i in range(3)) + "\n",
    "GAIR-NLP/ReasonEval": json.dumps({"id": 7, "question": "Q7", "ground_truth_answer": "\\frac12",
                                       "model_output_step_format": [["Halve 1."], ["# Answer\n\n\\frac12"]]}) + "\n",
}
EXPECTED = {  # (pointer, question, answer, completion)
    "openai/grade-school-math": ({"line": 1, "field": "6b_finetuning"}, "Two pens cost 3 each. How much?", "6",
                                 "2 * 3 = 6\nA: 6"),
    "dvlab-research/MR-GSM8K": ({"uuid": "u2"}, "Q2 with x", "5", " x = 10 / 2 = 5\nThe answer is: 5"),
    "microsoft/ToRA": ({"idx": 2}, "Q2", "2", "\\boxed{2}"),
    "GAIR-NLP/ReasonEval": ({"id": 7}, "Q7", "\\frac12", "Halve 1.\n# Answer\n\n\\frac12"),
}


def _label(repo: str, pointer: dict, text: tuple[str, str, str], case_id: str = "real-0001") -> dict:
    return {"id": case_id, "part": "tune", "origin": {"repo": repo, "commit": COMMIT, "path": "f.json", **pointer},
            "label": True, "note": "", "sha256": real_outputs.text_digest(*text)}


def _read(repo: str, commit: str, path: str) -> str:
    return FILES[repo]


@pytest.mark.parametrize("repo", sorted(EXPECTED))
def test_each_source_record_becomes_the_judged_question_gold_and_completion(repo):
    pointer, *text = EXPECTED[repo]
    (case,) = real_outputs.rebuild([_label(repo, pointer, tuple(text))], _read)
    assert (case["question"], case["answer"], case["completion"]) == tuple(text)
    assert "sha256" not in case and case["label"] is True and case["origin"]["repo"] == repo


@pytest.mark.parametrize("pointer,reason", [({"uuid": "u9"}, "0 records with uuid"), ({}, "'uuid'")])
def test_a_pointer_that_does_not_resolve_stops_in_one_line(capsys, pointer, reason):
    label = _label("dvlab-research/MR-GSM8K", pointer, ("", "", ""), "real-0042")
    with pytest.raises(SystemExit) as stop:
        real_outputs.rebuild([label], _read)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "real-0042" in err and reason in err


def test_other_text_than_was_judged_stops():
    pointer, question, answer, completion = EXPECTED["microsoft/ToRA"]
    label = _label("microsoft/ToRA", pointer, (question, answer + "0", completion))
    with pytest.raises(SystemExit, match="2"):
        real_outputs.rebuild([label], _read)


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_main_reads_git_snapshots_and_writes_nothing_when_a_pointer_fails(tmp_path, monkeypatch, capsys):
    work = tmp_path / "microsoft+ToRA" / "repo"
    work.mkdir(parents=True)
    _git("init", "-q", cwd=work)
    (work / "f.json").write_text(FILES["microsoft/ToRA"])
    _git("add", "f.json", cwd=work)
    _git("commit", "-q", "-m", "records", cwd=work)
    commit = _git("rev-parse", "HEAD", cwd=work)
    pointer, *text = EXPECTED["microsoft/ToRA"]
    label = _label("microsoft/ToRA", pointer, tuple(text))
    label["origin"]["commit"] = commit
    labels, out = tmp_path / "labels.jsonl", tmp_path / "data" / "cases.jsonl"
    labels.write_text(json.dumps(label) + "\n")
    monkeypatch.setattr(real_outputs, "LABELS", labels)
    monkeypatch.setattr("sys.argv", ["real_outputs.py", "--sources", str(tmp_path), "--out", str(out)])
    real_outputs.main()
    (case,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert case["completion"] == "\\boxed{2}" and real_outputs.read_collection(out, labels) == [case]

    out.unlink()
    label["origin"]["path"] = "missing.json"
    labels.write_text(json.dumps(label) + "\n")
    with pytest.raises(SystemExit):
        real_outputs.main()
    assert "missing.json" in capsys.readouterr().err and not out.exists()
