"""Whole completions written by real models, judged by hand: the collection, its two parts, and one test per rule.

tests/verifier_real_labels.jsonl holds our work on 338 completions (GPT-3 6B/175B and MetaMath-7B and
ToRA-70B/ToRA-Code-34B on GSM8K, GPT-4 on MATH): each case's origin (repository, commit, file, record), licence,
part, and the label judged by reading its final answer against the gold (corrections and judgements in `note`).
The text is not in this repository (docs/verifier.md says why): `python bench/real_outputs.py` reads it back from
the pinned commits into bench/data/verifier_real_cases.jsonl, and the tests over that text skip without it. About a
third ("holdout") was kept out of the work on the rules; bench/verify.py reports both parts beside Math-Verify.
The rule tests at the end put each answer line under a worked solution written for these tests, so they run
everywhere.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from crl.verifiers import get_verifier

LABELS = Path(__file__).parent / "verifier_real_labels.jsonl"
REBUILT = Path(__file__).resolve().parents[1] / "bench" / "data" / "verifier_real_cases.jsonl"
math = get_verifier("math")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def collection() -> dict[str, dict]:
    """The rebuilt collection by id, with the committed labels; skips where it has not been rebuilt."""
    if not REBUILT.exists():
        pytest.skip(f"bench/data/{REBUILT.name} is not built: `python bench/real_outputs.py` reads its text back")
    labels = {c["id"]: c for c in _rows(LABELS)}
    cases = {c["id"]: c for c in _rows(REBUILT)}
    if cases.keys() != labels.keys() or any(cases[i]["origin"] != lab["origin"] for i, lab in labels.items()):
        pytest.fail(f"{REBUILT} is older than {LABELS.name}: rerun python bench/real_outputs.py")
    return {i: {**cases[i], **{k: v for k, v in lab.items() if k != "sha256"}} for i, lab in labels.items()}


def test_labels_are_sourced_licensed_pinned_and_two_sided():
    labels = _rows(LABELS)
    assert len(labels) >= 300 and len({c["id"] for c in labels}) == len(labels)
    for c in labels:
        origin = c["origin"]
        assert re.fullmatch(r"[0-9a-f]{40}", origin["commit"]) and origin["repo"] and origin["path"], c["id"]
        assert {"line", "uuid", "idx", "id"} & origin.keys() and re.fullmatch(r"[0-9a-f]{64}", c["sha256"]), c["id"]
        assert c["licence"].startswith("MIT") and isinstance(c["label"], bool), c["id"]
        assert not {"question", "answer", "completion"} & c.keys(), f"{c['id']}: the text is not committed"
    assert len({c["model"] for c in labels}) >= 5 and {c["task"] for c in labels} == {"math", "gsm8k"}
    parts = Counter((c["part"], c["label"]) for c in labels)
    assert all(parts[(p, lab)] >= 30 for p in ("tune", "holdout") for lab in (True, False))


@pytest.mark.parametrize("part", ["tune", "holdout"])
def test_agreement_with_the_judged_labels_is_at_least_95_percent(collection, part):
    cases = [c for c in collection.values() if c["part"] == part]
    wrong = [f"{c['id']} label={c['label']} gold={c['answer']!r} pred={math(c['completion'], c['answer']).pred!r}"
             for c in cases if bool(math(c["completion"], c["answer"]).reward) != c["label"]]
    assert len(wrong) <= 0.05 * len(cases), "\n".join(wrong)


@pytest.mark.parametrize(
    "case_id",
    [
        "real-0254",  # "# Answer" heading, no colon: \frac{11+9a}{20}, not the 20 of its denominator
        "real-0205",  # plain-text math after the heading: 12*pi for 12\pi
        "real-0286",  # a tuple with a LaTeX argument: (3,\frac{\pi}{2})
        "real-0004",  # GSM8K's "A: 85" cue
        "real-0084",  # MetaMath's "#### 2" then "The answer is: 2"
        "real-0150",  # ToRA: the boxed 120 after a program printed -120
        "real-0195",  # ToRA: \boxed{20\%} for 20
        "real-0278",  # the digits 2516 for the gold 2516_8 (the question asks for base eight)
        "real-0222",  # 864 for the gold "864 \mbox{ inches}^2": units leave the gold too
        "real-0321",  # "y=4/3" for \frac43: an assignment is its value
        "real-0257",  # the letter C for \text{(C)}
        "real-0334",  # a whole sentence under the heading, the count inside it
        "real-0216",  # 1.5 for \frac{3}{2}: a decimal equal to the exact gold
        "real-0294",  # "2 * 5! * 5!" for 28800: arithmetic left undone is not credited
        "real-0315",  # "2^8" for 256: the same rule for powers
        "real-0282",  # 0.0287 for 448/15625: a rounding, not the answer
        "real-0263",  # an unsimplified trigonometric expression for "simplify"
    ],
)
def test_each_rule_on_the_real_case_it_came_from(collection, case_id):
    case = collection[case_id]
    assert math(case["completion"], case["answer"]).reward == float(case["label"]), case["note"]


# A worked solution in the step-by-step style of the collection, written for these tests, with numbers in every
# line (a denominator of 20 among them) and no answer yet: each case below adds only its final answer line.
WORKED = (
    "I want to compare the two fractions, so I will put them over a common denominator.\n"
    "The least common multiple of 4 and 5 is 20, so \\[\\frac{3}{4}=\\frac{15}{20}\\quad\\text{and}\\quad"
    "\\frac{2}{5}=\\frac{8}{20}.\\]\n"
    "Their difference is $\\frac{15}{20}-\\frac{8}{20}=\\frac{7}{20}$, which does not reduce, since 7 is prime.\n"
    "As a check with decimals: 0.75 - 0.4 = 0.35, and 7/20 = 0.35 too.\n"
    "That settles the comparison, so I can write the result.\n"
)


@pytest.mark.parametrize(
    "answer_line,gold,reward",
    [
        ("# Answer\n\n\\frac{11+9a}{20}", "\\frac{11+9a}{20}", 1.0),
        ("**Final Answer**\n\n$\\frac{11+9a}{20}$", "\\frac{11+9a}{20}", 1.0),
        ("Final Answer\n\\frac{11+9a}{20}", "\\frac{11+9a}{20}", 1.0),
        # the span right after the cue, not the sentence's last number
        ("The answer is 41, not 42.", "41", 1.0),
        ("The answer is 41, not 42.", "42", 0.0),
        ("The answer is the point with coordinates (2, 3).", "(2,3)", 1.0),
        ("The answer is 7 and the remainder is 3.", "7", 1.0),
        ("The answer is reasonable, since 12 > 10.", "12", 0.0),
        # a negated statement is no answer, and the sentence's number is not one either
        ("The answer is not 12.", "12", 0.0),
        # plain-text and Unicode math
        ("The area is 12*pi square units.", "12\\pi", 1.0),
        ("The answer is sqrt(2)/2.", "\\frac{\\sqrt{2}}{2}", 1.0),
        ("So the length is 3 + 2√2.", "3+2\\sqrt{2}", 1.0),
        ("The answer is 12π.", "12\\pi", 1.0),
        ("The answer is −4.", "-4", 1.0),
        ("The product is 6 × 7 = 42.", "42", 1.0),
        # box tokens of other model families
        ("<|begin_of_box|>\\frac{11+9a}{20}<|end_of_box|>", "\\frac{11+9a}{20}", 1.0),
        ("<answer>The answer is 7.</answer>", "7", 1.0),
        # notation
        ("\\boxed{\\frac{x^\\circ}{2}}", "\\frac{x}{2}", 1.0),
        ("\\boxed{v^2_0}", "v_0^2", 1.0),
        ("\\boxed{3}", "\\Delta p = 3", 1.0),
        ("\\boxed{5}", "I_{\\max} = 5", 1.0),
        ("\\boxed{x+y}", "f(x,y) = x+y", 1.0),
        ("\\boxed{\\frac{3}{2} \\text{ (about 1.5)}}", "\\frac{3}{2}", 1.0),
        ("\\boxed{1+\\sqrt{2}, 1-\\sqrt{2}}", "\\{1\\pm\\sqrt{2}\\}", 1.0),
        ("\\boxed{(1, \\infty) \\cup (-\\infty, -1)}", "(-\\infty,-1)\\cup(1,\\infty)", 1.0),
        ("So the answer is $1011_2$.", "1011", 0.0),
        # one rule for arithmetic left undone against a number gold
        ("\\boxed{9+4}", "13", 0.0),
        ("\\boxed{\\frac{26}{2}}", "13", 0.0),
        ("\\boxed{5!}", "120", 0.0),
        ("\\boxed{\\sqrt{25}}", "5", 0.0),
        ("\\boxed{80+5}", "85", 0.0),
        ("80 + 5 = 85", "85", 1.0),
        ("The answer is 85.", "85", 1.0),
        ("\\boxed{2.5 \\times 10^{3}}", "2500", 1.0),
        ("\\boxed{\\sqrt{17}}", "4.123105625617661", 1.0),
        # a decimal equals an exact gold only as that gold rounded to its own places
        ("\\boxed{13.0000001}", "13", 0.0),
        ("\\boxed{13.0}", "13", 1.0),
        ("\\boxed{3.14159}", "\\pi", 1.0),
        ("\\boxed{0.5000001}", "0.5", 0.0),
    ],
)
def test_each_rule_on_a_worked_solution_with_its_answer_line_changed(answer_line, gold, reward):
    v = math(WORKED + answer_line, gold)
    assert v.reward == reward, v
