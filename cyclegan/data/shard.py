"""ADE20K -> WebDataset shards for training: ``cyclegan-shard``.

Reads either public ADE20K layout, or two flat folders of photos and segmentation maps paired
by file stem (the seed project's layout), and writes, per split, pre-shuffled tar shards
``{split}-000000.tar`` with the DALI index ``{split}-000000.idx`` beside each, and a
``manifest.json`` for the whole output::

    # the 150-class SceneParsing release
    cyclegan-shard --root data/ADEChallengeData2016 --out data/shards --short-side 286 --workers 8
    # the full release, mapped to the 150 classes
    cyclegan-shard --root data/ADE20K_2021_17_01 --out data/shards --class-map ade150_map.csv
    # a quick 200-image sample of each split; stop at the first bad input
    cyclegan-shard --root data --out /tmp/shards --limit 200 --strict
    # photos/ and colour maps in segmented/ (any formats PIL reads), 5 % held out for validation
    cyclegan-shard --photos data/images --segmentations data/segmented --out data/shards --val-fraction 0.05
    python -m cyclegan.data.shard --help

Each sample is three tar members (readers split the extension at the first dot, so keys,
the photo's file stem with any dots turned into "_", contain none):

* ``KEY.jpg``: the RGB photo; its original bytes when nothing changes, else re-encoded at
  quality 95 (grayscale/CMYK/non-JPEG photos, EXIF rotation, ``--short-side``).
* ``KEY.label.png``: 8-bit single-channel class ids (0 = unlabeled, 1..150), photo-sized.
* ``KEY.json``: key, split, layout, source paths relative to the dataset folder, original
  and stored size as [width, height], scene category (or null).

Class map (``--class-map``, full layout only). A full-release ``*_seg.png`` stores the class
as R / 10 * 256 + G (B = instance) over ~3,000 classes; the map says which become which of the
150 classes, anything unmapped becomes 0. JSON ``{"2978": 3, "1831": 2}`` or a two-column
CSV ``full_id,ade150_id`` (an optional header row).

The folders layout. Photos and maps pair by file stem (or map stem = photo stem + ``--map-suffix``,
e.g. ``_seg``); unpaired files, stems naming two files on one side and non-image files are
skipped and listed (the manifest's ``unpaired`` names the files without a partner). ``--palette``
says how the maps encode classes (``ade150`` colours, ``full`` R / 10 * 256 + G with a class map,
``ids``; ``auto`` looks at a sample and prints its choice), and
:mod:`cyclegan.label_maps` decodes them, snapping JPEG noise and skipping maps with more than
``--max-unknown`` pixels in no palette colour. The validation split is ``--val-fraction`` of the
pairs, those whose keys hash lowest with the seed, or the pairs of ``--val-photos`` and
``--val-segmentations``. The manifest's ``map_pixels`` counts what decoding snapped, filled and
left unknown, per split.

Choices worth knowing:

* EXIF orientation is applied to the photo and, by the same transpose, to its label: the
  annotation must match the photo's stored pixel grid, and the re-encoded photo carries no
  orientation tag, so DALI (which honours the tag), PIL and torchvision all see one image.
* ``--short-side N`` scales each pair to exactly N on the short side, up or down (bicubic
  photo, nearest-neighbour label), so a loader's fixed-size crop always fits.
* Inputs are shuffled (seeded, per split) and cut into shards before they are decoded;
  a skipped input leaves its shard one sample short. ``--limit`` takes the first N of the
  shuffled list, so a few may be skipped from those N.
* Each worker writes whole shards under temporary names and renames them when complete,
  then records a done marker in ``.shard-state/``; a re-run keeps recorded shards and
  writes the rest. Options and the planned inputs are fingerprinted in
  ``.shard-state/options.json``: a re-run with others is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import random
import re
import shutil
import sys
import tarfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from cyclegan.ade150 import NUM_CLASSES
from cyclegan.arguments import float_in, positive_int
from cyclegan.data.catalog import LABEL, MANIFEST, PAIRED_FORMAT, PHOTO, end_with_owner, worker_context
from cyclegan.label_maps import (
    DEFAULT_MAX_UNKNOWN,
    DEFAULT_TOLERANCE,
    FULL_ID_COUNT,
    PALETTES,
    MapDecoder,
    MapPixels,
    NotAMap,
    describe_duplicates,
    guess_palette,
)

FORMAT = PAIRED_FORMAT
SPLITS = ("training", "validation")
LAYOUTS = ("scene-parsing", "full")
FOLDERS = "folders"
DEFAULT_VAL_FRACTION = 0.05
AUTO_SAMPLE = 16  # maps --palette auto looks at
JPEG_QUALITY = 95
STATE_DIR = ".shard-state"
IDX_VERSION = "v1.2"  # the index version DALI's wds2idx writes

_PHOTO_SUFFIXES = (".jpg", ".jpeg")
_SHARD_FILE = re.compile(rf"^({'|'.join(SPLITS)})-\d{{6}}\.(tar|idx)$")
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_MISSING_CLASS_MAP = (
    "the full layout needs --class-map FILE mapping full-ADE20K class ids (R / 10 * 256 + G of *_seg.png) "
    "to the 150 classes (JSON {full_id: ade150_id} or CSV full_id,ade150_id); the release ships "
    "objects.txt / index_ade20k.pkl, not such a mapping"
)

# Truncated files must fail loudly, not decode to grey; PIL's default, pinned against other imports.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadInput(Exception):
    """An input the sharder cannot use: skipped and listed, or fatal with ``--strict``."""

    def __init__(self, path: Path, reason: str, unpaired: bool = False) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason
        self.unpaired = unpaired
        """A photo without a map or a map without a photo (the folders layout counts these)."""

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def record(self) -> dict[str, str]:
        return {"path": str(self.path), "reason": self.reason}


class ShardError(Exception):
    """A problem with the dataset folder, class map or output folder, reported in one line."""


@dataclass(frozen=True)
class Source:
    """One photo and its annotation, as found on disk."""

    split: str
    key: str
    photo: Path
    annotation: Path
    scene: str | None


@dataclass(frozen=True)
class Settings:
    """What every shard job needs besides its inputs."""

    dataset: Path
    layout: str
    out: Path
    short_side: int | None
    decoder: MapDecoder
    strict: bool


@dataclass(frozen=True)
class ShardJob:
    """One shard to write: the unit of work of a worker process."""

    settings: Settings
    name: str
    sources: tuple[Source, ...]


# ---------------------------------------------------------------- finding inputs


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
    sources, duplicates = _keyed(split, [pair for pair in pairs if pair[1].is_file()])
    return sources, missing + duplicates


def _keyed(split: str, pairs: list[tuple[Path, Path, str | None]]) -> tuple[list[Source], list[BadInput]]:
    """Sources of (photo, annotation, scene) pairs, keyed by the photo's stem with dots made "_";
    a photo whose key another already has is listed as a duplicate."""
    sources, problems, seen = [], [], {}
    for photo, annotation, scene in pairs:
        key = photo.stem.replace(".", "_")
        if key in seen:
            problems.append(BadInput(photo, f"duplicate key {key} (also {seen[key]})"))
        else:
            seen[key] = photo
            sources.append(Source(split, key, photo, annotation, scene))
    return sources, problems


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


def pair_folders(photos: Path, maps: Path, split: str, map_suffix: str = "") -> tuple[list[Source], list[BadInput]]:
    """The folders layout: photos and segmentation maps in two flat folders, paired by file stem
    (``a.jpg`` with ``a.png``, or with ``a<map_suffix>.png``; any extension PIL reads). Unpaired
    files, files of other types and stems that name two files on one side are skipped and listed."""
    photo_files, problems = _images_by_stem(photos, "photo")
    map_files, map_problems = _images_by_stem(maps, "segmentation map")
    problems += map_problems
    if map_suffix:
        for stem, path in sorted(map_files.items()):
            if not stem.endswith(map_suffix) or stem == map_suffix:
                del map_files[stem]
                problems.append(BadInput(path, f"name does not end in {map_suffix!r} (--map-suffix)", unpaired=True))
        map_files = {stem.removesuffix(map_suffix): path for stem, path in map_files.items()}
    pairs = []
    for stem in sorted(photo_files.keys() | map_files.keys()):
        photo, annotation = photo_files.get(stem), map_files.get(stem)
        if annotation is None:
            problems.append(BadInput(photo, f"no segmentation map named {stem}.* in {maps}", unpaired=True))
        elif photo is None:
            problems.append(BadInput(annotation, f"no photo named {stem}.* in {photos}", unpaired=True))
        else:
            pairs.append((photo, annotation, None))
    sources, duplicates = _keyed(split, pairs)
    return sources, problems + duplicates


def no_pairs_reason(photos: Path, maps: Path) -> str:
    """Why two folders gave no pairs, for the error line: a folder of subfolders (the layout reads
    flat folders), an empty one, or names that do not match (with an example from each side, and
    the ``--map-suffix`` that would pair them when map names extend photo names)."""
    stems = {}
    for folder in (photos, maps):
        images, _ = _images_by_stem(folder, "file")
        if not images:
            subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            if subfolders:
                return (f"{folder} holds no images, only folders ({', '.join(subfolders[:4])}); the folders layout "
                        f"reads flat folders: name one, e.g. {folder / subfolders[0]}")  # fmt: skip
            return f"{folder} holds no images"
        stems[folder] = images
    photo, annotation = (min(stems[photos].values()), min(stems[maps].values()))
    reason = (f"{len(stems[photos])} photos and {len(stems[maps])} maps, but no file stem in both (photo "
              f"{photo.name}, map {annotation.name}): pairs need the same name before the extension")  # fmt: skip
    extended = [stem for stem in stems[photos] if annotation.stem.startswith(stem) and annotation.stem != stem]
    if extended:
        reason += f", or pass --map-suffix {annotation.stem[len(max(extended, key=len)):]}"
    return reason


def _images_by_stem(folder: Path, what: str) -> tuple[dict[str, Path], list[BadInput]]:
    if not folder.is_dir():
        raise ShardError(f"{folder}: no such folder")
    readable = set(Image.registered_extensions())
    by_stem: dict[str, list[Path]] = {}
    problems = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() in readable:
            by_stem.setdefault(path.stem, []).append(path)
        else:
            problems.append(BadInput(path, f"not an image file type ({path.suffix or 'no extension'})"))
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            problems += [BadInput(p, f"{len(paths)} {what}s share the stem {stem} ({names})") for p in paths]
    return {stem: paths[0] for stem, paths in by_stem.items() if len(paths) == 1}, problems


def split_off_validation(sources: Sequence[Source], fraction: float, seed: int) -> tuple[list[Source], list[Source]]:
    """(training, validation): the ``fraction`` of pairs whose keys hash lowest with the seed.

    A pair's side depends on its key, the seed and the pair count only, not on file order or
    workers; at least one pair lands on each side when ``fraction`` > 0 and there are two."""
    count = round(fraction * len(sources))
    if fraction > 0 and len(sources) > 1:
        count = min(max(count, 1), len(sources) - 1)
    ranked = sorted(sources, key=lambda s: hashlib.sha256(f"{seed}:{s.key}".encode()).digest())
    chosen = {s.key for s in ranked[:count]}
    training = [s for s in sources if s.key not in chosen]
    validation = [dataclasses.replace(s, split="validation") for s in sources if s.key in chosen]
    return training, validation


def load_class_map(path: Path) -> dict[int, int]:
    """Full-ADE20K class id -> 150-class id, from JSON or two-column CSV (see module docstring)."""
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


def plan_split(
    sources: Sequence[Source], split: str, seed: int, limit: int | None, per_shard: int
) -> list[list[Source]]:
    """Seeded shuffle of the path-sorted inputs, cut to ``limit``, chunked into shards.

    GPU readers only shuffle inside a buffer, so the order across shards must already be
    random; seeding by split keeps one split's plan independent of which others are asked for.
    """
    order = list(sources)
    random.Random(f"{split}:{seed}").shuffle(order)
    order = order[:limit]
    return [order[start : start + per_shard] for start in range(0, len(order), per_shard)]


# ---------------------------------------------------------------- one sample


def encode_sample(source: Source, settings: Settings) -> tuple[dict[str, bytes], np.ndarray, MapPixels]:
    """Validate and encode one input: tar members by extension, its class-pixel counts, and what
    decoding its map did (snapped and unknown pixels)."""
    data = _read(source.photo)
    photo = _decode(source.photo, data, "photo")
    labels, map_pixels = _labels(source, settings, photo.size)
    original_size = photo.size
    try:
        transpose = _TRANSPOSE.get(photo.getexif().get(_ORIENTATION))
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInput(source.photo, f"corrupt EXIF data ({exc})") from None
    keep_bytes = photo.format == "JPEG" and photo.mode == "RGB" and transpose is None
    label = Image.fromarray(labels)
    if transpose is not None:
        photo, label = photo.transpose(transpose), label.transpose(transpose)
    if photo.mode != "RGB":
        photo = photo.convert("RGB")
    if settings.short_side and min(photo.size) != settings.short_side:
        keep_bytes = False
        size = _short_side_size(photo.size, settings.short_side)
        photo = photo.resize(size, Image.Resampling.BICUBIC)
        label = label.resize(size, Image.Resampling.NEAREST)
    meta = {
        "key": source.key,
        "split": source.split,
        "layout": settings.layout,
        "photo": source.photo.relative_to(settings.dataset).as_posix(),
        "annotation": source.annotation.relative_to(settings.dataset).as_posix(),
        "original_size": list(original_size),
        "size": list(photo.size),
        "scene": source.scene,
    }
    members = {
        PHOTO: data if keep_bytes else _encode(photo, "JPEG", quality=JPEG_QUALITY),
        LABEL: _encode(label, "PNG"),
        "json": json.dumps(meta, sort_keys=True).encode(),
    }
    return members, np.bincount(np.asarray(label).ravel(), minlength=NUM_CLASSES + 1), map_pixels


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(path, f"unreadable ({exc.strerror})") from None


def _decode(path: Path, data: bytes, what: str) -> Image.Image:
    """Fully decode, so truncated files are caught here and not in a training loader."""
    if not data:
        raise BadInput(path, f"empty {what} file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise BadInput(path, f"{what} is not an image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInput(path, f"truncated or corrupt {what} ({exc})") from None
    return image


def _labels(source: Source, settings: Settings, photo_size: tuple[int, int]) -> tuple[np.ndarray, MapPixels]:
    """The annotation as 150-class ids (uint8, H x W), checked against its photo."""
    path = source.annotation
    image = _decode(path, _read(path), "annotation")
    if image.size != photo_size:
        raise BadInput(path, f"annotation size {_wxh(image.size)} differs from photo size {_wxh(photo_size)}")
    try:
        return settings.decoder.decode(image)
    except NotAMap as exc:
        raise BadInput(path, str(exc)) from None


def _short_side_size(size: tuple[int, int], short: int) -> tuple[int, int]:
    width, height = size
    if width <= height:
        return short, max(1, round(height * short / width))
    return max(1, round(width * short / height)), short


def _encode(image: Image.Image, fmt: str, **params: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# ---------------------------------------------------------------- one shard


def write_shard(job: ShardJob) -> tuple[str, int]:
    """Write one shard, its index and its done marker; returns (name, inputs handled).

    Runs in a worker process. Output bytes depend only on the job, never on which worker
    or when, so any ``--workers`` gives identical shards.
    """
    out = job.settings.out
    tar_path, idx_path = out / f"{job.name}.tar", out / f"{job.name}.idx"
    tmp_tar, tmp_idx = _temp(tar_path), _temp(idx_path)
    class_pixels = np.zeros(NUM_CLASSES + 1, dtype=np.int64)
    map_pixels = MapPixels()
    skipped, index_lines = [], []
    try:
        with tarfile.open(tmp_tar, "w") as tar:
            for source in job.sources:
                try:
                    members, counts, decoded = encode_sample(source, job.settings)
                except BadInput as exc:
                    if job.settings.strict:
                        raise
                    skipped.append(exc.record())
                    continue
                index_lines.append(
                    " ".join(_add_member(tar, f"{source.key}.{ext}", data) for ext, data in members.items())
                )
                class_pixels += counts
                map_pixels.add(decoded)
        if index_lines:
            tmp_idx.write_text(f"{IDX_VERSION} {len(index_lines)}\n" + "".join(f"{line}\n" for line in index_lines))
            os.replace(tmp_idx, idx_path)
            os.replace(tmp_tar, tar_path)
    finally:
        for tmp in (tmp_tar, tmp_idx):
            tmp.unlink(missing_ok=True)
    marker = {"samples": len(index_lines), "class_pixels": class_pixels.tolist(), "map_pixels": map_pixels.as_dict(),
              "skipped": skipped}  # fmt: skip
    _write_json(out / STATE_DIR / f"{job.name}.json", marker)
    return job.name, len(job.sources)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> str:
    """Append one file with fixed metadata (reproducible bytes); its entry in wds2idx's format."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))
    data_offset = tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return f"{name.split('.', 1)[1]} {data_offset} {len(data)} {name}"


