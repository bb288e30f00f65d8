"""The two public ADE20K releases on disk, as the sharder reads them: which one a folder holds,
each split's photo/annotation pairs, scene categories, and the class map the full release needs.

* SceneParsing (``ADEChallengeData2016``): ``images/{split}/*.jpg`` with 8-bit class ids in
  ``annotations/{split}/*.png`` and scene names in ``sceneCategories.txt``.
* Full (``ADE20K_*``): ``images/ADE/{split}/<category>/<scene>/*.jpg``, each beside its
  ``*_seg.png`` (class = R / 10 * 256 + G over ~3,000 classes); a class map says which become
  which of the 150 (JSON ``{"2978": 3}`` or CSV ``full_id,ade150_id``), anything unmapped 0.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from cyclegan.ade150 import NUM_CLASSES
from cyclegan.data.shard_inputs import BadInput, ShardError, Source, keyed_pairs
from cyclegan.label_maps import FULL_ID_COUNT

LAYOUTS = ("scene-parsing", "full")
MISSING_CLASS_MAP = (
    "the full layout needs --class-map FILE mapping full-ADE20K class ids (R / 10 * 256 + G of *_seg.png) "
    "to the 150 classes (JSON {full_id: ade150_id} or CSV full_id,ade150_id); the release ships "
    "objects.txt / index_ade20k.pkl, not such a mapping"
)

_PHOTO_SUFFIXES = (".jpg", ".jpeg")


def detect_layout(root: Path, layout: str = "auto") -> tuple[str, Path]:
    """The layout and dataset folder at ``root`` or in one folder below it (e.g. a download dir)."""
    wanted = LAYOUTS if layout == "auto" else (layout,)
    for folders in ([root], sorted(p for p in root.iterdir() if p.is_dir())):
        found = [(name, folder) for folder in folders for name in wanted if _has_layout(folder, name)]
        if len(found) > 1:
            places = ", ".join(f"{name} at {folder}" for name, folder in found)
            raise ShardError(f"{root}: found {places}; pick one with --root or --layout")
        if found:
            return found[0]
    expected = {
        "scene-parsing": "ADEChallengeData2016/{images,annotations}/",
        "full": "ADE20K_*/images/ADE/",
    }
    raise ShardError(f"{root}: no ADE20K layout found (expected {' or '.join(expected[n] for n in wanted)})")


def _has_layout(folder: Path, layout: str) -> bool:
    if layout == "scene-parsing":
        return (folder / "images").is_dir() and (folder / "annotations").is_dir()
    return (folder / "images" / "ADE").is_dir()


def find_sources(dataset: Path, layout: str, split: str) -> tuple[list[Source], list[BadInput]]:
    """Photo/annotation pairs of one split in path order, and the photos that cannot pair."""
    if layout == "scene-parsing":
        scenes = _scene_categories(dataset / "sceneCategories.txt")
        pairs = [
            (photo, dataset / "annotations" / split / f"{photo.stem}.png", scenes.get(photo.stem))
            for photo in _photos(dataset / "images" / split, recursive=False)
        ]
    else:
        top = dataset / "images" / "ADE" / split
        pairs = [
            (
                photo,
                photo.with_name(f"{photo.stem}_seg.png"),
                photo.parent.name if photo.parent != top else None,
            )
            for photo in _photos(top, recursive=True)
        ]
    missing = [BadInput(photo, f"missing annotation {annotation}") for photo, annotation, _ in pairs
               if not annotation.is_file()]  # fmt: skip
    sources, duplicates = keyed_pairs(split, [pair for pair in pairs if pair[1].is_file()])
    return sources, missing + duplicates


def _photos(folder: Path, recursive: bool) -> list[Path]:
    if not folder.is_dir():
        raise ShardError(f"{folder}: no such folder; is every split in --splits in this dataset?")
    listing = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in listing if p.suffix.lower() in _PHOTO_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _scene_categories(path: Path) -> dict[str, str]:
    """``sceneCategories.txt`` of the SceneParsing release: ``ADE_train_00000001 airport_terminal``."""
    if not path.is_file():
        return {}
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines() if len(line.split()) == 2)


def load_class_map(path: Path) -> dict[int, int]:
    """Full-ADE20K class id -> 150-class id, from JSON or two-column CSV (see the module notes)."""
    try:
        text = path.read_text()
        if path.suffix.lower() == ".json":
            pairs = list(json.loads(text).items())
        else:
            rows = [row for row in csv.reader(io.StringIO(text)) if row and "".join(row).strip()]
            if rows and not rows[0][0].strip().lstrip("-").isdigit():
                rows = rows[1:]  # header
            if any(len(row) != 2 for row in rows):
                raise ValueError("every row needs exactly two columns, full_id,ade150_id")
            pairs = [tuple(row) for row in rows]
        mapping = {int(full): int(ade) for full, ade in pairs}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ShardError(f"{path}: not a class map ({exc})") from None
    bad = [
        f"{full}->{ade}"
        for full, ade in mapping.items()
        if not 0 <= full < FULL_ID_COUNT or not 0 <= ade <= NUM_CLASSES
    ]
    if bad:
        raise ShardError(
            f"{path}: class map entries out of range (full ids 0..{FULL_ID_COUNT - 1}, "
            f"150-class ids 0..{NUM_CLASSES}): {', '.join(bad[:5])}"
        )
    return mapping


def class_lut(mapping: dict[int, int]) -> np.ndarray:
    """Lookup table over every possible full-ADE20K id; unmapped ids give 0 (unlabeled)."""
    lut = np.zeros(FULL_ID_COUNT, dtype=np.uint8)
    lut[list(mapping)] = list(mapping.values())
    return lut
