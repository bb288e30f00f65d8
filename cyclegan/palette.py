"""The 150 ADE20K SceneParsing classes and the colours that draw them.

Two palettes, both indexed by class id (0 = unlabeled, 1..150 = ``CLASS_NAMES[id-1]``):

* ``DISPLAY_PALETTE``: the colours ADE20K tools commonly use. Not injective (road and
  skyscraper share (140, 140, 140)) and some colours are 7 apart, so it is for pictures
  only, never for decoding a generated map back to classes.
* ``TRAIN_PALETTE``: what the generators learn to draw. Every class gets its own point of
  the 6-level RGB grid {0, 51, ..., 255}^3, so any two colours are at least 51 apart and a
  generated colour decodes to its class by nearest colour as long as each channel is off
  by less than 25.5. Unlabeled is black; class k >= 1 takes grid point
  ``(k - 1) * 97 % 215 + 1`` (digits base 6 = R, G, B levels), a stride that puts
  neighbouring class ids far apart in colour.
"""

from __future__ import annotations

import torch

from cyclegan.ade150 import CLASS_NAMES, DISPLAY_COLOURS, IGNORE_INDEX, NUM_CLASSES, TRAIN_COLOURS

__all__ = ["CLASS_NAMES", "DISPLAY_PALETTE", "IGNORE_INDEX", "NUM_CLASSES", "TRAIN_PALETTE"]

DISPLAY_PALETTE = torch.tensor(DISPLAY_COLOURS)
TRAIN_PALETTE = torch.tensor(TRAIN_COLOURS)


def class_labels() -> dict[int, str]:
    """Class id -> name, with 0 named, as W&B segmentation masks want."""
    return {0: "unlabeled", **{i + 1: name for i, name in enumerate(CLASS_NAMES)}}


def ids_to_rgb(ids: torch.Tensor, palette: torch.Tensor = TRAIN_PALETTE) -> torch.Tensor:
    """Class ids (..., H, W) -> uint8 colours (..., 3, H, W) on the ids' device."""
    if ids.dtype.is_floating_point:
        raise TypeError(f"class ids must be an integer tensor, got {ids.dtype}")
    rgb = palette.to(ids.device)[ids.long().clamp(0, palette.shape[0] - 1)]
    return rgb.movedim(-1, -3)


def rgb_to_ids(rgb: torch.Tensor, palette: torch.Tensor = TRAIN_PALETTE, chunk: int = 1 << 16) -> torch.Tensor:
    """Colours (..., 3, H, W) on the 0..255 scale -> nearest palette entry's id (..., H, W).

    Works on any device; pixels are processed in chunks so memory stays at
    ``chunk x palette size`` floats whatever the image size.
    """
    if rgb.ndim < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"expected colours shaped (..., 3, H, W), got {tuple(rgb.shape)}")
    pixels = rgb.movedim(-3, -1).reshape(-1, 3).float()
    colours = palette.to(device=rgb.device, dtype=torch.float32)
    colour_norms = (colours * colours).sum(1)
    ids = torch.empty(pixels.shape[0], dtype=torch.long, device=rgb.device)
    for start in range(0, pixels.shape[0], chunk):
        block = pixels[start : start + chunk]
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every c, so skip it.
        ids[start : start + chunk] = (colour_norms - 2 * block @ colours.T).argmin(1)
    return ids.reshape(*rgb.shape[:-3], *rgb.shape[-2:])


def ids_to_seg(ids: torch.Tensor, colours: torch.Tensor | None = None) -> torch.Tensor:
    """Class ids -> float segmentation image in [-1, 1], the generators' domain.

    ``colours`` is ``seg_colours(...)`` already on the ids' device: a loader builds it once, since
    copying the table to a GPU for every batch would synchronise the stream each time. One table
    lookup per pixel (``embedding``: several times faster than indexing then scaling); the result
    is a channels-last view."""
    if ids.dtype.is_floating_point:
        raise TypeError(f"class ids must be an integer tensor, got {ids.dtype}")
    table = seg_colours().to(ids.device) if colours is None else colours
    return torch.nn.functional.embedding(ids.long().clamp(0, table.shape[0] - 1), table).movedim(-1, -3)


def seg_colours(palette: torch.Tensor = TRAIN_PALETTE) -> torch.Tensor:
    """The palette on the generators' [-1, 1] scale: (classes, 3) float32."""
    return palette.to(torch.float32) / 127.5 - 1.0


def seg_to_ids(seg: torch.Tensor, palette: torch.Tensor = TRAIN_PALETTE) -> torch.Tensor:
    """A generated segmentation image in [-1, 1] -> class ids by nearest colour."""
    return rgb_to_ids((seg.float() + 1.0) * 127.5, palette)