def _temp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _write_json(path: Path, obj: object) -> None:
    tmp = _temp(path)
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- the run


def _prepare_out(out: Path, fingerprint: dict, overwrite: bool) -> None:
    """Create or reuse ``out``: refuse another run's output unless ``--overwrite`` clears it."""
    out.mkdir(parents=True, exist_ok=True)
    state = out / STATE_DIR
    recorded = state / "options.json"
    ours = [p for p in out.iterdir() if _SHARD_FILE.match(p.name) or p.name == MANIFEST]
    if overwrite:
        for path in ours:
            path.unlink()
        shutil.rmtree(state, ignore_errors=True)
    elif recorded.is_file():
        previous = json.loads(recorded.read_text())
        if previous != fingerprint:
            old, new = previous.get("options", {}), fingerprint["options"]
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)) or ["inputs"]
            raise ShardError(
                f"{out} holds shards made with different {', '.join(changed)}; "
                "pass --overwrite to replace them or choose another --out"
            )
    elif ours:
        raise ShardError(
            f"{out} holds shards of an unknown run; pass --overwrite to replace them or choose another --out"
        )
    state.mkdir(exist_ok=True)
    _remove_temps(out)  # left by a killed run
    _write_json(recorded, fingerprint)


def _remove_temps(out: Path) -> None:
    for tmp in [*out.glob(".*.tmp"), *(out / STATE_DIR).glob(".*.tmp")]:
        tmp.unlink(missing_ok=True)


