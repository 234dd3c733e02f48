#!/usr/bin/env bash
# Kill a `crl iterate` run at three moments (SIGKILL: no clean-up runs), resume it each time, and check the result:
# one metrics row per round, rounds 0..N, no crl temporary left. tests/test_iterate.py does the same on the tiny
# model in seconds; this script does it on any configuration, e.g. the SmolLM2 recipe cut to four rounds:
#   scripts/kill_and_resume.sh /tmp/kr --config recipes/smollm2-arith.toml --rounds 4 \
#       --set save_every=2 --set eval.every=2 --set eval.limit=8
# The moments: mid-round 1 (nothing saved yet), right after round 2's state is saved, mid-round 4.
set -euo pipefail
run=$1; shift
[ ! -e "$run" ] || { echo "$run exists: give a new folder" >&2; exit 2; }

kill_when() {  # run crl iterate in the background, SIGKILL it once the path $1 exists
  local moment=$1; shift
  crl iterate --out "$run" "$@" > "$run.log" 2>&1 &
  local pid=$!
  until [ -e "$moment" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "crl iterate ended before $moment appeared" >&2; cat "$run.log" >&2; exit 1; }
    sleep 0.2
  done
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  echo "killed at $moment"
}

kill_when "$run/round-0001/rollouts.parquet" "$@"
kill_when "$run/checkpoints/round-0002" --resume
kill_when "$run/round-0004/verified" --resume
crl iterate --out "$run" --resume > "$run.log" 2>&1
python - "$run" <<'EOF'
import sys
from pathlib import Path
import polars as pl
run = Path(sys.argv[1])
rounds = pl.read_parquet(run / "metrics.parquet")["round"].to_list()
left = [str(p) for p in run.rglob(".crl-tmp-*")]
print(f"metrics rounds: {rounds}; crl temporaries left: {left or 'none'}")
sys.exit(0 if rounds == sorted(set(rounds)) == list(range(len(rounds))) and not left else 1)
EOF
