"""``cyclegan-bench train``: the trainer's own step, timed, with counted FLOPs, MFU and data wait.

One row runs the configuration given on the command line. ``--ladder`` runs the speed ladder in
one process, each row changing one thing from the row above, so every ratio has one cause:

    (a) official-style: fp32, eager, batch 1, lambda_id 0.5, the PIL loader, torch's default
        (for-loop/foreach) Adam, no cuDNN autotuning
    (b) + this project's loader      (c) + fused Adam        (d) + cuDNN autotuning
    (e) + batch --batch              (f) + --precision (bf16) (g) + torch.compile
    (h) + lambda_id 0 (the paper's labels<->photo objective)
    (i) + the generators' moving average (--ema-decay, train.ema_decay; the trainer's default 0.999)

Rows (a) and (b) pay one host sync per step: without fused kernels the non-finite skip has to be
decided on the host. The clock is read after synchronising the device at the two ends of the timed
window only; ``--sync-debug`` runs that window under ``torch.cuda.set_sync_debug_mode("error")``,
so any host sync in a steady step fails the row. FLOPs are counted once per row on the ``meta``
device over the step's own forward and backward code: no memory, no GPU, independent of precision.
A compiled row starts from an empty compile cache; ``graphs`` counts what it compiled, and a row that
compiled during its timed steps says so (its time includes compiling: raise ``--warmup``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import resource
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from cyclegan.arguments import float_in
from cyclegan.bench.loader import synthetic_shards
from cyclegan.bench.report import report
from cyclegan.bench.seed_style import seed_style_epochs
from cyclegan.build import (
    build_buffers,
    build_models,
    build_optimizers,
    build_step,
    loss_weights,
    prepare_models,
    seg_encoding,
)
from cyclegan.config import Config
from cyclegan.data.catalog import read_split
from cyclegan.data.loader import build_loader
from cyclegan.ema import GeneratorEMA
from cyclegan.step import StepStats, TrainStep

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

DATA_SOURCES = ("synthetic", "seed-style", "auto", "torch", "dali")
"""synthetic: one batch made on the device (pure compute); seed-style: the PIL loader; auto/torch/dali:
this project's loader (auto = DALI where it runs, else the torchvision loader)."""


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
    """One row of the training benchmark: everything that differs between rows."""

    name: str
    change: str
    batch: int
    precision: str
    compile: bool
    data: str
    fused: bool
    cudnn_benchmark: bool
    lambda_identity: float
    channels_last: bool = False
    compile_mode: str = "default"
    seg_mode: str = "rgb"
    ema_decay: float = 0.0


def ladder(args: argparse.Namespace) -> list[StepSetup]:
    """Rows (a)-(h), and (i) with --ema-decay > 0: each one field changed from the row above."""
    row = StepSetup("a", "official-style", 1, "fp32", False, "seed-style", False, False, 0.5)
    changes = [
        ("b", "+ project loader", {"data": args.loader if args.loader != "synthetic" else "auto"}),
        ("c", "+ fused Adam", {"fused": True}),
        ("d", "+ cuDNN autotuning", {"cudnn_benchmark": True}),
        ("e", f"+ batch {args.batch}", {"batch": args.batch}),
        ("f", f"+ {args.precision}", {"precision": args.precision}),
        ("g", "+ compile", {"compile": True, "compile_mode": args.compile_mode}),
        ("h", "+ lambda_id 0", {"lambda_identity": 0.0}),
    ]
    if args.ema_decay:
        changes.append(("i", f"+ EMA {args.ema_decay:g}", {"ema_decay": args.ema_decay}))
    rows = [row]
    for name, change, fields in changes:
        rows.append(dataclasses.replace(rows[-1], name=name, change=change, **fields))
    return rows


def single(args: argparse.Namespace) -> StepSetup:
    """The one row the command-line options describe (the project's defaults otherwise)."""
    return StepSetup(
        "this project", "", args.batch, args.precision, args.compile, args.loader, True, True,
        args.lambda_identity, args.channels_last, args.compile_mode, args.seg_mode, args.ema_decay,
    )  # fmt: skip


