"""The ``cyclegan-bench`` command line (see the package docstring for examples)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cyclegan.arguments import HelpFormatter, subset_of
from cyclegan.arguments import non_negative_int as non_negative
from cyclegan.arguments import positive_int as positive
from cyclegan.bench import loader, maps, modes, startup, tiled, train
from cyclegan.bench.report import print_table, write_json
from cyclegan.data.catalog import LoaderError

PROG = "cyclegan-bench"


def _add_loader_parser(commands: argparse._SubParsersAction) -> None:
    import torch

    p = commands.add_parser("loader", help="input pipeline throughput (pairs/s)", description=loader.__doc__,
                            formatter_class=HelpFormatter)  # fmt: skip
    p.add_argument("--shards", type=Path, help="cyclegan-shard output (default: synthetic ADE20K-like shards)")
    p.add_argument("--split", default="training", help="split to read")
    p.add_argument("--images", type=positive, default=256, help="synthetic images to make without --shards")
    p.add_argument("--loaders", type=subset_of(loader.LOADERS, "loader"), default=list(loader.LOADERS),
                   help="comma-separated subset")  # fmt: skip
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--batch", type=positive, default=8, help="pairs per batch")
    p.add_argument("--workers", type=non_negative, default=2, help="DataLoader workers / DALI threads")
    p.add_argument("--load-size", type=positive, default=286, help="short side before cropping")
    p.add_argument("--crop-size", type=positive, default=256, help="square crop side")
    p.add_argument("--paired", action="store_true", help="paired mode (default: unpaired, the CycleGAN setting)")
    p.add_argument("--batches", type=positive, default=60, help="timed batches per loader")
    p.add_argument("--warmup", type=non_negative, default=5, help="untimed batches first")
    p.add_argument("--json", type=Path, help="also write the report here (default: print only)")
    p.set_defaults(func=loader.bench_loader, columns=loader.COLUMNS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Measure pairs/s of the input pipeline or training step, translation quality, map decoding, "
        "or the commands' start-up time.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_loader_parser(commands)
    quality = {
        "train": (train, "training-step throughput, FLOPs and MFU; --ladder for the speed ladder"),
        "modes": (modes, "translation quality of model.seg_mode rgb vs classes (and paired), same steps"),
        "maps": (maps, "how exactly colour segmentation maps (PNG, JPEG) decode back to class ids"),
        "tiled": (tiled, "peak memory and s/MP of whole-image vs exact tiled translation, 1-16 MP"),
        "startup": (startup, "seconds each command takes to answer --help, beside python -c 'import torch'"),
    }
    for name, (module, summary) in quality.items():
        p = commands.add_parser(name, help=summary, description=module.__doc__, formatter_class=HelpFormatter)
        if module is train:
            train.add_arguments(p, positive, non_negative)
        else:
            module.add_arguments(p, positive)
        p.add_argument("--json", type=Path, help="also write the report here (default: print only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (LoaderError, RuntimeError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print(f"\n{args.command} benchmark; " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()))
    print_table(result["rows"], args.columns)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
