#!/usr/bin/env bash
# The prepared GPU check: one command on a GPU host, about 8 minutes on one H200.
#
#   OUT=gpu_out bash launch/gpu_check.sh
#
# Runs from the checkout with PYTHONPATH=. (nothing is installed; torch, torchvision, accelerate,
# pyyaml, pillow and tqdm are enough: no DALI, webdataset or W&B). cyclegan-train's command line also
# needs jsonargparse: where it is missing, wheels in .whl/ (git-ignored; carry it) are installed into
# /tmp/site first. Fetch them once on any machine with pip:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0
# In order of priority, each section
# inside what is left of $BUDGET seconds (default 480) and writing its JSON to $OUT as soon as it ends,
# so a timeout loses only the section that was running:
#   ladder   cyclegan-bench train --ladder at 256²: rows (a)-(i), the project loader at batch 16
#   grid     bf16 x {eager, compile} x batch {16, 32} on synthetic batches (pure compute); the compiled
#            batch-16 row carries a torch.profiler table of the top kernels; then that row again in
#            model.seg_mode classes (151 logits, one-hot maps, Gumbel straight-through)
#   sync     a steady-state stretch under torch.cuda.set_sync_debug_mode("error"), eager and compiled
#   loader   the torch loader's nvJPEG path at batch 32 with 12 workers: alone, and feeding the step
#   train    cyclegan-train (configs/ade20k.yaml, so classes mode; bf16, compile, batch 16) for
#            $TRAIN_SECONDS (60) s ended by SIGTERM, then a
#            resume that must reach the next step (the SIGTERM run must exit 0: --preserve-status)
#   tiled    cyclegan-bench tiled on the GPU: whole vs 1024-px exact tiles at 1, 4, 16 MP, TF32 off,
#            fp32 then bf16, device memory bounded by --max-memory 8 (GB)
# Files in $OUT (8 at most): ladder.json grid.json sync.json loader.json train.json tiled.json table.md log.txt;
# the table is printed last. SECTIONS="sync train" runs only those (the data set is always made).
# One inductor cache ($TORCHINDUCTOR_CACHE_DIR, default /tmp/cyclegan-inductor)
# serves every compiled row. Dry run on a CPU with tiny shapes (every section ran here: 4 minutes on
# 2 cores with a warm inductor cache, about 9 cold):
#   OUT=/tmp/gpu_dry PYTHON=.venv/bin/python SIZE=32 NGF=4 NDF=4 BLOCKS=1 BATCH=2 IMAGES=48 STEPS=3 \
#     TRAIN_SECONDS=150 WORKERS=1 BUDGET=1200 bash launch/gpu_check.sh
# (on a 2-core AVX2 CPU the first bf16 torch.compile takes over 40 s; a SIGTERM that lands during it kills
# inductor's compilers too, and the run ends with one "stopped by signal, then failed" line and exit 1)
set -uo pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/cyclegan-inductor}
py=${PYTHON:-python3}
size=${SIZE:-256} batch=${BATCH:-16} steps=${STEPS:-20} workers=${WORKERS:-12} images=${IMAGES:-256}
model="--ngf ${NGF:-64} --ndf ${NDF:-64} --blocks ${BLOCKS:-9}"
load=$("$py" -c "print(round($size * 286 / 256))")  # the paper's 286 for 256
scratch=$(mktemp -d /tmp/cyclegan-gpu-check.XXXXXX)
deadline=$((SECONDS + ${BUDGET:-480}))
exec > >(tee "$out/log.txt") 2>&1
if ! "$py" -c "import jsonargparse, docstring_parser" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null &&
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
    else
        echo "!! jsonargparse is missing and .whl/ holds no wheels for it: the train section will fail (see the header)"
    fi
fi

left() { echo $((deadline - SECONDS)); }
wanted() { [[ " ${SECTIONS:-ladder grid sync loader train tiled} " == *" $1 "* ]]; }

