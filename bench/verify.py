"""Benchmark of crl's `math` verifier against Hugging Face Math-Verify: accuracy and throughput, same items.

Items: the labelled case files for accuracy (tests/verifier_cases.jsonl, written with crl's code,
tests/verifier_external_cases.jsonl, facts from other graders' tests and issue threads, and the collection of
whole completions written by real models and judged by hand, reported in its two parts: "tune", the cases the
rules were worked out on, and "holdout", kept out of that work; its labels are tests/verifier_real_labels.jsonl,
its text is read back from public repositories by `python bench/real_outputs.py` into bench/data/, and its columns
read "not built" until then), plus N completions synthesised from the benchmark files in ../shared/data: MATH /
AIME / Minerva solutions ending in their \\boxed answer, MATH-train answers written in the styles models use
("The final answer is $x$. I hope it is correct.", "Answer: x", ...), GSM8K solutions ending in "#### x" or "The
answer is x.", and the project's default arithmetic task; about a third get a perturbed answer (off by one,
another problem's answer), so both true and false pairs are timed.
Configurations: crl in one process (a loop over the verifier), crl `verify_many` with 1..k worker processes, and
Math-Verify in one process (`verify(parse(gold), parse(completion))`, gold parses cached), on the same items.

    python bench/verify.py [--n 20000] [--workers 1,2] [--data ../shared/data] [--out bench/results/verify.json]

Math-Verify is a bench-only dependency (bench/requirements.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crl.verifiers import get_verifier, verify_many  # noqa: E402
from real_outputs import read_collection  # noqa: E402  (bench/, the script's own folder)

CASES = ROOT / "tests" / "verifier_cases.jsonl"
EXTERNAL = ROOT / "tests" / "verifier_external_cases.jsonl"
PARTS = ("tune", "holdout")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _perturb(answer: str, rng: random.Random, pool: list[str]) -> str:
    """A wrong answer: an integer moved by a small amount, else another problem's answer."""
    if re.fullmatch(r"-?\d+", answer.strip()):
        return str(int(answer) + rng.choice([-10, -2, -1, 1, 2, 7]))
    other = rng.choice(pool)
    return other if other != answer else answer + "+1"


STYLES = (
    "Let me work through this carefully.\n... so the result follows.\nThe answer is ${a}$.",
    "Final Answer: The final answer is ${a}$. I hope it is correct.",
    "We simplify step by step and obtain\n$$\\boxed{{{a}}}$$",
    "<think>Let me try a few cases first; maybe it is 3? No.</think>\nTherefore, the answer is $\\boxed{{{a}}}$.",
    "**Answer:** ${a}$",
)


def build_items(data: Path, n: int, seed: int) -> list[tuple[str, str, bool, str]]:
    """(completion, gold, label, source) tuples synthesised from the benchmark files, n in all."""
    rng = random.Random(seed)
    solutions = [(r["solution"], r["answer"]) for f in ("math500.jsonl", "aime_1983_2023_train.jsonl")
                 for r in _rows(data / f) if "\\boxed" in r.get("solution", "")]
    from crl.answers.extract import last_boxed

    solutions += [(r["solution"], last_boxed(r["solution"])) for r in _rows(data / "minerva_math.jsonl")
                  if last_boxed(r["solution"])]
    answers = [str(r["answer"]) for r in _rows(data / "math_train.jsonl")]
    gsm = [r["answer"] for f in ("gsm8k_train.jsonl", "gsm8k_test.jsonl") for r in _rows(data / f)]
    pool = [a for _, a in solutions] + answers
    items: list[tuple[str, str, bool, str]] = []
    while len(items) < n:
        kind = rng.random()
        wrong = rng.random() < 0.35
        if kind < 0.3 and solutions:
            sol, gold = rng.choice(solutions)
            if wrong:
                changed = sol.replace(f"\\boxed{{{gold}}}", f"\\boxed{{{_perturb(gold, rng, pool)}}}")
                wrong, sol = changed != sol, changed
            items.append((sol, gold, not wrong, "math-solution"))
        elif kind < 0.55 and answers:
            gold = rng.choice(answers)
            shown = _perturb(gold, rng, pool) if wrong else gold
            items.append((rng.choice(STYLES).format(a=shown), gold, not wrong, "math-answer"))
        elif kind < 0.8 and gsm:
            sol = rng.choice(gsm)
            gold = sol.rsplit("####", 1)[1].strip()
            shown = _perturb(gold.replace(",", ""), rng, pool) if wrong else gold
            body = sol.rsplit("####", 1)[0].replace("<<", "[").replace(">>", "]")
            end = rng.choice([f"The answer is {shown}.", f"#### {shown}", f"So the answer is $\\boxed{{{shown}}}$."])
            items.append((body + end, gold, not wrong, "gsm8k"))
        else:
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            op = rng.choice("+-")
            value = a + b if op == "+" else a - b
            shown = value + rng.choice([-1, 1, 10]) if wrong else value
            items.append((f"{a}{op}{b}={shown} \\boxed{{{shown}}}", str(value), not wrong, "arith"))
    return items


def _clear_caches() -> None:
    from crl.answers import equivalence, latex, normalize, numeric, structure

    for fn in (normalize.normalize, structure.parse_node, equivalence.equivalent, latex._parse_cached,
               numeric.value_at):
        fn.cache_clear()


def run_crl_inprocess(comps: list[str], golds: list[str]) -> tuple[list[float], float]:
    _clear_caches()
    verify = get_verifier("math")
    start = time.perf_counter()
    rewards = [verify(c, g).reward for c, g in zip(comps, golds)]
    return rewards, time.perf_counter() - start


