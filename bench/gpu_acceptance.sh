#!/usr/bin/env bash
# The first command to run on a GPU machine: one H100 or H200, under 10 minutes, one JSON file.
#
#   bench/gpu_acceptance.sh [--out FILE]        # default bench/results/gpu_acceptance.json
#   bench/gpu_acceptance.sh --cpu [--out FILE]  # every step small, on a CPU (tests/test_gpu_acceptance.py runs it)
#
# Steps, each under its own time limit, each recorded (exit status, seconds, its output's last lines, its JSON)
# whether it passes or not, so one failure does not hide the others; the exit status is 0 when all passed:
#   0. model: a random Qwen2.5-0.5B-shaped model with a tokenizer of its vocabulary (nothing is downloaded)
#   1. train_throughput: bench/train_throughput.py's table (Qwen2.5-0.5B and -1.5B shapes; --tiny with --cpu)
#   2. generate: crl's vLLM backend against raw vLLM on the same prompts, with in-place weight updates
#      (bench/generate.py, on a random Qwen2.5-0.5B-shaped model; a tiny one with --cpu)
#   3. round: `crl plan` then one full `crl iterate` round on that model with the vLLM backend (crl's sampler
#      where vllm does not import): sleep, wake and weight-sync seconds, peak memory against the plan's
#      prediction (bench/acceptance_round.py)
# Needs crl's dependencies (pyproject.toml) and, for steps 2 and 3, vllm (docs/vllm-cpu.md on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
mode=gpu
out=bench/results/gpu_acceptance.json
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) mode=cpu ;;
    --out) out=$2; shift ;;
    *) echo "usage: bench/gpu_acceptance.sh [--cpu] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
py=${PYTHON:-python3}
export PYTHONPATH="$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() {  # step NAME SECONDS COMMAND...: run it under a limit, keep its status, time and log
  local name=$1 limit=$2 start
  shift 2
  start=$(date +%s)
  echo "== $name (at most ${limit} s): $*" >&2
  timeout "$limit" "$@" >"$work/$name.log" 2>&1
  echo "$name $? $(($(date +%s) - start))" >>"$work/steps"
  tail -n 15 "$work/$name.log" >&2
}

if [ "$mode" = gpu ]; then
  step train_throughput 180 "$py" bench/train_throughput.py --out "$work/train_throughput.json"
  step model 120 "$py" bench/acceptance_round.py --build "$work/model" --shape 0.5b
  step generate 150 "$py" bench/generate.py --model "$work/model" --backends vllm,raw --prompts 128 --n 8 \
    --max-new-tokens 256 --rounds 1 --out "$work/generate.json"
  step round 240 "$py" bench/acceptance_round.py --model "$work/model" --out "$work/round.json"
else
  step train_throughput 90 "$py" bench/train_throughput.py --tiny --workloads equal-1k --out "$work/train_throughput.json"
  step model 60 "$py" bench/acceptance_round.py --build "$work/model" --shape tiny
  step generate 150 "$py" bench/generate.py --model "$work/model" --backends vllm,raw --prompts 8 --n 2 \
    --max-new-tokens 8 --rounds 1 --out "$work/generate.json"
  step round 240 "$py" bench/acceptance_round.py --model "$work/model" --small --out "$work/round.json"
fi

"$py" - "$work" "$out" "$mode" <<'EOF'
import json, platform, sys
from pathlib import Path

work, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
steps = {}
for line in (work / "steps").read_text().splitlines():
    name, rc, seconds = line.split()
    result = work / f"{name}.json"
    steps[name] = {"ok": rc == "0", "exit_status": int(rc), "seconds": int(seconds),
                   "log_tail": (work / f"{name}.log").read_text(errors="replace").splitlines()[-15:],
                   "result": json.loads(result.read_text()) if result.is_file() else None}
try:
    import torch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
except ImportError:
    device = platform.machine()
out.parent.mkdir(parents=True, exist_ok=True)
ok = all(s["ok"] for s in steps.values())
out.write_text(json.dumps({"mode": mode, "device": device, "ok": ok, "steps": steps}, indent=1) + "\n")
print(f"wrote {out}: " + ", ".join(f"{k} {'ok' if v['ok'] else 'FAILED'} ({v['seconds']} s)" for k, v in steps.items()))
sys.exit(0 if ok else 1)
EOF
