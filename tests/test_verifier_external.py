"""The external case collection: labelled facts from other graders' test suites and issue threads, in our words.

tests/verifier_external_cases.jsonl holds one case per line: completion, gold answer, label, and the origin (a
repository and file, or an issue number) whose fact it restates; "derived" marks the wrong-answer twins we wrote.
bench/verify.py reports the same accuracy beside Math-Verify's.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from crl.verifiers import get_verifier

CASES = Path(__file__).parent / "verifier_external_cases.jsonl"


def _cases() -> list[dict]:
    return [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]


def test_collection_is_large_sourced_and_two_sided():
    cases = _cases()
    assert len(cases) >= 600
    assert len({c["id"] for c in cases}) == len(cases)
    assert all(c["origin"] and isinstance(c["label"], bool) for c in cases)
    repos = Counter(c["origin"].split()[0] for c in cases)
    for repo in ("huggingface/Math-Verify", "huggingface/lighteval", "NVIDIA/NeMo-Skills", "QwenLM/Qwen2.5-Math",
                 "volcengine/verl", "huggingface/trl"):
        assert repos[repo] > 0, repo
    labels = Counter(c["label"] for c in cases)
    assert labels[True] > 150 and labels[False] > 150


def test_agreement_with_the_labels_is_at_least_95_percent():
    math = get_verifier("math")
    wrong = []
    for c in _cases():
        v = math(c["completion"], c["answer"])
        if bool(v.reward) != c["label"]:
            wrong.append(f"{c['id']} [{c['topic']}] label={c['label']} gold={c['answer']!r} pred={v.pred!r}")
    print("\n".join(wrong))
    assert len(wrong) <= 0.05 * len(_cases()), "\n".join(wrong)
