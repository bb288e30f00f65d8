"""What the sharder's layout readers hand its writer: the inputs found on disk, their keys, and
the inputs that cannot be used.

A paired input (:class:`Source`) is a photo with its own segmentation map; an unpaired one
(:class:`DomainFile`) is a photo or a map alone, one of the two domains of unpaired data. Each is
keyed by its file stem with dots made "_": readers split a tar member's name at its first dot, so
a key must hold none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("training", "validation")


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
        """How the manifest lists it."""
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
class DomainFile:
    """One photo, or one segmentation map, of unpaired data: no partner in the other domain."""

    split: str
    key: str
    domain: str
    """``photos`` or ``maps`` (:data:`cyclegan.data.catalog.DOMAINS`)."""
    path: Path


def by_key(paths: Iterable[Path]) -> tuple[dict[str, Path], list[BadInput]]:
    """Key -> path, in the order given, for each path whose key no earlier path has; the later
    ones are listed as duplicates (``a.b.jpg`` and ``a_b.jpg`` would be one sample twice)."""
    keys: dict[str, Path] = {}
    duplicates = []
    for path in paths:
        key = path.stem.replace(".", "_")
        if key in keys:
            duplicates.append(BadInput(path, f"duplicate key {key} (also {keys[key]})"))
        else:
            keys[key] = path
    return keys, duplicates


def keyed_pairs(split: str, pairs: Iterable[tuple[Path, Path, str | None]]) -> tuple[list[Source], list[BadInput]]:
    """Sources of (photo, annotation, scene) pairs, keyed by the photo (see :func:`by_key`)."""
    partners = {photo: (annotation, scene) for photo, annotation, scene in pairs}
    keys, duplicates = by_key(partners)
    return [Source(split, key, photo, *partners[photo]) for key, photo in keys.items()], duplicates
