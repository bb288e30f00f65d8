"""Throughput benchmarks that print numbers: ``cyclegan-bench loader``.

    # pairs/s of DALI, the torchvision fallback and a seed-style PIL loader, on shards made here
    cyclegan-bench loader
    # on your own shards, the GPU (DALI mixed decode, torchvision nvJPEG), batch 32
    cyclegan-bench loader --shards data/shards --device cuda --batch 32 --workers 8 --json loader.json

Without ``--shards`` it writes synthetic ADE20K-like images (about 512 x 683 JPEGs, like the
real photos) and shards them twice: at their original size, and with ``--short-side`` set to
the load size as the README recommends, so both rows of the table come from one run.

Each loader runs ``--warmup`` batches (worker start-up, pipeline build), then ``--batches``
timed ones across as many epochs as that takes; per-batch times are the gaps between
consecutive batches. Speed is never asserted by the tests: this command is where it is measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cyclegan.config import DataConfig
from cyclegan.data import LoaderError, build_loader
from cyclegan.data.catalog import LABEL, PHOTO, Sample, read_split
from cyclegan.data.fallback import read_part
from cyclegan.palette import TRAIN_PALETTE

PROG = "cyclegan-bench"


# --- shared by the benchmarks -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    info = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def time_batches(batches_of_epoch: Callable[[int], Iterable[Any]], batches: int, warmup: int) -> list[float]:
    """Seconds between consecutive batches, after ``warmup`` batches, over as many epochs as needed."""
    gaps: list[float] = []
    epoch = 0
    while len(gaps) < warmup + batches:
        produced = 0
        last = time.perf_counter()
        for _ in batches_of_epoch(epoch):
            now = time.perf_counter()
            gaps.append(now - last)
            last, produced = now, produced + 1
            if len(gaps) == warmup + batches:
                break
        if not produced:
            raise LoaderError(f"epoch {epoch} yielded no batch: too few samples for the batch size")
        epoch += 1
    return gaps[warmup:]


def summarise(gaps: list[float], batch_size: int) -> dict[str, float]:
    """pairs/s over the timed window, and the median and spread of one batch's time."""
    ms = sorted(1000 * g for g in gaps)
    return {
        "pairs_per_s": batch_size * len(gaps) / sum(gaps),
        "ms_per_batch_median": statistics.median(ms),
        "ms_per_batch_p10": ms[len(ms) // 10],
        "ms_per_batch_p90": ms[(len(ms) * 9) // 10],
        "batches": len(gaps),
    }


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """``columns``: (key, heading, format spec)."""
    cells = [[heading for _, heading, _ in columns]]
    cells += [[format(row[key], spec) if key in row else "-" for key, _, spec in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for n, r in enumerate(cells):
        print("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, default=str) + "\n")  # Paths as text
        print(f"wrote {path}")


# --- loader -----------------------------------------------------------------------------------------


class SeedStyleDataset(Dataset):
    """The reference CycleGAN's input path over the same samples, for comparison: PIL decode,
    then torchvision's PIL transforms per image (bicubic ``Resize``, ``RandomCrop``,
    ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``). As in the seed, the segmentation
    map is a colour image put through the same transforms as a photo."""

    def __init__(self, samples: list[Sample], load_size: int, crop_size: int) -> None:
        from torchvision import transforms

        self.samples = samples
        self.files: dict[Any, Any] = {}
        self.palette = TRAIN_PALETTE.numpy().tobytes()
        self.transform = transforms.Compose(
            [
                transforms.Resize(load_size, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.RandomCrop(crop_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, index: int, part: str) -> Image.Image:
        return Image.open(io.BytesIO(read_part(self.samples[index], part, self.files).numpy().tobytes()))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        photo = self._image(index, PHOTO).convert("RGB")
        seg = self._image(index, LABEL)
        seg.putpalette(self.palette)
        return {"photo": self.transform(photo), "seg": self.transform(seg.convert("RGB"))}


def _seed_style(cfg: DataConfig, samples: list[Sample]) -> Callable[[int], Iterable[Any]]:
    dataset = SeedStyleDataset(samples, cfg.load_size, cfg.crop_size)

    def epoch(number: int) -> Iterable[Any]:
        torch.manual_seed(number)
        # A new DataLoader (and workers) per epoch, shuffled by index, as the seed's loop does.
        return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers, drop_last=True)

    return epoch


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
        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                code = shard_main(args)
            finally:
                sys.stdout = stdout
        if code:
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
                    epoch = _seed_style(cfg, samples)
                else:
                    loader = build_loader(
                        cfg, split=args.split, rank=0, world_size=1, device=device, seed=0, train=True
                    )
                    epoch = loader.epoch
                row = {
                    "shards": shards_name,
                    "loader": name,
                    **summarise(time_batches(epoch, args.batches, args.warmup), args.batch),
                }
                rows.append(row)
                print(f"  {shards_name}: {name}: {row['pairs_per_s']:.0f} pairs/s", flush=True)
    for row in rows:
        baseline = (
            next(r for r in rows if r["shards"] == row["shards"] and r["loader"] == "seed-style")
            if "seed-style" in args.loaders
            else None
        )
        if baseline is not None:
            row["vs_seed_style"] = row["pairs_per_s"] / baseline["pairs_per_s"]
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "json", "columns")}
    return {"benchmark": "loader", "machine": machine(), "settings": {**settings, "device": str(device)}, "rows": rows}


LOADER_COLUMNS = [
    ("shards", "shards", ""),
    ("loader", "loader", ""),
    ("pairs_per_s", "pairs/s", ".0f"),
    ("ms_per_batch_median", "ms/batch (median)", ".1f"),
    ("ms_per_batch_p10", "p10", ".1f"),
    ("ms_per_batch_p90", "p90", ".1f"),
    ("vs_seed_style", "x seed-style", ".2f"),
]


def add_loader_parser(commands: Any) -> None:
    p = commands.add_parser("loader", help="input pipeline throughput (pairs/s)", description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=Path, help="cyclegan-shard output (default: synthetic ADE20K-like shards)")
    p.add_argument("--split", default="training")
    p.add_argument("--images", type=_positive, default=256, help="synthetic images to make without --shards")
    p.add_argument(
        "--loaders",
        type=_loader_list,
        default=["dali", "torch", "seed-style"],
        help="comma-separated, from dali,torch,seed-style (default: all three)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=_positive, default=8)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers / DALI threads")
    p.add_argument("--load-size", type=_positive, default=286)
    p.add_argument("--crop-size", type=_positive, default=256)
    p.add_argument("--paired", action="store_true", help="paired mode (default: unpaired, the CycleGAN setting)")
    p.add_argument("--batches", type=_positive, default=60, help="timed batches per loader")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", type=Path, help="also write the report here")
    p.set_defaults(func=bench_loader, columns=LOADER_COLUMNS)


# --- command line -----------------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _loader_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ("dali", "torch", "seed-style")]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown loader(s) {', '.join(unknown) or '(none)'}; use dali,torch,seed-style"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Measure pairs/s of the input pipeline or training step.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_loader_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = args.func(args)
    except LoaderError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print(f"\n{args.command} benchmark; " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()))
    print_table(report["rows"], args.columns)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
