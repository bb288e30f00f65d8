"""Throughput benchmarks that print numbers: ``cyclegan-bench loader`` and ``cyclegan-bench train``.

    # pairs/s of DALI, the torchvision fallback and a seed-style PIL loader, on shards made here
    cyclegan-bench loader
    # on your own shards, the GPU (DALI mixed decode, torchvision nvJPEG), batch 32
    cyclegan-bench loader --shards data/shards --device cuda --batch 32 --workers 8 --json loader.json
    # the training step: pairs/s, FLOPs, MFU, data wait, next to a seed-style baseline
    cyclegan-bench train --batch 16 --precision bf16 --compile --json train.json

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
import itertools
import json
import os
import platform
import resource
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
from cyclegan.data.catalog import LABEL, PHOTO, Sample, read_split, worker_context
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
    """``columns``: (key, heading, format spec); a value a row lacks (MFU without a known peak,
    GPU memory on a CPU, the ratio without a baseline) prints as n/a."""
    cells = [[heading for _, heading, _ in columns]]
    cells += [[format(row[key], spec) if key in row else "n/a" for key, _, spec in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for n, r in enumerate(cells):
        print("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def report(benchmark: str, args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a benchmark returns: where it ran, with which options, and its rows."""
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "json", "columns")}
    return {"benchmark": benchmark, "machine": machine(), "settings": settings, "rows": rows}


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    """One file per run, so a sweep can collect its configurations into one table afterwards."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=str) + "\n")  # Paths as text
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
        # A new DataLoader (and workers) per epoch, shuffled by index, as the seed's loop does. Only the
        # start method differs: forking this process after DALI has started its threads can deadlock.
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            num_workers=cfg.num_workers,
            drop_last=True,
            multiprocessing_context=worker_context() if cfg.num_workers else None,
        )

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
    if "seed-style" in args.loaders:
        baselines = {row["shards"]: row["pairs_per_s"] for row in rows if row["loader"] == "seed-style"}
        for row in rows:
            row["vs_seed_style"] = row["pairs_per_s"] / baselines[row["shards"]]
    return report("loader", args, rows)


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
    p.add_argument("--workers", type=_non_negative, default=2, help="DataLoader workers / DALI threads")
    p.add_argument("--load-size", type=_positive, default=286)
    p.add_argument("--crop-size", type=_positive, default=256)
    p.add_argument("--paired", action="store_true", help="paired mode (default: unpaired, the CycleGAN setting)")
    p.add_argument("--batches", type=_positive, default=60, help="timed batches per loader")
    p.add_argument("--warmup", type=_non_negative, default=5)
    p.add_argument("--json", type=Path, help="also write the report here")
    p.set_defaults(func=bench_loader, columns=LOADER_COLUMNS)


# --- training step ----------------------------------------------------------------------------------

PEAK_TFLOPS = {
    # Dense tensor-core peaks, TFLOP/s: the datasheets' figures "with sparsity" halved. "fp32" is the
    # TF32 tensor-core figure: PyTorch runs fp32 convolutions on it by default (cudnn.allow_tf32).
    # Sources: NVIDIA H200 Tensor Core GPU datasheet (SXM and NVL columns), H100 datasheet (SXM and
    # PCIe), A100 datasheet, L40S datasheet, A10 datasheet. The first name contained in the
    # device's name wins, so the specific variants come before the SXM defaults.
    "H200 NVL": {"bf16": 835.0, "fp16": 835.0, "fp32": 418.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 494.0},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "fp32": 378.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 494.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "fp32": 183.0},
    "A10": {"bf16": 125.0, "fp16": 125.0, "fp32": 62.5},
}


def peak_tflops(device: torch.device, precision: str, given: float | None) -> float | None:
    """``--peak-tflops``, else the table's entry for this GPU; None (MFU n/a) on a CPU or unknown GPU."""
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks[precision] for gpu, peaks in PEAK_TFLOPS.items() if gpu in name), None)


@dataclasses.dataclass
class StepSetup:
    """One row of the training benchmark."""

    name: str
    batch: int
    precision: str
    compile: bool
    compile_mode: str
    channels_last: bool
    loader: str


