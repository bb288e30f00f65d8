"""Small synthetic ADE20K datasets in the real on-disk layouts, for tests and the demo.

Real ADE20K is 25k images behind a licence click-through; tests and ``cyclegan-demo`` need
something that looks like it on disk and that a CycleGAN can learn in a few CPU epochs.
Each scene is sky over a horizon with mountains, buildings, trees and grass/water/road
ground, plus a car or a traffic cone; every class has its own colour and texture (sky
gradient, window grids, leafy noise, water ripples), so photo <-> segmentation is easy.

    from cyclegan.data.synthetic import make_synthetic_ade20k
    make_synthetic_ade20k("data/synth", n_train=200, n_val=20, size=(512, 683))
    make_synthetic_ade20k("data/synth", layout="full", n_train=200, n_val=20)
    make_synthetic_ade20k("data/synth", layout="folders", map_format="jpg")

The same seed gives the same photos and 150-class labels in both layouts. The full layout
encodes made-up full-ADE20K class ids (``FULL_IDS``) in ``*_seg.png`` and writes the class map
that ``cyclegan-shard --class-map`` needs as ``<dataset>/ade150_class_map.json``; the traffic
cone's full id is deliberately left out of it, so it maps to 0 (unlabeled) like any class
outside the 150. The folders layout is the seed project's: flat folders of photos and of colour
maps in the ADE20K display palette (``FOLDER_NAMES``), paired by file name, the maps as PNG or as
JPEG (quality 90). :func:`unpaired_domains` makes any of them unpaired: the photos of some scenes
and the maps of the others.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from cyclegan.ade150 import CLASS_NAMES, DISPLAY_COLOURS

SCENE_PARSING_DIR = "ADEChallengeData2016"
FULL_DIR = "ADE20K_2021_17_01"
FOLDERS_DIR = "ade20k_folders"
CLASS_MAP_FILE = "ade150_class_map.json"
FOLDER_NAMES = {"training": ("images", "segmented"), "validation": ("val_images", "val_segmented")}
"""Split -> (photo folder, map folder) of the folders layout."""
MAP_JPEG_QUALITY = 90

_NAMES = ("sky", "building", "tree", "grass", "road", "mountain", "water", "car")
CLASSES: dict[str, int] = {name: CLASS_NAMES.index(name) + 1 for name in _NAMES}
"""The 150-class ids the synthetic scenes use."""

UNMAPPED_FULL_ID = 3001
"""Full-ADE20K id of the traffic cone: outside the 150 classes, so label 0 after mapping."""

FULL_IDS: dict[int, int] = {ade_id: 1000 + 23 * ade_id for ade_id in CLASSES.values()}
"""150-class id -> the made-up full-ADE20K id written to ``*_seg.png`` (all > 255, so R is used)."""

# Photo colour of each label value; 0 (unlabeled) is the orange traffic cone.
_BASE = np.full((151, 3), 128.0)
_BASE[0] = (235, 120, 25)
for _name, _rgb in {
    "sky": (110, 160, 230),
    "building": (150, 115, 95),
    "tree": (35, 95, 40),
    "grass": (100, 170, 60),
    "road": (85, 85, 90),
    "mountain": (115, 105, 125),
    "water": (35, 85, 150),
    "car": (190, 30, 35),
}.items():
    _BASE[CLASSES[_name]] = _rgb

# Per-class amplitude of pixel noise: rough foliage, smooth sky and road.
_NOISE = np.full(151, 4.0)
for _name, _amp in {"tree": 28.0, "grass": 16.0, "mountain": 10.0, "building": 6.0}.items():
    _NOISE[CLASSES[_name]] = _amp


def make_synthetic_ade20k(
    root: str | Path,
    layout: str = "scene-parsing",
    n_train: int = 8,
    n_val: int = 2,
    size: tuple[int, int] = (64, 96),
    size_jitter: float = 0.0,
    grayscale_every: int = 0,
    seed: int = 0,
    map_format: str = "png",
) -> Path:
    """Write a synthetic dataset under ``root`` and return its dataset folder.

    ``size`` is (height, width); with ``size_jitter`` j each side of each image is scaled by
    a random factor in [1 - j, 1 + j], to get the varied sizes of real ADE20K. Every
    ``grayscale_every``-th photo (1-based, 0 = none) is saved as a grayscale JPEG, as a few
    ADE20K photos are. ``map_format`` (png|jpg) is the folders layout's map file type.
    """
    if layout not in ("scene-parsing", "full", "folders"):
        raise ValueError(f"layout must be 'scene-parsing', 'full' or 'folders', got {layout!r}")
    if map_format not in ("png", "jpg"):
        raise ValueError(f"map_format must be 'png' or 'jpg', got {map_format!r}")
    rng = np.random.default_rng(seed)
    dataset = Path(root) / {"scene-parsing": SCENE_PARSING_DIR, "full": FULL_DIR, "folders": FOLDERS_DIR}[layout]
    scene_lines = []
    for split, prefix, count in (("training", "ADE_train", n_train), ("validation", "ADE_val", n_val)):
        for number in range(1, count + 1):
            height, width = (max(16, round(side * rng.uniform(1 - size_jitter, 1 + size_jitter))) for side in size)
            labels, instances = _scene(rng, height, width)
            photo = Image.fromarray(_render(rng, labels))
            if grayscale_every and number % grayscale_every == 0:
                photo = photo.convert("L")
            scene = _scene_name(labels)
            stem = f"{prefix}_{number:08d}"
            if layout == "scene-parsing":
                _save(photo, dataset / "images" / split / f"{stem}.jpg", quality=90)
                _save(Image.fromarray(labels), dataset / "annotations" / split / f"{stem}.png")
                scene_lines.append(f"{stem} {scene[1]}\n")
            elif layout == "folders":
                photos, maps = (dataset / name for name in FOLDER_NAMES[split])
                _save(photo, photos / f"{stem}.jpg", quality=90)
                colours = Image.fromarray(DISPLAY_COLOURS[labels])
                quality = {"quality": MAP_JPEG_QUALITY} if map_format == "jpg" else {}
                _save(colours, maps / f"{stem}.{map_format}", **quality)
            else:
                folder = dataset / "images" / "ADE" / split / scene[0] / scene[1]
                _save(photo, folder / f"{stem}.jpg", quality=90)
                _save(Image.fromarray(_encode_seg(labels, instances)), folder / f"{stem}_seg.png")
    if layout == "scene-parsing":
        (dataset / "sceneCategories.txt").write_text("".join(scene_lines))
    elif layout == "full":
        class_map = {str(full_id): ade_id for ade_id, full_id in sorted(FULL_IDS.items())}
        (dataset / CLASS_MAP_FILE).write_text(json.dumps(class_map, indent=1) + "\n")
    return dataset


def _save(image: Image.Image, path: Path, **kwargs: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def scene_labels(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The 150-class ids of one random scene, as the datasets draw them (for benchmarks and tests)."""
    return _scene(rng, height, width)[0]


