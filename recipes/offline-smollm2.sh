#!/usr/bin/env bash
# Train on stored rollouts: a short online warm-up with DAPO, then a contrastive objective over every round the
# warm-up stored, offline, for a few epochs; no sampling after the warm-up. crl writes each round's verified
# samples to disk (RUN/round-NNNN/verified/), so the offline pass costs training only.
#
#   recipes/offline-smollm2.sh runs/offline                       # SmolLM2 on the arithmetic set
#   CONFIG=recipes/smollm2-chain.toml TASK=chain_test recipes/offline-smollm2.sh runs/offline-chain
#
# Settings (environment): CONFIG the recipe of the online rounds (model, sampling, evaluation), TASK its held-out
# set, ROUNDS the online warm-up (6), EPOCHS passes over the stored rounds (1), OBJECTIVE the offline objective
# (rence: NCE of each positive against its group's negatives, scored by the log-ratio to the warm-up policy, so
# the stored samples need no importance correction). Each stored round keeps its own groups, and the offline
# pass takes as many optimiser steps per epoch as the warm-up took (two a round), so a step sees as many groups.
# bench/real_objectives.py (the offline arm) measures this against the online run, same seeds. Measured
# (bench/README.md): on SmolLM2's arithmetic set one epoch of rence moved three seeds' warm-up states by +5.5,
# -6.8 and +6.5 points of held-out avg@4 without sampling (no reliable gain at this scale); two epochs lost 8.8
# on seed 0, hence one by default.
set -euo pipefail
run=${1:?give a new run folder, e.g. runs/offline}
config=${CONFIG:-recipes/smollm2-arith.toml}
task=${TASK:-arith_test}
rounds=${ROUNDS:-6}
epochs=${EPOCHS:-1}
objective=${OBJECTIVE:-rence}
last=$(printf 'round-%04d' "$rounds")

crl iterate --config "$config" --objective dapo --rounds "$rounds" --set save_every="$rounds" --out "$run"
crl train "$run"/round-*/verified --config "$config" --model "$run/checkpoints/$last" --objective "$objective" \
    --epochs "$epochs" --minibatches $((2 * rounds)) --out "$run/offline"
crl eval "$task" --config "$config" --model "$run/offline" --out "$run/offline-eval.parquet"