def load_size_for(crop_size: int) -> int:
    """The paper's resize-then-crop ratio (286 for 256)."""
    return round(crop_size * 286 / 256)


def config_for(args: argparse.Namespace, setup: StepSetup, shards: Path | None) -> Config:
    cfg = Config()
    cfg.model = dataclasses.replace(
        cfg.model, n_residual_blocks=args.blocks, ngf=args.ngf, ndf=args.ndf, seg_mode=setup.seg_mode
    )
    cfg.data = dataclasses.replace(
        cfg.data,
        shards=str(shards or ""),
        loader=setup.data if setup.data in ("auto", "torch", "dali") else "torch",
        load_size=load_size_for(args.size),
        crop_size=args.size,
        batch_size=setup.batch,
        num_workers=args.workers,
    )
    cfg.optim = dataclasses.replace(cfg.optim, lambda_identity=setup.lambda_identity)
    cfg.train = dataclasses.replace(
        cfg.train,
        precision="no" if setup.precision == "fp32" else setup.precision,
        compile=setup.compile,
        compile_mode=setup.compile_mode,
        channels_last=setup.channels_last,
        ema_decay=setup.ema_decay,
    )
    return cfg


def synthetic_batch(batch: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random photos, random labels and their palette colours, as the loaders deliver them."""
    from cyclegan.palette import ids_to_seg

    gen = torch.Generator().manual_seed(0)
    label = torch.randint(0, 151, (batch, size, size), generator=gen)
    return {
        "photo": (torch.rand(batch, 3, size, size, generator=gen) * 2 - 1).to(device),
        "seg": ids_to_seg(label).contiguous().to(device),
        "label": label.to(device),
    }


def batches(setup: StepSetup, cfg: Config, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches from the row's data source, on ``device``."""
    if setup.data == "synthetic":
        batch = synthetic_batch(setup.batch, cfg.data.crop_size, device)
        while True:
            yield batch
    if setup.data == "seed-style":
        epoch = seed_style_epochs(cfg.data, read_split(cfg.data.shards, "training").samples)
    else:
        epoch = build_loader(cfg.data, split="training", rank=0, world_size=1, device=device, seed=0, train=True,
                             coloured=cfg.model.seg_mode == "rgb").epoch  # fmt: skip
    for number in itertools.count():
        for batch in epoch(number):
            # The seed-style loader hands over pageable CPU tensors, as the reference code does.
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in ("photo", "seg", "label")}


def _reset_accelerate() -> None:
    """Accelerate keeps one process-wide state, fixed by the first Accelerator."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def make_step(cfg: Config, setup: StepSetup, device: torch.device) -> tuple[TrainStep, GeneratorEMA | None]:
    """The trainer's own pieces: models, optimizers, buffers, an Accelerator, the step, and with
    ``train.ema_decay`` the generators' moving average, which the trainer updates after each step."""
    from accelerate import Accelerator

    _reset_accelerate()  # each row picks its own precision
    acc = Accelerator(mixed_precision=cfg.train.precision, cpu=device.type == "cpu")
    raw = build_models(cfg, acc.device)
    ema = GeneratorEMA({"real2seg": raw.real2seg, "seg2real": raw.seg2real}, cfg.train.ema_decay) \
        if cfg.train.ema_decay else None  # fmt: skip
    optimizers = build_optimizers(raw, cfg, fused=setup.fused)
    buffers = build_buffers(cfg)
    return build_step(acc, prepare_models(acc, raw, cfg), optimizers, buffers, cfg), ema


def count_flops(cfg: Config) -> int:
    """FLOPs of one training step (the step's forward and backward code: generators, identity passes
    if on, discriminators on fakes and on replayed fakes), counted on the ``meta`` device."""
    from torch.utils.flop_counter import FlopCounterMode

    models = build_models(cfg, "meta")
    optimizers = build_optimizers(models, cfg, fused=False)  # never stepped: only zero_grad runs
    buffers = build_buffers(cfg)
    step = TrainStep(models, *optimizers, buffers, loss_weights(cfg), encoding=seg_encoding(cfg))
    size, batch = cfg.data.crop_size, cfg.data.batch_size
    fake = {k: torch.empty(batch, 3, size, size, device="meta") for k in ("photo", "seg")}
    fake["label"] = torch.zeros(batch, size, size, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        step.forward_backward(fake)
    return counter.get_total_flops()


def top_ops(prof: Any, device: torch.device, limit: int = 15) -> list[dict[str, Any]]:
    """The profiler's busiest kernels (GPU) or ops (CPU), by self time, as rows."""
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events) or 1
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [
        {"op": e.key[:90], "ms": getattr(e, attr) / 1000, "share": getattr(e, attr) / total, "calls": e.count}
        for e in events[:limit]
    ]