def _is_done(out: Path, name: str) -> bool:
    marker = out / STATE_DIR / f"{name}.json"
    if not marker.is_file():
        return False
    written = json.loads(marker.read_text())["samples"] > 0
    return not written or ((out / f"{name}.tar").is_file() and (out / f"{name}.idx").is_file())


def _run_jobs(jobs: list[ShardJob], workers: int) -> Iterator[tuple[str, int]]:
    """Unlike ``multiprocessing.Pool``, the executor notices a worker killed from outside (the OOM
    killer) instead of waiting for its result forever."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(write_shard, jobs)
        return
    # The fork server preloads what the workers decode with; this module itself may be __main__
    # (python -m), which multiprocessing imports into each worker under its own name.
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=worker_context("cyclegan.label_maps"),
                               initializer=functools.partial(end_with_owner, os.getpid()))
    try:
        for future in as_completed([pool.submit(write_shard, job) for job in jobs]):
            yield future.result()
    except BrokenProcessPool as exc:
        raise ShardError(
            f"{jobs[0].settings.out}: a sharding worker died (killed, out of memory, or started from a script "
            "without an `if __name__ == '__main__':` guard); run the same command again to resume from the "
            "finished shards"
        ) from exc
    finally:  # a failing or interrupted run lets running shards finish and starts no new one
        pool.shutdown(wait=True, cancel_futures=True)
        _remove_temps(jobs[0].settings.out)


def find_all_sources(args: argparse.Namespace, dataset: Path, layout: str) -> dict[str, tuple[list[Source], list]]:
    """Split name -> (its inputs in path order, the inputs that cannot be used)."""
    if layout != FOLDERS:
        return {split: find_sources(dataset, layout, split) for split in args.splits}
    suffix = args.map_suffix or ""
    training, problems = pair_folders(args.photos, args.segmentations, "training", suffix)
    if args.val_photos is not None:
        return {
            "training": (training, problems),
            "validation": pair_folders(args.val_photos, args.val_segmentations, "validation", suffix),
        }
    training, validation = split_off_validation(training, args.val_fraction, args.seed)
    return {"training": (training, problems), **({"validation": (validation, [])} if validation else {})}


def build_decoder(args: argparse.Namespace, layout: str, sources: Sequence[Source]) -> MapDecoder:
    """How annotations become ids: implied by an ADE20K layout, ``--palette`` for folders (``auto``
    looks at up to ``AUTO_SAMPLE`` maps spread over ``sources`` and says what it chose)."""
    lut = None if args.class_map is None else _class_lut(load_class_map(args.class_map))
    palette = {"scene-parsing": "ids", "full": "full"}.get(layout, args.palette)
    if palette == "auto":
        sample = [sources[i * len(sources) // AUTO_SAMPLE] for i in range(min(AUTO_SAMPLE, len(sources)))]
        images = []
        for source in sample:
            try:
                images.append(_decode(source.annotation, _read(source.annotation), "annotation"))
            except BadInput:
                continue  # reported when its shard is written
        try:
            palette, evidence = guess_palette(images, lut is not None, args.max_unknown)
        except NotAMap as exc:
            raise ShardError(f"{args.segmentations}: {exc}") from None
        print(f"cyclegan-shard: --palette auto chose {palette} ({evidence})")
    if palette == "full" and lut is None:
        raise ShardError(_MISSING_CLASS_MAP)
    if palette != "full" and lut is not None:
        raise ShardError(f"--class-map applies to full-release maps only; these are read as {palette}")
    return MapDecoder(palette, lut, args.snap_tolerance, args.max_unknown)


def shard(args: argparse.Namespace, dataset: Path, layout: str) -> int:
    """Plan every split, write the shards not yet done, then summarise into ``manifest.json``."""
    found = find_all_sources(args, dataset, layout)
    plans, problems = {}, {}
    for split, (sources, problems[split]) in found.items():
        if problems[split] and args.strict:
            raise problems[split][0]
        if not sources and layout == FOLDERS:
            photos, maps = (args.val_photos, args.val_segmentations) if split == "validation" else \
                (args.photos, args.segmentations)  # fmt: skip
            raise ShardError(f"{photos} and {maps}: no usable {split} pairs; {no_pairs_reason(photos, maps)}")
        if not sources:
            raise ShardError(f"{dataset}: no usable {split} photos")
        plans[split] = {
            f"{split}-{i:06d}": tuple(chunk)
            for i, chunk in enumerate(plan_split(sources, split, args.seed, args.limit, args.samples_per_shard))
        }
    decoder = build_decoder(args, layout, next(iter(found.values()))[0])  # training when sharded
    settings = Settings(dataset, layout, args.out, args.short_side, decoder, args.strict)

    lut = decoder.class_lut
    options = {
        "layout": layout,
        "splits": list(plans),
        "class_map_sha256": None if lut is None else hashlib.sha256(lut.tobytes()).hexdigest(),
        "short_side": args.short_side,
        "samples_per_shard": args.samples_per_shard,
        "limit": args.limit,
        "seed": args.seed,
    }
    if layout == FOLDERS:
        options |= {
            "palette": decoder.palette,
            "snap_tolerance": decoder.tolerance,
            "max_unknown": decoder.max_unknown,
            "val_fraction": None if args.val_photos is not None else args.val_fraction,
            "map_suffix": args.map_suffix or "",
        }
    planned = "".join(
        f"{name} {s.key} {s.photo.relative_to(dataset).as_posix()} {s.annotation.relative_to(dataset).as_posix()}\n"
        if layout == FOLDERS
        else f"{name} {s.key} {s.photo.relative_to(dataset).as_posix()}\n"
        for shards in plans.values()
        for name, sources in shards.items()
        for s in sources
    )
    inputs_sha256 = hashlib.sha256(planned.encode()).hexdigest()
    _prepare_out(args.out, {"format": FORMAT, "options": options, "inputs_sha256": inputs_sha256}, args.overwrite)

    jobs = [
        ShardJob(settings, name, sources)
        for shards in plans.values()
        for name, sources in shards.items()
        if not _is_done(args.out, name)
    ]
    with tqdm(total=sum(len(job.sources) for job in jobs), unit="img", disable=None, desc="sharding") as bar:
        for _, handled in _run_jobs(jobs, args.workers):
            bar.update(handled)

    source = {"dataset": str(dataset), "layout": layout}
    if layout == FOLDERS:
        source |= {"photos": str(args.photos), "segmentations": str(args.segmentations), "palette": decoder.palette}
        if args.val_photos is not None:
            source |= {"val_photos": str(args.val_photos), "val_segmentations": str(args.val_segmentations)}
        if decoder.palette == "ade150":
            source["duplicate_colours"] = describe_duplicates()
    manifest = {
        "format": FORMAT,
        "options": options,
        "source": source,
        "splits": {
            split: _split_summary(args.out, list(plans[split]), problems[split], layout == FOLDERS) for split in plans
        },
    }
    _write_json(args.out / MANIFEST, manifest)
    _report(manifest, args.out)
    return 0


def _class_lut(mapping: dict[int, int]) -> np.ndarray:
    """Lookup table over every possible full-ADE20K id; unmapped ids give 0 (unlabeled)."""
    lut = np.zeros(FULL_ID_COUNT, dtype=np.uint8)
    lut[list(mapping)] = list(mapping.values())
    return lut


def _split_summary(out: Path, names: list[str], problems: list[BadInput], folders: bool) -> dict:
    """Manifest entry of one split, from the done markers of its shards. The folders layout also
    records which files had no partner and what decoding the maps did to their pixels."""
    markers = {name: json.loads((out / STATE_DIR / f"{name}.json").read_text()) for name in names}
    written = {name: marker["samples"] for name, marker in markers.items() if marker["samples"]}
    summary = {
        "shards": [f"{name}.tar" for name in written],
        "shard_samples": list(written.values()),
        "samples": sum(written.values()),
        "class_pixels": np.sum([m["class_pixels"] for m in markers.values()], axis=0).tolist(),
        "skipped": [p.record() for p in problems] + [s for m in markers.values() for s in m["skipped"]],
    }
    if folders:
        pixels = MapPixels()
        for marker in markers.values():
            pixels.add(MapPixels(**marker["map_pixels"]))
        summary["map_pixels"] = pixels.as_dict()
        summary["unpaired"] = [str(p.path) for p in problems if p.unpaired]
    return summary


def _report(manifest: dict, out: Path) -> None:
    """Each skipped input on stderr, then one summary line per split and one in all."""
    for split, summary in manifest["splits"].items():
        for item in summary["skipped"]:
            print(f"cyclegan-shard: skipped {item['path']}: {item['reason']}", file=sys.stderr)
        line = (f"{split}: written {summary['samples']} in {len(summary['shards'])} shards, "
                f"skipped {len(summary['skipped'])}")  # fmt: skip
        if summary.get("unpaired"):
            line += f" ({len(summary['unpaired'])} without a partner)"
        if manifest["source"].get("palette") == "ade150":
            line += f"; colour maps: {MapPixels(**summary['map_pixels']).summary()}"
        print(line)
    written = sum(s["samples"] for s in manifest["splits"].values())
    skipped = sum(len(s["skipped"]) for s in manifest["splits"].values())
    print(f"written {written}, skipped {skipped}; manifest: {out / MANIFEST}")


# ---------------------------------------------------------------- command line


def _splits(text: str) -> tuple[str, ...]:
    splits = tuple(s.strip() for s in text.split(","))
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or len(set(splits)) != len(splits):
        raise argparse.ArgumentTypeError(f"expected distinct splits from {','.join(SPLITS)}, got {text!r}")
    return splits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cyclegan-shard",
        description="Turn ADE20K, or two folders of photos and segmentation maps, into pre-shuffled "
        "WebDataset shards, DALI indexes and a manifest.",
    )
    add = parser.add_argument
    add(
        "--root",
        type=Path,
        metavar="DIR",
        help="ADE20K layouts: the dataset folder, or the folder holding it (default: none; "
        "required unless --photos)",
    )
    add("--out", type=Path, required=True, metavar="DIR", help="output folder for shards and manifest.json")
    add(
        "--layout",
        choices=("auto", *LAYOUTS, FOLDERS),
        default="auto",
        help="ADE20K release layout, or folders (implied by --photos) (default: auto)",
    )
    add("--splits", type=_splits, help=f"ADE20K layouts: comma-separated (default: {','.join(SPLITS)})")
    add(
        "--class-map",
        type=Path,
        metavar="FILE",
        help="full-release maps: JSON/CSV map of full class ids to the 150 (default: none; they need one)",
    )
    folders = parser.add_argument_group(
        "folders layout", "two flat folders, photos and segmentation maps paired by file stem (a.jpg with a.png)"
    )
    add = folders.add_argument
    add("--photos", type=Path, metavar="DIR", help="folder of photos, any format PIL reads (default: none)")
    add("--segmentations", type=Path, metavar="DIR", help="folder of segmentation maps, one per photo (default: none)")
    add(
        "--val-fraction",
        type=float_in(0, 1),
        metavar="F",
        help=f"share of the pairs held out as the validation split, chosen by seeded key hash "
        f"(default: {DEFAULT_VAL_FRACTION}; 0 = no validation split)",
    )
    add("--val-photos", type=Path, metavar="DIR", help="validation photos, instead of --val-fraction (default: none)")
    add("--val-segmentations", type=Path, metavar="DIR", help="their segmentation maps (default: none)")
    add(
        "--map-suffix",
        metavar="S",
        help="map names extend photo names by S: with _seg, ADE_train_00000001_seg.png pairs with "
        "ADE_train_00000001.jpg (default: none, the same stem)",
    )
    add(
        "--palette",
        choices=("auto", *PALETTES),
        default="auto",
        help="how the maps encode classes: ade150 colours (the common ADE20K display palette), full (the full "
        "release's R/10*256+G, with --class-map), ids (one channel of class ids), or auto: detect from "
        "a sample of maps and print the choice (default: auto)",
    )
    add(
        "--snap-tolerance",
        type=float_in(0),
        default=DEFAULT_TOLERANCE,
        metavar="D",
        help="ade150: RGB distance within which an off-palette colour (JPEG noise) snaps to a colour present "
        "in the map (default: %(default)s)",
    )
    add(
        "--max-unknown",
        type=float_in(0, 1),
        default=DEFAULT_MAX_UNKNOWN,
        metavar="F",
        help="ade150: skip a map with more than this share of pixels in no palette colour (default: %(default)s)",
    )
    output = parser.add_argument_group("output")
    add = output.add_argument
    add("--short-side", type=positive_int, metavar="N", help="resize to N px on the short side (default: keep)")
    add(
        "--samples-per-shard",
        type=positive_int,
        default=500,
        metavar="N",
        help="samples per tar shard (default: %(default)s)",
    )
    add("--limit", type=positive_int, metavar="N", help="shard the first N shuffled inputs per split (default: all)")
    add("--seed", type=int, default=0, metavar="S", help="shuffle and validation hold-out seed (default: %(default)s)")
    add(
        "--workers",
        type=positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes (default: %(default)s, the CPU count)",
    )
    add("--strict", action="store_true", help="stop at the first bad or unpaired input with exit code 1")
    add("--overwrite", action="store_true", help="replace an output made with other options or inputs")
    return parser


_FOLDER_FLAGS = ("photos", "segmentations", "val_photos", "val_segmentations", "val_fraction", "map_suffix")


def _check_folders(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of the folders layout; resolves its folders and the validation fraction."""
    if args.root is not None or args.splits is not None:
        parser.error("the folders layout takes --photos and --segmentations (and --val-fraction or --val-photos "
                     "with --val-segmentations), not --root or --splits")  # fmt: skip
    if args.photos is None or args.segmentations is None:
        parser.error("the folders layout needs both --photos DIR and --segmentations DIR")
    if (args.val_photos is None) != (args.val_segmentations is None):
        parser.error("--val-photos and --val-segmentations go together")
    if args.val_photos is not None and args.val_fraction is not None:
        parser.error("give --val-fraction or --val-photos/--val-segmentations, not both")
    if args.val_fraction is None:
        args.val_fraction = DEFAULT_VAL_FRACTION
    folders = [name for name in _FOLDER_FLAGS[:4] if getattr(args, name) is not None]
    for name in folders:
        if not getattr(args, name).is_dir():
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: no such folder")
        setattr(args, name, getattr(args, name).resolve())
    if len({getattr(args, name) for name in folders}) < len(folders):
        parser.error("--photos, --segmentations (and the validation folders) must be different folders")
    if args.palette == "full" and args.class_map is None:
        parser.error(_MISSING_CLASS_MAP)


