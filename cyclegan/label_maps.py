"""Segmentation-map images -> 150-class ids, in whichever encoding a dataset was saved.

Three encodings (``--palette`` of ``cyclegan-shard`` and ``cyclegan-generate``):

* ``ids``: one channel of class ids 0..150 (the SceneParsing release's annotations). Grey
  (L, I, I;16), palette-indexed (P: the indices are the ids, as in PASCAL VOC masks) or an
  RGB file whose three channels are equal. Never from a JPEG: lossy ids are silently wrong ids.
* ``full``: the full release's ``*_seg.png``, class ``R / 10 * 256 + G`` over ~3,000 classes,
  mapped to the 150 by a class map (anything unmapped is 0). Never from a JPEG either: the
  encoding has no slack for compression noise.
* ``ade150``: RGB colours of the common 150-class ADE20K display palette
  (:data:`cyclegan.ade150.DISPLAY_COLOURS`, black = unlabeled). Colour maps are often JPEGs,
  so colours that are not exact are snapped, see below.

Snapping (``ade150``). The display palette has colours only 7.1 apart (class 10 (4, 250, 7) and
99 (0, 255, 10)), well inside JPEG's error near region edges, so a pixel is never simply snapped
to the nearest of all 151 colours:

1. The image's own classes are found first. A class is *present* when at least
   ``PRESENT_SHARE`` (0.05 %) of the pixels lie within its colour's voting radius *and* have four
   neighbours that do too: the inside of a region. The radius is half the distance to the nearest
   other palette colour, at most ``PRESENT_RADIUS`` (8), so no two voting balls overlap; the noise
   JPEG adds along edges lands near some other class's colour now and then, but rarely in patches.
2. An exact palette colour keeps its class (in a JPEG only when that class is present). Any
   other colour is *snapped* to the nearest present colour within ``tolerance`` (Euclidean RGB,
   default 20).
3. What is left, mostly JPEG ringing along region edges, is *filled* from the decided pixels
   around it (the most common of the 8 neighbours, up to ``FILL_STEPS`` = 8 pixels deep).
4. Anything still undecided is *unknown*: label 0 (unlabeled, ignored by the losses and
   mIoU), counted. A map with more than ``max_unknown`` (default 1 %) unknown pixels is not a
   map in this palette; the error names its five most common unknown colours.

PNG maps decode exactly. Measured on synthetic maps saved as JPEG quality 90
(``cyclegan-bench maps``): see the README for the numbers.

The duplicate. Road (7) and skyscraper (49) are both (140, 140, 140) in the display palette. A map
drawn in it cannot tell them apart; that colour decodes as road, the lower id, so skyscraper never
appears in labels decoded from ade150 colour maps (id maps keep both). The manifest says so.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from cyclegan.ade150 import CLASS_NAMES, DISPLAY_COLOURS, NUM_CLASSES

PALETTES = ("ade150", "full", "ids")
FULL_ID_COUNT = (255 // 10 + 1) * 256
"""Every value ``R / 10 * 256 + G`` can take."""
PRESENT_RADIUS = 8.0
"""The most a voting pixel may be off its colour; less for colours with a near neighbour (see voting_radii)."""
PRESENT_SHARE = 5e-4
DEFAULT_TOLERANCE = 20.0
FILL_STEPS = 8
ON_PALETTE_RADIUS = 4.0
DEFAULT_MAX_UNKNOWN = 0.01
ID_MODES = ("L", "P", "I", "I;16")

_ADE150 = DISPLAY_COLOURS.astype(np.int64)
_CHUNK = 512  # distinct colours per distance product: small enough that BLAS runs it on one thread


def duplicate_colours(palette: np.ndarray = _ADE150) -> list[tuple[tuple[int, ...], list[int]]]:
    """Colours that draw more than one class, with their ids (lowest first: the one they decode as)."""
    owners: dict[tuple[int, ...], list[int]] = {}
    for class_id, colour in enumerate(palette.tolist()):
        owners.setdefault(tuple(colour), []).append(class_id)
    return [(colour, ids) for colour, ids in owners.items() if len(ids) > 1]


def describe_duplicates() -> str:
    """One line for manifests and logs: how the display palette's shared colours decode."""
    return "; ".join(
        f"{colour} decodes as {ids[0]} {_name(ids[0])}, never {', '.join(f'{i} {_name(i)}' for i in ids[1:])}"
        for colour, ids in duplicate_colours()
    )


