"""``cyclegan-bench tiled``: peak memory and seconds per megapixel of whole-image and tiled translation.

Each row is a fresh process, so its peak resident memory (``ru_maxrss``) is its own: it builds an
untrained generator (paper width by default: ngf 64, 9 residual blocks; the cost does not depend on the
weights), translates a small image once to warm up, then one random 4:3 image of the row's size, whole
(``--tile 0``) or in tiles, through the same ``Runner`` as ``cyclegan-generate``. Rows: each size in
``--megapixels`` x whole and each ``--tiles`` side. Columns: seconds per megapixel, the process's peak
and its resident memory before the translation (Python, torch, the model), the peak's growth per
megapixel, the ``footprint`` estimate that the automatic choice uses, and the largest 4:3 image whose
peak stays within ``--limit-gb``, from a straight line through the two largest sizes' peaks (the
tensors grow with the pixel count). ``--check-largest`` then runs that size too and reports its peak.
Each row's output is compared with the whole-image row's of the same size: the share of identical
class ids (photo -> seg) or the largest difference in photo levels (seg -> photo).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from typing import Any

from cyclegan.bench.report import report

COLUMNS = [
    ("megapixels", "MP", ".1f"),
    ("size", "W x H", ""),
    ("method", "method", ""),
    ("s_per_mp", "s/MP", ".2f"),
    ("peak_gb", "peak GB", ".2f"),
    ("before_gb", "before GB", ".2f"),
    ("estimate_gb", "estimate GB", ".2f"),
    ("gpu_peak_gb", "GPU peak GB", ".2f"),
    ("agreement", "vs whole", ""),
    ("largest_mp", "largest MP in limit", ".1f"),
]
GIB = 1 << 30


def add_arguments(p: argparse.ArgumentParser, positive: Any) -> None:
    p.add_argument("--megapixels", type=float, nargs="+", default=[1.0, 4.0, 16.0], help="image sizes (4:3)")
    p.add_argument("--tiles", type=int, nargs="+", default=[512], help="tile sides to compare with whole images")
    p.add_argument("--mode", choices=("rgb", "classes"), default="rgb", help="the generator's model.seg_mode")
    p.add_argument("--direction", choices=("real2seg", "seg2real"), default="real2seg", help="which generator")
    p.add_argument("--ngf", type=positive, default=64, help="generator width (paper: 64)")
    p.add_argument("--blocks", type=positive, default=9, help="residual blocks (paper: 9)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--max-memory", type=float, metavar="GB",
                   help="the translation's memory budget, as cyclegan-generate's (default: no limit)")  # fmt: skip
    p.add_argument("--limit-gb", type=float, default=16.0, help="memory limit for the largest-image column")
    p.add_argument("--check-largest", action="store_true", help="also run each method at its largest size")
    p.set_defaults(func=bench_tiled, columns=COLUMNS)


def side_sizes(megapixels: float) -> tuple[int, int]:
    """(W, H) of a 4:3 image of about ``megapixels``, sides multiples of 4."""
    height = 4 * round(math.sqrt(megapixels * 1e6 * 3 / 4) / 4)
    return 4 * round(height * 4 / 3 / 4), height


def bench_tiled(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    methods = [0, *args.tiles]
    for mp in sorted(args.megapixels):
        whole = None
        for tile in methods:
            row = _child(args, side_sizes(mp), tile)
            sample = row.pop("sample")
            whole = sample if whole is None else whole
            if sample is not None and whole is not None:
                row["agreement"] = _agreement(args.direction, sample, whole)
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    for tile in methods:
        mine = [r for r in rows if r["tile"] == tile and "peak_gb" in r]
        if len(mine) >= 2:
            a, b = sorted(mine, key=lambda r: r["megapixels"])[-2:]
            slope = (b["peak_gb"] - a["peak_gb"]) / (b["megapixels"] - a["megapixels"])
            largest = b["megapixels"] + (args.limit_gb - b["peak_gb"]) / slope if slope > 0 else math.inf
            b["largest_mp"] = largest
            if args.check_largest and math.isfinite(largest):
                checked = _child(args, side_sizes(largest * 0.98), tile)
                checked.pop("sample")
                rows.append(checked | {"method": f"{checked['method']} (largest)"})
    return report("tiled", args, rows)


def _agreement(direction: str, sample: list[int], reference: list[int]) -> str:
    import torch

    mine, whole = torch.tensor(sample), torch.tensor(reference)
    if direction == "real2seg":
        return f"{(mine == whole).double().mean().item():.5f} ids"
    return f"max {(mine - whole).abs().max().item()} levels"


def _child(args: argparse.Namespace, size: tuple[int, int], tile: int) -> dict[str, Any]:
    spec = {k: getattr(args, k) for k in ("mode", "direction", "ngf", "blocks", "device", "amp", "max_memory")}
    spec |= {"size": size, "tile": tile}
    done = subprocess.run(
        [sys.executable, "-c", f"from cyclegan.bench.tiled import child; child({json.dumps(spec)!r})"],
        capture_output=True,
        text=True,
    )
    if done.returncode:  # -9: the kernel's OOM killer; the row says so instead of ending the run
        width, height = size
        return {"megapixels": width * height / 1e6, "size": f"{width}x{height}", "tile": tile,
                "method": f"{'tiles ' + str(tile) if tile else 'whole'}: failed (exit {done.returncode})",
                "sample": None}  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(spec_json: str) -> None:
    """One row, in its own process: prints a JSON line."""
    import torch

    from cyclegan.inference import Runner, Translator
    from cyclegan.models import Generator
    from cyclegan.palette import NUM_CLASSES

    spec = json.loads(spec_json)
    torch.manual_seed(0)
    classes, photo_in = spec["mode"] == "classes", spec["direction"] == "real2seg"
    ids = NUM_CLASSES + 1
    generator = Generator(
        in_channels=ids if classes and not photo_in else 3,
        out_channels=ids if classes and photo_in else 3,
        n_residual_blocks=spec["blocks"],
        ngf=spec["ngf"],
        embed_channels=32 if classes and not photo_in else 0,
        head="logits" if classes and photo_in else "tanh",
    ).eval()
    device = torch.device(spec["device"])
    if device.type == "cuda":  # the comparison with whole images is of fp32 arithmetic, not TF32's
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    budget = int(spec["max_memory"] * GIB) if spec["max_memory"] and spec["tile"] else 1 << 50  # whole: unbounded
    runner = Runner(Translator(generator, "photo" if photo_in else "seg", spec["mode"]), device,
                    spec["tile"], max_memory=budget, amp=spec["amp"])  # fmt: skip
    width, height = spec["size"]

    def image(h: int, w: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        if photo_in:
            return torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=gen)
        coarse = torch.randint(0, ids, (1, 1, h // 16, w // 16), generator=gen).float()
        return torch.nn.functional.interpolate(coarse, size=(h, w), mode="nearest")[:, 0].long()

    with torch.inference_mode():
        runner(image(128, 128))  # warm-up: the first call's one-off costs
        x = image(height, width)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        schedule = runner.schedule(x.shape)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = runner(x, schedule)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mp = width * height / 1e6
    sample = out.flatten()[:: max(1, out.numel() // 200_000)]  # an even sample of the output, for agreement
    row = {
        "megapixels": mp,
        "size": f"{width}x{height}",
        "method": f"tiles {spec['tile']}" if spec["tile"] else "whole",
        "tile": spec["tile"],
        "seconds": seconds,
        "s_per_mp": seconds / mp,
        "peak_gb": peak / GIB,
        "before_gb": before / GIB,
        "estimate_gb": schedule.needs / GIB,
        "store": str(schedule.store),
        "sample": sample.long().tolist(),
    }
    if device.type == "cuda":
        row["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / GIB
    print(json.dumps(row))