def _check_ade20k(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    given = [f"--{name.replace('_', '-')}" for name in _FOLDER_FLAGS if getattr(args, name) is not None]
    if given:
        parser.error(f"{', '.join(given)}: for --layout folders only")
    if args.palette != "auto":
        parser.error("--palette: for --layout folders only (ADE20K layouts imply their encoding)")
    if args.root is None:
        parser.error("--root DIR is required (or --photos and --segmentations for the folders layout)")
    if not args.root.is_dir():
        parser.error(f"--root {args.root}: no such folder")
    if args.splits is None:
        args.splits = SPLITS
    args.root = args.root.resolve()


def main(argv: list[str] | None = None) -> int:
    """``cyclegan-shard``: 0 when done, 1 on a bad input (--strict) or dataset/output problem, 2 on usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.class_map is not None and not args.class_map.is_file():
        parser.error(f"--class-map {args.class_map}: no such file")
    folders = args.layout == FOLDERS or (args.layout == "auto" and args.photos is not None)
    (_check_folders if folders else _check_ade20k)(parser, args)
    args.out = args.out.resolve()
    try:
        if folders:
            places = [args.photos, args.segmentations, args.val_photos, args.val_segmentations]
            dataset = Path(os.path.commonpath([p for p in places if p is not None]))
            layout = FOLDERS
            print(f"cyclegan-shard: folders layout, photos {args.photos}, maps {args.segmentations}")
        else:
            layout, dataset = detect_layout(args.root, args.layout)
            if layout == "full" and args.class_map is None:
                parser.error(_MISSING_CLASS_MAP)
            if layout != "full" and args.class_map is not None:
                parser.error(f"--class-map applies to the full layout only, found {layout} at {dataset}")
            print(f"cyclegan-shard: {layout} layout at {dataset}")
        return shard(args, dataset, layout)
    except (ShardError, BadInput) as exc:
        print(f"cyclegan-shard: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cyclegan-shard: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
