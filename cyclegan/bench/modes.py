"""``cyclegan-bench modes``: how well each segmentation mode translates, at the same training budget.

    cyclegan-bench modes --json modes.json                  # four rows; CPU tens of minutes on 2 cores
    cyclegan-bench modes --rows classes --train-args "--model.gumbel_temperature 0.5"

Makes one synthetic ADE20K set (the demo's kind of scene, more of it), shards it, and trains one
``python -m cyclegan.train --config configs/demo.yaml`` run per row, all with the same data, seed,
epochs and steps. The rows differ only in what their name says:

    rgb               model.seg_mode rgb (palette colours through tanh), pure CycleGAN
    classes           model.seg_mode classes (151 logits; one-hot maps via Gumbel straight-through)
    classes+paired    classes, data.paired true and optim.lambda_paired --lambda-paired
    rgb+paired        rgb, data.paired true and optim.lambda_paired --lambda-paired
    classes+unpaired  classes on two true domains: the photos of the first half of the training scenes
    rgb+unpaired      and the maps of the second half (cyclegan-shard --unpaired), nothing pairs; twice
                      the epochs, as each epoch reads half as many images: the same steps as the others

Each run's last generators are then scored at full resolution on the validation split, as
``cyclegan-eval`` scores them, twice when the exports hold the moving average (``train.ema_decay``,
on by default): the exported EMA weights, and the trained (raw) weights of the same step from the
training state. The scores: photo -> seg pixel accuracy, mean class accuracy and mIoU; seg -> photo
L1 and PSNR against the paired photo. The ``untrained`` rows score freshly initialised networks of
each mode (the seed's weights), the floor a run has to rise above.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cyclegan.bench.report import report
from cyclegan.build import build_models, seg_encoding
from cyclegan.checkpoint import list_checkpoints, load_network, open_checkpoint
from cyclegan.config import load_config, shipped_config
from cyclegan.data.catalog import read_split
from cyclegan.data.shard import main as shard_main
from cyclegan.data.synthetic import make_synthetic_ade20k, unpaired_domains
from cyclegan.evaluate import evaluate_photos, evaluate_segmentation, shard_batches
from cyclegan.seg_encoding import encoding_for, mode_of_export

ROWS = ("rgb", "classes", "classes+paired", "rgb+paired", "classes+unpaired", "rgb+unpaired")


def row_overrides(row: str, args: argparse.Namespace, shards: Path) -> list[str]:
    """The trainer flags that make ``row`` differ from the demo config."""
    mode, _, data = row.partition("+")
    epochs = 2 * args.epochs if data == "unpaired" else args.epochs
    flags = ["--model.seg_mode", mode, "--optim.epochs", str(epochs), "--optim.decay_epoch", str(epochs // 2),
             "--data.shards", str(shards.with_name("unpaired_shards") if data == "unpaired" else shards)]  # fmt: skip
    if data == "paired":
        flags += ["--data.paired", "true", "--optim.lambda_paired", str(args.lambda_paired)]
    return flags


def score(real2seg: torch.nn.Module, seg2real: torch.nn.Module, mode: str, tars: list[str]) -> dict[str, float]:
    """Full-resolution validation scores of a generator pair of ``mode``."""
    encoding = encoding_for(mode)
    seg = evaluate_segmentation(real2seg, shard_batches(tars, None, []), "cpu", encoding)
    photo = evaluate_photos(seg2real, shard_batches(tars, None, []), "cpu", encoding)
    return {k: seg[k] for k in ("pixel_acc", "mean_class_acc", "mean_iou")} | photo


def untrained(mode: str, overrides: list[str], tars: list[str]) -> dict[str, Any]:
    """The floor: networks of ``mode`` as the trainer initialises them (seed 0), never trained."""
    cfg = load_config(shipped_config("demo"), ["--model.seg_mode", mode, *overrides])
    models = build_models(cfg)
    return {"row": f"untrained {mode}", "weights": "init", "seg_mode": seg_encoding(cfg).mode, "steps": 0,
            **score(models.real2seg.eval(), models.seg2real.eval(), mode, tars)}  # fmt: skip


def trained(row: str, args: argparse.Namespace, shards: Path, runs: Path, tars: list[str]) -> list[dict[str, Any]]:
    """Train one row (a subprocess, as a user runs it), then score its last exports and, when those
    hold the moving average (train.ema_decay > 0), the trained weights of the same step from the
    training state: raw vs EMA, the same run."""
    out_dir = runs / row.replace("+", "_")
    flags = ["--train.out_dir", str(out_dir), "--train.resume", "", *row_overrides(row, args, shards),
             *shlex.split(args.train_args)]  # fmt: skip
    cmd = [sys.executable, "-m", "cyclegan.train", "--config", str(shipped_config("demo")), *flags]
    start = time.perf_counter()
    log = out_dir.with_suffix(".log")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"row {row}: cyclegan-train exited {code}: {tail[0]} (log: {log})")
    last = max(int(p.stem.rsplit("_", 1)[1]) for p in out_dir.glob("real2seg_gen_*.pt"))
    real2seg, meta = load_network(out_dir / f"real2seg_gen_{last}.pt", kind="generator")
    seg2real, _ = load_network(out_dir / f"seg2real_gen_{last}.pt", kind="generator")
    mode, weights = mode_of_export(meta), meta.get("weights", "raw")
    state = open_checkpoint(list_checkpoints(out_dir / "checkpoints")[-1])
    rows = [{"row": row, "weights": weights, "seg_mode": mode, "steps": state.step, "train_s": seconds,
             **score(real2seg, seg2real, mode, tars)}]  # fmt: skip
    if weights == "ema":
        raw = build_models(load_config(shipped_config("demo"), flags))
        for name in ("real2seg", "seg2real"):
            getattr(raw, name).load_state_dict(state.shared()["models"][name])
        rows.append({**rows[0], "weights": "raw",
                     **score(raw.real2seg.eval(), raw.seg2real.eval(), mode, tars)})  # fmt: skip
    return rows


def shard_unpaired(dataset: Path, work: Path) -> Path:
    """``work/unpaired_shards``: the photos of the first half of ``dataset``'s training scenes and the
    maps of the second half as two domains, the same validation pairs as ``work/shards``."""
    photos, maps = unpaired_domains(dataset / "images" / "training", dataset / "annotations" / "training",
                                    work / "unpaired")  # fmt: skip
    shards = work / "unpaired_shards"
    flags = ["--photos", photos, "--segmentations", maps, "--unpaired", "--val-photos", dataset / "images" /
             "validation", "--val-segmentations", dataset / "annotations" / "validation", "--out", shards,
             "--samples-per-shard", "64", "--workers", "2"]  # fmt: skip
    if shard_main([str(flag) for flag in flags]):
        raise RuntimeError(f"{shards}: cyclegan-shard --unpaired failed")
    return shards


def bench_modes(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cyclegan-modes-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        dataset = make_synthetic_ade20k(work / "ade20k", n_train=args.images, n_val=args.val_images,
                                        size=(96, 128), size_jitter=0.15, seed=0)  # fmt: skip
        shards = work / "shards"
        if shard_main(["--root", str(dataset), "--out", str(shards), "--samples-per-shard", "64", "--workers", "2"]):
            raise RuntimeError(f"{shards}: cyclegan-shard failed")
        if any(row.endswith("+unpaired") for row in args.rows):
            shard_unpaired(dataset, work)
        tars = [str(t) for t in read_split(shards, "validation").tars]
        extra = shlex.split(args.train_args)
        for mode in dict.fromkeys(r.partition("+")[0] for r in args.rows):
            rows.append(untrained(mode, extra, tars))
            print(f"  untrained {mode}: mIoU {rows[-1]['mean_iou']:.4f}", flush=True)
        for row in args.rows:
            for result in trained(row, args, shards, work / "runs", tars):
                rows.append(result)
                print(f"  {row} ({result['weights']} weights): mIoU {result['mean_iou']:.4f}, photo L1 "
                      f"{result['photo_l1']:.4f}, {result['train_s']:.0f} s", flush=True)  # fmt: skip
    return report("modes", args, rows)


COLUMNS = [
    ("row", "row", ""),
    ("weights", "weights", ""),
    ("steps", "steps", "d"),
    ("pixel_acc", "pixel acc", ".3f"),
    ("mean_class_acc", "mean class acc", ".3f"),
    ("mean_iou", "mIoU", ".3f"),
    ("photo_l1", "photo L1", ".4f"),
    ("photo_psnr", "PSNR dB", ".2f"),
    ("train_s", "train s", ".0f"),
]


def _rows(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown row(s) {', '.join(unknown) or '(none)'}; use {','.join(ROWS)}")
    return names


def add_arguments(p: argparse.ArgumentParser, positive: Any) -> None:
    """The ``modes`` subcommand's options."""
    p.add_argument("--rows", type=_rows, default=list(ROWS), help="comma-separated subset of " + ",".join(ROWS))
    p.add_argument("--images", type=positive, default=256, help="synthetic training images")
    p.add_argument("--val-images", type=positive, default=32, help="synthetic validation images")
    p.add_argument("--epochs", type=positive, default=4, help="training epochs of every row (4 epochs: 256 steps)")
    p.add_argument("--lambda-paired", type=float, default=1.0, help="optim.lambda_paired of the paired rows")
    p.add_argument("--train-args", default="",
                   help="extra cyclegan-train flags for all rows, one string (default: none)")  # fmt: skip
    p.add_argument("--out", type=Path, help="keep the data and runs here (default: a temporary folder)")
    p.set_defaults(func=bench_modes, columns=COLUMNS)
