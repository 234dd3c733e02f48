"""bench/gpu_acceptance.sh --cpu: the GPU acceptance script's every step, small, so it cannot rot before a GPU runs it.

Skipped where vllm does not import (its generation and round steps need it). About 4 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]


def test_the_acceptance_script_runs_every_step_and_writes_one_json(tmp_path):
    out = tmp_path / "acceptance.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_acceptance.sh"), "--cpu", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=880)
    report = json.loads(out.read_text())
    assert done.returncode == 0 and report["ok"], (done.stderr[-3000:], {k: v["log_tail"] for k, v in report["steps"].items()})
    steps = report["steps"]
    assert list(steps) == ["train_throughput", "model", "generate", "round"] and report["mode"] == "cpu"
    assert {r["method"] for r in steps["train_throughput"]["result"]["results"]} >= {"crl", "usual"}
    generated = steps["generate"]["result"]["results"]
    assert generated["vllm"]["tok_s_steady"] > 0 and generated["raw"]["tok_s_steady"] > 0
    assert generated["vllm"]["update_weights_op_s"] > 0
    round_ = steps["round"]["result"]
    assert round_["backend"] == "vllm" and round_["generator"][0]["sync"] > 0
    assert abs(round_["measured"]["prediction_error_pct"]) < 20, round_["measured"]
    trained = [m for m in round_["metrics"] if m["round"] == 1][0]
    assert trained["train/logprob_mismatch"] < 1e-4 and trained["seconds/sync"] > 0
