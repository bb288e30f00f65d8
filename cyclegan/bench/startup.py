"""``cyclegan-bench startup``: how long each command takes to answer ``--help``, beside
``python -c "import torch"`` measured in the same run.

Each round runs every command once, in the same order, as a fresh process; the rounds interleave, so a
busy moment of the machine slows every command alike. The table gives the median and fastest wall time
of each command and its median as a multiple of the median ``import torch``. ``cyclegan-train --help``
and ``cyclegan-shard --help`` import no torch at all; ``cyclegan-generate`` translates with torch, so
its ``--help`` costs about one ``import torch``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

from cyclegan.arguments import subset_of
from cyclegan.bench.report import report

BASELINE = "python -c 'import torch'"
COMMANDS = {  # short name -> (what the table calls it, the interpreter's arguments)
    "train": ("cyclegan-train --help", ["-m", "cyclegan.train", "--help"]),
    "generate": ("cyclegan-generate --help", ["-m", "cyclegan.generate", "--help"]),
    "shard": ("cyclegan-shard --help", ["-m", "cyclegan.data.shard", "--help"]),
    "eval": ("cyclegan-eval --help", ["-m", "cyclegan.evaluate", "--help"]),
    "export": ("cyclegan-export --help", ["-m", "cyclegan.export", "--help"]),
}

COLUMNS = [
    ("command", "command", ""),
    ("median_s", "median s", ".2f"),
    ("min_s", "min s", ".2f"),
    ("vs_import_torch", "x import torch", ".2f"),
]


def add_arguments(p: argparse.ArgumentParser, positive: Any) -> None:
    p.add_argument("--rounds", type=positive, default=5, help="times each command runs")
    p.add_argument("--commands", type=subset_of(COMMANDS, "command"), default=list(COMMANDS),
                   help="comma-separated subset (import torch always runs)")  # fmt: skip
    p.set_defaults(func=bench_startup, columns=COLUMNS)


def bench_startup(args: argparse.Namespace) -> dict[str, Any]:
    commands = {BASELINE: ["-c", "import torch"], **{COMMANDS[n][0]: COMMANDS[n][1] for n in args.commands}}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *command], check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    baseline = statistics.median(times[BASELINE])
    rows = [
        {"command": name, "median_s": statistics.median(t), "min_s": min(t),
         "vs_import_torch": statistics.median(t) / baseline, "rounds": len(t)}
        for name, t in times.items()
    ]  # fmt: skip
    return report("startup", args, rows)
