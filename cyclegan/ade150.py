"""The 150 ADE20K SceneParsing classes and their two palettes, as plain data.

Class id 0 is unlabeled, 1..150 are ``CLASS_NAMES[id - 1]``. The palettes are ``(151, 3)`` uint8
arrays indexed by class id; :mod:`cyclegan.palette` explains them and turns them into tensors. This
module needs only NumPy, so the sharder and the label-map decoder run without importing torch.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

_DATA = json.loads(resources.files("cyclegan").joinpath("ade20k_150.json").read_text())

NUM_CLASSES = 150
CLASS_NAMES: tuple[str, ...] = tuple(_DATA["classes"])
IGNORE_INDEX = 0

DISPLAY_COLOURS = np.array([[0, 0, 0], *_DATA["palette"]], dtype=np.uint8)
"""The colours ADE20K tools draw maps with (not injective: road and skyscraper share one)."""


def _grid_colours() -> np.ndarray:
    colours = [(0, 0, 0)]
    for k in range(1, NUM_CLASSES + 1):
        point = (k - 1) * 97 % 215 + 1
        colours.append((point // 36 * 51, point // 6 % 6 * 51, point % 6 * 51))
    return np.array(colours, dtype=np.uint8)


TRAIN_COLOURS = _grid_colours()
"""The generators' palette: class k >= 1 at a point of the 6-level grid, any two >= 51 apart."""

for _table in (DISPLAY_COLOURS, TRAIN_COLOURS):
    _table.flags.writeable = False  # shared constants