def measure(args: argparse.Namespace, setup: StepSetup, shards: Path | None) -> dict[str, Any]:
    """One row: ``--steps`` timed steps after ``--warmup``; the loop does what the trainer's does
    between two log steps (the step, then the device-side bookkeeping)."""
    device = torch.device(args.device)
    cfg = config_for(args, setup, shards)
    flops = count_flops(cfg)
    torch.backends.cudnn.benchmark = setup.cudnn_benchmark  # this row's choice, set in plain sight
    if setup.compile:
        # The rows above compiled the same forward code for other modules: without a reset dynamo's
        # per-function recompile limit (8) would soon run this row's networks eagerly, unannounced.
        torch.compiler.reset()
    train_step, ema = make_step(cfg, setup, device)
    done = itertools.count(1)

    def step(batch: dict[str, torch.Tensor]) -> Any:
        out = train_step(batch)
        if ema is not None:
            ema.update(next(done))
        return out

    stats = StepStats(device)
    source = batches(setup, cfg, device)
    graphs_before = compiled_graphs()
    for _ in range(args.warmup):  # compilation, cuDNN autotuning, worker start-up, buffers filling
        stats.add(step(next(source)))
    graphs_warm = compiled_graphs()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    debug = args.sync_debug and device.type == "cuda"
    waits = 0.0
    start = time.perf_counter()
    if debug:
        torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(args.steps):
            before = time.perf_counter()
            batch = next(source)
            waits += time.perf_counter() - before
            stats.add(step(batch))
    finally:
        if debug:
            torch.cuda.set_sync_debug_mode(0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    row: dict[str, Any] = dataclasses.asdict(setup)
    row.update(
        steps=args.steps,
        pairs_per_s=setup.batch * args.steps / wall,
        ms_per_step=1000 * wall / args.steps,
        data_wait_frac=waits / wall,
        tflop_per_pair=flops / 1e12 / setup.batch,
        achieved_tflops=flops * args.steps / wall / 1e12,
        skipped_steps=stats.means()[1],
        graphs=compiled_graphs() - graphs_before,
        timed_recompiles=compiled_graphs() - graphs_warm,
    )
    if row["timed_recompiles"]:
        print(f"  warning: row {setup.name} compiled {row['timed_recompiles']} graph(s) during its timed steps; "
              "raise --warmup", flush=True)  # fmt: skip
    if debug:
        row["sync_debug"] = "passed"
    peak = peak_tflops(device, setup.precision, args.peak_tflops)
    if peak is not None:
        row["mfu"] = row["achieved_tflops"] / peak
    if device.type == "cuda":
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # whole process so far
    if args.profile_steps:
        row["profile"] = profile(step, stats, source, device, args.profile_steps)
    return row


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process so far (dynamo's own counter)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def profile(
    step: Callable[[dict[str, torch.Tensor]], Any], stats: StepStats, source: Iterable, device: torch.device, steps: int
) -> list[dict]:
    """``torch.profiler`` over a few more steady steps, reduced to the busiest kernels."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    source = iter(source)
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            stats.add(step(next(source)))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return top_ops(prof, device)


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    setups = ladder(args) if args.ladder else [single(args)]
    with tempfile.TemporaryDirectory(prefix="cyclegan-bench-") as tmp:
        shards = args.shards
        if shards is None and any(s.data != "synthetic" for s in setups):
            shards = synthetic_shards(Path(tmp), args.images, load_size_for(args.size))["original size"]
        rows: list[dict[str, Any]] = []
        benchmark = torch.backends.cudnn.benchmark
        try:
            for setup in setups:
                rows.append(measure(args, setup, shards))
                print(f"  {setup.name} {setup.change}: {rows[-1]['pairs_per_s']:.2f} pairs/s", flush=True)
                if len(rows) > 1:
                    rows[-1]["vs_previous"] = rows[-1]["pairs_per_s"] / rows[-2]["pairs_per_s"]
                    rows[-1]["vs_first"] = rows[-1]["pairs_per_s"] / rows[0]["pairs_per_s"]
        finally:
            _reset_accelerate()  # leave no process-wide precision behind for the caller
            torch.backends.cudnn.benchmark = benchmark
    return report("train", args, rows)


COLUMNS = [
    ("name", "row", ""),
    ("change", "change", ""),
    ("batch", "batch", "d"),
    ("precision", "precision", ""),
    ("compile", "compile", ""),
    ("data", "data", ""),
    ("lambda_identity", "lambda_id", "g"),
    ("seg_mode", "seg mode", ""),
    ("ema_decay", "EMA", "g"),
    ("graphs", "graphs", "d"),
    ("pairs_per_s", "pairs/s", ".2f"),
    ("vs_previous", "x above", ".2f"),
    ("vs_first", "x (a)", ".2f"),
    ("ms_per_step", "ms/step", ".1f"),
    ("data_wait_frac", "data wait", ".1%"),
    ("tflop_per_pair", "TFLOP/pair", ".4g"),
    ("achieved_tflops", "TFLOP/s", ".4g"),
    ("mfu", "MFU", ".1%"),
    ("peak_mem_gb", "GPU GiB", ".2f"),
    ("peak_rss_gb", "RSS GiB", ".2f"),
]


def add_arguments(p: argparse.ArgumentParser, positive: Any, non_negative: Any) -> None:
    """The ``train`` subcommand's options (argparse types from the CLI module)."""
    p.add_argument("--ladder", action="store_true", help="run rows (a)-(i), each changing one thing")
    p.add_argument("--size", type=positive, default=256, help="crop side")
    p.add_argument("--batch", type=positive, default=16, help="batch (the ladder's rows e-h)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16", help="(the ladder's rows f-h)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile")
    p.add_argument("--compile-mode", choices=["default", "max-autotune"], default="default", help="torch.compile mode")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False, help="NHWC layout")
    p.add_argument("--lambda-identity", type=float, default=0.0, help="identity weight, fraction of lambda_cyc")
    p.add_argument("--seg-mode", choices=["rgb", "classes"], default="rgb", help="model.seg_mode (not the ladder's)")
    p.add_argument("--ema-decay", type=float_in(0, 1), default=0.999,
                   help="train.ema_decay: the generators' moving average, updated after each step as the trainer "
                   "does (0: off); the ladder adds it as row (i)")  # fmt: skip
    p.add_argument("--steps", type=positive, default=20, help="timed steps per row")
    p.add_argument("--warmup", type=non_negative, default=3, help="untimed steps first (compile, autotuning)")
    p.add_argument("--loader", choices=DATA_SOURCES, default="synthetic",
                   help="data source (the ladder's rows b-h use the project loader: auto unless torch|dali)")
    p.add_argument("--shards", type=Path, help="cyclegan-shard output for real loaders (default: synthetic shards)")
    p.add_argument("--images", type=positive, default=64, help="synthetic images to make without --shards")
    p.add_argument("--workers", type=non_negative, default=2, help="loader workers / DALI threads")
    p.add_argument("--ngf", type=positive, default=64, help="generator width")
    p.add_argument("--ndf", type=positive, default=64, help="discriminator width")
    p.add_argument("--blocks", type=positive, default=9, help="residual blocks per generator")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--peak-tflops", type=float, help="peak of this device for MFU (default: table by GPU name)")
    p.add_argument("--sync-debug", action="store_true", help="fail a row whose timed steps sync the host (CUDA)")
    p.add_argument("--profile-steps", type=non_negative, default=0, help="profile this many extra steps per row")
    p.set_defaults(func=bench_train, columns=COLUMNS)  # fmt: skip
