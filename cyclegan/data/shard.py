"""ADE20K -> WebDataset shards for training: ``cyclegan-shard``.

Reads either public ADE20K layout, two flat folders of photos and segmentation maps paired by
file stem (the seed project's layout), or unpaired data: photos and maps from different sources.
Writes pre-shuffled tar shards with the DALI index beside each, and a ``manifest.json`` for the
whole output::

    # the 150-class SceneParsing release
    cyclegan-shard --root data/ADEChallengeData2016 --out data/shards --short-side 286 --workers 8
    # the full release, mapped to the 150 classes
    cyclegan-shard --root data/ADE20K_2021_17_01 --out data/shards --class-map ade150_map.csv
    # a quick 200-image sample of each split; stop at the first bad input
    cyclegan-shard --root data --out /tmp/shards --limit 200 --strict
    # photos/ and colour maps in segmented/ (any formats PIL reads), 5 % held out for validation
    cyclegan-shard --photos data/images --segmentations data/segmented --out data/shards --val-fraction 0.05
    # unpaired: photos (domain A) and maps (domain B) that do not belong together
    cyclegan-shard --photos data/photos --segmentations data/maps --unpaired --out data/shards
    cyclegan-shard --root data/mydataset --out data/shards   # trainA/ photos, trainB/ maps, [testA/ testB/]
    python -m cyclegan.data.shard --help

Paired data: per split ``{split}-000000.tar`` with ``{split}-000000.idx``; each sample is three
tar members (readers split the extension at the first dot, so keys, the photo's file stem with
any dots turned into "_", contain none):

* ``KEY.jpg``: the RGB photo; its original bytes when nothing changes, else re-encoded at
  quality 95 (grayscale/CMYK/non-JPEG photos, EXIF rotation, ``--short-side``).
* ``KEY.label.png``: 8-bit single-channel class ids (0 = unlabeled, 1..150), photo-sized.
* ``KEY.json``: key, split, layout, source paths relative to the dataset folder, original
  and stored size as [width, height], scene category (or null).

Unpaired data (``--unpaired``). Domain A is the photos, domain B the segmentation maps (CycleGAN's
``trainA/``, ``trainB/``). The training split becomes two streams, each shuffled with its own seed
and cut by ``--limit`` on its own: ``training-photos-*.tar`` (``KEY.jpg`` + ``KEY.json``) and
``training-maps-*.tar`` (``KEY.label.png`` + ``KEY.json``), maps of any size. A key may be in both
domains. Validation is scored against ground truth, so it stays paired: ``--val-photos`` with
``--val-segmentations``, or ``testA/`` with ``testB/``, or none (``--val-fraction`` is refused).
The manifest's format is ``cyclegan-shard/2``, with ``photos`` and ``maps`` entries per
unpaired split; paired outputs keep ``cyclegan-shard/1``.

The layouts are read by :mod:`~cyclegan.data.ade20k_releases`, :mod:`~cyclegan.data.paired_folders`
and :mod:`~cyclegan.data.unpaired_folders`, which say what they accept and skip (the full
release's ``--class-map``, ``--map-suffix``); :mod:`~cyclegan.data.shard_writer` writes every layout's
shards, and says how photos and labels are stored and how a run resumes. ``--palette`` says how
folder maps encode classes (``ade150`` colours, ``full`` R / 10 * 256 + G with a class map, ``ids``;
``auto`` looks at a sample of the maps and prints its choice), and :mod:`cyclegan.label_maps`
decodes them, snapping JPEG noise and skipping maps with more than ``--max-unknown`` pixels in no
palette colour.

Inputs are shuffled (seeded, per stream) and cut into shards before they are decoded; a skipped
input leaves its shard one sample short. ``--limit`` takes the first N of the shuffled list, so a
few may be skipped from those N.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cyclegan.arguments import float_in, positive_int
from cyclegan.data.ade20k_releases import (
    LAYOUTS,
    MISSING_CLASS_MAP,
    class_lut,
    detect_layout,
    find_sources,
    load_class_map,
)
from cyclegan.data.catalog import DOMAINS, MANIFEST, PAIRED_FORMAT, UNPAIRED_FORMAT
from cyclegan.data.paired_folders import (
    DEFAULT_VAL_FRACTION,
    FOLDERS,
    no_images_reason,
    no_pairs_reason,
    pair_folders,
    split_off_validation,
)
from cyclegan.data.shard_inputs import SPLITS, BadInput, DomainFile, ShardError, Source
from cyclegan.data.shard_writer import (
    Settings,
    ShardJob,
    _add_member,  # noqa: F401  (re-exported: tests/test_loader.py imports it from here)
    decode_image,
    is_done,
    prepare_out,
    read_file,
    report,
    run_jobs,
    summarise,
    write_json,
)
from cyclegan.data.unpaired_folders import UNPAIRED, domain_files, domain_folders, holds_domains
from cyclegan.label_maps import (
    DEFAULT_MAX_UNKNOWN,
    DEFAULT_TOLERANCE,
    PALETTES,
    MapDecoder,
    NotAMap,
    describe_duplicates,
    guess_palette,
)

AUTO_SAMPLE = 16  # maps --palette auto looks at
PHOTOS, MAPS = DOMAINS


@dataclass(frozen=True)
class Stream:
    """The inputs of one stream of shards: a paired split, or one domain of an unpaired split."""

    split: str
    domain: str | None
    inputs: list[Source] | list[DomainFile]
    problems: list[BadInput]

    @property
    def name(self) -> str:
        """What its shard files start with: ``training``, or ``training-photos`` when unpaired."""
        return self.split if self.domain is None else f"{self.split}-{self.domain}"

    def maps(self) -> list[Path]:
        """Its segmentation maps (what ``--palette auto`` looks at)."""
        return [item.annotation if isinstance(item, Source) else item.path for item in self.inputs]


# ---------------------------------------------------------------- the plan


def find_streams(args: argparse.Namespace, dataset: Path, layout: str) -> list[Stream]:
    """Every stream's inputs in path order, and the inputs it cannot use."""
    if layout in LAYOUTS:
        return [Stream(split, None, *find_sources(dataset, layout, split)) for split in args.splits]
    suffix = args.map_suffix or ""
    if layout == UNPAIRED:
        streams = [Stream("training", domain, *domain_files(folder, domain, "training"))
                   for domain, folder in zip(DOMAINS, (args.photos, args.segmentations), strict=True)]  # fmt: skip
    else:
        training, problems = pair_folders(args.photos, args.segmentations, "training", suffix)
        validation: list[Source] = []
        if args.val_photos is None:
            training, validation = split_off_validation(training, args.val_fraction, args.seed)
        streams = [Stream("training", None, training, problems)]
        if validation:
            streams.append(Stream("validation", None, validation, []))
    if args.val_photos is not None:
        pairs = pair_folders(args.val_photos, args.val_segmentations, "validation", suffix)
        streams.append(Stream("validation", None, *pairs))
    return streams


