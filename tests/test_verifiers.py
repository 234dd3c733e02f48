"""Verifier subsystem: the labelled case file, the registry, and verify_many's ordering, timeouts and workers."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from crl.errors import CrlError
from crl.verifiers import Verdict, get_verifier, verify_many
from crl.answers.extract import extract_answer, last_boxed

CASES = Path(__file__).parent / "verifier_cases.jsonl"
DATA = Path(__file__).parents[1].parent / "shared" / "data"


def _cases() -> list[dict]:
    return [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]


def test_case_file_has_300_cases_and_both_verdicts_in_every_topic():
    cases = _cases()
    assert len(cases) >= 300
    topics: dict[str, set[bool]] = {}
    for c in cases:
        topics.setdefault(c["topic"], set()).add(c["label"])
    one_sided = [t for t, labels in topics.items() if labels != {True, False} and not t.startswith("exact")]
    assert not one_sided, f"topics without both true and false pairs: {one_sided}"


def test_labelled_cases_agree():
    cases = _cases()
    failures = []
    for c in cases:
        v = get_verifier(c["verifier"])(c["completion"], c["answer"])
        if bool(v.reward) != c["label"]:
            failures.append(f"{c['topic']}: label={c['label']} answer={c['answer']!r} pred={v.pred!r} "
                            f"status={v.status} completion=...{c['completion'][-80:]!r}")
    print("\n".join(failures))
    assert len(failures) <= 0.01 * len(cases), "\n".join(failures)


def test_verify_many_matches_direct_calls_in_order():
    cases = _cases()
    math_cases = [c for c in cases if c["verifier"] == "math"]
    direct = [get_verifier("math")(c["completion"], c["answer"]) for c in math_cases]
    pooled = verify_many([c["completion"] for c in math_cases], [c["answer"] for c in math_cases], workers=2)
    assert pooled == direct


def test_arithmetic_fast_path():
    comps = [f"{i}+{i}={2 * i} \\boxed{{{2 * i}}}" for i in range(-500, 500)]
    golds = [str(2 * i + (i % 2)) for i in range(-500, 500)]
    out = verify_many(comps, golds, workers=1)
    assert [v.reward for v in out] == [float(i % 2 == 0) for i in range(-500, 500)]
    assert all(v.status == "ok" for v in out)
    start = time.perf_counter()
    for c, g in zip(comps, golds):
        get_verifier("math")(c, g)
    assert (time.perf_counter() - start) / len(comps) < 2e-4


def test_statuses():
    math = get_verifier("math")
    assert math("no number here", "5") == Verdict(0.0, None, "no_answer")
    assert math(r"\boxed{2^{2^{2^{2^{2^{2}}}}}}", "4").status == "unparsable"
    assert math(r"\boxed{10000!}", "4").status == "unparsable"
    assert math(r"\boxed{" + "1+" * 3000 + "1}", "4").status == "unparsable"
    assert math(r"\boxed{\text{the number of apples}}", "4").status == "unparsable"


def test_extraction_details():
    assert last_boxed(r"\boxed{a{b}c}; then we see \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed(r"roots $\boxed{1}$ and $\boxed{-2}$") == "1, -2"
    assert last_boxed(r"\boxed{unclosed") is None
    assert extract_answer("x</think>The answer is 3.") == "3"
    assert extract_answer("The answer is 3.", strategies=("boxed",)) is None


def test_unknown_verifier_is_one_line_error():
    with pytest.raises(CrlError) as err:
        get_verifier("nope")
    assert "unknown verifier 'nope'" in str(err.value) and "math" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(CrlError):
        verify_many(["a"], ["a"], verifier="nope")
    with pytest.raises(CrlError):
        get_verifier("no_such_module_xyz:fn")


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "crl_test_user_verifier.py").write_text(textwrap.dedent("""
        import time
        from crl.verifiers import Verdict

        def as_float(completion, answer):
            return 1.0 if completion.strip() == answer.strip() else 0.0

        def as_bool(completion, answer):
            return completion == answer

        def as_verdict(completion, answer):
            return Verdict(1.0, completion.upper(), "ok")

        def sleepy(completion, answer):
            if completion == "sleep":
                time.sleep(60)
            return True

        def hang_in_c(completion, answer):
            if completion == "hang":
                import signal
                signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
                time.sleep(60)
            return True

        def crash(completion, answer):
            if completion == "crash":
                import os
                os._exit(3)
            if completion == "raise":
                raise ValueError("boom")
            return True
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "crl_test_user_verifier"
    sys.modules.pop("crl_test_user_verifier", None)


