"""Train the photo <-> segmentation CycleGAN on ADE20K shards.

Single process (CPU or one GPU):
    cyclegan-train --config configs/ade20k.yaml --data.shards data/shards
Several GPUs on one machine (same code path, Accelerate starts one process per GPU):
    accelerate launch --config_file configs/accelerate/8gpu_bf16.yaml -m cyclegan.train --config configs/ade20k.yaml
Several machines: launch/slurm.sbatch (one ``accelerate launch`` per node).
Resume after a stop or preemption (same epoch, step, LR, data position):
    cyclegan-train --config configs/ade20k.yaml --resume auto
Every config field, its type, default and meaning: ``cyclegan-train --help``. Print the resolved
configuration as YAML (which ``--config`` reads back) without training:
    cyclegan-train --config configs/ade20k.yaml --data.batch_size 8 --print_config

This module is the command line only: the run itself is :mod:`cyclegan.trainer`, imported once the
arguments are valid, so ``--help``, ``--print_config`` and argument errors answer without loading torch.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import yaml

from cyclegan.config import Config, ConfigError, build_parser, parse_config, to_dict

if TYPE_CHECKING:
    from jsonargparse import Namespace

PROG = "cyclegan-train"
DESCRIPTION = (
    "Train the ADE20K photo <-> segmentation CycleGAN. Every field of the config tree is a flag "
    "(--section.field value), set after any --config files, which set any subset of them."
)


def parse_args(argv: list[str] | None) -> tuple[Namespace, Config]:
    """The config tree's flags (see ``cyclegan.config``) plus the trainer's own few."""
    parser = build_parser(PROG, description=DESCRIPTION)
    parser.add_argument("--resume", help="'auto' or a checkpoint path (sets train.resume)")
    parser.add_argument("--print_config", "--dry-run", action="store_true",
                        help="print the validated config as YAML (--config reads it back) and exit")  # fmt: skip
    args, cfg = parse_config(parser, sys.argv[1:] if argv is None else argv)
    if args.resume:
        cfg.train.resume = args.resume
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    try:
        args, cfg = parse_args(argv)
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="", flush=True)
        return 0
    from cyclegan.trainer import run  # torch, Accelerate and the rest: only for a run

    return run(cfg, PROG)


if __name__ == "__main__":
    raise SystemExit(main())