def _name(class_id: int) -> str:
    return "unlabeled" if class_id == 0 else CLASS_NAMES[class_id - 1]


class NotAMap(ValueError):
    """An image that does not decode in the chosen encoding; the message says why, without the path."""


@dataclass
class MapPixels:
    """What decoding did to one or more maps' pixels: for the manifest and the run summary."""

    pixels: int = 0
    snapped: int = 0
    """Not an exact palette colour, taken as the nearest colour present (within the tolerance)."""
    filled: int = 0
    """Too far from every colour present, taken from the decided pixels around it (region edges)."""
    unknown: int = 0
    """Too far from every colour present and from any decided pixel: written as 0 (unlabeled)."""

    def add(self, other: MapPixels) -> None:
        self.pixels += other.pixels
        self.snapped += other.snapped
        self.filled += other.filled
        self.unknown += other.unknown

    def as_dict(self) -> dict[str, int]:
        return {"pixels": self.pixels, "snapped": self.snapped, "filled": self.filled, "unknown": self.unknown}

    def summary(self) -> str:
        share = max(self.pixels, 1)
        return (f"{self.snapped / share:.2%} of pixels snapped to a colour, {self.filled / share:.2%} filled from "
                f"neighbours, {self.unknown / share:.3%} unknown (written as 0)")  # fmt: skip


