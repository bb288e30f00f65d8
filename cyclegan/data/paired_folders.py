"""The seed project's layout: two flat folders of photos and segmentation maps, paired by file stem
(``a.jpg`` with ``a.png``, or with ``a<map_suffix>.png``; any format PIL reads), and the seeded
hold-out of a validation split from the pairs.

Files without a partner, stems naming two files on one side and files of other types are skipped
and listed; the photos without a map and the maps without a photo are marked ``unpaired``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from cyclegan.data.shard_inputs import BadInput, ShardError, Source, keyed_pairs

FOLDERS = "folders"
DEFAULT_VAL_FRACTION = 0.05


def pair_folders(photos: Path, maps: Path, split: str, map_suffix: str = "") -> tuple[list[Source], list[BadInput]]:
    """The pairs of two folders in stem order, and the files that cannot be used."""
    photo_files, problems = images_by_stem(photos, "photo")
    map_files, map_problems = images_by_stem(maps, "segmentation map")
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
    sources, duplicates = keyed_pairs(split, pairs)
    return sources, problems + duplicates


def no_pairs_reason(photos: Path, maps: Path) -> str:
    """Why two folders gave no pairs, for the error line: a folder of subfolders (the layout reads
    flat folders), an empty one, or names that do not match (with an example from each side, and
    the ``--map-suffix`` that would pair them when map names extend photo names)."""
    for folder in (photos, maps):
        if reason := no_images_reason(folder, FOLDERS):
            return reason
    stems = {folder: images_by_stem(folder, "file")[0] for folder in (photos, maps)}
    photo, annotation = (min(stems[photos].values()), min(stems[maps].values()))
    reason = (f"{len(stems[photos])} photos and {len(stems[maps])} maps, but no file stem in both (photo "
              f"{photo.name}, map {annotation.name}): pairs need the same name before the extension")  # fmt: skip
    extended = [stem for stem in stems[photos] if annotation.stem.startswith(stem) and annotation.stem != stem]
    if extended:
        reason += f", or pass --map-suffix {annotation.stem[len(max(extended, key=len)):]}"
    return reason


def no_images_reason(folder: Path, layout: str) -> str | None:
    """Why ``folder`` gives no images (it is empty, or holds only subfolders: name one), or None
    when it gives some."""
    images, _ = images_by_stem(folder, "file")
    if images:
        return None
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subfolders:
        return (f"{folder} holds no images, only folders ({', '.join(subfolders[:4])}); the {layout} layout "
                f"reads flat folders: name one, e.g. {folder / subfolders[0]}")  # fmt: skip
    return f"{folder} holds no images"


def images_by_stem(folder: Path, what: str) -> tuple[dict[str, Path], list[BadInput]]:
    """Stem -> image file of a flat folder, in name order; files of other types and stems that name
    two images (``a.jpg`` and ``a.png``: which is meant?) are listed instead."""
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
