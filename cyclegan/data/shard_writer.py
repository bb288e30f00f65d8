"""The sharder's one writer, whatever the layout: encodes each input, writes shards and their DALI
indexes in worker processes, keeps a run resumable, and summarises the shards for the manifest.

A shard is a stream of samples: pairs (``KEY.jpg``, ``KEY.label.png``, ``KEY.json``), or, for
unpaired data, photos alone (``KEY.jpg``, ``KEY.json``) or maps alone (``KEY.label.png``,
``KEY.json``). Output bytes depend only on a shard's inputs and the options, never on which worker
writes it or when, so any ``--workers`` gives identical shards.

Choices worth knowing:

* EXIF orientation is applied to a photo and, by the same transpose, to its label: the
  annotation must match the photo's stored pixel grid, and the re-encoded photo carries no
  orientation tag, so DALI (which honours the tag), PIL and torchvision all see one image.
* A photo keeps its original bytes when nothing changes; otherwise (grayscale/CMYK/non-JPEG,
  EXIF rotation, ``--short-side``) it is re-encoded as an RGB JPEG at quality 95.
* ``--short-side N`` scales to exactly N on the short side, up or down (bicubic photo,
  nearest-neighbour label), so a loader's fixed-size crop always fits.
* Each worker writes whole shards under temporary names and renames them when complete, then
  records a done marker in ``.shard-state/``; a re-run keeps recorded shards and writes the rest.
  The run's options and planned inputs are fingerprinted in ``.shard-state/options.json``: a
  re-run with others is refused unless ``--overwrite``.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from cyclegan.ade150 import NUM_CLASSES
from cyclegan.data.catalog import DOMAINS, LABEL, MANIFEST, PHOTO, end_with_owner, worker_context
from cyclegan.data.shard_inputs import SPLITS, BadInput, DomainFile, ShardError, Source
from cyclegan.label_maps import MapDecoder, MapPixels, NotAMap

JPEG_QUALITY = 95
STATE_DIR = ".shard-state"
IDX_VERSION = "v1.2"  # the index version DALI's wds2idx writes

PHOTOS, MAPS = DOMAINS
_SHARD_FILE = re.compile(rf"^({'|'.join(SPLITS)})(-({'|'.join(DOMAINS)}))?-\d{{6}}\.(tar|idx)$")
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

# Truncated files must fail loudly, not decode to grey; PIL's default, pinned against other imports.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class Settings:
    """What every shard job needs besides its inputs."""

    dataset: Path
    layout: str
    out: Path
    short_side: int | None
    decoder: MapDecoder
    strict: bool

    def relative(self, path: Path) -> str:
        """How a sample's json names its source: relative to the dataset folder."""
        return path.relative_to(self.dataset).as_posix()


@dataclass(frozen=True)
class ShardJob:
    """One shard to write: the unit of work of a worker process."""

    settings: Settings
    name: str
    sources: tuple[Source | DomainFile, ...]


# ---------------------------------------------------------------- one sample


Encoded = tuple[dict[str, bytes], np.ndarray, MapPixels]
"""Tar members by extension, class-pixel counts, and what decoding the map did to its pixels."""


def encode(item: Source | DomainFile, settings: Settings) -> Encoded:
    """Validate and encode one input: a pair, or a photo or map of unpaired data."""
    if isinstance(item, Source):
        return encode_sample(item, settings)
    return (encode_photo if item.domain == PHOTOS else encode_map)(item, settings)


def encode_sample(source: Source, settings: Settings) -> Encoded:
    """A photo and its label, upright and scaled alike."""
    data = read_file(source.photo)
    photo = decode_image(source.photo, data, "photo")
    labels, map_pixels = _labels(source.annotation, settings.decoder, "annotation", photo.size)
    jpeg, size, transpose = _stored_photo(source.photo, data, photo, settings.short_side)
    label = Image.fromarray(labels)
    label = _scaled(label if transpose is None else label.transpose(transpose), settings.short_side)
    meta = _meta(source, settings, photo=settings.relative(source.photo),
                 annotation=settings.relative(source.annotation), original_size=list(photo.size), size=list(size),
                 scene=source.scene)  # fmt: skip
    return {PHOTO: jpeg, LABEL: _encode(label, "PNG"), "json": meta}, _class_pixels(label), map_pixels