def _scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ids and instance ids of one outdoor scene, painted back to front."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width]).reshape(2, 1, 1)
    labels = np.full((height, width), CLASSES["sky"], dtype=np.uint8)
    instances = np.ones((height, width), dtype=np.uint8)
    count = 1

    def paint(mask: np.ndarray, class_id: int) -> None:
        nonlocal count
        count += 1
        labels[mask] = class_id
        instances[mask] = count

    horizon = rng.uniform(0.35, 0.6)
    if rng.random() < 0.6:
        ridge = horizon - rng.uniform(0.08, 0.2) * (0.6 + 0.4 * np.sin(rng.uniform(4, 12) * x + rng.uniform(0, 6)))
        paint(y > ridge, CLASSES["mountain"])
    for _ in range(rng.integers(0, 4)):
        left, top = rng.uniform(-0.1, 0.9), rng.uniform(0.05, horizon - 0.1)
        paint((x > left) & (x < left + rng.uniform(0.1, 0.3)) & (y > top) & (y <= horizon), CLASSES["building"])
    ground = CLASSES["water"] if rng.random() < 0.3 else CLASSES["grass"]
    paint(y > horizon, ground)
    depth = (y - horizon) / (1 - horizon)
    has_road = ground == CLASSES["grass"] and rng.random() < 0.7
    if has_road:
        centre = rng.uniform(0.3, 0.7)
        paint((y > horizon) & (np.abs(x - centre) < 0.03 + 0.35 * depth), CLASSES["road"])
    for _ in range(rng.integers(1, 4)):
        cx, cy, r = rng.uniform(0, 1), horizon + rng.uniform(-0.1, 0.05), rng.uniform(0.06, 0.14)
        paint(((x - cx) / r) ** 2 + ((y - cy) / (1.6 * r)) ** 2 < 1, CLASSES["tree"])
    if has_road:
        cx, cy = centre + rng.uniform(-0.1, 0.1), horizon + rng.uniform(0.2, 0.7) * (1 - horizon)
        paint((np.abs(x - cx) < 0.08) & (np.abs(y - cy) < 0.05), CLASSES["car"])
    else:
        cx, cy = rng.uniform(0.1, 0.9), rng.uniform(horizon + 0.1, 0.95)
        paint((np.abs(x - cx) < 0.5 * (y - cy + 0.08)) & (y < cy), 0)
    return labels, instances


