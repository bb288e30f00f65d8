#!/usr/bin/env bash
# The GPU benchmark sweep of the README's performance section.
#
#   bash launch/bench_sweep.sh            # = all: the 256² grid below inside $BUDGET s (default 480), then the table
#   bash launch/bench_sweep.sh eager      # batch 1/8/16/32 x fp32/bf16, eager, + seed-style baseline
#   bash launch/bench_sweep.sh compile    # the same with torch.compile (first compile ~1 min per shape)
#   bash launch/bench_sweep.sh data       # loaders at batch 32 (nvJPEG), and training on the real loader
#   bash launch/bench_sweep.sh train      # cyclegan-train itself: ~4 min, bf16 + compile, batch 16 at 256²
#   bash launch/bench_sweep.sh table      # one markdown table from every JSON written so far
#
# JSON per configuration goes to $OUT (default ./bench_out). Each run is capped by $LIMIT seconds
# (default 150) so one slow configuration cannot eat the rest; `all` also stops starting runs when
# its $BUDGET is spent, so it runs the grid in order of interest: bf16 batch 16 eager (with the
# baseline) and compiled first, the rest of eager next (cheap), the compiled rest last.
# $STEPS/$WARMUP (default 20/3) set the timed and warm-up steps. $EXTRA is appended to every
# `cyclegan-bench train` call (later options win), e.g. EXTRA="--size 32 --ngf 4 --blocks 1" for a dry run.
set -uo pipefail
phase=${1:-all}
out=${OUT:-bench_out}
limit=${LIMIT:-150}
steps=${STEPS:-20}
warmup=${WARMUP:-3}
mkdir -p "$out"
out=$(cd "$out" && pwd)  # a relative $OUT is the caller's, not the repository's
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-$(command -v python3 || command -v python)}

run() {  # name, then cyclegan-bench arguments
    local name=$1 cap=$limit
    shift
    if [ -n "${deadline:-}" ]; then
        local left=$((deadline - SECONDS))
        if [ "$left" -lt 30 ]; then
            echo "-- $name: not run, the budget is spent"
            return
        fi
        [ "$left" -lt "$cap" ] && cap=$left
    fi
    echo "== $name: $*"
    rm -f "$out/$name.json"
    local extra=""
    [ "$1" = train ] && extra=${EXTRA:-}
    # shellcheck disable=SC2086  # extra is a list of options
    timeout -k 10 "$cap" "$py" -m cyclegan.bench "$@" $extra --json "$out/$name.json" ||
        echo "!! $name failed or timed out"
}

train_run() {  # eager|compile, precision, batch: one cell of the 256² grid on synthetic batches
    local flag=--no-compile baseline=--no-baseline
    [ "$1" = compile ] && flag=--compile
    [ "$1" = eager ] && [ "$2" = bf16 ] && [ "$3" = 16 ] && baseline=--baseline
    run "train_$1_$2_b$3" train --size 256 --batch "$3" --precision "$2" "$flag" --steps "$steps" \
        --warmup "$warmup" --loader synthetic --workers 8 "$baseline"
}

table() {
    "$py" - "$out" <<'PY'
import json, sys
from pathlib import Path
reports = [(p.stem, json.loads(p.read_text())) for p in sorted(Path(sys.argv[1]).glob("*.json"))]
rows = [(stem, rep["machine"].get("gpu", "cpu"), row) for stem, rep in reports for row in rep["rows"]]
seed = next((r["pairs_per_s"] for _, _, r in rows if r.get("name") == "seed-style"), None)
print("| file | device | run | batch | precision | compile | data | pairs/s | ms/step | data wait | TFLOP/s | MFU | GiB "
      "| x seed-style |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for stem, gpu, r in rows:
    if "name" not in r:  # loader rows
        print(f"| {stem} | {gpu} | {r['loader']} ({r['shards']}) | | | | | {r['pairs_per_s']:.0f} | | | | | | |")
        continue
    ratio = f"{r['pairs_per_s'] / seed:.1f}" if seed else "n/a"
    mfu = f"{r['mfu']:.1%}" if "mfu" in r else "n/a"
    mem = f"{r['peak_mem_gb']:.1f}" if "peak_mem_gb" in r else "n/a"
    print(f"| {stem} | {gpu} | {r['name']} | {r['batch']} | {r['precision']} | {r['compile']} | {r['loader']} | "
          f"{r['pairs_per_s']:.1f} | {r['ms_per_batch_median']:.1f} | {r['data_wait_frac']:.1%} | "
          f"{r['achieved_tflops']:.1f} | {mfu} | {mem} | {ratio} |")
PY
}

case "$phase" in
all)
    deadline=$((SECONDS + ${BUDGET:-480}))
    train_run eager bf16 16
    train_run compile bf16 16
    for cell in "bf16 32" "bf16 8" "bf16 1" "fp32 32" "fp32 16" "fp32 8" "fp32 1"; do
        train_run eager $cell
    done
    for cell in "bf16 32" "bf16 8" "bf16 1" "fp32 32" "fp32 16" "fp32 8" "fp32 1"; do
        train_run compile $cell
    done
    table
    ;;
eager | compile)
    for precision in bf16 fp32; do
        for batch in 32 16 8 1; do
            train_run "$phase" "$precision" "$batch"
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
    table
    ;;
*)
    echo "unknown phase $phase (all|eager|compile|data|train|table)" >&2
    exit 2
    ;;
esac