def encode_photo(file: DomainFile, settings: Settings) -> Encoded:
    """A photo of the photo domain: handled as a paired one, without a label."""
    data = read_file(file.path)
    photo = decode_image(file.path, data, "photo")
    jpeg, size, _ = _stored_photo(file.path, data, photo, settings.short_side)
    meta = _meta(file, settings, domain=PHOTOS, photo=settings.relative(file.path), original_size=list(photo.size),
                 size=list(size), scene=None)  # fmt: skip
    return {PHOTO: jpeg, "json": meta}, np.zeros(NUM_CLASSES + 1, dtype=np.int64), MapPixels()


def encode_map(file: DomainFile, settings: Settings) -> Encoded:
    """A map of the map domain, any size: its class ids, scaled on its own."""
    labels, map_pixels = _labels(file.path, settings.decoder, "segmentation map")
    original = Image.fromarray(labels)
    label = _scaled(original, settings.short_side)
    meta = _meta(file, settings, domain=MAPS, annotation=settings.relative(file.path),
                 original_size=list(original.size), size=list(label.size))  # fmt: skip
    return {LABEL: _encode(label, "PNG"), "json": meta}, _class_pixels(label), map_pixels


def _meta(item: Source | DomainFile, settings: Settings, **fields: object) -> bytes:
    """The json member: key, split, layout and ``fields``, keys sorted."""
    meta = {"key": item.key, "split": item.split, "layout": settings.layout, **fields}
    return json.dumps(meta, sort_keys=True).encode()


def read_file(path: Path) -> bytes:
    """A file's bytes, or a :class:`BadInput` saying why not."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadInput(path, f"unreadable ({exc.strerror})") from None


def decode_image(path: Path, data: bytes, what: str) -> Image.Image:
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


def _labels(
    path: Path, decoder: MapDecoder, what: str, photo_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, MapPixels]:
    """A map as 150-class ids (uint8, H x W), checked against its photo's size when it has one."""
    image = decode_image(path, read_file(path), what)
    if photo_size is not None and image.size != photo_size:
        raise BadInput(path, f"annotation size {_wxh(image.size)} differs from photo size {_wxh(photo_size)}")
    try:
        return decoder.decode(image)
    except NotAMap as exc:
        raise BadInput(path, str(exc)) from None


def _stored_photo(
    path: Path, data: bytes, photo: Image.Image, short_side: int | None
) -> tuple[bytes, tuple[int, int], Image.Transpose | None]:
    """The photo's member (upright, RGB, scaled; its own bytes when none of that changes it), its
    stored size, and the EXIF transpose its label needs too."""
    try:
        transpose = _TRANSPOSE.get(photo.getexif().get(_ORIENTATION))
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInput(path, f"corrupt EXIF data ({exc})") from None
    keep_bytes = photo.format == "JPEG" and photo.mode == "RGB" and transpose is None
    if transpose is not None:
        photo = photo.transpose(transpose)
    if photo.mode != "RGB":
        photo = photo.convert("RGB")
    scaled = _scaled(photo, short_side, Image.Resampling.BICUBIC)
    if keep_bytes and scaled is photo:
        return data, photo.size, transpose
    return _encode(scaled, "JPEG", quality=JPEG_QUALITY), scaled.size, transpose


def _scaled(
    image: Image.Image, short_side: int | None, resample: Image.Resampling = Image.Resampling.NEAREST
) -> Image.Image:
    """``image`` at exactly ``short_side`` on its short side (itself when it is already, or none is asked)."""
    if not short_side or min(image.size) == short_side:
        return image
    width, height = image.size
    if width <= height:
        size = short_side, max(1, round(height * short_side / width))
    else:
        size = max(1, round(width * short_side / height)), short_side
    return image.resize(size, resample)


def _class_pixels(label: Image.Image) -> np.ndarray:
    return np.bincount(np.asarray(label).ravel(), minlength=NUM_CLASSES + 1)


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
                    members, counts, decoded = encode(source, job.settings)
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
    write_json(out / STATE_DIR / f"{job.name}.json", marker)
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