def test_user_verifiers(user_module):
    assert get_verifier(f"{user_module}:as_float")(" 3", "3") == Verdict(1.0, None, "ok")
    assert get_verifier(f"{user_module}:as_bool")("3", "4") == Verdict(0.0, None, "ok")
    assert get_verifier(f"{user_module}:as_verdict")("ab", "x") == Verdict(1.0, "AB", "ok")
    out = verify_many(["1", "2", "x"], ["1", "3", "x"], verifier=f"{user_module}:as_bool", workers=2)
    assert [v.reward for v in out] == [1.0, 0.0, 1.0]
    with pytest.raises(CrlError):
        get_verifier(f"{user_module}:missing")


def test_timeout_replaces_worker_and_run_goes_on(user_module):
    comps = ["a", "sleep", "b", "c", "sleep", "d"]
    start = time.monotonic()
    out = verify_many(comps, ["x"] * 6, verifier=f"{user_module}:sleepy", workers=2, timeout=1.0)
    assert time.monotonic() - start < 8
    assert [v.status for v in out] == ["ok", "timeout", "ok", "ok", "timeout", "ok"]
    assert [v.reward for v in out] == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]


def test_hard_timeout_when_signals_are_blocked(user_module):
    start = time.monotonic()
    out = verify_many(["a", "hang", "b"], ["x"] * 3, verifier=f"{user_module}:hang_in_c", workers=1, timeout=0.5)
    assert time.monotonic() - start < 6
    assert [v.status for v in out] == ["ok", "timeout", "ok"]


def test_crashing_worker_and_raising_verifier(user_module):
    out = verify_many(["a", "crash", "raise", "b"], ["x"] * 4, verifier=f"{user_module}:crash", workers=1)
    assert [v.status for v in out] == ["ok", "error", "error", "ok"]


def test_works_from_a_thread():
    box: list = []
    thread = threading.Thread(target=lambda: box.append(verify_many([r"\boxed{7}"] * 5, ["7"] * 5, workers=2)))
    thread.start()
    thread.join(60)
    assert box and all(v.reward == 1.0 for v in box[0])


def test_other_verifiers():
    assert get_verifier("gsm8k")("so 3 + 4 = 7\n#### 7", "... #### 7").reward == 1.0
    assert get_verifier("gsm8k")("The answer is 1,234.", "1234").reward == 1.0
    assert get_verifier("exact")(r"\boxed{Paris}", "Paris").reward == 1.0
    assert get_verifier("choice")("The answer is (B).", "B").reward == 1.0
    assert get_verifier("choice")("The answer is (B).", "C").reward == 0.0
    assert verify_many([], [], workers=2) == []


@pytest.mark.skipif(not (DATA / "math500.jsonl").exists(), reason="../shared/data not present")
def test_math500_solutions_match_their_answers():
    rows = [json.loads(line) for line in (DATA / "math500.jsonl").read_text().splitlines()]
    out = verify_many([r["solution"] for r in rows], [r["answer"] for r in rows], workers=2)
    wrong = [(r["answer"], v.pred) for r, v in zip(rows, out) if v.reward != 1.0]
    print(wrong)
    assert len(wrong) <= 0.02 * len(rows)


def test_a_second_registration_of_a_verifier_name_is_refused():
    from crl.verifiers import register

    with pytest.raises(ValueError, match="registered twice"):
        register("math")(lambda completion, answer: 1.0)