def _config(args: argparse.Namespace, setup: StepSetup, shards: Path | None) -> Any:
    from cyclegan.config import Config

    cfg = Config()
    cfg.model = dataclasses.replace(cfg.model, n_residual_blocks=args.blocks, ngf=args.ngf, ndf=args.ndf)
    cfg.data = dataclasses.replace(
        cfg.data,
        shards=str(shards or ""),
        loader=setup.loader if setup.loader in ("dali", "torch") else "torch",
        load_size=load_size_for(args.size),
        crop_size=args.size,
        batch_size=setup.batch,
        num_workers=args.workers,
    )
    cfg.train = dataclasses.replace(
        cfg.train,
        precision="no" if setup.precision == "fp32" else setup.precision,
        compile=setup.compile,
        compile_mode=setup.compile_mode,
        channels_last=setup.channels_last,
    )
    return cfg


def load_size_for(crop_size: int) -> int:
    """The paper's resize-then-crop ratio (286 for 256)."""
    return round(crop_size * 286 / 256)


def synthetic_batch(batch: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random photos and palette-coloured random labels, as the loaders deliver them."""
    from cyclegan.palette import ids_to_seg

    gen = torch.Generator().manual_seed(0)
    return {
        "photo": (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(device),
        "seg": ids_to_seg(torch.randint(0, 151, (batch, size, size), generator=gen)).contiguous().to(device),
    }


def _batches(setup: StepSetup, cfg: Any, device: torch.device) -> Iterable[dict]:
    """Endless batches from the row's data source, on ``device``."""
    if setup.loader == "synthetic":  # one batch made on the device: pure compute
        batch = synthetic_batch(setup.batch, cfg.data.crop_size, device)
        while True:
            yield batch
    if setup.loader == "seed-style":
        samples = read_split(cfg.data.shards, "training").samples
        epoch = _seed_style(cfg.data, samples)
    else:
        epoch = build_loader(cfg.data, split="training", rank=0, world_size=1, device=device, seed=0, train=True).epoch
    for number in itertools.count():
        for batch in epoch(number):
            yield {k: batch[k].to(device, non_blocking=True) for k in ("photo", "seg")}


def _reset_accelerate() -> None:
    """Accelerate keeps one process-wide state, fixed by the first Accelerator."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def _step(cfg: Any, device: torch.device) -> Any:
    """The trainer's own pieces: models, optimizers, buffers, an Accelerator, the TrainStep."""
    from accelerate import Accelerator

    from cyclegan.losses import LossWeights
    from cyclegan.scheduler import ReplayBuffer
    from cyclegan.step import TrainStep
    from cyclegan.train import build_models, build_optimizers, prepare_models

    _reset_accelerate()  # each row picks its own precision
    acc = Accelerator(mixed_precision=cfg.train.precision, cpu=device.type == "cpu")
    torch.manual_seed(0)
    raw = build_models(cfg, acc.device)
    models, opt_g, opt_d = prepare_models(acc, raw, *build_optimizers(raw, cfg), cfg)
    buffers = (ReplayBuffer(cfg.optim.replay_size, 0), ReplayBuffer(cfg.optim.replay_size, 1))
    weights = LossWeights(cfg.optim.lambda_cycle, cfg.optim.lambda_identity)
    return TrainStep(acc, models, opt_g, opt_d, buffers, weights, cfg.train.channels_last)


def count_flops(cfg: Any, device: torch.device) -> int:
    """FLOPs of one training step (both generator passes, both discriminator passes, their
    backward passes), counted by ``torch.utils.flop_counter`` on an eager fp32 copy: the count
    does not depend on precision or compilation, and compiled graphs hide ops from the counter."""
    from torch.utils.flop_counter import FlopCounterMode

    eager = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision="no", compile=False))
    step = _step(eager, device)
    batch = synthetic_batch(cfg.data.batch_size, cfg.data.crop_size, device)
    step(batch)  # fill the replay buffers first, as in steady state
    with FlopCounterMode(display=False) as counter:
        step(batch)
    return counter.get_total_flops()


