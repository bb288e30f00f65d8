"""Translate images with an exported generator: photo -> segmentation map, or map -> photo.

The seed's command works as written:

    cyclegan-generate --image_file test.jpg --file_width 256 --file_height 256 --channels 3 \\
        --dir_to_generator out/real2seg_gen_50.pt --save_directory out/translated

and the same flags have newer names (``--input``, ``--width``, ``--height``, ``--generator``,
``--output-dir``); inputs can be files, folders or quoted globs, translated in batches on
the GPU when there is one:

    cyclegan-generate --input photos/ 'more/*.jpg' --generator runs/ade20k/real2seg_gen_200.pt \\
        --output-dir out/seg --batch-size 16
    cyclegan-generate --input maps/ --generator runs/ade20k/seg2real_gen_200.pt --output-dir out/photos \\
        --output-size model

``--generator`` may also be an ``.onnx`` file written by ``cyclegan-export``: the same flags and
outputs, run by onnxruntime. The direction comes from the generator file. Each input is resized to ``--width`` x
``--height`` (rounded to multiples of 4, which the generator needs) and, with the default
``--output-size input``, the result is resized back to the input's size.

* photo -> seg writes ``<stem>_seg.png`` (the map in the training palette, so it can be
  fed back in) and ``<stem>_ids.png`` (8-bit class ids 0..150) side by side.
* seg -> photo reads a class-id PNG (1 channel, values 0..150) or a coloured map (RGB) and
  writes ``<stem>_photo.png``.
* ``--palette`` names the colours: ``train`` (what the generators draw in), ``ade150`` (the common
  ADE20K display palette, the colours of a seed user's ``segmented/`` folder: ``_seg.png`` is drawn
  in it and coloured maps are decoded from it as ``cyclegan-shard`` does, JPEG noise snapped; see
  :mod:`cyclegan.label_maps`), or the default ``auto``: write train, and read each coloured map in
  whichever of the two more of its pixels lie on (see :func:`read_coloured_map`); the summary
  line counts the maps read in each.

Both segmentation modes (``model.seg_mode``) work from the file alone, which records its mode:
a ``classes`` generator's ids are its argmax and its maps are fed in as one-hot class maps; an
``rgb`` one's colours are decoded by nearest palette colour and maps are fed in as colours.

Bad input (missing or unreadable file, wrong channel count, a file that is not a
generator) ends with one line ``cyclegan-generate: error: <file>: <what>`` and exit code 2.
Files, channels and output names are all checked before anything is written; only pixel
data that turns out corrupt while decoding stops a run part way. Existing outputs are
never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cyclegan.arguments import run_reporting_errors
from cyclegan.checkpoint import CheckpointError
from cyclegan.inference import GIB, InputError, load_translator, pick_device
from cyclegan.label_maps import (
    DEFAULT_MAX_UNKNOWN,
    DEFAULT_TOLERANCE,
    MapDecoder,
    NotAMap,
    on_palette_share,
    snap_colours,
)
from cyclegan.palette import DISPLAY_PALETTE, NUM_CLASSES, TRAIN_PALETTE, rgb_to_ids
from cyclegan.seg_encoding import mode_of_export

PROG = "cyclegan-generate"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# Photos: anything colour or grey without alpha; PIL converts these to RGB faithfully.
PHOTO_MODES = ("RGB", "L", "P", "CMYK", "YCbCr")
# Segmentation maps: one channel of class ids, or three channels of training colours.
ID_MODES = ("L", "P", "I", "I;16")
OUTPUT_SUFFIXES = {"photo": ("_seg.png", "_ids.png"), "seg": ("_photo.png",)}
PALETTES = {"train": TRAIN_PALETTE, "ade150": DISPLAY_PALETTE}
_TRAIN_COLOURS = TRAIN_PALETTE.numpy().astype(np.int64)


def round_to_4(value: int, name: str) -> int:
    """Model-input side rounded to the nearest multiple of 4 (at least 4), with a note if changed."""
    rounded = max(4, 4 * round(value / 4))
    if rounded != value:
        print(
            f"{PROG}: note: {name} {value} rounded to {rounded} (the generator needs multiples of 4)", file=sys.stderr
        )
    return rounded


def find_inputs(specs: list[str]) -> list[Path]:
    """Files named, image files inside folders named (not recursive), and glob matches, in order."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists() or not glob.has_magic(spec):
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
            if not matches:
                raise InputError(f"{spec}: no files match")
            found += matches
    if not found:
        raise InputError(f"{' '.join(specs)}: no image files found")
    return found