section() {  # name, cap in seconds, command...: run it inside what is left of the budget
    local name=$1 cap=$2
    shift 2
    local budget
    budget=$(left)
    if [ "$budget" -lt 20 ]; then
        echo "-- $name: not run, the budget is spent"
        return 1
    fi
    [ "$budget" -lt "$cap" ] && cap=$budget
    echo "== $name (at most ${cap} s): $*"
    timeout -k 10 "$cap" "$@" || { echo "!! $name failed or timed out (exit $?)"; return 1; }
}

bench() {  # json name, cap, cyclegan-bench arguments
    local name=$1 cap=$2
    shift 2
    section "$name" "$cap" "$py" -m cyclegan.bench "$@" --json "$scratch/$name.json"
}

collect() {  # merge the scratch JSON files of one section into $OUT/<section>.json
    "$py" - "$scratch" "$out" "$@" <<'PY'
import json, sys
from pathlib import Path
scratch, out, section, *names = sys.argv[1:]
reports = {n: json.loads((Path(scratch) / f"{n}.json").read_text()) for n in names
           if (Path(scratch) / f"{n}.json").is_file()}
if reports:
    (Path(out) / f"{section}.json").write_text(json.dumps(reports, indent=1) + "\n")
PY
}

echo "gpu_check: $(date -u +%FT%TZ), $("$py" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")')"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null

# One data set for every section: ADE20K-like photos (about 512x683), sharded at the load size.
data=$scratch/data
section data 90 "$py" -c "from cyclegan.data.synthetic import make_synthetic_ade20k as m; \
m('$data/ade', n_train=$images, n_val=16, size=(512, 683), size_jitter=0.1)" &&
    section shard 60 "$py" -m cyclegan.data.shard --root "$data/ade" --out "$data/shards" \
        --short-side "$load" --workers 8
shards=$data/shards

common="--size $size $model --steps $steps --workers $workers"
if wanted ladder; then
    bench ladder 250 train --ladder $common --batch "$batch" --loader torch --shards "$shards"
    collect ladder ladder
fi

wanted grid && for cell in "eager 16" "eager 32" "compile 16" "compile 32" "classes 16"; do
    set -- $cell
    flag=--no-compile extra=""
    [ "$1" != eager ] && flag=--compile
    [ "$cell" = "compile 16" ] && extra="--profile-steps 3"
    [ "$1" = classes ] && extra="--seg-mode classes"  # the same step as compile 16 but model.seg_mode classes
    b=$((batch * $2 / 16))
    bench "grid_$1_b$2" 120 train $common --batch "$b" --precision bf16 $flag --loader synthetic $extra
    collect grid grid_eager_b16 grid_eager_b32 grid_compile_b16 grid_compile_b32 grid_classes_b16
done

if wanted sync; then
    bench sync_eager 60 train $common --batch "$batch" --precision bf16 --no-compile --sync-debug --steps 10
    bench sync_compile 60 train $common --batch "$batch" --precision bf16 --compile --sync-debug --steps 10
    collect sync sync_eager sync_compile
fi

b32=$((batch * 2))
wanted loader && bench loader_alone 60 loader --shards "$shards" --batch "$b32" --workers "$workers" --loaders torch,seed-style \
    --load-size "$load" --crop-size "$size" --batches 60
wanted loader && bench loader_step 90 train $common --batch "$b32" --precision bf16 --no-compile --loader torch --shards "$shards" \
    --steps $((steps * 2))
wanted loader && collect loader loader_alone loader_step

# cyclegan-train itself: SIGTERM after TRAIN_SECONDS, then a resume that must reach the next step. With 256
# images an epoch is 16 steps, so its end (4 exports, the sample grid, a ~0.4 GB training state) comes every
# couple of seconds; the logged pairs/s are measured inside epochs, the step count shows what the saves cost.
run=$scratch/run
train_args=(--config configs/ade20k.yaml --data.shards "$shards" --data.batch_size "$batch"
    --data.num_workers "$workers" --data.crop_size "$size" --data.load_size "$load"
    --model.ngf "${NGF:-64}" --model.ndf "${NDF:-64}" --model.n_residual_blocks "${BLOCKS:-9}"
    --train.out_dir "$run" --train.eval_every 0 --train.log_every 10 --wandb.mode disabled --optim.epochs 400)
if ! wanted train; then
    :
