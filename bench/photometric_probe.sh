#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Effect of --photometric 1 on a one-city suburb teacher (the bundled teacher's recipe), one seed.
set -euo pipefail
OUT=${1:-bench/out/photometric}; mkdir -p "$OUT"; ROOT=$(pwd); cd "$OUT"
X=$ROOT/.venv/bin/xview-loc; A=$ROOT/.venv/bin/xview-adapt
city() { [ -d "$3" ] || $X synth city --style "$1" --seed "$2" --size-m "$4" --res-m 0.25 --zooms 18-19 --lat 37.7749 --lon -122.4194 --out "$3"; }
pairs() { [ -d "$3" ] || $X synth pairs --city "$1" --n "$2" --seed "$4" --out "$3" --workers 2; }
city suburb 1 city_source 600;     pairs city_source 800 pairs_source 1
city suburb 21 city_suburb21 400;  pairs city_suburb21 200 test_suburb21 5
city oldtown 31 city_oldtown31 400; pairs city_oldtown31 200 test_oldtown31 6
city industrial 32 city_industrial32 400; pairs city_industrial32 200 test_industrial32 7
city downtown 33 city_downtown33 400; pairs city_downtown33 200 test_downtown33 8
train() { [ -f "run_$1/best.pt" ] || $A train --data pairs_source --config small --out "run_$1" --seed 0 --epochs 6 --batch 8 --lr 0.001 --threads 1 --photometric "$2" ${3:-}; }
train p0 0 > train_p0.log 2>&1 &
train p1 1 > train_p1.log 2>&1 &
wait
for r in p0 p1; do for t in test_suburb21 test_oldtown31 test_industrial32 test_downtown33; do
  [ -f "eval_${r}_$t/metrics.json" ] || $A evaluate --model run_$r/best.pt --data $t --split all --out eval_${r}_$t --threads 1 --grid 0 > /dev/null
  python3 -c "import json;m=json.load(open('eval_${r}_$t/metrics.json'));print('$r','$t',m['count'],round(m['mean_m'],2),round(m['median_m'],2),round(m['prior_mean_m'],2))"
done; done