@dataclass(frozen=True)
class MapDecoder:
    """One encoding and its settings; :meth:`decode` turns an opened image into class ids."""

    palette: str = "ids"
    class_lut: np.ndarray | None = field(default=None, compare=False)
    """``full``: full class id -> 150-class id, over all ``FULL_ID_COUNT`` values."""
    tolerance: float = DEFAULT_TOLERANCE
    max_unknown: float = DEFAULT_MAX_UNKNOWN

    def __post_init__(self) -> None:
        if self.palette not in PALETTES:
            raise ValueError(f"palette must be one of {', '.join(PALETTES)}, got {self.palette!r}")
        if (self.palette == "full") != (self.class_lut is not None):
            raise ValueError("a class map goes with the full palette, and only with it")

    def decode(self, image: Image.Image) -> tuple[np.ndarray, MapPixels]:
        """Class ids (uint8, H x W) of a loaded image, or :class:`NotAMap`."""
        lossy = image.format == "JPEG"
        if self.palette == "ids":
            if lossy:
                raise NotAMap("class ids cannot be read from a JPEG (lossy); use PNG, or --palette ade150 "
                              "for colour maps")  # fmt: skip
            return ids_from_grey(image), MapPixels(image.width * image.height)
        if image.mode not in ("RGB", "RGBA", "P"):
            raise NotAMap(f"mode {image.mode} is not a colour map ({self.palette} palette needs RGB)")
        rgb = np.asarray(image.convert("RGB"))
        if self.palette == "full":
            if lossy:
                raise NotAMap("the full release's R / 10 * 256 + G class encoding does not survive JPEG; use the PNG")
            assert self.class_lut is not None
            labels = self.class_lut[(rgb[..., 0] // 10).astype(np.intp) * 256 + rgb[..., 1]]
            return labels, MapPixels(rgb.shape[0] * rgb.shape[1])
        labels, pixels, unknown_colours = snap_colours(rgb, _ADE150, self.tolerance, lossy)
        if pixels.unknown > self.max_unknown * pixels.pixels:
            common = ", ".join(f"({c[0]}, {c[1]}, {c[2]}) {n / pixels.pixels:.1%}" for c, n in unknown_colours[:5])
            raise NotAMap(
                f"not a segmentation map in the ade150 palette: {pixels.unknown / pixels.pixels:.1%} of pixels "
                f"are in no palette colour (more than {self.max_unknown:.1%}); most common: {common}"
            )
        return labels, pixels


def ids_from_grey(image: Image.Image) -> np.ndarray:
    """One channel of ids 0..150 as uint8, or :class:`NotAMap` naming the mode or the value."""
    if image.mode in ID_MODES:
        labels = np.asarray(image)
    elif image.mode == "RGB":
        rgb = np.asarray(image)
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            raise NotAMap("is a colour image (RGB), not one channel of class ids; try --palette ade150 or auto")
        labels = rgb[..., 0]
    else:
        raise NotAMap(f"mode {image.mode} is not one channel of class ids")
    if labels.size and labels.max() > NUM_CLASSES:
        raise NotAMap(f"label value {labels.max()} > {NUM_CLASSES}")
    if labels.size and labels.min() < 0:
        raise NotAMap(f"label value {labels.min()} < 0")
    return labels.astype(np.uint8)


def snap_colours(
    rgb: np.ndarray, palette: np.ndarray, tolerance: float, lossy: bool = True
) -> tuple[np.ndarray, MapPixels, list[tuple[tuple[int, int, int], int]]]:
    """Colours (H x W x 3 uint8) -> ids by the rule in the module notes; also the unknown colours
    with their pixel counts, most common first. Works on the image's distinct colours, so the cost
    is one palette comparison per colour, not per pixel. ``lossy`` (a JPEG): an exact colour of a
    class that is not present is noise, and is snapped like any other colour."""
    height, width = rgb.shape[:2]
    codes = _codes(rgb)
    exact = _code_table(palette.astype(np.uint8).tobytes())[codes]
    if not lossy and (exact < len(palette)).all():  # a clean lossless map: one table lookup
        return exact.astype(np.uint8), MapPixels(pixels=height * width), []
    colours, inverse, counts = np.unique(codes.ravel(), return_inverse=True, return_counts=True)
    values = _rgb_of(colours)
    nearest, distance = _nearest(values, palette)
    # Presence is voted by pixels within the radius of a palette colour whose four neighbours are
    # within the radius of the same colour: the inside of a region. Compression noise near edges
    # lands within the radius of a neighbouring palette colour now and then, but not in patches.
    near = np.where(distance <= voting_radii(palette)[nearest], nearest, -1)[inverse].reshape(height, width)
    voters = near[_flat(near) & (near >= 0)]
    votes = np.bincount(voters, minlength=len(palette))
    present = np.flatnonzero(votes >= max(1.0, PRESENT_SHARE * height * width))
    keep = distance == 0
    if lossy:
        keep &= np.isin(nearest, present)
    ids = np.where(keep, nearest, 0)
    unknown = ~keep
    if present.size and not keep.all():
        rows = np.flatnonzero(~keep)
        near, near_distance = _nearest(values[rows], palette[present])
        snapped = near_distance <= tolerance
        ids[rows[snapped]] = present[near[snapped]]
        unknown[rows[snapped]] = False
    labels = ids[inverse].reshape(height, width)
    left = unknown[inverse].reshape(height, width)
    stats = MapPixels(pixels=height * width, snapped=int(counts[~keep & ~unknown].sum()))
    if present.size:
        for _ in range(FILL_STEPS):
            stats.filled += _fill_from_neighbours(labels, left)
    stats.unknown = int(left.sum())
    labels[left] = 0
    order = np.argsort(-counts[unknown], kind="stable")[:5]
    listed = [(tuple(int(v) for v in values[unknown][i]), int(counts[unknown][i])) for i in order]
    return labels.astype(np.uint8), stats, listed  # type: ignore[return-value]


def _fill_from_neighbours(labels: np.ndarray, left: np.ndarray) -> int:
    """One step of filling: each pixel in ``left`` with a decided 8-neighbour takes the most common
    decided neighbour label (the first in reading order on ties); updates both arrays, returns how
    many were filled."""
    rows, cols = np.nonzero(left)
    if not rows.size:
        return 0
    height, width = labels.shape
    neighbours = np.full((rows.size, 8), -1, dtype=np.int64)
    for k, (dy, dx) in enumerate(((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))):
        y, x = rows + dy, cols + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        decided = inside.copy()
        decided[inside] = ~left[y[inside], x[inside]]
        neighbours[decided, k] = labels[y[decided], x[decided]]
    # how many of the 8 share each neighbour's label; undecided neighbours (-1) never win
    agree = (neighbours[:, :, None] == neighbours[:, None, :]).sum(2) * (neighbours >= 0)
    pick = agree.argmax(1)
    filled = agree.max(1) > 0
    labels[rows[filled], cols[filled]] = neighbours[filled, pick[filled]]
    left[rows[filled], cols[filled]] = False
    return int(filled.sum())


def voting_radii(palette: np.ndarray) -> np.ndarray:
    """Per palette entry: half the distance to the nearest other colour, at most ``PRESENT_RADIUS``,
    so no two voting balls overlap (entries sharing one colour share its ball)."""
    table = palette.astype(np.float64)
    gaps = np.sqrt(((table[:, None, :] - table[None, :, :]) ** 2).sum(-1))
    gaps[gaps == 0] = np.inf
    return np.minimum(gaps.min(1) / 2, PRESENT_RADIUS)


@functools.lru_cache(maxsize=2)
def _code_table(palette: bytes) -> np.ndarray:
    """24-bit colour code -> id of the first palette entry with that colour, or 65535 (32 MiB, built once)."""
    colours = np.frombuffer(palette, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
    table = np.full(1 << 24, 65535, dtype=np.uint16)
    for class_id in range(len(colours) - 1, -1, -1):  # backwards: the lowest id wins a shared colour
        r, g, b = colours[class_id]
        table[(r << 16) | (g << 8) | b] = class_id
    return table


def _codes(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> 24-bit codes, so distinct colours are found by ``np.unique``."""
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]


def _rgb_of(codes: np.ndarray) -> np.ndarray:
    return np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=1)


def _flat(codes: np.ndarray) -> np.ndarray:
    """Pixels whose value equals all four neighbours' (image borders count as equal)."""
    flat = np.ones(codes.shape, dtype=bool)
    flat[1:] &= codes[1:] == codes[:-1]
    flat[:-1] &= codes[:-1] == codes[1:]
    flat[:, 1:] &= codes[:, 1:] == codes[:, :-1]
    flat[:, :-1] &= codes[:, :-1] == codes[:, 1:]
    return flat


def _nearest(values: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest palette row for each value (the first of equals) and its distance.
    ``|v|^2 - 2 v.c + |c|^2`` as one float64 matrix product per chunk: exact for 8-bit colours."""
    index = np.empty(len(values), dtype=np.int64)
    distance = np.empty(len(values), dtype=np.float64)
    table = palette.astype(np.float64)
    table_norms = (table * table).sum(1)
    for start in range(0, len(values), _CHUNK):
        block = values[start : start + _CHUNK].astype(np.float64)
        squared = (block * block).sum(1, keepdims=True) - 2 * block @ table.T + table_norms
        index[start : start + _CHUNK] = squared.argmin(1)
        distance[start : start + _CHUNK] = np.sqrt(squared[np.arange(len(block)), index[start : start + _CHUNK]])
    return index, distance


def on_palette_share(rgb: np.ndarray, palette: np.ndarray, radius: float = ON_PALETTE_RADIUS) -> float:
    """Share of a (H, W, 3) map's pixels within ``radius`` of a ``palette`` colour: which of two
    palettes a lossy map was drawn in (block interiors of a JPEG stay within a few levels of their
    colour; edges do not, in either palette). One palette comparison per distinct colour."""
    codes, counts = np.unique(_codes(rgb), return_counts=True)
    _, distance = _nearest(_rgb_of(codes), palette)
    return float(counts[distance <= radius].sum() / counts.sum())


def guess_palette(images: Sequence[Image.Image], full_available: bool, max_unknown: float) -> tuple[str, str]:
    """``--palette auto``: the encoding most of these maps fit, and the evidence, for a log line.

    A lossless map fits ``ids`` when it is grey (one channel, or RGB / palette-indexed with equal
    channels: small ids would otherwise pass for black), ``ade150`` when at most ``max_unknown`` of
    its pixels are unknown in that palette, else ``ids`` if palette-indexed, else ``full`` (only
    offered with a class map). A JPEG fits ``ade150`` or nothing."""
    fits = [_fit(image, full_available, max_unknown) for image in images]
    votes = {name: fits.count(name) for name in PALETTES}
    best = max(PALETTES, key=lambda name: votes[name])
    if not votes[best]:
        raise NotAMap(
            f"--palette auto: none of {len(images)} sampled maps is single-channel ids or ade150 colours"
            + ("" if full_available else "; for the full release's *_seg.png pass --palette full --class-map FILE")
        )
    return best, f"{votes[best]} of {len(images)} sampled maps fit"


def _fit(image: Image.Image, full_available: bool, max_unknown: float) -> str:
    lossy = image.format == "JPEG"
    if image.mode in ("L", "I", "I;16"):
        return "ids"
    if image.mode not in ("RGB", "RGBA", "P"):
        return "none"
    rgb = np.asarray(image.convert("RGB"))
    if not lossy and (rgb == rgb[..., :1]).all():
        return "ids"  # grey, stored as RGB or palette-indexed: small ids would pass for black
    _, pixels, _ = snap_colours(rgb, _ADE150, DEFAULT_TOLERANCE, lossy)
    if pixels.unknown <= max_unknown * pixels.pixels:
        return "ade150"
    if image.mode == "P" and not lossy:
        return "ids"
    if full_available and not lossy:
        return "full"
    return "none"