def _render(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """A photo of ``labels``: class colour, class texture, camera noise."""
    height, width = labels.shape
    y, x = np.mgrid[0:height, 0:width]
    photo = _BASE[labels] + (_NOISE[labels] * rng.standard_normal(labels.shape))[..., None]
    sky = labels == CLASSES["sky"]
    photo[sky] += (60 * y / height)[sky][:, None]
    windows = (labels == CLASSES["building"]) & (x % 6 < 2) & (y % 8 < 3)
    photo[windows] -= 60
    water = labels == CLASSES["water"]
    photo[water] += (18 * np.sin(0.9 * y + 0.2 * x))[water][:, None]
    photo += 3 * rng.standard_normal(photo.shape)
    return np.clip(photo, 0, 255).astype(np.uint8)


def _scene_name(labels: np.ndarray) -> tuple[str, str]:
    """(category, scene) folder names of the full layout; the scene is what sceneCategories.txt says."""
    if (labels == CLASSES["road"]).any():
        return "urban", "street"
    if (labels == CLASSES["water"]).any():
        return "nature_landscape", "lake_natural"
    return "nature_landscape", "field_wild"


def _encode_seg(labels: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Full-ADE20K ``*_seg.png`` pixels: class = R / 10 * 256 + G, B = instance."""
    full = np.zeros(151, dtype=np.int64)
    full[list(FULL_IDS)] = list(FULL_IDS.values())
    full[0] = UNMAPPED_FULL_ID
    ids = full[labels]
    # R carries id // 256 in its tens; its units vary (here with the instance) and decoders must drop
    # them by integer division. Not drawn from the rng, so both layouts of one seed stay identical.
    red = ids // 256 * 10 + instances % 10
    return np.stack([red, ids % 256, instances], axis=-1).astype(np.uint8)


def unpaired_domains(photos: Path, maps: Path, out: Path, photo_share: float = 0.5) -> tuple[Path, Path]:
    """Two unpaired domains from paired folders: copies of the photos of the first ``photo_share`` of the
    scenes (in name order) in ``out/photos`` and of the maps of the rest in ``out/maps``, so that no map
    belongs to any photo. Returns both folders."""
    scenes = sorted(path.stem for path in photos.iterdir())
    cut = round(len(scenes) * photo_share)
    folders = out / "photos", out / "maps"
    for folder, source, chosen in zip(folders, (photos, maps), (scenes[:cut], scenes[cut:]), strict=True):
        folder.mkdir(parents=True, exist_ok=True)
        wanted = set(chosen)
        for path in sorted(source.iterdir()):
            if path.stem in wanted:
                shutil.copyfile(path, folder / path.name)
    return folders