elif [ "$(left)" -ge $((${TRAIN_SECONDS:-60} + 60)) ]; then
    echo "== train: cyclegan-train for ${TRAIN_SECONDS:-60} s, then SIGTERM"
    timeout --preserve-status -s TERM -k 30 "${TRAIN_SECONDS:-60}" "$py" -m cyclegan.train "${train_args[@]}" --train.resume ""
    first=$?
    stopped=$(cat "$run/status.json" 2>/dev/null || echo '{}')
    saved=$("$py" -c "from cyclegan import checkpoint as c; s=c.list_checkpoints('$run/checkpoints'); \
print(c.open_checkpoint(s[-1]).step if s else 0)")
    echo "== train: exit $first, state saved at step $saved; resuming to step $((saved + 1))"
    section resume $(($(left) - 5)) "$py" -m cyclegan.train "${train_args[@]}" --train.resume auto \
        --train.max_steps $((saved + 1))
    second=$?
    "$py" - "$run" "$out/train.json" "$first" "$second" "$saved" "$stopped" <<'PY'
import json, sys
from pathlib import Path
from cyclegan import checkpoint
run, path, first, second, saved, stopped = sys.argv[1:]
states = checkpoint.list_checkpoints(Path(run) / "checkpoints")
final = checkpoint.open_checkpoint(states[-1]).step if states else None
metrics = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()] \
    if (Path(run) / "metrics.jsonl").is_file() else []
status = Path(run) / "status.json"
Path(path).write_text(json.dumps({"sigterm_exit": int(first), "resume_exit": int(second), "saved_step": int(saved),
                                  "resumed_to_step": final, "status_after_sigterm": json.loads(stopped),
                                  "status_after_resume": json.loads(status.read_text()) if status.is_file() else None,
                                  "metrics": metrics[-12:]}, indent=1) + "\n")
PY
else
    echo "-- train: not run, the budget is spent"
fi

# Large images (issue 27): whole vs exact tiles on the GPU, TF32 off, device memory bounded by --max-memory
# (whole-image tensors between layers go to host memory when they do not fit beside the tile); fp32, then bf16.
if wanted tiled; then
    bench tiled_fp32 150 tiled --device cuda --megapixels 1 4 16 --tiles 1024 --max-memory 8
    bench tiled_bf16 90 tiled --device cuda --megapixels 4 16 --tiles 1024 --max-memory 8 --amp
    collect tiled tiled_fp32 tiled_bf16
fi

"$py" - "$out" <<'PY' | tee "$out/table.md"
import json, sys
from pathlib import Path
from cyclegan.bench.report import markdown_table
from cyclegan.bench.train import COLUMNS
from cyclegan.bench.loader import COLUMNS as LOADER_COLUMNS
from cyclegan.bench.tiled import COLUMNS as TILED_COLUMNS
out = Path(sys.argv[1])
def load(name):
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}
for section in ("ladder", "grid", "sync", "loader", "tiled"):
    for name, rep in load(section).items():
        cols = {"loader": LOADER_COLUMNS, "tiled": TILED_COLUMNS}.get(rep["benchmark"], COLUMNS + [("sync_debug", "sync debug", "")])
        print(f"\n### {name} ({rep['machine'].get('gpu', rep['machine']['cpu'])}, {rep['machine']['date']})\n")
        print(markdown_table(rep["rows"], cols))
        for row in rep["rows"]:
            if "profile" in row:
                print(f"\nTop kernels, {name}:\n")
                print(markdown_table(row["profile"], [("op", "kernel", ""), ("ms", "ms", ".2f"),
                                                      ("share", "share", ".1%"), ("calls", "calls", "d")]))
train = load("train")
if train:
    last = next((m for m in reversed(train["metrics"]) if "perf/pairs_per_s" in m), {})
    print(f"\n### cyclegan-train\n\nSIGTERM run exit {train['sigterm_exit']}, state at step {train['saved_step']}; "
          f"resume exit {train['resume_exit']}, reached step {train['resumed_to_step']}; last logged: "
          + ", ".join(f"{k} {v:.3g}" for k, v in last.items() if k.startswith("perf/")))
PY
rm -rf "$scratch"
