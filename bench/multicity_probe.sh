#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Multi-city source set (source styles suburb + industrial, randomized), balanced mixing; tested on the unseen cities
# of bench/photometric_probe.sh (run that first; its output folder is the first argument).
set -euo pipefail
ROOT=$(pwd); T=$(realpath "${1:-bench/out/photometric}"); OUT=${2:-bench/out/multicity}; mkdir -p "$OUT"; cd "$OUT"
X=$ROOT/.venv/bin/xview-loc; A=$ROOT/.venv/bin/xview-adapt
data=()
for s in 101 102 103; do for st in suburb industrial; do
  c=city_${st}_$s; p=pairs_${st}_$s
  [ -d $c ] || $X synth city --style $st --seed $s --randomize 1 --size-m 400 --res-m 0.25 --zooms 18-19 --lat 37.7749 --lon -122.4194 --out $c
  [ -d $p ] || $X synth pairs --city $c --n 400 --seed $s --out $p --workers 2
  data+=($p)
done; done
train() { [ -f "run_$1/best.pt" ] || $A train --data "${data[@]}" --mix balanced --config small --out "run_$1" --seed 0 --epochs 10 --batch 8 --lr 0.001 --threads 1 --photometric "$2"; }
train p0 0 > train_p0.log 2>&1 &
train p1 1 > train_p1.log 2>&1 &
wait
for r in p0 p1; do for t in test_suburb21 test_industrial32 test_oldtown31 test_downtown33; do
  [ -f "eval_${r}_$t/metrics.json" ] || $A evaluate --model run_$r/best.pt --data $T/$t --split all --out eval_${r}_$t --threads 1 --grid 0 > /dev/null 2>&1
  python3 -c "import json;m=json.load(open('eval_${r}_$t/metrics.json'));print('$r','$t',m['count'],round(m['mean_m'],2),round(m['median_m'],2),round(m['prior_mean_m'],2))"
done; done
