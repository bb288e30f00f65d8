"""Unpaired data: photos and segmentation maps from different sources, neither naming the other.

Each domain is a flat folder of images (any format PIL reads): domain A the photos, domain B the
segmentation maps, as in CycleGAN's own dataset layout, a folder holding ``trainA/`` and
``trainB/``. Its ``testA/`` and ``testB/``, when there, are the validation split, which stays
paired by file stem: it is scored against ground truth, each photo against its own map.
"""

from __future__ import annotations

from pathlib import Path

from cyclegan.data.catalog import DOMAINS
from cyclegan.data.paired_folders import images_by_stem
from cyclegan.data.shard_inputs import BadInput, DomainFile, ShardError, by_key

UNPAIRED = "unpaired"
TRAIN_FOLDERS = ("trainA", "trainB")
"""Photos (A) and segmentation maps (B) of the training split."""
TEST_FOLDERS = ("testA", "testB")
"""Photos (A) and their own maps (B), paired by file stem: the validation split."""

_WHAT = dict(zip(DOMAINS, ("photo", "segmentation map"), strict=True))


def domain_files(folder: Path, domain: str, split: str) -> tuple[list[DomainFile], list[BadInput]]:
    """The images of one domain in name order, and the files that cannot be used: files of other
    types, stems naming two images, and keys another file already has."""
    files, problems = images_by_stem(folder, _WHAT[domain])
    keys, duplicates = by_key(files.values())
    return [DomainFile(split, key, domain, path) for key, path in keys.items()], problems + duplicates


def holds_domains(root: Path) -> bool:
    """Whether ``root`` is in CycleGAN's layout (it holds ``trainA/`` and ``trainB/``)."""
    return all((root / name).is_dir() for name in TRAIN_FOLDERS)


def domain_folders(root: Path) -> tuple[Path, Path, Path | None, Path | None]:
    """(photos, maps, validation photos, validation maps) of a folder in CycleGAN's layout; no
    validation folders when it has no ``testA/`` and ``testB/``."""
    if not holds_domains(root):
        raise ShardError(f"{root}: no {'/ and '.join(TRAIN_FOLDERS)}/ folders (photos and segmentation maps)")
    tests = [root / name for name in TEST_FOLDERS if (root / name).is_dir()]
    if len(tests) == 1:
        (found,) = tests
        other = next(name for name in TEST_FOLDERS if name != found.name)
        raise ShardError(f"{found}: no {other}/ beside it; validation pairs testA/ photos with testB/ maps by name")
    photos, maps = (root / name for name in TRAIN_FOLDERS)
    val_photos, val_maps = tests or (None, None)
    return photos, maps, val_photos, val_maps
