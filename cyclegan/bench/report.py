"""What every benchmark shares: where it ran, how its rows print, and the JSON it writes."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import torch


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    info = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_name(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_name() -> str:
    """The CPU's model name (the same platform can be an AVX-512 Xeon or an AVX2-only EPYC)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    GPU memory on a CPU, a ratio without a row above) prints as n/a."""
    cells = [[heading for _, heading, _ in columns]]
    cells += [[format(row[key], spec) if key in row else "n/a" for key, _, spec in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for n, r in enumerate(cells):
        print("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """The same table as ``print_table``, as markdown (for the README and the GPU check)."""
    lines = ["| " + " | ".join(heading for _, heading, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format(row[k], spec) if k in row else "n/a" for k, _, spec in columns) + " |")
    return "\n".join(lines)


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