def run_crl_pool(comps: list[str], golds: list[str], workers: int, timeout: float) -> tuple[list[float], float]:
    start = time.perf_counter()
    out = verify_many(comps, golds, "math", workers=workers, timeout=timeout)
    return [v.reward for v in out], time.perf_counter() - start


def run_math_verify(comps: list[str], golds: list[str]) -> tuple[list[float], float] | None:
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    gold_cache: dict[str, object] = {}
    start = time.perf_counter()
    rewards = []
    for c, g in zip(comps, golds):
        try:
            if g not in gold_cache:
                gold_cache[g] = parse(g if "\\boxed" in g or "$" in g else f"${g}$")
            rewards.append(float(verify(gold_cache[g], parse(c))))
        except Exception:
            rewards.append(0.0)
    return rewards, time.perf_counter() - start


def accuracy(rewards: list[float], labels: list[bool]) -> float:
    return sum((r == 1.0) == lab for r, lab in zip(rewards, labels)) / max(1, len(labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="synthesised completions to time")
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}", help="worker counts for verify_many")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "verify.json")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cases = _rows(CASES)
    case_c = [c["completion"] for c in cases]
    case_g = [c["answer"] for c in cases]
    case_l = [c["label"] for c in cases]
    crl_case = [get_verifier(c["verifier"])(c["completion"], c["answer"]).reward for c in cases]
    mv_case = run_math_verify(case_c, case_g)
    external = _rows(EXTERNAL)
    ext_l = [c["label"] for c in external]
    crl_ext = accuracy([get_verifier("math")(c["completion"], c["answer"]).reward for c in external], ext_l)
    mv_ext = run_math_verify([c["completion"] for c in external], [c["answer"] for c in external])

    collection = read_collection()
    real = {p: [c for c in collection or [] if c["part"] == p] for p in PARTS}
    real_l = {p: [c["label"] for c in real[p]] for p in PARTS}
    crl_real = {p: accuracy([get_verifier("math")(c["completion"], c["answer"]).reward for c in real[p]], real_l[p])
                if collection else None for p in PARTS}
    mv_real = {p: run_math_verify([c["completion"] for c in real[p]], [c["answer"] for c in real[p]]) for p in PARTS}

    items = build_items(args.data, args.n, args.seed)
    comps, golds, labels = [i[0] for i in items], [i[1] for i in items], [i[2] for i in items]
    rows = []
    rewards, secs = run_crl_inprocess(comps, golds)
    rows.append({"config": "crl, 1 process (in-process loop)", "processes": 1, "seconds": secs,
                 "items_per_s": len(items) / secs, "bench_accuracy": accuracy(rewards, labels),
                 "case_accuracy": accuracy(crl_case, case_l), "external_accuracy": crl_ext,
                 **{f"real_{p}_accuracy": crl_real[p] for p in PARTS}})
    for w in [int(x) for x in args.workers.split(",") if x]:
        rewards, secs = run_crl_pool(comps, golds, w, args.timeout)
        rows.append({"config": f"crl verify_many, {w} worker{'s' if w > 1 else ''}", "processes": w,
                     "seconds": secs, "items_per_s": len(items) / secs, "bench_accuracy": accuracy(rewards, labels),
                     "case_accuracy": accuracy(crl_case, case_l), "external_accuracy": crl_ext,
                     **{f"real_{p}_accuracy": crl_real[p] for p in PARTS}})
    mv = run_math_verify(comps, golds)
    if mv is not None and mv_case is not None and mv_ext is not None:
        rewards, secs = mv
        rows.append({"config": "Math-Verify, 1 process", "processes": 1, "seconds": secs,
                     "items_per_s": len(items) / secs, "bench_accuracy": accuracy(rewards, labels),
                     "case_accuracy": accuracy(mv_case[0], case_l), "external_accuracy": accuracy(mv_ext[0], ext_l),
                     **{f"real_{p}_accuracy": accuracy(mv_real[p][0], real_l[p]) if collection else None
                        for p in PARTS}})
        base = rows[-1]["items_per_s"]
        for r in rows:
            r["speedup_vs_math_verify"] = r["items_per_s"] / base
    report = {"n_items": len(items), "n_cases": len(cases), "n_external": len(external),
              "n_real": {p: len(real[p]) for p in PARTS}, "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg(),
              "sources": {s: sum(1 for i in items if i[3] == s) for s in sorted({i[3] for i in items})},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    _print_table(report)


def _print_table(report: dict) -> None:
    head = ("| configuration | real outputs (tune) | real outputs (holdout) | external cases | case file | "
            "bench accuracy | items/s | vs Math-Verify |")
    lines = [f"{report['n_items']} completions ({report['sources']}), real model outputs {report['n_real']}, "
             f"{report['n_external']} external cases, {report['n_cases']} case-file cases, {report['cpu_count']} CPUs, "
             f"load average {report['load_average'][0]:.1f}", "", head, "|---|---|---|---|---|---|---|---|"]
    if not any(report["n_real"].values()):
        lines[1:1] = ["", "Real model outputs: not built here; `python bench/real_outputs.py [--sources DIR]` reads "
                      "their text back from the public repositories the labels point to."]
    for r in report["rows"]:
        ratio = r.get("speedup_vs_math_verify")
        shown = "" if ratio is None else f"{ratio:.1f}x"
        real = [("not built" if r[f"real_{p}_accuracy"] is None else f"{r[f'real_{p}_accuracy']:.1%}") for p in PARTS]
        lines.append(f"| {r['config']} | {real[0]} | {real[1]} | "
                     f"{r['external_accuracy']:.1%} | {r['case_accuracy']:.1%} | {r['bench_accuracy']:.1%} | "
                     f"{r['items_per_s']:,.0f} | {shown} |")
    text = "\n".join(lines)
    try:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    except ImportError:
        pass
    print(text)


if __name__ == "__main__":
    main()