def plan_stream(
    inputs: Sequence[Source | DomainFile], stream: str, seed: int, limit: int | None, per_shard: int
) -> list[list[Source | DomainFile]]:
    """Seeded shuffle of the path-sorted inputs, cut to ``limit``, chunked into shards.

    GPU readers only shuffle inside a buffer, so the order across shards must already be
    random; seeding by stream keeps one stream's plan independent of which others there are.
    """
    order = list(inputs)
    random.Random(f"{stream}:{seed}").shuffle(order)
    order = order[:limit]
    return [order[start : start + per_shard] for start in range(0, len(order), per_shard)]


def build_decoder(args: argparse.Namespace, layout: str, maps: Sequence[Path]) -> MapDecoder:
    """How annotations become ids: implied by an ADE20K layout, ``--palette`` for folders (``auto``
    looks at up to ``AUTO_SAMPLE`` of ``maps``, spread over them, and says what it chose)."""
    lut = None if args.class_map is None else class_lut(load_class_map(args.class_map))
    palette = {"scene-parsing": "ids", "full": "full"}.get(layout, args.palette)
    if palette == "auto":
        sample = [maps[i * len(maps) // AUTO_SAMPLE] for i in range(min(AUTO_SAMPLE, len(maps)))]
        images = []
        for path in sample:
            try:
                images.append(decode_image(path, read_file(path), "annotation"))
            except BadInput:
                continue  # reported when its shard is written
        try:
            palette, evidence = guess_palette(images, lut is not None, args.max_unknown)
        except NotAMap as exc:
            raise ShardError(f"{args.segmentations}: {exc}") from None
        print(f"cyclegan-shard: --palette auto chose {palette} ({evidence})")
    if palette == "full" and lut is None:
        raise ShardError(MISSING_CLASS_MAP)
    if palette != "full" and lut is not None:
        raise ShardError(f"--class-map applies to full-release maps only; these are read as {palette}")
    return MapDecoder(palette, lut, args.snap_tolerance, args.max_unknown)


def shard(args: argparse.Namespace, dataset: Path, layout: str) -> int:
    """Plan every stream, write the shards not yet done, then summarise into ``manifest.json``."""
    streams = find_streams(args, dataset, layout)
    plans = {}
    for stream in streams:
        if stream.problems and args.strict:
            raise stream.problems[0]
        if not stream.inputs:
            raise ShardError(_nothing_to_shard(args, dataset, layout, stream))
        chunks = plan_stream(stream.inputs, stream.name, args.seed, args.limit, args.samples_per_shard)
        plans[stream.name] = {f"{stream.name}-{i:06d}": tuple(chunk) for i, chunk in enumerate(chunks)}
    decoder = build_decoder(args, layout, next(s for s in streams if s.domain != PHOTOS).maps())  # training's
    settings = Settings(dataset, layout, args.out, args.short_side, decoder, args.strict)

    options = _options(args, layout, decoder, streams)
    planned = "".join(
        _planned(name, item, dataset, layout)
        for shards in plans.values()
        for name, items in shards.items()
        for item in items
    )
    fmt = UNPAIRED_FORMAT if layout == UNPAIRED else PAIRED_FORMAT
    inputs_sha256 = hashlib.sha256(planned.encode()).hexdigest()
    prepare_out(args.out, {"format": fmt, "options": options, "inputs_sha256": inputs_sha256}, args.overwrite)

    jobs = [
        ShardJob(settings, name, items)
        for shards in plans.values()
        for name, items in shards.items()
        if not is_done(args.out, name)
    ]
    with tqdm(total=sum(len(job.sources) for job in jobs), unit="img", disable=None, desc="sharding") as bar:
        for _, handled in run_jobs(jobs, args.workers):
            bar.update(handled)

    folders = layout in (FOLDERS, UNPAIRED)
    splits: dict[str, dict] = {}
    for stream in streams:
        names = list(plans[stream.name])
        if stream.domain is None:
            splits[stream.split] = summarise(args.out, names, stream.problems, decoded=folders, partners=folders)
        else:
            maps = stream.domain == MAPS
            splits.setdefault(stream.split, {})[stream.domain] = summarise(
                args.out, names, stream.problems, classes=maps, decoded=maps
            )
    manifest = {"format": fmt, "options": options, "source": _source(args, dataset, layout, decoder), "splits": splits}
    write_json(args.out / MANIFEST, manifest)
    report(manifest, args.out)
    return 0


def _nothing_to_shard(args: argparse.Namespace, dataset: Path, layout: str, stream: Stream) -> str:
    """The error line for a stream without inputs, naming the folder and why."""
    if stream.domain is not None:
        folder = args.photos if stream.domain == PHOTOS else args.segmentations
        return f"no {stream.domain} to shard: {no_images_reason(folder, UNPAIRED)}"
    if layout in (FOLDERS, UNPAIRED):
        photos, maps = (args.val_photos, args.val_segmentations) if stream.split == "validation" else \
            (args.photos, args.segmentations)  # fmt: skip
        return f"{photos} and {maps}: no usable {stream.split} pairs; {no_pairs_reason(photos, maps)}"
    return f"{dataset}: no usable {stream.split} photos"


def _options(args: argparse.Namespace, layout: str, decoder: MapDecoder, streams: list[Stream]) -> dict:
    """What fingerprints the run (with its planned inputs): a re-run with others is refused."""
    lut = decoder.class_lut
    options = {
        "layout": layout,
        "splits": list(dict.fromkeys(stream.split for stream in streams)),
        "class_map_sha256": None if lut is None else hashlib.sha256(lut.tobytes()).hexdigest(),
        "short_side": args.short_side,
        "samples_per_shard": args.samples_per_shard,
        "limit": args.limit,
        "seed": args.seed,
    }
    if layout in (FOLDERS, UNPAIRED):
        options |= {"palette": decoder.palette, "snap_tolerance": decoder.tolerance, "max_unknown": decoder.max_unknown}
        if layout == FOLDERS:
            options["val_fraction"] = None if args.val_photos is not None else args.val_fraction
        options["map_suffix"] = args.map_suffix or ""
    return options


def _planned(name: str, item: Source | DomainFile, dataset: Path, layout: str) -> str:
    """One input's line in the fingerprint: its shard, key and source paths."""
    if isinstance(item, DomainFile):
        paths = [item.path]
    else:
        paths = [item.photo, item.annotation] if layout in (FOLDERS, UNPAIRED) else [item.photo]
    return " ".join([name, item.key, *(path.relative_to(dataset).as_posix() for path in paths)]) + "\n"


def _source(args: argparse.Namespace, dataset: Path, layout: str, decoder: MapDecoder) -> dict:
    """The manifest's record of where the inputs came from."""
    source = {"dataset": str(dataset), "layout": layout}
    if layout in (FOLDERS, UNPAIRED):
        source |= {"photos": str(args.photos), "segmentations": str(args.segmentations), "palette": decoder.palette}
        if args.val_photos is not None:
            source |= {"val_photos": str(args.val_photos), "val_segmentations": str(args.val_segmentations)}
        if decoder.palette == "ade150":
            source["duplicate_colours"] = describe_duplicates()
    return source


# ---------------------------------------------------------------- command line


def _splits(text: str) -> tuple[str, ...]:
    splits = tuple(s.strip() for s in text.split(","))
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or len(set(splits)) != len(splits):
        raise argparse.ArgumentTypeError(f"expected distinct splits from {','.join(SPLITS)}, got {text!r}")
    return splits


def build_parser() -> argparse.ArgumentParser:
    """The ``cyclegan-shard`` command line."""
    parser = argparse.ArgumentParser(
        prog="cyclegan-shard",
        description="Turn ADE20K, two folders of photos and segmentation maps, or unpaired photos and maps into "
        "pre-shuffled WebDataset shards, DALI indexes and a manifest.",
    )
    add = parser.add_argument
    add(
        "--root",
        type=Path,
        metavar="DIR",
        help="ADE20K layouts: the dataset folder, or the folder holding it; unpaired: a folder holding trainA/ "
        "(photos) and trainB/ (maps), and testA/ testB/ (validation pairs) if any (default: none; required "
        "unless --photos)",
    )
    add("--out", type=Path, required=True, metavar="DIR", help="output folder for shards and manifest.json")
    add(
        "--layout",
        choices=("auto", *LAYOUTS, FOLDERS, UNPAIRED),
        default="auto",
        help="ADE20K release layout, folders (implied by --photos), or unpaired (implied by --unpaired, and by a "
        "--root holding trainA/ and trainB/) (default: auto)",
    )
    add("--splits", type=_splits, help=f"ADE20K layouts: comma-separated (default: {','.join(SPLITS)})")
    add(
        "--class-map",
        type=Path,
        metavar="FILE",
        help="full-release maps: JSON/CSV map of full class ids to the 150 (default: none; they need one)",
    )
    folders = parser.add_argument_group(
        "folders and unpaired layouts",
        "two flat folders of photos and segmentation maps: paired by file stem (a.jpg with a.png), or with "
        "--unpaired two domains from different sources, A = photos, B = maps",
    )
    add = folders.add_argument
    add("--photos", type=Path, metavar="DIR", help="folder of photos (domain A), any format PIL reads (default: none)")
    add(
        "--segmentations",
        type=Path,
        metavar="DIR",
        help="folder of segmentation maps (domain B): one per photo, or any maps with --unpaired (default: none)",
    )
    add(
        "--unpaired",
        action="store_true",
        help="the photos and maps do not belong together: shard each domain on its own (training-photos-*, "
        "training-maps-*); --layout unpaired. Validation stays paired (--val-photos/--val-segmentations)",
    )
    add(
        "--val-fraction",
        type=float_in(0, 1),
        metavar="F",
        help=f"share of the pairs held out as the validation split, chosen by seeded key hash "
        f"(default: {DEFAULT_VAL_FRACTION}; 0 = no validation split; not with --unpaired: no pairs to hold out)",
    )
    add(
        "--val-photos",
        type=Path,
        metavar="DIR",
        help="validation photos, paired with their maps by stem, also when unpaired; instead of --val-fraction "
        "(default: none)",
    )
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
    add(
        "--limit",
        type=positive_int,
        metavar="N",
        help="shard the first N shuffled inputs per split, per domain when unpaired (default: all)",
    )
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


def _chosen_layout(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The folders or unpaired layout as the flags say, or None: an ADE20K release under --root."""
    if args.unpaired and args.layout not in ("auto", UNPAIRED):
        parser.error(f"--unpaired is --layout unpaired, not --layout {args.layout}")
    if args.unpaired:
        return UNPAIRED
    if args.layout in (FOLDERS, UNPAIRED):
        return args.layout
    if args.layout == "auto" and args.photos is not None:
        return FOLDERS
    if args.layout == "auto" and args.root is not None and args.root.is_dir() and holds_domains(args.root):
        return UNPAIRED
    return None


def _check_folder_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, layout: str) -> None:
    """Usage errors of the folders given to the folders or unpaired layout; resolves them."""
    if args.photos is None or args.segmentations is None:
        parser.error(f"the {layout} layout needs both --photos DIR and --segmentations DIR")
    if (args.val_photos is None) != (args.val_segmentations is None):
        parser.error("--val-photos and --val-segmentations go together")
    folders = [name for name in _FOLDER_FLAGS[:4] if getattr(args, name) is not None]
    for name in folders:
        if not getattr(args, name).is_dir():
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: no such folder")
        setattr(args, name, getattr(args, name).resolve())
    if len({getattr(args, name) for name in folders}) < len(folders):
        parser.error("--photos, --segmentations (and the validation folders) must be different folders")


def _check_folders(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of the folders layout; resolves its folders and the validation fraction."""
    if args.root is not None or args.splits is not None:
        parser.error("the folders layout takes --photos and --segmentations (and --val-fraction or --val-photos "
                     "with --val-segmentations), not --root or --splits")  # fmt: skip
    _check_folder_flags(parser, args, FOLDERS)
    if args.val_photos is not None and args.val_fraction is not None:
        parser.error("give --val-fraction or --val-photos/--val-segmentations, not both")
    if args.val_fraction is None:
        args.val_fraction = DEFAULT_VAL_FRACTION


def _check_unpaired(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors of the unpaired layout: its folders from --photos and --segmentations, or a --root."""
    if args.val_fraction is not None:
        parser.error("--val-fraction: unpaired photos and maps have no pairs to hold out; give paired "
                     "--val-photos and --val-segmentations (or testA/ and testB/ under --root), or none")  # fmt: skip
    if args.splits is not None:
        parser.error("--splits: for the ADE20K layouts only")
    if args.root is None:
        _check_folder_flags(parser, args, UNPAIRED)
        return
    given = [f"--{name.replace('_', '-')}" for name in _FOLDER_FLAGS[:4] if getattr(args, name) is not None]
    if given:
        parser.error(f"give --root (trainA/, trainB/, testA/, testB/) or {', '.join(given)}, not both")
    if not args.root.is_dir():
        parser.error(f"--root {args.root}: no such folder")
    args.root = args.root.resolve()


def _check_ade20k(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    given = [f"--{name.replace('_', '-')}" for name in _FOLDER_FLAGS if getattr(args, name) is not None]
    if given:
        parser.error(f"{', '.join(given)}: for --layout folders or unpaired only")
    if args.palette != "auto":
        parser.error("--palette: for --layout folders or unpaired only (ADE20K layouts imply their encoding)")
    if args.root is None:
        parser.error("--root DIR is required (or --photos and --segmentations for the folders layout)")
    if not args.root.is_dir():
        parser.error(f"--root {args.root}: no such folder")
    if args.splits is None:
        args.splits = SPLITS
    args.root = args.root.resolve()


def _folders_line(args: argparse.Namespace, layout: str) -> str:
    """What the run reads, said before it starts."""
    if layout == FOLDERS:
        return f"cyclegan-shard: folders layout, photos {args.photos}, maps {args.segmentations}"
    validation = "no validation split" if args.val_photos is None else \
        f"validation pairs {args.val_photos} + {args.val_segmentations}"  # fmt: skip
    return f"cyclegan-shard: unpaired layout, photos (A) {args.photos}, maps (B) {args.segmentations}; {validation}"


def main(argv: list[str] | None = None) -> int:
    """``cyclegan-shard``: 0 when done, 1 on a bad input (--strict) or dataset/output problem, 2 on usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.class_map is not None and not args.class_map.is_file():
        parser.error(f"--class-map {args.class_map}: no such file")
    layout = _chosen_layout(parser, args)
    {FOLDERS: _check_folders, UNPAIRED: _check_unpaired, None: _check_ade20k}[layout](parser, args)
    if layout is not None and args.palette == "full" and args.class_map is None:
        parser.error(MISSING_CLASS_MAP)
    args.out = args.out.resolve()
    try:
        if layout == UNPAIRED and args.root is not None:
            args.photos, args.segmentations, args.val_photos, args.val_segmentations = domain_folders(args.root)
        if layout is not None:
            places = [args.photos, args.segmentations, args.val_photos, args.val_segmentations]
            dataset = Path(os.path.commonpath([p for p in places if p is not None]))
            print(_folders_line(args, layout))
        else:
            layout, dataset = detect_layout(args.root, args.layout)
            if layout == "full" and args.class_map is None:
                parser.error(MISSING_CLASS_MAP)
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
