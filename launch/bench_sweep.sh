#!/usr/bin/env bash
# The GPU benchmark sweep of the README's performance section, one command per phase:
#
#   bash launch/bench_sweep.sh eager      # batch 1/8/16/32 x fp32/bf16, eager, + seed-style baseline
#   bash launch/bench_sweep.sh compile    # the same with torch.compile (first compile ~1 min per shape)
#   bash launch/bench_sweep.sh data       # loaders at batch 32 (nvJPEG), and training on the real loader
#   bash launch/bench_sweep.sh train      # cyclegan-train itself: ~4 min, bf16 + compile, batch 16 at 256²
#   bash launch/bench_sweep.sh table      # one markdown table from every JSON written so far
#
# JSON per configuration goes to $OUT (default ./bench_out); each run is capped by $LIMIT seconds
# (default 150) so one slow configuration cannot eat the rest of the budget. $EXTRA is appended to
# every `cyclegan-bench train` call (later options win), e.g. EXTRA="--size 32 --ngf 4 --blocks 1" for a dry run.
set -uo pipefail
phase=${1:?usage: bench_sweep.sh eager|compile|data|train|table}
out=${OUT:-bench_out}
limit=${LIMIT:-150}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python}

run() {  # name, then cyclegan-bench arguments
    local name=$1
    shift
    echo "== $name: $*"
    local extra=""
    [ "$1" = train ] && extra=${EXTRA:-}
    # shellcheck disable=SC2086  # extra is a list of options
    timeout "$limit" "$py" -m cyclegan.bench "$@" $extra --json "$out/$name.json" || echo "!! $name failed or timed out"
}

case "$phase" in
eager | compile)
    flag=--no-compile
    [ "$phase" = compile ] && flag=--compile
    for precision in bf16 fp32; do
        for batch in 32 16 8 1; do
            baseline=--no-baseline
            [ "$phase" = eager ] && [ "$precision" = bf16 ] && [ "$batch" = 16 ] && baseline=--baseline
            run "train_${phase}_${precision}_b${batch}" train --size 256 --batch "$batch" --precision "$precision" \
                "$flag" --steps 30 --warmup 5 --loader synthetic --workers 8 "$baseline"
        done
    done
    ;;
data)
    run loader_b32 loader --batch 32 --workers 12 --images 512 --batches 100 --loaders torch,seed-style
    run train_real_loader_bf16_b16 train --size 256 --batch 16 --precision bf16 --steps 60 --warmup 5 \
        --loader torch --workers 12 --images 512 --no-baseline
    ;;
train)
    # ADE20K-like photos (about 512x683), sharded as the README recommends, then a real run that
    # the time limit ends with SIGTERM (state saved, exit 0). Throughput, data wait and memory
    # are in $out/run/metrics.jsonl, the grids in $out/run/samples/.
    data=$out/synthetic
    "$py" -c "from cyclegan.data.synthetic import make_synthetic_ade20k as m; m('$data', n_train=800, n_val=16, size=(512, 683), size_jitter=0.1)"
    "$py" -m cyclegan.data.shard --root "$data" --out "$data/shards" --short-side 286 --workers 8 >/dev/null
    timeout -s TERM "${TRAIN_SECONDS:-240}" "$py" -m cyclegan.train --config configs/ade20k.yaml \
        --data.shards "$data/shards" --data.batch_size 16 --data.num_workers 8 --train.out_dir "$out/run" \
        --train.resume "" --train.eval_every 0 --train.log_every 10 --wandb.mode disabled --optim.epochs 400
    tail -n 3 "$out/run/metrics.jsonl"
    ;;
table)
    "$py" - "$out" <<'EOF'
import json, sys
from pathlib import Path
rows = []
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    report = json.loads(path.read_text())
    for row in report["rows"]:
        rows.append((path.stem, report["machine"].get("gpu", "cpu"), row))
print("| file | device | run | batch | precision | compile | data | pairs/s | ms/step | data wait | TFLOP/s | MFU | GiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for stem, gpu, r in rows:
    if "name" not in r:  # loader rows
        print(f"| {stem} | {gpu} | {r['loader']} ({r['shards']}) | | | | | {r['pairs_per_s']:.0f} | | | | | |")
        continue
    print(f"| {stem} | {gpu} | {r['name']} | {r['batch']} | {r['precision']} | {r['compile']} | {r['loader']} | "
          f"{r['pairs_per_s']:.1f} | {r['ms_per_batch_median']:.1f} | {r['data_wait_frac']:.1%} | "
          f"{r['achieved_tflops']:.1f} | {r.get('mfu', float('nan')):.1%} | {r.get('peak_mem_gb', float('nan')):.1f} |")
EOF
    ;;
*)
    echo "unknown phase $phase (eager|compile|data|train|table)" >&2
    exit 2
    ;;
esac