def write_json(path: Path, obj: object) -> None:
    """Write ``obj`` under a temporary name and rename it: a reader never sees half a file."""
    tmp = _temp(path)
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- the run


def prepare_out(out: Path, fingerprint: dict, overwrite: bool) -> None:
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
    write_json(recorded, fingerprint)


def _remove_temps(out: Path) -> None:
    for tmp in [*out.glob(".*.tmp"), *(out / STATE_DIR).glob(".*.tmp")]:
        tmp.unlink(missing_ok=True)


def is_done(out: Path, name: str) -> bool:
    """Whether a shard's marker is recorded and its files are there (none when all its inputs were skipped)."""
    marker = out / STATE_DIR / f"{name}.json"
    if not marker.is_file():
        return False
    written = json.loads(marker.read_text())["samples"] > 0
    return not written or ((out / f"{name}.tar").is_file() and (out / f"{name}.idx").is_file())


def run_jobs(jobs: list[ShardJob], workers: int) -> Iterator[tuple[str, int]]:
    """Unlike ``multiprocessing.Pool``, the executor notices a worker killed from outside (the OOM
    killer) instead of waiting for its result forever."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(write_shard, jobs)
        return
    # The fork server preloads this module, what the workers run and decode with.
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=worker_context(__name__),
                               initializer=functools.partial(end_with_owner, os.getpid()))  # fmt: skip
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


# ---------------------------------------------------------------- the manifest


def summarise(
    out: Path, names: list[str], problems: list[BadInput], *, classes: bool = True, decoded: bool = False,
    partners: bool = False,
) -> dict:  # fmt: skip
    """Manifest entry of one stream, from the done markers of its shards: what it holds, its
    per-class pixel counts (``classes``, when it has labels), what decoding the maps did to their
    pixels (``decoded``), and which files had no partner (``partners``, folders of pairs)."""
    markers = {name: json.loads((out / STATE_DIR / f"{name}.json").read_text()) for name in names}
    written = {name: marker["samples"] for name, marker in markers.items() if marker["samples"]}
    summary: dict = {
        "shards": [f"{name}.tar" for name in written],
        "shard_samples": list(written.values()),
        "samples": sum(written.values()),
    }
    if classes:
        summary["class_pixels"] = np.sum([m["class_pixels"] for m in markers.values()], axis=0).tolist()
    summary["skipped"] = [p.record() for p in problems] + [s for m in markers.values() for s in m["skipped"]]
    if decoded:
        pixels = MapPixels()
        for marker in markers.values():
            pixels.add(MapPixels(**marker["map_pixels"]))
        summary["map_pixels"] = pixels.as_dict()
    if partners:
        summary["unpaired"] = [str(p.path) for p in problems if p.unpaired]
    return summary


def report(manifest: dict, out: Path) -> None:
    """Each skipped input on stderr, then one summary line per split (per domain when unpaired)
    and one in all."""
    streams = []
    for split, entry in manifest["splits"].items():
        unpaired = all(domain in entry for domain in DOMAINS)
        streams += [(f"{split} {domain}", entry[domain]) for domain in DOMAINS] if unpaired else [(split, entry)]
    for name, summary in streams:
        for item in summary["skipped"]:
            print(f"cyclegan-shard: skipped {item['path']}: {item['reason']}", file=sys.stderr)
        line = (f"{name}: written {summary['samples']} in {len(summary['shards'])} shards, "
                f"skipped {len(summary['skipped'])}")  # fmt: skip
        if summary.get("unpaired"):
            line += f" ({len(summary['unpaired'])} without a partner)"
        if "map_pixels" in summary and manifest["source"].get("palette") == "ade150":
            line += f"; colour maps: {MapPixels(**summary['map_pixels']).summary()}"
        print(line)
    written = sum(summary["samples"] for _, summary in streams)
    skipped = sum(len(summary["skipped"]) for _, summary in streams)
    print(f"written {written}, skipped {skipped}; manifest: {out / MANIFEST}")
