"""How well colour segmentation maps decode back to class ids: ``cyclegan-bench maps``.

Synthetic scenes (the demo's sky, buildings, trees, ground, road, car) are drawn in the ADE20K
display palette and saved as PNG or JPEG at each quality asked for, at each size; each file is
decoded by :class:`cyclegan.label_maps.MapDecoder` (``ade150``, the sharder's decoder) and, as the
baseline, by the nearest of all 151 palette colours per pixel. Reported per row: the share of
pixels decoded to the class they were drawn with, the same for the baseline, how far from a
region edge the worst wrong pixel lies, what the decoder snapped, filled and left unknown, maps
it would skip (over ``--max-unknown``), and milliseconds per map.
"""

from __future__ import annotations

import argparse
import io
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from cyclegan.bench.report import report
from cyclegan.data.synthetic import scene_labels
from cyclegan.label_maps import DEFAULT_MAX_UNKNOWN, DEFAULT_TOLERANCE, MapDecoder, MapPixels, NotAMap
from cyclegan.palette import DISPLAY_PALETTE, rgb_to_ids

COLUMNS = [
    ("size", "size", ""),
    ("format", "format", ""),
    ("correct", "correct", ".4f"),
    ("nearest_correct", "nearest-colour correct", ".4f"),
    ("max_edge_distance", "worst error px from edge", "d"),
    ("snapped", "snapped", ".3f"),
    ("filled", "filled", ".3f"),
    ("unknown", "unknown", ".4f"),
    ("skipped", "maps skipped", "d"),
    ("ms_per_map", "ms/map", ".1f"),
]


def edge_distance(ids: np.ndarray, limit: int = 32) -> np.ndarray:
    """Each pixel's distance in pixels (4-connected steps, capped at ``limit``) to a pixel whose
    class differs from a neighbour's."""
    frontier = np.zeros(ids.shape, dtype=bool)
    frontier[1:] |= ids[1:] != ids[:-1]
    frontier[:-1] |= ids[:-1] != ids[1:]
    frontier[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    frontier[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    distance = np.full(ids.shape, limit)
    distance[frontier] = 0
    reached = frontier
    for step in range(1, limit):
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        distance[grown & ~reached] = step
        reached = grown
    return distance


def encode(ids: np.ndarray, fmt: str) -> Image.Image:
    """The map drawn in the display palette, saved as ``png`` or ``jpg<quality>`` and opened again."""
    buffer = io.BytesIO()
    colours = Image.fromarray(DISPLAY_PALETTE.numpy()[ids])
    if fmt == "png":
        colours.save(buffer, "PNG")
    else:
        colours.save(buffer, "JPEG", quality=int(fmt.removeprefix("jpg")))
    image = Image.open(io.BytesIO(buffer.getvalue()))
    image.load()
    return image


def bench_maps(args: argparse.Namespace) -> dict[str, Any]:
    decoder = MapDecoder("ade150", tolerance=args.tolerance, max_unknown=args.max_unknown)
    rows = []
    for height, width in args.sizes:
        rng = np.random.default_rng(args.seed)
        truths = [scene_labels(rng, height, width) for _ in range(args.maps)]
        for fmt in args.formats:
            pixels, right, nearest_right, worst, skipped, seconds = MapPixels(), 0, 0, 0, 0, 0.0
            for ids in truths:
                image = encode(ids, fmt)
                rgb = np.array(image.convert("RGB"))  # writable, for torch.from_numpy
                nearest = rgb_to_ids(torch.from_numpy(rgb).permute(2, 0, 1), DISPLAY_PALETTE).numpy()
                nearest_right += int((nearest == ids).sum())
                start = time.perf_counter()
                try:
                    decoded, stats = decoder.decode(image)
                except NotAMap:
                    skipped += 1
                    continue
                finally:
                    seconds += time.perf_counter() - start
                pixels.add(stats)
                wrong = decoded != ids
                right += int((~wrong).sum())
                if wrong.any():
                    worst = max(worst, int(edge_distance(ids)[wrong].max()))
            total = ids.size * len(truths)
            decoded_total = max(pixels.pixels, 1)
            rows.append({
                "size": f"{height}x{width}", "format": fmt, "correct": right / decoded_total,
                "nearest_correct": nearest_right / total, "max_edge_distance": worst,
                "snapped": pixels.snapped / decoded_total, "filled": pixels.filled / decoded_total,
                "unknown": pixels.unknown / decoded_total, "skipped": skipped,
                "ms_per_map": 1000 * seconds / len(truths),
            })  # fmt: skip
            print(f"  {height}x{width} {fmt}: {right / decoded_total:.4f} correct "
                  f"(nearest colour {nearest_right / total:.4f})", flush=True)  # fmt: skip
    return report("maps", args, rows)


def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        sizes = [tuple(int(v) for v in item.split("x")) for item in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != 2 or min(s) < 16 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected HxW[,HxW...] with sides >= 16, got {text!r}")
    return sizes  # type: ignore[return-value]


def _formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f != "png" and not (f.startswith("jpg") and f[3:].isdigit() and 1 <= int(f[3:]) <= 95)]
    if bad or not formats:
        raise argparse.ArgumentTypeError(f"expected png or jpg<quality 1..95>, comma-separated; got {text!r}")
    return formats


def add_arguments(p: argparse.ArgumentParser, positive: Any) -> None:
    """The ``maps`` subcommand's options."""
    p.add_argument("--sizes", type=_sizes, default=_sizes("128x160,256x341,512x683"),
                   help="map sizes HxW, comma-separated (default: 128x160,256x341,512x683)")  # fmt: skip
    p.add_argument("--formats", type=_formats, default=_formats("png,jpg95,jpg90,jpg75"),
                   help="file formats, comma-separated (default: png,jpg95,jpg90,jpg75)")  # fmt: skip
    p.add_argument("--maps", type=positive, default=8, help="maps per size (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="snap tolerance (default: 20)")
    p.add_argument("--max-unknown", type=float, default=DEFAULT_MAX_UNKNOWN, help="skip threshold (default: 0.01)")
    p.set_defaults(func=bench_maps, columns=COLUMNS)