def measure_step(args: argparse.Namespace, setup: StepSetup, shards: Path | None) -> dict[str, Any]:
    """One row: ``--steps`` timed steps after ``--warmup``, the device synchronised only at the
    window's two ends (the step's own sync paces the host, so per-step gaps track the device)."""
    device = torch.device(args.device)
    cfg = _config(args, setup, shards)
    flops = count_flops(cfg, device)
    step = _step(cfg, device)
    batches = iter(_batches(setup, cfg, device))
    for _ in range(args.warmup):  # compilation, cuDNN autotuning, worker start-up
        step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    gaps, waits = [], 0.0
    start = last = time.perf_counter()
    for _ in range(args.steps):
        before = time.perf_counter()
        batch = next(batches)
        waits += time.perf_counter() - before
        step(batch)  # its one host sync (the skip/stop agreement) ends each step on the host too
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    row = {**dataclasses.asdict(setup), **summarise(gaps, setup.batch)}
    row["pairs_per_s"] = setup.batch * args.steps / wall
    row["data_wait_frac"] = waits / wall
    row["tflop_per_step"] = flops / 1e12
    row["tflop_per_pair"] = flops / 1e12 / setup.batch
    row["achieved_tflops"] = flops * args.steps / wall / 1e12
    peak = peak_tflops(device, setup.precision, args.peak_tflops)
    if peak is not None:
        row["mfu"] = row["achieved_tflops"] / peak
    if device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # whole process so far
    return row


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    setups = [
        StepSetup("this project", args.batch, args.precision, args.compile, args.compile_mode, args.channels_last,
                  args.loader),
    ]  # fmt: skip
    if args.baseline:
        setups.append(StepSetup("seed-style", 1, "fp32", False, "default", False, "seed-style"))
    with tempfile.TemporaryDirectory(prefix="cyclegan-bench-") as tmp:
        shards = args.shards
        if shards is None and any(s.loader != "synthetic" for s in setups):
            shards = synthetic_shards(Path(tmp), args.images, load_size_for(args.size))["original size"]
        rows = []
        try:
            for setup in setups:
                rows.append(measure_step(args, setup, shards))
                print(f"  {setup.name}: {rows[-1]['pairs_per_s']:.2f} pairs/s", flush=True)
        finally:
            _reset_accelerate()  # leave no process-wide precision behind for the caller
    if args.baseline:
        for row in rows:
            row["vs_seed_style"] = row["pairs_per_s"] / rows[-1]["pairs_per_s"]
    return report("train", args, rows)


TRAIN_COLUMNS = [
    ("name", "run", ""),
    ("batch", "batch", "d"),
    ("precision", "precision", ""),
    ("compile", "compile", ""),
    ("channels_last", "NHWC", ""),
    ("loader", "data", ""),
    ("pairs_per_s", "pairs/s", ".2f"),
    ("ms_per_batch_median", "ms/step", ".1f"),
    ("ms_per_batch_p10", "p10", ".1f"),
    ("ms_per_batch_p90", "p90", ".1f"),
    ("data_wait_frac", "data wait", ".1%"),
    ("achieved_tflops", "TFLOP/s", ".3f"),
    ("mfu", "MFU", ".1%"),
    ("peak_mem_gb", "GPU GiB", ".2f"),
    ("peak_rss_gb", "RSS GiB", ".2f"),
    ("vs_seed_style", "x seed-style", ".1f"),
]


def add_train_parser(commands: Any) -> None:
    p = commands.add_parser("train", help="training-step throughput, FLOPs and MFU vs a seed-style baseline")
    p.add_argument("--size", type=_positive, default=256, help="crop side (default 256)")
    p.add_argument("--batch", type=_positive, default=16)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--compile-mode", choices=["default", "max-autotune", "reduce-overhead"], default="default")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--steps", type=_positive, default=20, help="timed steps")
    p.add_argument("--warmup", type=_non_negative, default=3)
    p.add_argument(
        "--loader",
        choices=["synthetic", "torch", "dali"],
        default="synthetic",
        help="synthetic: one batch already on the device (pure compute)",
    )
    p.add_argument("--shards", type=Path, help="for --loader torch|dali and the baseline (default: synthetic)")
    p.add_argument("--images", type=_positive, default=64, help="synthetic images to make without --shards")
    p.add_argument("--workers", type=_non_negative, default=2)
    p.add_argument("--ngf", type=_positive, default=64)
    p.add_argument("--ndf", type=_positive, default=64)
    p.add_argument("--blocks", type=_positive, default=9, help="residual blocks per generator")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-tflops", type=float, help="peak of this device for MFU (default: table by GPU name)")
    p.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the seed-style baseline (fp32, eager, batch 1, PIL loader)",
    )
    p.add_argument("--json", type=Path, help="also write the report here")
    p.set_defaults(func=bench_train, columns=TRAIN_COLUMNS)  # fmt: skip


# --- command line -----------------------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for counts: a bad value is argparse's one-line usage error (exit 2)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value: 'x'"
    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


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
    add_train_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except LoaderError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print(f"\n{args.command} benchmark; " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()))
    print_table(result["rows"], args.columns)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