def open_image(path: Path) -> Image.Image:
    """Open (header only) with one-line errors; pixels are decoded later, on ``load()``."""
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (PIL cannot identify it)") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def check_mode(path: Path, image: Image.Image, domain: str) -> None:
    """Refuse images whose channels the generator's input domain cannot take."""
    if image.mode not in (PHOTO_MODES if domain == "photo" else (*ID_MODES, "RGB")):
        want = (
            "a photo needs 3 colour channels (or 1 grey channel), without alpha"
            if domain == "photo"
            else "a segmentation map is a 1-channel class-id PNG or a 3-channel coloured map"
        )
        raise InputError(f"{path}: has {len(image.getbands())} channels ({image.mode}); {want}")


def read_input(
    path: Path, domain: str, palette: str = "auto", seen: dict[str, int] | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode one checked input -> uint8 RGB photo (3, H, W) or int64 class ids (H, W), and its (W, H).
    ``seen`` counts the palette each coloured map was read in, for the summary line."""
    with open_image(path) as image:
        try:
            image.load()
            array = np.array(image.convert("RGB") if domain == "photo" else image)
            if domain == "seg" and array.ndim == 3:
                ids, read_as = read_coloured_map(image, array[..., :3], palette)
                if seen is not None:
                    seen[read_as] = seen.get(read_as, 0) + 1
                return torch.from_numpy(ids.astype(np.int64)), image.size
        except (OSError, Image.DecompressionBombError) as e:
            raise InputError(f"{path}: cannot decode image ({e})") from None
        except NotAMap as e:
            raise InputError(f"{path}: {e}") from None
        size = image.size
    if domain == "photo":
        return torch.from_numpy(array).permute(2, 0, 1), size
    if array.min() < 0 or array.max() > NUM_CLASSES:
        raise InputError(f"{path}: class ids range over {array.min()}..{array.max()}, expected 0..{NUM_CLASSES}")
    return torch.from_numpy(array.astype(np.int64)), size


def read_coloured_map(image: Image.Image, rgb: np.ndarray, palette: str) -> tuple[np.ndarray, str]:
    """Class ids of a coloured map, and the palette they were read in (``palette``, or auto's choice).

    ade150 maps decode as ``cyclegan-shard`` decodes them, or raise :class:`NotAMap` (under auto
    such a map is read as train instead). A JPEG in the training palette is snapped the same way
    (its chroma bleeds across region edges, which nearest colour gets wrong); any other train map,
    or a JPEG that does not snap, takes each pixel's nearest training colour, so a slightly-off
    picture, such as a network's raw output, still decodes."""
    read_as = closer_palette(rgb) if palette == "auto" else palette
    if read_as == "ade150":
        try:
            return MapDecoder("ade150").decode(image)[0], "ade150"
        except NotAMap:
            if palette == "ade150":
                raise
    if image.format == "JPEG":
        ids, pixels, _ = snap_colours(rgb, _TRAIN_COLOURS, DEFAULT_TOLERANCE)
        if pixels.unknown <= DEFAULT_MAX_UNKNOWN * pixels.pixels:
            return ids, "train"
    return rgb_to_ids(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)).numpy(), "train"


def closer_palette(rgb: np.ndarray) -> str:
    """``--palette auto`` for one coloured map: ade150 when more of its pixels lie on that palette
    (within ``ON_PALETTE_RADIUS``) than on the training palette, else train. A tie, such as a map
    whose few colours are in both palettes, goes to the generators' own palette."""
    shares = {name: on_palette_share(rgb, colours.numpy()) for name, colours in PALETTES.items()}
    return "ade150" if shares["ade150"] > shares["train"] else "train"


def resize(image: torch.Tensor, size: tuple[int, int], ids: bool) -> torch.Tensor:
    """uint8 (3, H, W) or ids (H, W) to ``size`` = (W, H): nearest for ids, bicubic for pictures."""
    if tuple(image.shape[-1:-3:-1]) == size:
        return image
    array = image.to(torch.uint8).numpy() if ids else image.permute(1, 2, 0).numpy()
    out = Image.fromarray(array).resize(size, Image.Resampling.NEAREST if ids else Image.Resampling.BICUBIC)
    out = torch.from_numpy(np.asarray(out).copy())
    return out.long() if ids else out.permute(2, 0, 1)


def output_paths(inputs: list[Path], domain: str, out_dir: Path, overwrite: bool) -> list[tuple[Path, ...]]:
    """Where each input's results go; refuses collisions and (without ``overwrite``) existing files."""
    plan = [tuple(out_dir / f"{p.stem}{suffix}" for suffix in OUTPUT_SUFFIXES[domain]) for p in inputs]
    owner: dict[Path, Path] = {}
    for source, targets in zip(inputs, plan, strict=True):
        for target in targets:
            if target in owner:
                raise InputError(f"{source}: would write {target.name}, as {owner[target]} does (same file stem)")
            owner[target] = source
            if target.exists() and not overwrite:
                raise InputError(f"{target}: already exists (pass --overwrite to replace it)")
    return plan


def save_outputs(
    output: torch.Tensor, domain: str, size: tuple[int, int], targets: tuple[Path, ...], palette: str = "auto"
) -> None:
    """Write one result (class ids (H, W) or a uint8 photo (3, H, W), on the CPU) at ``size`` = (W, H)."""
    if domain == "photo":  # the map was decoded to ids; draw them in the chosen palette
        ids = resize(output, size, ids=True)
        seg_path, ids_path = targets
        Image.fromarray(PALETTES.get(palette, TRAIN_PALETTE)[ids].numpy()).save(seg_path)
        Image.fromarray(ids.to(torch.uint8).numpy()).save(ids_path)
    else:
        Image.fromarray(resize(output, size, ids=False).permute(1, 2, 0).numpy()).save(targets[0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Translate photos to segmentation maps or maps to photos with a *_gen_N.pt file.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--input",
        "--image_file",
        dest="input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="image files, folders (their image files) or quoted globs",
    )
    parser.add_argument(
        "--generator",
        "--dir_to_generator",
        dest="generator",
        required=True,
        type=Path,
        help="an exported generator, e.g. runs/ade20k/real2seg_gen_200.pt",
    )
    parser.add_argument(
        "--output-dir",
        "--save_directory",
        dest="output_dir",
        required=True,
        type=Path,
        help="folder for the results (created if missing)",
    )
    parser.add_argument(
        "--width",
        "--file_width",
        dest="width",
        type=int,
        help="model input width; rounded to a multiple of 4 (default 256)",
    )
    parser.add_argument(
        "--height",
        "--file_height",
        dest="height",
        type=int,
        help="model input height; rounded to a multiple of 4 (default 256)",
    )
    parser.add_argument(
        "--own-size",
        action="store_true",
        help="translate each image at its own size instead of --width x --height: sides padded up to multiples "
        "of 4 by repeating the edge pixels, results cropped back (large images are tiled as needed, see --tile)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        metavar="N",
        help="run the generator in N x N-pixel tiles (a multiple of 4), with the same result as the whole "
        "image (exact halos, instance norms over the whole image); 0: whole images only (default: whole "
        "images where they fit in --max-memory, else the largest tile that fits). Needs a .pt generator",
    )
    parser.add_argument(
        "--max-memory",
        type=float,
        metavar="GB",
        help="memory budget of a translation in GB: on a GPU its device memory (whole-image tensors between "
        "layers go to host memory when they do not fit), on the CPU all of it (default: what is free now)",
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="bfloat16 autocast (GPUs; on CPUs without AVX-512 bf16 it is many times slower than the default "
        "float32). Needs a .pt generator",
    )
    parser.add_argument(
        "--channels",
        type=int,
        help="input channels, checked if given: 3 for photos; 1 (ids) or 3 (colours) for maps "
        "(default: not checked; each file's own channels are)",
    )
    parser.add_argument(
        "--output-size",
        choices=("input", "model"),
        default="input",
        help="input: resize results back to each input's size (default); model: keep width x height",
    )
    parser.add_argument(
        "--palette",
        choices=("auto", *PALETTES),
        default="auto",
        help="colours of maps written (photo -> seg) and of coloured maps read (seg -> photo): train, the "
        "palette the generators draw in; ade150, the common ADE20K display palette; or auto (default): write "
        "train, read each map in whichever of the two more of its pixels lie on",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in the output folder")
    return parser


def pad_to_4(image: torch.Tensor) -> torch.Tensor:
    """A photo (3, H, W) or ids (H, W) with its bottom and right edges repeated up to multiples of 4."""
    height, width = image.shape[-2:]
    rows = torch.arange(height + -height % 4).clamp(max=height - 1)
    cols = torch.arange(width + -width % 4).clamp(max=width - 1)
    return image[..., rows, :][..., cols]


def run(args: argparse.Namespace) -> int:
    """Check every input and output up front, then translate in batches (one image a batch at own size)."""
    device = pick_device(args.device)
    if args.max_memory is not None and args.max_memory <= 0:
        raise InputError(f"--max-memory: must be > 0 GB, got {args.max_memory}")
    if args.own_size and (args.width is not None or args.height is not None):
        raise InputError("--own-size: translates each image at its own size; give it or --width/--height, not both")
    budget = None if args.max_memory is None else int(args.max_memory * GIB)
    translate, meta = load_translator(args.generator, device, args.tile, budget, args.amp)
    domain = meta["input"]
    accepted = (3,) if domain == "photo" else (1, 3)  # a map: class ids, or colours
    if args.channels is not None and args.channels not in accepted:
        raise InputError(f"{args.generator}: takes {' or '.join(map(str, accepted))}-channel {domain} images, "
                         f"but --channels is {args.channels}")  # fmt: skip
    if args.batch_size < 1:
        raise InputError(f"--batch-size: must be >= 1, got {args.batch_size}")
    width, height = args.width or 256, args.height or 256
    if width < 1 or height < 1:
        raise InputError(f"--width/--height: must be >= 1, got {width} x {height}")
    model_size = None if args.own_size else (round_to_4(width, "width"), round_to_4(height, "height"))

    inputs = find_inputs(args.input)
    for path in inputs:
        with open_image(path) as image:
            check_mode(path, image, domain)
    jobs = list(zip(inputs, output_paths(inputs, domain, args.output_dir, args.overwrite), strict=True))
    args.output_dir.mkdir(parents=True, exist_ok=True)

    seen: dict[str, int] = {}  # how coloured maps were read: palette -> count
    step = 1 if args.own_size else args.batch_size
    with torch.inference_mode():
        for start in range(0, len(jobs), step):
            chunk = jobs[start : start + step]
            decoded = [read_input(path, domain, args.palette, seen) for path, _ in chunk]
            # uint8 photos or class ids at model size; the translator does the rest (see inference.Translator)
            if model_size is None:
                batch = pad_to_4(decoded[0][0])[None]
            else:
                batch = torch.stack([resize(image, model_size, ids=domain != "photo") for image, _ in decoded])
            try:
                schedule = translate.schedule(batch.shape)
            except InputError as e:
                raise InputError(f"{chunk[0][0]}: {e}") from None
            if schedule.tile and args.tile is None:
                print(f"{PROG}: note: {chunk[0][0].name} ({batch.shape[-1]}x{batch.shape[-2]}) runs in "
                      f"{schedule.describe()}", file=sys.stderr)  # fmt: skip
            for output, (_, size), (_, targets) in zip(translate(batch, schedule), decoded, chunk, strict=True):
                if model_size is None:
                    output = output[..., : size[1], : size[0]]
                out_size = size if args.output_size == "input" or model_size is None else model_size
                save_outputs(output, domain, out_size, targets, args.palette)
    read_as = ", ".join(f"{n} {palette}" for palette, n in sorted(seen.items()))
    print(f"{PROG}: translated {len(inputs)} image(s), {domain} -> {meta['output']} "
          f"({mode_of_export(meta)} mode{', ONNX' if args.generator.suffix == '.onnx' else ''}), "
          f"into {args.output_dir}{f'; coloured maps read as {read_as}' if read_as else ''}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns 0, or 2 after a one-line error."""
    return run_reporting_errors(PROG, run, build_parser().parse_args(argv), (InputError, CheckpointError))


if __name__ == "__main__":
    raise SystemExit(main())
