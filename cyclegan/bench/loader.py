"""``cyclegan-bench loader``: pairs/s of DALI, the torchvision fallback and a seed-style PIL loader.

Without ``--shards`` it writes synthetic ADE20K-like images (about 512 x 683 JPEGs, like the real
photos) and shards them twice: at their original size, and with ``--short-side`` set to the load
size as the README recommends, so both rows of the table come from one run. Each loader runs
``--warmup`` batches (worker start-up, pipeline build), then ``--batches`` timed ones across as
many epochs as that takes; on a GPU the clock is read only after the device has finished the batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from cyclegan.bench.report import report, summarise
from cyclegan.bench.seed_style import seed_style_epochs
from cyclegan.config import DataConfig
from cyclegan.data.catalog import LoaderError, read_split
from cyclegan.data.loader import build_loader

LOADERS = ("dali", "torch", "seed-style")


def time_batches(
    batches_of_epoch: Callable[[int], Iterable[Any]], batches: int, warmup: int, device: torch.device
) -> tuple[list[float], float]:
    """Seconds between consecutive batches after ``warmup`` batches, over as many epochs as needed, and
    the seconds the first batch of an epoch took beyond a steady batch (pipeline or worker start-up)."""
    gaps: list[float] = []
    firsts: list[float] = []
    epoch = 0
    while len(gaps) < warmup + batches:
        produced = 0
        last = time.perf_counter()
        for batch in batches_of_epoch(epoch):
            if device.type == "cuda":  # the loaders return before the device has decoded the batch
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            (firsts if produced == 0 else gaps).append(now - last)
            last, produced = now, produced + 1
            if len(gaps) == warmup + batches:
                break
            del batch
        if not produced:
            raise LoaderError(f"epoch {epoch} yielded no batch: too few samples for the batch size")
        epoch += 1
    steady = gaps[warmup:]
    later_firsts = firsts[1:] or firsts  # the very first includes worker start-up
    return steady, max(0.0, sum(later_firsts) / len(later_firsts) - sum(steady) / len(steady))


def synthetic_shards(root: Path, images: int, load_size: int) -> dict[str, Path]:
    """ADE20K-like photos at their original size, sharded as they are and at the load size."""
    from cyclegan.data.shard import main as shard_main
    from cyclegan.data.synthetic import make_synthetic_ade20k

    print(f"writing {images} synthetic 512x683 images and their shards under {root} ...", flush=True)
    dataset = make_synthetic_ade20k(root / "ade20k", n_train=images, n_val=1, size=(512, 683), size_jitter=0.1)
    out = {"original size": root / "shards", f"--short-side {load_size}": root / f"shards{load_size}"}
    for name, folder in out.items():
        extra = ["--short-side", str(load_size)] if name.startswith("--") else []
        args = ["--root", str(dataset), "--out", str(folder), "--samples-per-shard", "64", "--workers", "2", *extra]
        if shard_main(args):
            raise LoaderError(f"{folder}: sharding the synthetic images failed")
    return out


def bench_loader(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    base = DataConfig(
        load_size=args.load_size,
        crop_size=args.crop_size,
        batch_size=args.batch,
        num_workers=args.workers,
        paired=args.paired,
    )
    with tempfile.TemporaryDirectory(prefix="cyclegan-bench-") as tmp:
        shard_sets = {"given": args.shards} if args.shards else synthetic_shards(Path(tmp), args.images, args.load_size)
        rows = []
        for shards_name, shards in shard_sets.items():
            samples = read_split(shards, args.split).samples
            for name in args.loaders:
                cfg = dataclasses.replace(base, shards=str(shards), loader="torch" if name == "seed-style" else name)
                if name == "seed-style":
                    epoch = seed_style_epochs(cfg, samples)
                else:
                    epoch = build_loader(cfg, split=args.split, rank=0, world_size=1, device=device, seed=0,
                                         train=True).epoch  # fmt: skip
                gaps, start_s = time_batches(epoch, args.batches, args.warmup, device)
                row = {"shards": shards_name, "loader": name, **summarise(gaps, args.batch), "epoch_start_s": start_s}
                rows.append(row)
                print(f"  {shards_name}: {name}: {row['pairs_per_s']:.0f} pairs/s", flush=True)
    if "seed-style" in args.loaders:
        baselines = {row["shards"]: row["pairs_per_s"] for row in rows if row["loader"] == "seed-style"}
        for row in rows:
            row["vs_seed_style"] = row["pairs_per_s"] / baselines[row["shards"]]
    return report("loader", args, rows)


COLUMNS = [
    ("shards", "shards", ""),
    ("loader", "loader", ""),
    ("pairs_per_s", "pairs/s", ".0f"),
    ("ms_per_batch_median", "ms/batch (median)", ".1f"),
    ("ms_per_batch_p10", "p10", ".1f"),
    ("ms_per_batch_p90", "p90", ".1f"),
    ("epoch_start_s", "epoch start s", ".3f"),
    ("vs_seed_style", "x seed-style", ".2f"),
]
