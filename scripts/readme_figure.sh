#!/usr/bin/env bash
# Regenerate docs/img/default-run.png, the README's figure: the default `crl iterate` (the shipped tiny model on
# synthetic arithmetic, CPU, a few minutes), then `crl plot` of that run.
#
#   scripts/readme_figure.sh                 # fresh run in runs/readme
#   RESUME=1 scripts/readme_figure.sh        # continue runs/readme after an interruption
#   scripts/readme_figure.sh --rounds 20     # extra flags go to `crl iterate`
set -euo pipefail
cd "$(dirname "$0")/.."
run="${RUN:-runs/readme}"
if [[ "${RESUME:-0}" == 1 ]]; then
  crl iterate --out "$run" --resume "$@"
else
  rm -rf "$run"
  crl iterate --out "$run" "$@"
fi
crl plot "$run"
mkdir -p docs/img
cp "$run/plots/metrics.png" docs/img/default-run.png
echo "docs/img/default-run.png <- $run/plots/metrics.png"
